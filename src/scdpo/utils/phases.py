"""Wall seconds by phase of a long command, for its metrics.json: where a run's time went (set-up, the first
step with its recordings, the steps, validation, checkpoints, export) without a profiler, so that a benchmark
round reads them instead of guessing (issue 16: 33 s of the pipeline's 109 s training stage were not steps)."""

from __future__ import annotations

import contextlib
import time


class Phases:
    """``with phases("validation"): ...`` adds the block's wall seconds to that phase; :meth:`mark` gives a
    phase the seconds since the last mark (or the start) that no block took. ``seconds``: phase -> seconds, in
    first-seen order. On a GPU a phase ends where the host is, not the device: blocks that end by reading
    results (validation's images, a checkpoint's tensors) wait for their work, so their seconds are whole."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()
        self._inside = 0.0  # block seconds since the last mark, which the next mark leaves out

    def _add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            spent = time.perf_counter() - start
            self._add(name, spent)
            self._inside += spent

    def mark(self, name: str) -> None:
        """The seconds since the last mark, less the blocks' seconds in between, go to ``name``."""
        now = time.perf_counter()
        self._add(name, now - self._last - self._inside)
        self._last, self._inside = now, 0.0

    def rounded(self) -> dict[str, float]:
        return {k: round(v, 2) for k, v in self.seconds.items()}
