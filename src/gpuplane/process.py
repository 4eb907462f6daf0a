"""Process-wide tuning of gpuplane's long-running servers (``gpuplane up``, ``gpuplane api``).

``tune_gc`` makes the cyclic garbage collector run less often and skip what start-up created.
With CPython's default thresholds (a young collection every 700 net allocations, a full one
every 100 of those) a control-loop tick that admits 1,000 workloads, which builds and drops
hundreds of thousands of short-lived records, ran dozens of collections, several of them over
the whole heap: ~0.2 s of a 1.3 s tick (``benchmarks/loop_admit.py``). Nearly everything the
loop allocates is freed by reference counting; the collector is only needed for cycles, and a
young generation of 50,000 objects is still small (a few MB).
"""

from __future__ import annotations

import gc

#: (young, middle, old) collection thresholds of a gpuplane server process
GC_THRESHOLDS = (50_000, 20, 100)


def tune_gc() -> None:
    """Freeze what exists now (modules, settings, the app: never garbage) out of the
    collector's reach, then raise the thresholds. Call once, when start-up is done."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
