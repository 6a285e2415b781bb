"""Sizes of a run. Quick is a CI smoke test (under two minutes); full reproduces the figures."""

from __future__ import annotations

from dataclasses import dataclass

POLL_INTERVAL_S = 1.0  # the latency target's condition: a 1-second poll interval
LEASE_S = 10.0  # short enough that the loss scenario sees expired leases come back
OPEN_LOOP_CLIENTS = 4  # enough clients to keep to an open-loop schedule (figures 2 and 8)
SETTINGS_ENV = {
    "POSTSAVE_POLL_INTERVAL": str(POLL_INTERVAL_S),
    "POSTSAVE_LEASE_SECONDS": str(LEASE_S),
}


@dataclass(frozen=True)
class Profile:
    name: str
    bars: int  # bars in every contender's database (figures 1 and 2)
    events: int  # figure 1: events per throughput run, the same stream for every contender
    embedded_events: int  # the embedded default is an order of magnitude slower
    repetitions: int  # figure 1 runs per contender; tables show the median
    loads: tuple[tuple[float, float], ...]  # figure 2: (offered events/s, seconds)
    latency_contenders: tuple[str, ...]  # figure 2 covers these
    embedded_max_load: float  # offered loads above this are skipped on the embedded default
    fault_contenders: tuple[str, ...]  # the kill and the outage (direct has no kill-free run)
    kill_rate: float  # both faults: open-loop events/s for kill_seconds
    kill_seconds: float
    dispatch_ids: int  # figure 3: ids through the relay's dispatcher
    confirm_messages: int  # figure 3: messages through Celery's confirm_publish
    flood: int  # figure 4
    flood_limit_s: float  # direct drains a flood one full pass per event: its wait is capped
    coalesce_bars: int  # figure 7: bars, and events arriving at once
    coalesce_events: int
    coalesce_cap_s: float  # one pass per event stops there, its drain projected from its rate
    heavy_bars: tuple[int, ...]  # figure 5
    heavy_repetitions: int
    scale_history: int  # figure 8: processed events in the full log
    scale_repetitions: int  # timings of each read, per database (medians)
    scale_rebuild_repetitions: int  # rebuild is the slow one
    scale_rate: float  # open-loop events/s offered while measuring the prune
    scale_window_s: float  # each window without a prune (before it and after it)
    scale_prune_cap_s: float  # a prune still running by then is stopped, and the load with it
    fsync_seconds: int  # figure 6: pg_test_fsync -s
    reference_seconds: float  # figure 6: each reference loop's duration
    producer_threads: int  # database clients committing events (PostgreSQL contenders)
    writepath_seconds: float  # figure 6b: each cell's loop
    writepath_rounds: int  # ... and how many times each cell runs, alternating with the others
    parts_bars: int  # figures 9a-9e: bars, made as create_bars makes them
    part_size: int  # 9a-9d: bars per part (postsave's default in the full profile)
    part_sizes: tuple[int, ...]  # 9e
    io_processes: tuple[int, ...]  # 9a: recalculation processes, the curve
    parts_events: int  # 9a, 9b, 9e: a burst committed at once (a message each lends a worker)
    parts_repetitions: int  # bursts per configuration (median)
    parts_rates: tuple[float, ...]  # 9c: offered events/s, each for parts_window_s
    parts_window_s: float  # 9c, 9d, 9e: each open-loop window
    parts_cap_s: float  # a burst or window not applied by then is projected or left
    creations: int  # 9d: bars created one at a time, idle and during passes


# fmt: off
QUICK = Profile(
    "quick", bars=100, events=400, embedded_events=150, repetitions=1,
    loads=((50.0, 1.5), (200.0, 1.5), (1000.0, 1.0)), latency_contenders=("direct", "postsave-pg"),
    embedded_max_load=0.0, fault_contenders=("direct",), kill_rate=200.0, kill_seconds=1.5,
    dispatch_ids=2000, confirm_messages=500, flood=2000, flood_limit_s=5.0, coalesce_bars=2000,
    coalesce_events=30, coalesce_cap_s=20.0, heavy_bars=(2000, 10_000), heavy_repetitions=1,
    scale_history=100_000,
    scale_repetitions=5, scale_rebuild_repetitions=3, scale_rate=200.0, scale_window_s=2.0,
    scale_prune_cap_s=120.0, fsync_seconds=1, reference_seconds=0.5, producer_threads=2,
    writepath_seconds=0.5, writepath_rounds=1, parts_bars=2_000, part_size=250,
    part_sizes=(100, 1000), io_processes=(1, 2), parts_events=4, parts_repetitions=1,
    parts_rates=(1.0, 10.0, 100.0), parts_window_s=3.0, parts_cap_s=15.0, creations=20,
)
FULL = Profile(
    "full", bars=100, events=2000, embedded_events=500, repetitions=3,
    loads=((50.0, 8.0), (200.0, 6.0), (1000.0, 4.0)),
    latency_contenders=("naive", "direct", "procrastinate", "postsave-pg", "postsave-embedded"),
    embedded_max_load=50.0, fault_contenders=("direct", "procrastinate", "postsave-pg"),
    kill_rate=300.0, kill_seconds=4.0, dispatch_ids=10_000, confirm_messages=2000, flood=50_000,
    flood_limit_s=60.0, coalesce_bars=50_000, coalesce_events=300, coalesce_cap_s=60.0,
    heavy_bars=(10_000, 100_000),
    heavy_repetitions=3, scale_history=10_000_000, scale_repetitions=30,
    scale_rebuild_repetitions=3, scale_rate=200.0, scale_window_s=20.0, scale_prune_cap_s=1800.0,
    fsync_seconds=2, reference_seconds=2.0, producer_threads=2, writepath_seconds=2.0,
    writepath_rounds=3, parts_bars=50_000, part_size=1000, part_sizes=(250, 1000, 5000),
    io_processes=(1, 2, 4, 8), parts_events=10, parts_repetitions=3,
    parts_rates=(1.0, 10.0, 100.0), parts_window_s=30.0, parts_cap_s=60.0, creations=200,
)
# fmt: on
