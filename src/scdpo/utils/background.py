"""One worker thread that finishes one unit of work while the next one samples: `scdpo eval`'s overlap
(a suite scored) and `scdpo data build`'s (a chunk's pairs PNG-encoded and written).

Sampling keeps the accelerator (or the CPU's intra-op threads) busy; what follows it for a suite or a
chunk is mostly CPU work that does not need the next one's images: PNG encoding, parquet writes,
EmojiWorld's reference renders, the Frechet distance's linear algebra, the grid. :class:`Background`
runs such jobs on one thread, in the order they were given, so their results are exactly what the same
calls give one after another (each job reads only its own inputs). ``enabled=False`` runs every job at
once in the caller's thread: the same code path, one thing at a time.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable


class Background:
    """Jobs on one worker thread, in submission order.

    Args:
        enabled: False runs each job inline at :meth:`submit` (no thread).
        ahead: how many submitted jobs may wait unfinished before :meth:`submit` blocks until the
            oldest ends; it bounds the memory of queued images (a real model's 512-px suite holds
            gigabytes), and 0 waits for every earlier job.
    """

    def __init__(self, enabled: bool = True, ahead: int = 1):
        if ahead < 0:
            raise ValueError(f"ahead must be >= 0, got {ahead}")
        self.ahead, self.pending = ahead, []
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="scdpo-worker") if enabled else None

    def submit(self, fn: Callable[..., Any], *args, limit: bool = True, **kwargs) -> Future:
        """Run ``fn(*args, **kwargs)`` after every earlier job; ``limit=False`` skips the ``ahead``
        wait (jobs queued up front). A failed job's error is raised by a later submit, so the caller
        stops sampling instead of finishing work whose scores will never be written; the caller
        reads every future's result in the end in any case."""
        if self.pool is None:
            done: Future = Future()
            done.set_result(fn(*args, **kwargs))
            return done
        finished = [f for f in self.pending if f.done()]
        for f in finished:
            f.result()  # a failed job's error, raised here
        self.pending = [f for f in self.pending if f not in finished]
        if limit:
            while len(self.pending) > self.ahead:
                self.pending.pop(0).result()  # re-raises that job's error here
        future = self.pool.submit(fn, *args, **kwargs)
        if limit:
            self.pending.append(future)
        return future

    def __enter__(self) -> "Background":
        return self

    def __exit__(self, exc_type, *_) -> None:
        if self.pool is not None:
            # on an error in the caller nothing queued is worth finishing; otherwise wait for all
            self.pool.shutdown(wait=True, cancel_futures=exc_type is not None)
