"""Timing shared by the kernel benchmarks.

A kernel of a few microseconds is timed inside a CUDA graph, so launch overhead does not hide it; the
graph calls the functions of a list in turn, at least MIN_CALLS times in all (replaying a graph has a
fixed cost of several microseconds, which a decoding step's graph of hundreds of kernels pays once,
so it is spread over as many calls here), and the list rotates over weight copies that together
exceed the L2 cache, so every call streams its weights from device memory.
"""

from __future__ import annotations

import math
import statistics

import torch


MIN_CALLS = 24


def graph_median(fns, reps: int) -> float:
    """Median seconds per call over `reps` replays of one CUDA graph that calls the fns in `fns` in turn,
    every one the same number of times and at least MIN_CALLS calls in all."""
    rounds = max(1, math.ceil(MIN_CALLS / len(fns)))
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for f in fns:
            f()  # warm-up (allocations, lazy init) outside the capture
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(rounds):
            for f in fns:
                f()
    g.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) * 1e-3 / (rounds * len(fns)))
    del g
    return statistics.median(times)


def copies_for(nbytes: int, rotate_bytes: int) -> int:
    """Number of copies of an `nbytes` operand that together span at least `rotate_bytes` (at least 2)."""
    return max(2, math.ceil(rotate_bytes / max(nbytes, 1)))
