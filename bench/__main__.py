"""`make bench`: every benchmark scenario against the local stack, side by side in one run.

python -m bench [--quick]

Writes bench/results/<time>.json (the figures, with the targets and whether each was met) and
bench/results/<time>.png (the report). --quick shortens every scenario, to try the benchmark
out; its figures are not the ones to quote.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import math
import operator
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from loadtest import tank
from local import stack
from local.config import REPO, StackSettings
from local.supervisor import Supervisor

from bench import crash, ingest, pipeline, processor, quix, report, seed
from bench.measures import rss_mib
from jobflow.components import PIPELINE_SERVICES
from jobflow.core.settings import KafkaSettings

RESULTS = REPO / "bench" / "results"
SLEEP_MS = 100


@dataclass(frozen=True)
class Plan:
    ingest_ramp: str
    ingest_fixed: str
    pipeline: str
    # The same pipeline at lower rates: where the latency begins to grow.
    pipeline_lower: tuple[str, ...]
    mixed: str
    seed: str
    backlog: int
    # Quix Streams' backlog at 100 ms sleeps: it handles one record at a time.
    quix_slow_backlog: int


FULL = Plan(
    ingest_ramp=ingest.RAMP,
    ingest_fixed=ingest.FIXED,
    pipeline="const(1000, 60s)",
    pipeline_lower=("const(100, 30s)", "const(300, 30s)"),
    mixed="const(1000, 60s)",
    seed=tank.schedule_of("seed"),
    backlog=60_000,
    quix_slow_backlog=200,
)
QUICK = Plan(
    ingest_ramp="step(250, 1500, 250, 3s)",
    ingest_fixed=f"const({ingest.FIXED_RPS}, {10 + ingest.WARM_UP_S}s)",
    pipeline="const(1000, 10s)",
    pipeline_lower=("const(100, 10s)", "const(300, 10s)"),
    mixed="const(1000, 10s)",
    seed=tank.shortened(tank.schedule_of("seed"), 20),
    backlog=10_000,
    quix_slow_backlog=50,
)

# The targets: the key, how it compares, and the bound (a number, or the key of another figure).
Comparison = Callable[[float, float], bool]
TARGETS: dict[str, tuple[str, Comparison, float | str]] = {
    "receiver_vs_bare": (">=", operator.ge, 0.7),
    "receiver_vs_bridge": (">=", operator.ge, 1.0),
    "receiver_p99_ms_at_500rps": ("<=", operator.le, 25),
    "pipeline_p99_ms_over_sleep": ("<=", operator.le, 50),
    # Short jobs among long ones: as fast as when all are short.
    "mixed_short_p99_ms_over_sleep": ("<=", operator.le, 50),
    # A kill -9 redoes only the jobs not finished.
    "crash_redone_jobs": ("<=", operator.le, "crash_unfinished_jobs"),
    # Ours against Quix Streams at its best commit interval.
    "vs_quix_0ms": (">=", operator.ge, 1.0),
    "vs_quix_100ms": (">=", operator.ge, 20),
    "seed_profile_errors": ("==", operator.eq, 0),
    "seed_profile_p99_ms": ("<=", operator.le, 10),
    "max_rss_mib": ("<=", operator.le, 150),
    "lost_jobs": ("==", operator.eq, 0),
}
# The per-job samples of a pipeline run, summed up by quantiles rather than written out.
PIPELINE_SERIES = (
    "load",
    "done_over_sleep_ms",
    "long_done_over_sleep_ms",
    "finished_over_sleep_ms",
    "finished_to_visible_ms",
    "postgres_after_create_ms",
)
BRIDGE_NOT_RUN = (
    "Strimzi Kafka Bridge is not run: io.strimzi:kafka-bridge does not resolve from the "
    "Maven repository this benchmark was built against (see docs/performance.md)"
)


def stack_rss(settings: StackSettings) -> dict[str, float]:
    """RSS of each of the stack's services now, in MiB."""
    supervisor = Supervisor(settings)
    return {name: rss_mib(supervisor.state(name)[1]) for name in PIPELINE_SERVICES}


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator else math.nan


def targets(results: dict[str, object]) -> dict[str, dict[str, object]]:
    judged: dict[str, dict[str, object]] = {}
    for key, (sign, compare, bound) in TARGETS.items():
        value = results[key]
        limit = results[bound] if isinstance(bound, str) else bound
        measured = all(isinstance(v, int | float) and not math.isnan(v) for v in (value, limit))
        judged[key] = {
            "target": f"{sign} {bound}",
            "met": compare(value, limit) if measured else None,  # type: ignore[arg-type]
        }
    return judged


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="every scenario shortened")
    plan = QUICK if parser.parse_args().quick else FULL

    settings = StackSettings()
    asyncio.run(stack.up(settings))
    kafka = KafkaSettings(bootstrap_servers=settings.kafka_bootstrap)
    receiver_url = f"http://127.0.0.1:{stack.service_ports()['receiver']}"

    print("==> ingest ceiling: bare endpoint, receiver, then the seed's Go receiver", flush=True)
    bare, receiver, go_receiver = ingest.run(
        settings.kafka_bootstrap, plan.ingest_ramp, plan.ingest_fixed
    )
    print(f"==> pipeline: {plan.pipeline}", flush=True)
    flow = pipeline.run(kafka, receiver_url, plan.pipeline)
    rss_after_pipeline = stack_rss(settings)
    lower = []
    for schedule in plan.pipeline_lower:
        print(f"==> pipeline at a lower rate: {schedule}", flush=True)
        lower.append(pipeline.run(kafka, receiver_url, schedule))
    print(f"==> mixed lengths: {plan.mixed}, 1% of the jobs 30 to 60 s long", flush=True)
    mixed = pipeline.run(kafka, receiver_url, plan.mixed, pipeline.mixed_bodies())
    print(f"==> seed profile: {plan.seed}", flush=True)
    acceptance = seed.run(kafka, receiver_url, plan.seed)
    rss_after_seed = stack_rss(settings)
    print("==> processor: backlog at 100 ms and 0 ms sleeps, then 1, 2, 3 instances", flush=True)
    unslept = processor.measure(settings.kafka_bootstrap, plan.backlog, 0)
    scaling = [
        processor.measure(settings.kafka_bootstrap, plan.backlog, SLEEP_MS, instances)
        for instances in (1, 2, 3)
    ]

    print("==> crash cost: kill -9 with 2,000 jobs in flight, most of them finished", flush=True)
    crashed = crash.measure(settings.kafka_bootstrap)
    print("==> beside Quix Streams: the processor's job, same backlogs and topics", flush=True)
    peer = quix.compare(
        settings.kafka_bootstrap,
        plan.backlog,
        plan.quix_slow_backlog,
        progress=lambda step: print(f"    {step}", flush=True),
    )

    rss = {
        "receiver_on_ingest": receiver.rss_mib,
        "go_receiver_on_ingest": go_receiver.rss_mib,
        "bare_endpoint_on_ingest": bare.rss_mib,
        "after_pipeline": rss_after_pipeline,
        "after_seed_profile": rss_after_seed,
        "processors_on_scaling": [run.rss_mib for run in scaling],
    }
    service_rss = [
        receiver.rss_mib,
        *rss_after_pipeline.values(),
        *rss_after_seed.values(),
        *(value for run in [unslept, *scaling] for value in run.rss_mib),
    ]
    pipelines = [flow, *lower, mixed]
    lost = (
        sum(run.lost for run in pipelines)
        + acceptance.missing_in_receiver_topic
        + sum(run.lost for run in [unslept, *scaling])
        + crashed.lost
        + peer["lost_jobs"]
    )
    results: dict[str, object] = {
        "machine": {
            "host": platform.node(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
        },
        "plan": "quick" if plan is QUICK else "full",
        "receiver_rps": receiver.max_rps,
        "bare_rps": bare.max_rps,
        "bridge_rps": None,
        "receiver_vs_bare": ratio(receiver.max_rps, bare.max_rps),
        "receiver_vs_bridge": None,
        "receiver_p99_ms_at_500rps": receiver.p99_ms_at_fixed,
        "go_receiver_rps": go_receiver.max_rps,
        "receiver_vs_go": ratio(receiver.max_rps, go_receiver.max_rps),
        "go_receiver_p99_ms_at_500rps": go_receiver.p99_ms_at_fixed,
        "go_receiver_reached_ramp_top": go_receiver.reached_ramp_top,
        "bare_p99_ms_at_500rps": bare.p99_ms_at_fixed,
        "pipeline_achieved_rps": flow.achieved_rps,
        "pipeline_p99_ms_over_sleep": round(tank.quantile(flow.done_over_sleep_ms, 0.99), 1),
        "pipeline_p50_ms_over_sleep": round(tank.quantile(flow.done_over_sleep_ms, 0.5), 1),
        "pipeline_ms_breakdown": {
            name: {
                "p50": round(tank.quantile(values, 0.5), 1),
                "p99": round(tank.quantile(values, 0.99), 1),
            }
            for name, values in (
                ("created_to_sleep_end_minus_sleep", flow.finished_over_sleep_ms),
                ("sleep_end_to_visible", flow.finished_to_visible_ms),
            )
        },
        "pipeline_p99_ms_create_to_postgres": round(
            tank.quantile(flow.postgres_after_create_ms, 0.99), 1
        ),
        "pipeline_p50_ms_create_to_postgres": round(
            tank.quantile(flow.postgres_after_create_ms, 0.5), 1
        ),
        "pipeline_over_sleep_by_schedule": {
            run.schedule: {
                "achieved_rps": run.achieved_rps,
                "p50_ms": _quantile(run.done_over_sleep_ms, 0.5),
                "p99_ms": _quantile(run.done_over_sleep_ms, 0.99),
            }
            for run in [*lower, flow]
        },
        "mixed_achieved_rps": mixed.achieved_rps,
        "mixed_short_p99_ms_over_sleep": _quantile(mixed.done_over_sleep_ms, 0.99),
        "mixed_short_p50_ms_over_sleep": _quantile(mixed.done_over_sleep_ms, 0.5),
        "mixed_long_p99_ms_over_sleep": _quantile(mixed.long_done_over_sleep_ms, 0.99),
        "mixed_long_jobs": len(mixed.long_done_over_sleep_ms),
        "seed_profile_errors": acceptance.errors,
        "seed_profile_p99_ms": acceptance.p99_ms,
        "max_rss_mib": max(service_rss),
        "lost_jobs": lost,
        "duplicated_jobs": sum(run.duplicated_in_processor_topic for run in pipelines)
        + acceptance.duplicated_in_receiver_topic
        + sum(run.duplicated for run in [unslept, *scaling])
        + crashed.duplicated
        + peer["duplicated_jobs"],
        "processor_jobs_per_s_by_instances": {
            str(run.instances): run.jobs_per_s for run in scaling
        },
        "processor_jobs_per_s_at_0ms_sleep": unslept.jobs_per_s,
        "processor_100ms_vs_0ms": ratio(scaling[0].jobs_per_s, unslept.jobs_per_s),
        "crash_redone_jobs": crashed.redone,
        "crash_unfinished_jobs": crashed.unfinished,
        "quix_jobs_per_s_0ms": peer["quix_best_jobs_per_s"]["0ms"],
        "quix_jobs_per_s_100ms": peer["quix_best_jobs_per_s"]["100ms"],
        "vs_quix_0ms": peer["jobflow_vs_quix"]["0ms"],
        "vs_quix_100ms": peer["jobflow_vs_quix"]["100ms"],
        "not_measured": {"bridge_rps": BRIDGE_NOT_RUN, "receiver_vs_bridge": BRIDGE_NOT_RUN},
        "rss_mib": rss,
    }
    results["targets"] = targets(results)
    results["scenarios"] = {
        "ingest": [_without_series(run, "ramp", "fixed") for run in (bare, receiver, go_receiver)],
        "pipeline": _without_series(flow, *PIPELINE_SERIES),
        "pipeline_lower": [_without_series(run, *PIPELINE_SERIES) for run in lower],
        "mixed": _without_series(mixed, *PIPELINE_SERIES),
        "seed_profile": _without_series(acceptance, "load"),
        "processor": [dataclasses.asdict(run) for run in [unslept, *scaling]],
        "crash": dataclasses.asdict(crashed),
        "quix": peer,
    }

    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    figures = RESULTS / f"{stamp}.json"
    figures.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    report.draw(RESULTS / f"{stamp}.png", [bare, receiver, go_receiver], flow, acceptance, scaling)
    print(orjson.dumps(results, option=orjson.OPT_INDENT_2).decode())
    print(f"written to {figures.relative_to(REPO)} and {stamp}.png beside it")


def _quantile(values: list[float], q: float) -> float:
    return round(tank.quantile(values, q), 1) if values else math.nan


def _without_series(result: object, *series: str) -> dict[str, object]:
    fields = dataclasses.asdict(result)  # type: ignore[call-overload]
    return {key: value for key, value in fields.items() if key not in series}


if __name__ == "__main__":
    main()
