"""What a librdkafka client reports, into Python logging, with repeats folded.

A client reports trouble as librdkafka's own log lines (the client's ``logger``), as error
events (``error_cb``) and, for a consumer, as error records among the consumed ones. While no
broker answers, librdkafka (2.10 and later, with its default
``metadata.recovery.strategy=rebootstrap``) bootstraps again after every failed connect and
replaces the bootstrap broker's handle; the new handle starts both its reconnect backoff
(``reconnect.backoff.ms`` 100 ms growing to ``reconnect.backoff.max.ms`` 10 s, librdkafka's
defaults, which jobflow keeps) and librdkafka's own 30 s suppression of identical errors from
zero. So a client with Kafka away tries again every ~50 ms (the least librdkafka waits
between connects to a broker it has not tried yet) and reports every failure twice, as a FAIL
line and as an error event with the same text. ``metadata.recovery.strategy=none``
would bring both back, but a client whose brokers had all moved would then never find them
again through ``bootstrap.servers``; ``log.connection.close`` only covers connections the
broker closed. Hence the folding here:

- the first occurrence of a line is written at once, with its text;
- repeats of it within ``window_s`` are counted, not written; once the window is over they
  are written as one line that says how many there were (``... (repeated 212 times in the
  last 30 s)``), and a new window starts;
- a different line is written at once, and so is a recovery: when the statistics say a broker
  is up again, the folds of its errors end (their counts written) and so does the fold of
  every error once the client had no broker up and has one again, so the next failure is
  written at once;
- an error event whose text librdkafka has just logged itself is the same failure, not
  written twice.

The statistics (``statistics.interval.ms``) also drive the window: without them a count would
wait for the next repeat to be written.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import KafkaError

log = logging.getLogger("jobflow.core.kafka")
# librdkafka's own lines go through Python logging (and so out as JSON), not to stderr.
librdkafka_log = logging.getLogger("librdkafka")

FOLD_WINDOW_S = 30.0

# librdkafka ends an error with how long the broker was in which state, and with how many
# identical errors it suppressed itself: what differs between repeats of one failure.
_VARIABLE_SUFFIX = re.compile(
    r" \(after \d+ms in state [A-Z_]+(?:, \d+ identical error\(s\) suppressed)?\)"
)
# confluent-kafka hands a line over as ("%s [%s] %s", facility, client name, text), and
# librdkafka starts the text with the thread that logged it.
_THREAD_PREFIX = re.compile(r"^\[thrd:[^\]]*\]: ")
# librdkafka's _ALL_BROKERS_DOWN text: "1/1 brokers are down".
_ALL_DOWN = re.compile(r"^\d+/\d+ brokers are down$")
# Error events matched against the client's last few FAIL lines: librdkafka queues the line
# and the event one after the other, other threads' lines may come between.
_RECENT_LINES = 16


@dataclass
class _Fold:
    logger: logging.Logger
    level: int
    message: str  # the line, as its first occurrence was written
    since: float  # when it was written
    repeats: int = 0  # occurrences since then, not written


class ClientLog:
    """One librdkafka client's log lines, error events and consume errors, folded.

    Pass it as the client's ``logger`` (confluent-kafka calls ``log(level, msg, *args)``),
    its ``error`` as ``error_cb`` and its ``statistics`` from the ``stats_cb``.
    """

    def __init__(
        self, window_s: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window_s = FOLD_WINDOW_S if window_s is None else window_s
        self._clock = clock
        # Callbacks run on the client's polling thread; a client's calls may come from others.
        self._lock = threading.Lock()
        self._folds: dict[tuple[str, str], _Fold] = {}
        self._recent_lines: deque[str] = deque(maxlen=_RECENT_LINES)
        # Whether the last statistics had a broker up; None before the first.
        self._broker_up: bool | None = None

    def log(self, level: int, msg: str, *args: object) -> None:
        """A line of librdkafka's own log."""
        line = msg % args if args else msg
        text = _THREAD_PREFIX.sub("", str(args[2])) if len(args) == 3 else line
        key = _VARIABLE_SUFFIX.sub("", text)
        with self._lock:
            if level >= logging.WARNING:
                self._recent_lines.append(key)
            self._write(librdkafka_log, level, key, line)

    def error(self, error: KafkaError, what: str = "kafka client error") -> None:
        """An error event, or (``what`` "consume error") an error record a consumer returned."""
        if error.fatal():
            # Once per client: it cannot go on.
            log.critical("kafka client failed: %s", error.str())
            return
        text = error.str()
        key = _VARIABLE_SUFFIX.sub("", text)
        with self._lock:
            if key in self._recent_lines:
                # The FAIL line librdkafka logged just before carries the same failure.
                self._recent_lines.remove(key)
                return
            # Transient (a broker away): librdkafka retries; requests fail once their timeout
            # passes.
            self._write(log, logging.WARNING, key, f"{what}: {text}")

    def statistics(self, statistics_json: str) -> None:
        """One statistics document: writes the counts whose window is over, and ends the folds
        that a broker up again has made stale."""
        brokers: dict[str, Any] = orjson.loads(statistics_json).get("brokers", {})
        up = sorted(name for name, broker in brokers.items() if broker.get("state") == "UP")
        now = self._clock()
        with self._lock:
            reconnected = bool(up) and self._broker_up is False
            self._broker_up = bool(up)
            recovered = []
            for key, fold in list(self._folds.items()):
                text = key[1]
                if reconnected or text.split(": ", 1)[0] in up or (up and _ALL_DOWN.match(text)):
                    recovered.append(key)
                elif now - fold.since >= self._window_s:
                    if fold.repeats:
                        self._write_count(fold, now)
                        fold.since, fold.repeats = now, 0
                    else:
                        # A quiet window: the next occurrence is news again.
                        del self._folds[key]
            for key in recovered:
                fold = self._folds.pop(key)
                if fold.repeats:
                    self._write_count(fold, now)
            if recovered:
                log.info("kafka client reaches %s again", ", ".join(up))

    def _write(self, logger: logging.Logger, level: int, key: str, message: str) -> None:
        now = self._clock()
        fold = self._folds.get((logger.name, key))
        if fold is not None and now - fold.since < self._window_s:
            fold.repeats += 1
            return
        if fold is not None and fold.repeats:
            # This one is the last repeat of the window that ended: the count says it.
            fold.repeats += 1
            self._write_count(fold, now)
        else:
            logger.log(level, "%s", message)
        self._folds[(logger.name, key)] = _Fold(logger, level, message, now)

    def _write_count(self, fold: _Fold, now: float) -> None:
        fold.logger.log(
            fold.level,
            "%s (repeated %d time%s in the last %.0f s)",
            fold.message,
            fold.repeats,
            "" if fold.repeats == 1 else "s",
            now - fold.since,
        )
