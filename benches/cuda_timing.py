"""Shared timing for the torch side-by-side scripts: CUDA events, warm-up, median of repetitions."""
import statistics

import torch


def timed(fn, reps, warmup=3):
    """Median milliseconds of `fn()` over `reps` CUDA-event-timed runs after `warmup` untimed ones."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)
