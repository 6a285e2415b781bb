"""Figures 1 and 2, the kill and the outage: drive a contender's producer, read its events back."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench import procs
from bench.contenders import CeleryContender, Contender, NaiveTimer, Postsave, invariant
from bench.eventlog import Window, postsave_breakdown
from bench.outage import BrokerProxy
from bench.producer import Tally
from bench.progress import step
from bench.stats import summary_ms

OUTAGE_CLIENTS = 8


def start_producer(
    contender: Contender,
    count: int,
    rate: float | None,
    threads: int | None = None,
    deadline_s: float | None = None,
    producer: str | None = None,
) -> subprocess.Popen[str]:
    """`producer`: another kind than the contender's own (bench/producer.py)."""
    spec = {
        "kind": producer or contender.kind,
        "first_foo": contender.take_foos(count),
        "count": count,
        "rate": rate,
        "threads": threads or contender.threads,
        "dsn": contender.dsn,
        "deadline_s": deadline_s,
    }
    log = (contender.workdir / f"{contender.name}-producer.log").open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "bench.producer", json.dumps(spec)],
        env=procs.env_for(contender.producer_env()),
        cwd=procs.REPO,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
    )


def finish_producer(process: subprocess.Popen[str], timeout_s: float) -> Tally:
    try:
        out, _ = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise TimeoutError(f"the producer did not finish within {timeout_s:.0f}s") from None
    except BaseException:  # interrupted: never leave a producer behind
        process.kill()
        process.wait()
        raise
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        raise RuntimeError(f"the producer failed (exit {process.returncode}); see its log")
    return Tally(**json.loads(lines[-1]))


def produce(
    contender: Contender,
    count: int,
    rate: float | None = None,
    deadline_s: float | None = None,
    producer: str | None = None,
) -> Tally:
    budget = 60.0 + (count / rate if rate else count / 100.0)
    process = start_producer(contender, count, rate, None, deadline_s, producer)
    return finish_producer(process, budget)


def wait_processed(contender: Contender, window: Window, timeout_s: float) -> None:
    assert contender.log is not None
    log = contender.log
    procs.wait_until(
        lambda: log.unfinished(window) == 0,
        f"{contender.name}: every event applied",
        timeout_s=timeout_s,
        alive=contender.alive(),
        interval_s=0.05,
    )


def _drain_budget(count: int) -> float:
    return 60.0 + count / 50.0  # the embedded default drains ~100+/s; bounded all the same


def throughput_run(contender: Contender, count: int, producer: str | None = None) -> dict[str, Any]:
    """Figure 1: events/s from the first commit until every event has reached every bar."""
    if isinstance(contender, CeleryContender) and contender.log is None:
        return _ceiling_run(contender, count)
    assert contender.log is not None
    window = contender.log.watermark()
    produced = produce(contender, count, producer=producer)
    wait_processed(contender, window, _drain_budget(count))
    times = contender.log.times(window)
    first = min(c for c, _ in times)
    last = max(a for _, a in times if a is not None)
    result: dict[str, Any] = {
        "events": len(times),
        "seconds": last - first,
        "events_per_s": len(times) / (last - first),
        "producer_per_s": produced.rate,
        **summary_ms([a - c for c, a in times if a is not None]),
    }
    if isinstance(contender, NaiveTimer):
        work = contender.work(first, last)
        result["work"] = work
        result["rows_per_event"] = (work["foos_scanned"] + work["bars_updated"]) / len(times)
    return result


def _ceiling_run(contender: CeleryContender, count: int) -> dict[str, Any]:
    """First publish to the last time the queue was seen empty, watched while publishing (so
    the producer's own exit is not counted); the last <= 2 messages are then in the pool."""
    process = start_producer(contender, count, None)
    empty_since: float | None = None
    deadline = time.monotonic() + _drain_budget(count)
    while time.monotonic() < deadline:
        ready = contender.queue_ready()
        now = time.time()
        if ready:
            empty_since = None
        elif empty_since is None:
            empty_since = now
        if ready == 0 and process.poll() is not None:
            break
        time.sleep(0.01)
    else:
        process.kill()
        raise TimeoutError("ceiling queue not drained in time")
    produced = finish_producer(process, 30.0)
    assert produced.first is not None and produced.last is not None and empty_since is not None
    drained = max(empty_since, produced.last)
    return {
        "events": produced.committed,
        "seconds": drained - produced.first,
        "events_per_s": produced.committed / (drained - produced.first),
        "producer_per_s": produced.rate,
    }


def latency_run(
    contender: Contender, rate: float, seconds: float, producer: str | None = None
) -> dict[str, Any]:
    """Figure 2: open loop at `rate`; commit-to-applied latency from the database clock.
    `producer`: another kind than the contender's own (bench/producer.py)."""
    assert contender.log is not None
    count = max(1, round(rate * seconds))
    window = contender.log.watermark()
    # Clients that cannot keep to the schedule stop 2 s after its end: bounded in time, and
    # "achieved" then tells the offered load apart from what the clients could commit.
    produced = produce(contender, count, rate, deadline_s=seconds + 2.0, producer=producer)
    wait_processed(contender, window, _drain_budget(count))
    times = contender.log.times(window)
    latencies = [a - c for c, a in times if a is not None]
    extra: dict[str, Any] = {}
    if isinstance(contender, Postsave) and contender.dsn:
        extra["breakdown"] = postsave_breakdown(contender.dsn, window)
    return {
        **extra,
        "offered_per_s": rate,
        "achieved_per_s": produced.rate,
        "events": len(times),
        **summary_ms(latencies),
        "latencies_ms": [round(x * 1000.0, 1) for x in latencies],
    }


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
    settled = _settle(contender, window, quiet_s=contender.settle_quiet_s)
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
        **invariant(contender, before),
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


def _settle(
    contender: Contender, window: Window, quiet_s: float = 3.0, limit_s: float = 40.0
) -> float:
    """Wait until everything is applied, or nothing has changed for `quiet_s` (bounded)."""
    assert contender.log is not None
    started = time.monotonic()
    last = contender.log.unfinished(window)
    changed = started
    while time.monotonic() - started < limit_s:
        now = contender.log.unfinished(window)
        if now == 0:
            break
        if now != last:
            last, changed = now, time.monotonic()
        elif time.monotonic() - changed >= quiet_s:
            break
        time.sleep(0.2)
    return time.monotonic() - started
