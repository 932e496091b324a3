"""GPU timing the same way for every implementation.

Per repeat: flush L2 (write a buffer larger than it), then time one call
between two CUDA events; small problems replay a CUDA graph of that call, so
every implementation pays one graph launch and no Python or launch gaps.
Reported: the median over repeats, in microseconds.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class Timing:
    us_median: float
    us_p10: float
    us_p90: float
    repeats: int
    graph: bool


class Timer:
    def __init__(self, device=None, warmup: int = 10, repeats: int = 200):
        import torch
        self.torch = torch
        self.device = device or torch.device("cuda")
        props = torch.cuda.get_device_properties(self.device)
        self.l2_bytes = int(getattr(props, "L2_cache_size", 50 * 2**20))
        self.flush_buffer = torch.empty(max(4 * self.l2_bytes, 256 * 2**20) // 4, dtype=torch.int32,
                                        device=self.device)
        self.warmup = warmup
        self.repeats = repeats

    def flush(self) -> None:
        self.flush_buffer.fill_(0x5A5A5A5A)  # not zeros: any constant works, the point is evicting L2

    def _graph(self, fn: Callable[[], object]):
        torch = self.torch
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(3):
                fn()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return graph.replay

    def _prepare(self, fn: Callable[[], object], use_graph: bool) -> Callable[[], object]:
        for _ in range(self.warmup):
            fn()
        call = self._graph(fn) if use_graph else fn
        for _ in range(3):
            call()
        return call

    def _samples(self, call: Callable[[], object], count: int) -> list[float]:
        torch = self.torch
        pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(count)]
        for start, end in pairs:
            self.flush()
            start.record()
            call()
            end.record()
        torch.cuda.synchronize(self.device)
        return [start.elapsed_time(end) * 1000.0 for start, end in pairs]

    def time(self, fn: Callable[[], object], use_graph: bool) -> Timing:
        return self.time_many({"fn": fn}, use_graph)["fn"]

    def time_many(self, fns: dict[str, Callable[[], object]], use_graph: bool, rounds: int = 5) -> dict[str, Timing]:
        """Time several implementations interleaved (round-robin), so drift hits them alike."""
        calls = {name: self._prepare(fn, use_graph) for name, fn in fns.items()}
        samples: dict[str, list[float]] = {name: [] for name in fns}
        per_round = max(1, self.repeats // rounds)
        for _ in range(rounds):
            for name, call in calls.items():
                samples[name] += self._samples(call, per_round)
        out = {}
        for name, times in samples.items():
            times.sort()
            deciles = statistics.quantiles(times, n=10) if len(times) > 1 else [times[0]] * 9
            out[name] = Timing(statistics.median(times), deciles[0], deciles[-1], len(times), use_graph)
        return out

    def copy_bandwidth(self, nbytes: int = 2 * 2**30) -> float:
        """Device-to-device copy in TB/s, counting bytes read plus bytes written."""
        torch = self.torch
        src = torch.randn(nbytes // 4, device=self.device)
        dst = torch.empty_like(src)
        timing = self.time(lambda: dst.copy_(src), use_graph=False)
        return 2 * nbytes / (timing.us_median * 1e-6) / 1e12

    def copy_time(self, like) -> float:
        """Median microseconds to copy a tensor of `like`'s size (a per-size floor)."""
        src = like.clone()
        dst = self.torch.empty_like(src)
        return self.time(lambda: dst.copy_(src), use_graph=src.numel() * src.element_size() < 2**26).us_median
