"""The fault-injection scenarios of a stack with three brokers (`make chaos-brokers`): the
brokers rolled as Strimzi rolls them, the leader of receiver-topic's partitions killed, one
broker away for a minute. Each runs under the suite's load and reckoning (test_faults.run):
nothing accepted lost, nothing duplicated.

They run on a stack of three or more brokers only (LOCAL_KAFKA_BROKERS); `make test`'s one
broker skips them. docs/operations.md has what they showed.
"""

from __future__ import annotations

import time

import pytest
from local.config import StackSettings

from tests.chaos.harness import Outcome, Stack
from tests.chaos.test_faults import Scenario, check, run, scenario_id
from tests.stack.processes import ServiceProcess

BROKER_OUTAGE_S = 60
BACK_TIMEOUT_S = 180


def roll_every_broker(stack: Stack, _: list[ServiceProcess]) -> None:
    """What Strimzi does on a configuration change or an upgrade: one broker after the other,
    SIGTERM (a controlled shutdown, its leaderships handed on first), wait for it to stop,
    start it, wait until it is back in the ISR of every partition; then the next."""
    for node, name in sorted(stack.brokers().items()):
        stack.stop(name)
        stack.start(name)
        stack.wait_in_sync(f"broker {node} restarted")


def receiver_topic_leader(stack: Stack) -> str:
    """The broker leading the most of receiver-topic's partitions."""
    node, _ = stack.leaders("receiver-topic").most_common(1)[0]
    return stack.brokers()[node]


def kill_9_receiver_topic_leader(stack: Stack, _: list[ServiceProcess]) -> None:
    stack.kill_9(receiver_topic_leader(stack))


def stop_a_broker_for_a_minute(stack: Stack, _: list[ServiceProcess]) -> None:
    """The leader of processor-topic's first partition, where the processor's transactions
    write: gracefully stopped, away for a minute while the load goes on, started again."""
    node = stack.leader_of("processor-topic", 0)
    name = stack.brokers()[node]
    stack.stop(name)
    time.sleep(BROKER_OUTAGE_S)
    stack.start(name)


SCENARIOS = [
    Scenario("roll 3 brokers", roll_every_broker),
    Scenario("kill -9 receiver-topic's leader", kill_9_receiver_topic_leader),
    Scenario(f"stop a broker {BROKER_OUTAGE_S} s", stop_a_broker_for_a_minute),
]


@pytest.mark.brokers
@pytest.mark.skipif(
    StackSettings().kafka_brokers < 3,
    reason="needs three brokers: make chaos-brokers (LOCAL_KAFKA_BROKERS=3)",
)
@pytest.mark.timeout(900)
@pytest.mark.parametrize("scenario", SCENARIOS, ids=scenario_id)
def test_brokers_go_away_and_nothing_accepted_is_lost_or_duplicated(
    scenario: Scenario, chaos_stack: Stack, outcomes: list[Outcome]
) -> None:
    # A broker killed by the scenario before (its test failed before it waited) may still be
    # recovering its logs, and the stages rejoining after it: more than the suite's 60 s here.
    chaos_stack.wait_healthy("before the fault", timeout_s=BACK_TIMEOUT_S)
    chaos_stack.wait_in_sync("before the fault", timeout_s=BACK_TIMEOUT_S)
    outcome = run(scenario, chaos_stack)
    outcomes.append(outcome)
    check(scenario, outcome)
    chaos_stack.wait_healthy("after the scenario", timeout_s=BACK_TIMEOUT_S)
    chaos_stack.wait_in_sync("after the scenario", timeout_s=BACK_TIMEOUT_S)
