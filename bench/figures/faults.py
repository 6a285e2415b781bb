"""Work lost: the consuming workers SIGKILLed mid-run, and the broker unreachable at publish time
(a TCP proxy in front of RabbitMQ cuts the publishers' connections); after each run settles,
the events that never reach the bars. Last of each contender's figures but coalescing."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.harness.contenders import Contender, Postsave
from bench.harness.processes import step
from bench.harness.profile import Profile
from bench.harness.report import Results, table
from bench.harness.run import Figure, Run
from bench.harness.workload import finish_producer, settle, start_producer

OUTAGE_CLIENTS = 8


def _fault_run(
    contender: Contender, run: Run, disrupt: Callable[[float], None], threads: int | None = None
) -> dict[str, Any]:
    """An open-loop run with `disrupt(seconds)` called as it starts; once it settles, the events
    that never reach the bars."""
    assert contender.log is not None
    rate, seconds = run.profile.kill_rate, run.profile.kill_seconds
    step(f"{contender.name}: {rate:.0f} events/s for {seconds:g} s")
    window, before = contender.log.watermark(), contender.drift()
    process = start_producer(contender, max(1, round(rate * seconds)), rate, threads=threads)
    disrupt(seconds)
    produced = finish_producer(process, 60.0 + seconds)
    settled = settle(contender, window, quiet_s=contender.settle_quiet_s)
    stuck = contender.stuck(window)
    return {
        "events": len(contender.log.times(window)),  # committed, whatever the publish did
        "failed": produced.failed,
        "error": produced.error,  # the last, for the record
        "lost": contender.log.unfinished(window) - stuck["unapplied"],
        "stuck": stuck["unapplied"],
        "stuck_applied": stuck["applied_but_pending"],
        "applied_twice": contender.applied_twice(),
        "settled_s": settled,
        **contender.invariant(before),
    }


def measure(run: Run, contender: Contender) -> None:
    def kill_halfway(seconds: float) -> None:
        time.sleep(seconds / 2)
        step(f"loss: SIGKILL {contender.name}'s workers mid-run, then start fresh ones")
        contender.kill_workers()

    found = _fault_run(contender, run, kill_halfway)
    found["producer_failed"] = found.pop("failed")
    del found["error"]
    run.results.setdefault("loss", {})[contender.name] = found
    if contender.name == "procrastinate":
        return  # it publishes nothing to a broker
    # The contender's last scenario: publishers through the proxy, postsave's relay worker
    # and beat restarted so; its workers are stopped right after.
    contender.outage_url = run.proxy.url(run.amqp_url)
    if isinstance(contender, Postsave):
        contender.stop()
        contender.start()

    def cut_middle_third(seconds: float) -> None:
        time.sleep(seconds / 3)
        step(f"outage: {contender.name}: the broker is unreachable for {seconds / 3:.1f} s")
        run.proxy.down()
        time.sleep(seconds / 3)
        run.proxy.up()

    # Each client blocks in the publish's own retries while the broker is away, so the number
    # of clients (concurrent requests of an application) bounds what direct loses.
    found = _fault_run(contender, run, cut_middle_third, threads=OUTAGE_CLIENTS)
    found["publish_failed"], found["publish_error"] = found.pop("failed"), found.pop("error")
    found["outage_s"] = run.profile.kill_seconds / 3
    run.results.setdefault("outage", {})[contender.name] = found


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
            "left 'doing' although applied: a retry applies it twice; twice (postsave) = bars "
            "holding more than the deltas of the events through their position"
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
