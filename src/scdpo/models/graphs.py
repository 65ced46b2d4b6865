"""CUDA graphs for the denoiser's no-grad calls inside a loop of fixed shapes (issue 16).

The EmojiWorld UNet (21M parameters, 16x16 latents) is launch-bound on a GPU: one call is a few
hundred small kernels, each launched from Python, and the GPU waits on the launches. The safe
anchor's policy trajectory makes up to ``anchor_steps`` such calls per training step, about two
thirds of a step's UNet calls (BENCHMARKS.md, "Safe anchor: what it costs a training step"). A CUDA
graph records one call's kernels once and replays them with one launch (PyTorch, "CUDA Graphs":
``torch.cuda.graph``): the same kernels on the same memory, so the output is the eager output.

:class:`GraphedPredict` wraps ``model.predict(x, t, cond)`` for calls without gradients:

* one graph per key (the denoiser object, the input shapes and dtypes, the autocast state); rows
  are padded to the next power of two, so a batch whose size varies from step to step (the anchor's
  harmful rows) reuses a handful of graphs instead of one per size;
* inputs are copied into the graph's static buffers, the graph replays, the output is cloned
  (the next replay overwrites it); weights are read where they live, so the optimizer's in-place
  updates of a LoRA are seen by every replay;
* autocast's weight-cast cache is off inside the recorded call and emptied before and after it
  (:func:`run_static`: a cached cast would be a tensor the graph does not own, and a forward
  wrapped by accelerate turns the cache back on), so the bf16 copies of the weights are made
  inside the graph, from the current weights, at every replay;
* the first replay of every graph is checked against an eager call on the same inputs, and, for a
  call that reads trainable weights (``params``), every replay until one check has run after they
  moved, then every ``check_every``-th (:class:`CheckSchedule`; 50 by default); a checked call goes on with eager's
  values; a mismatch, or any error while recording, turns graphs off for the rest of the run with
  one warning, and the eager result is used: a graph can cost speed, never correctness.

Off the GPU, with gradients enabled, or when ``enabled`` is False, it is ``model.predict``.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch

from scdpo.models.rows import pad_to, padded_rows

__all__ = ["CheckSchedule", "GraphCache", "GraphedPredict", "cuda_recorder", "eager_call", "graph_inputs", "padded_rows", "run_static",
           "warm_up"]


def warm_up(run: Callable, times: int = 2) -> None:
    """``run()`` a few times on a side stream before recording it, as ``torch.cuda.graph`` asks
    (lazy initialisations, cuBLAS and cuDNN workspaces, happen outside the graph)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(times):
            run()
    torch.cuda.current_stream().wait_stream(side)


def cuda_recorder(pool, stream, keep: Callable) -> Callable:
    """``record(run) -> (replay, out)`` with a CUDA graph in the memory ``pool``, recorded on
    ``stream``: ``run`` is warmed up, then recorded; ``replay()`` reruns its kernels, refilling
    ``out``. Every graph is handed to ``keep`` as soon as it exists, so none is destroyed while the
    run lasts: by a reading of torch 2.13's sources (not tested here), destroying a graph clears the
    cuBLAS workspaces of its capture stream, which the other graphs recorded on it still point at."""
    def record(run: Callable[[], torch.Tensor]):
        warm_up(run)
        graph = torch.cuda.CUDAGraph()
        keep(graph)
        # thread_local, not torch's default "global": another thread of this process (`scdpo eval`'s worker,
        # scoring a suite while the next samples) may allocate or synchronise on the GPU while this thread
        # records, which global mode turns into an error of the capture; thread_local still forbids those
        # unsafe calls in the recording thread, the only one whose work goes into the graph
        with torch.cuda.graph(graph, pool=pool, stream=stream, capture_error_mode="thread_local"):
            out = run()
        return graph.replay, out
    return record


def graph_inputs(model, x: torch.Tensor, t, cond, pad: bool = True) -> tuple[list, torch.dtype | None, tuple]:
    """A denoiser call's graph inputs ``[x, t, context, pooled, time_ids]`` padded to
    :func:`padded_rows` (``pad``; else as they are), the autocast dtype it runs under (None: off),
    and the key of its graph (the denoiser object, the autocast state, each input's shape and dtype)."""
    rows = padded_rows(x.shape[0]) if pad else x.shape[0]
    t = torch.as_tensor(t, device=x.device)
    args = [pad_to(x, rows), pad_to(t, rows), pad_to(cond.context, rows), pad_to(cond.pooled, rows),
            pad_to(cond.add_time_ids, rows)]
    autocast = torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None
    key = (id(model.unet), autocast, tuple(None if a is None else (tuple(a.shape), a.dtype) for a in args))
    return args, autocast, key


def eager_call(model) -> Callable:
    """``fn(x, t, context, pooled, time_ids)``: ``model.predict`` on a call's graph inputs."""
    def fn(x, t, context, pooled, time_ids) -> torch.Tensor:
        from scdpo.models.conditioning import Conditioning

        return model.predict(x, t, Conditioning(context, pooled, time_ids))
    return fn


def run_static(fn: Callable, static: list, autocast: torch.dtype | None) -> torch.Tensor:
    """``fn(*static)`` as a graph records it: under ``autocast`` (None: off) with autocast's weight-cast
    cache off and emptied before and after.

    A cached cast is a tensor the graph does not own: a recording that finds the bf16 copy of a
    trainable fp32 weight in the cache records no cast, and its replays read that copy, stale once
    the optimizer moves the weight and freed memory once the cache is cleared. Turning the cache off
    here is not enough: a forward that enters autocast itself turns it back on (``accelerate``'s
    ``prepare()`` wraps a model's forward in ``torch.autocast`` with the cache on), and the cache of
    the step's autocast region then held the warm-up's casts. The thirtieth and thirty-first rounds'
    backward checks failed so (the LoRA's A gradients replayed from B's cast at the recording, zero),
    and the anchored runs' illegal memory access may be another face of it, one candidate until a
    GPU run says (BENCHMARKS.md, "Thirtieth and thirty-first rounds")."""
    torch.clear_autocast_cache()
    try:
        if autocast is None:
            return fn(*static)
        with torch.autocast("cuda", dtype=autocast, cache_enabled=False):
            return fn(*static)
    finally:
        torch.clear_autocast_cache()  # nor may eager code after it find a cast that lives in a graph's pool


class CheckSchedule:
    """Which replays of one graph are checked against eager: every one until a check has run after
    the ``params`` changed (a LoRA starts at B = 0, where a graph that reads a stale copy of the
    weights still agrees with eager), then every ``every``-th. Without params, the first replay only.

    A move is seen in the parameters' values (each tensor's norm, read once per check while
    checking), not in their version counters: fused AdamW, the trainer's optimizer on CUDA, updates
    the weights in place without bumping them, and the thirty-second round's graphed runs, whose
    schedule waited on the counters, checked every replay of all 1,000 steps (BENCHMARKS.md). Weights
    that do not move (a learning rate of 0 in a warm-up) keep the checks going, which is only slower."""

    def __init__(self, params: list, every: int):
        self.params, self.every = params, every
        self.first = None  # the parameters' fingerprint at the first check
        self.checking = bool(params)  # until a check ran on other parameter values than the first one
        self.count = 0  # replays so far

    def fingerprint(self) -> torch.Tensor:
        """Each parameter's norm (fp32), stacked: any optimizer step changes them."""
        return torch.stack([torch.linalg.vector_norm(p.detach(), dtype=torch.float32) for p in self.params])

    def due(self) -> bool:
        """Whether this replay (counted now) is checked."""
        self.count += 1
        if self.count == 1:
            self.first = self.fingerprint() if self.params else None
            return True
        if self.checking:
            if not torch.equal(self.fingerprint(), self.first):
                self.checking, self.first = False, None  # this check is the last: the parameters have moved
            return True
        return bool(self.params) and self.count % self.every == 0


class _Graph:
    """One recorded call: its static inputs, the replay, the static output and its checks."""

    def __init__(self, fn: Callable, args: list, autocast: torch.dtype | None, record: Callable,
                 schedule: CheckSchedule):
        self.static = [None if a is None else a.clone() for a in args]
        self.fn, self.autocast, self.schedule = fn, autocast, schedule
        self.replay, self.out = record(self.run)

    def run(self) -> torch.Tensor:
        """The call, eagerly, on the static inputs (what is recorded, and the check's reference)."""
        return run_static(self.fn, self.static, self.autocast)

    def __call__(self, args: list) -> torch.Tensor:
        for buf, a in zip(self.static, args):
            if buf is not None:
                buf.copy_(a)
        self.replay()
        return self.out.clone()


class GraphCache:
    """Graphs by key for one model, each recorded on first use with ``recorder(pool, stream, keep)``
    (made once, on a CUDA model, with a memory pool and a capture stream of this cache's own, unless
    a ``record`` is given: tests pass eager stand-ins), and switched off for the rest of the run,
    with one warning, after any failure. Switched-off graphs are not destroyed (``kept``; see
    :func:`cuda_recorder`)."""

    def __init__(self, model, enabled: bool, record: Callable | None, recorder: Callable):
        self.model, self.record, self.recorder = model, record, recorder
        self.enabled = enabled and (record is not None or model.device.type == "cuda")
        self.graphs: dict = {}
        self.kept: list = []
        self.replays = 0
        self.failed = False  # turned off by a failure (not merely never on, as off the GPU)

    def graph(self, key: tuple, make: Callable):
        """The graph of ``key``, recorded now with ``make(record)`` if there is none yet."""
        graph = self.graphs.get(key)
        if graph is None:
            if self.record is None:
                self.record = self.recorder(torch.cuda.graph_pool_handle(), torch.cuda.Stream(), self.kept.append)
            graph = self.graphs[key] = make(self.record)
        return graph

    def off(self) -> None:
        """Eager calls from now on; the graphs are kept, not destroyed."""
        self.kept.extend(self.graphs.values())
        self.enabled, self.graphs = False, {}

    def turn_off(self, what: str) -> None:
        warnings.warn(f"CUDA graphs {what}", stacklevel=3)
        self.failed = True
        self.off()


class GraphedPredict(GraphCache):
    """``model.predict`` for no-grad calls, replayed from CUDA graphs (see the module docstring).

    ``record``: how a call is recorded (default :func:`cuda_recorder`, and only on a CUDA model;
    tests pass an eager stand-in). ``rtol`` and ``atol``: the checks' tolerance. ``params``: the
    trainable weights the call reads (the policy's LoRA for the anchor trajectory), whose moves
    schedule more checks (:class:`CheckSchedule`, every ``check_every``-th replay once they moved:
    a no-grad call has no backward check, and a stale read of weights one step from a LoRA's start
    is within ``atol``, so the periodic checks are what catch it); none: the first replay of each
    graph only (the reference's frozen weights). ``pad``: rows padded to powers of two, so batch
    sizes that vary from call to call share graphs (False: one graph per size, for a caller whose
    sizes are fixed, as a sampler's are within a call; padding would be extra work)."""

    def __init__(self, model, enabled: bool = True, record: Callable | None = None,
                 rtol: float = 1e-3, atol: float = 1e-3, params=(), check_every: int = 50, pad: bool = True):
        super().__init__(model, enabled, record, cuda_recorder)
        self.rtol, self.atol, self.params, self.check_every, self.pad = rtol, atol, list(params), check_every, pad

    def __call__(self, x: torch.Tensor, t, cond) -> torch.Tensor:
        if not self.enabled or torch.is_grad_enabled():
            return self.model.predict(x, t, cond)
        n = x.shape[0]
        args, autocast, key = graph_inputs(self.model, x, t, cond, self.pad)
        try:
            graph = self.graph(key, lambda record: _Graph(eager_call(self.model), args, autocast, record,
                                                          CheckSchedule(self.params, self.check_every)))
            out = graph(args)[:n]
            if graph.schedule.due():  # against eager on the same inputs
                eager = graph.run()[:n]
                if not torch.allclose(out.float(), eager.float(), rtol=self.rtol, atol=self.atol):
                    err = float((out.float() - eager.float()).abs().max())
                    raise RuntimeError(f"a replay differs from the eager call by up to {err:.3g}")
                out = eager  # computed for the check: the checked call goes on with eager's values
            self.replays += 1
            return out
        except torch.cuda.OutOfMemoryError:  # a shortage, not a failure of the graphs: the sampler halves its batch
            raise
        except Exception as e:  # noqa: BLE001 - any failure falls back to eager, once, loudly
            self.turn_off(f"turned off for this run ({type(e).__name__}: {e}); the denoiser runs eagerly")
            return self.model.predict(x, t, cond)
