"""Work lost: the consuming workers SIGKILLed mid-run, and the broker unreachable at publish time
(a TCP proxy in front of RabbitMQ cuts the publishers' connections); after each run settles,
the events that never reach the bars. Last of each contender's figures but coalescing: a
contender that loses events breaks its invariant."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.harness.contenders import Contender, Postsave
from bench.harness.processes import step
from bench.harness.producer import Tally
from bench.harness.profile import Profile
from bench.harness.proxy import BrokerProxy
from bench.harness.report import Results, table
from bench.harness.run import Figure, Run
from bench.harness.workload import finish_producer, settle, start_producer

OUTAGE_CLIENTS = 8


def _fault_run(
    contender: Contender,
    rate: float,
    seconds: float,
    disrupt: Callable[[], None],
    failed: Callable[[Tally], dict[str, Any]],
    threads: int | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An open-loop run with `disrupt()` called while it goes on; once it settles, the events
    that never reach the bars. `failed` says what the producer saw, `extra` goes last."""
    assert contender.log is not None
    count = max(1, round(rate * seconds))
    window = contender.log.watermark()
    before = contender.drift()
    process = start_producer(contender, count, rate, threads=threads)
    disrupt()
    produced = finish_producer(process, 60.0 + seconds)
    settled = settle(contender, window, quiet_s=contender.settle_quiet_s)
    stuck = contender.stuck(window)
    unfinished = contender.log.unfinished(window)
    return {
        "events": len(contender.log.times(window)),  # committed, whatever the publish did
        **failed(produced),
        "lost": unfinished - stuck["unapplied"],
        "stuck": stuck["unapplied"],
        "stuck_applied": stuck["applied_but_pending"],
        "applied_twice": contender.applied_twice(),
        "settled_s": settled,
        **(extra or {}),
        **contender.invariant(before),
    }


def loss_run(contender: Contender, rate: float, seconds: float) -> dict[str, Any]:
    """Kill the consuming workers (SIGKILL, pool children too) halfway through an open-loop
    run, start fresh ones, and count the events that never reach the bars."""

    def kill_halfway() -> None:
        time.sleep(seconds / 2)
        step(f"loss: SIGKILL {contender.name}'s workers mid-run, then start fresh ones")
        contender.kill_workers()

    return _fault_run(
        contender, rate, seconds, kill_halfway, lambda p: {"producer_failed": p.failed}
    )


def outage_run(
    contender: Contender, proxy: BrokerProxy, rate: float, seconds: float
) -> dict[str, Any]:
    """The publishers' broker connections are cut for the middle third of an open-loop run
    (connections refused meanwhile); count the events that never reach the bars."""

    def cut_middle_third() -> None:
        time.sleep(seconds / 3)
        step(f"outage: {contender.name}: the broker is unreachable for {seconds / 3:.1f} s")
        proxy.down()
        time.sleep(seconds / 3)
        proxy.up()

    return _fault_run(
        contender,
        rate,
        seconds,
        cut_middle_third,
        # the last error, for the record
        lambda p: {"publish_failed": p.failed, "publish_error": p.error},
        # Each client blocks in the publish's own retries while the broker is away, so the
        # number of clients (concurrent requests of an application) bounds what direct loses.
        threads=OUTAGE_CLIENTS,
        extra={"outage_s": seconds / 3},
    )


def outage_contenders(profile: Profile) -> tuple[str, ...]:
    """procrastinate publishes nothing to a broker."""
    return tuple(name for name in profile.fault_contenders if name != "procrastinate")


def measure(run: Run, contender: Contender) -> None:
    rate, seconds, name = run.profile.kill_rate, run.profile.kill_seconds, contender.name
    step(f"loss: {name}: {rate:.0f} events/s for {seconds:g} s")
    run.results.setdefault("loss", {})[name] = loss_run(contender, rate, seconds)
    if name not in outage_contenders(run.profile):
        return
    # The contender's last scenario: publishers through the proxy, postsave's relay worker
    # and beat restarted so; its workers are stopped right after.
    step(f"outage: {name}: {rate:.0f} events/s for {seconds:g} s")
    contender.outage_url = run.proxy.url(run.amqp_url)
    if isinstance(contender, Postsave):
        contender.stop()
        contender.start()
    run.results.setdefault("outage", {})[name] = outage_run(contender, run.proxy, rate, seconds)


def conditions(profile: Profile) -> dict[str, str]:
    load = f"open loop {profile.kill_rate:.0f} events/s for {profile.kill_seconds:g} s"
    return {
        "outage": (
            f"{load}; for the middle third the publishers' broker connections are cut and "
            "refused (a TCP proxy; postsave: the producer, relay and beat go through it); lost = "
            "never applied"
        ),
        "loss": (
            f"{load}; halfway the consuming worker is SIGKILLed (process group) and a fresh one "
            "started; lost = never applied after the run settles and nothing will retry it; "
            "stuck = left 'doing' until an operator retries it (procrastinate); stuck, applied = "
            "left 'doing' although applied: a retry applies it twice"
        ),
    }


def tables(results: Results) -> str | None:
    found = []
    if runs := results.get("loss", {}):
        loss = ("events", "lost", "stuck", "stuck_applied", "applied_twice", "invariant_holds")
        found.append(
            table(
                "Work lost when the workers are SIGKILLed mid-run",
                results["conditions"]["loss"],
                "contender | events | lost | stuck | stuck, applied | twice | invariant",
                [[name, *(r.get(key) for key in loss)] for name, r in runs.items()],
            )
        )
    if runs := results.get("outage", {}):
        keys = ("events", "publish_failed", "lost", "applied_twice", "invariant_holds")
        found.append(
            table(
                "Work lost when the broker is unreachable at publish time",
                results["conditions"]["outage"],
                "contender | events | publish failed | lost | applied twice | invariant",
                [[name, *(r[key] for key in keys)] for name, r in runs.items()],
            )
        )
    return "\n".join(found) or None


FIGURE = Figure("faults", conditions, tables, takes=lambda p: p.fault_contenders, measure=measure)
