"""CUDA graphs for the policy's training call: its forward and its backward, replayed (issue 16).

An EmojiWorld training step is launch-bound on a GPU: the policy's forward, its backward and the
reference's forward are 5,769 aten calls, 97% of a step's outside the optimizer (counted on the CPU
at 32 pairs; BENCHMARKS.md, "CUDA graphs for the training step"), each made from Python through
diffusers and peft, for a UNet too small to keep the GPU busy meanwhile. :class:`GraphedTrainPredict`
records the policy's ``model.predict(x, t, cond)`` with gradients once per input signature, in two
CUDA graphs, the way ``torch.cuda.make_graphed_callables`` does (PyTorch, "CUDA Graphs",
"Partial-network capture"):

* the forward, recorded with autograd on, so the backward's graph can be recorded from its output:
  ``torch.autograd.grad(out, params, grad_out)`` into static gradient buffers;
* replayed inside an autograd Function whose inputs are the call's tensors and the trainable
  parameters: autograd then routes the replayed gradients to ``param.grad`` as an eager backward
  would (accumulated over micro-batches, the buffers cloned on the way out so nothing aliases them);
* rows are padded to the next power of two (:func:`scdpo.models.rows.padded_rows`), so the safe
  anchor's varying rows meet a handful of graphs; a padded row's output is dropped, so its
  gradient is zero and the parameters' gradients are the unpadded call's;
* autocast's weight-cast cache is off inside the recording and emptied before and after it (a
  cached cast would be a tensor the graph does not own; a forward wrapped by accelerate turns the
  cache back on: :func:`scdpo.models.graphs.run_static`), so the bf16 casts are made inside the
  graph from the current weights and the optimizer's in-place updates are read at every replay;
* every graph's forward and backward replays are checked against the eager call on the same inputs
  (under the same attention kernel and grad mode) until one check has run after the parameters
  changed, then every ``check_every``-th replay: a LoRA starts with B = 0, where a graph that read
  stale adapter weights, or a broken gradient path to A, would still agree with eager. A replay
  whose parameters moved in memory since the recording is refused. Outputs and gradients are compared by norm,
  ``||replay - eager|| <= rtol ||eager|| + atol``, per tensor (eager's gradients are the same bits
  run to run on an H100, and a fresh recording's replay gives those bits: thirty-first round). A
  mismatch or any error turns graphs
  off for the rest of the run with one warning and returns the eager result: a graph can cost
  speed, never correctness. A checked call returns eager's output and gradients even when the
  replay passes (it computed them for the check; where eager's backward cannot run, e.g. out of
  memory, the replay's gradients, with a warning), so what a check cannot resolve (a stale read
  smaller than ``rtol``) is never used on the steps it checks (the schedule:
  :class:`scdpo.models.graphs.CheckSchedule`);
* a forward replayed (of any signature: they share one memory pool) before the previous replay's
  backward ran would overwrite what that backward reads: that backward then raises instead of
  returning wrong gradients;
* graphs are never destroyed while the run lasts, and each cache records on a stream of its own
  (:class:`scdpo.models.graphs.GraphCache`).

Off the GPU, without gradients, or when ``enabled`` is False, it is ``model.predict``.
"""

from __future__ import annotations

import warnings
from typing import Callable

import torch

from scdpo.models.graphs import CheckSchedule, GraphCache, eager_call, graph_inputs, run_static, warm_up

__all__ = ["GraphedTrainPredict", "cuda_train_recorder"]


def cuda_train_recorder(pool, stream, keep: Callable) -> Callable:
    """``record(run, params) -> (forward, backward, out, grad_out, grads)`` with two CUDA graphs in
    the memory ``pool``, recorded on ``stream`` and handed to ``keep`` (see
    :func:`scdpo.models.graphs.cuda_recorder`): ``run()`` (a forward with gradients on static inputs)
    is warmed up with its backward, then its forward is recorded, then the gradient of its output
    with respect to ``params`` given ``grad_out``; ``forward()`` / ``backward()`` replay them into
    ``out`` / ``grads``."""
    def record(run: Callable[[], torch.Tensor], params: list[torch.Tensor]):
        def step():
            out = run()
            torch.autograd.grad(out, params, torch.ones_like(out), allow_unused=True)
        warm_up(step, times=3)
        forward, backward = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        keep(forward), keep(backward)
        with torch.cuda.graph(forward, pool=pool, stream=stream):
            out = run()
        grad_out = torch.empty_like(out)
        with torch.cuda.graph(backward, pool=pool, stream=stream):
            grads = torch.autograd.grad(out, params, grad_out, allow_unused=True)
        return forward.replay, backward.replay, out.detach(), grad_out, grads
    return record


def _distance(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    """``||a - b||`` (None: zero; as a float)."""
    if a is None and b is None:
        return 0.0
    if a is None or b is None:
        return float((a if b is None else b).float().norm())
    return float((a.float() - b.float()).norm())


def _close(a: torch.Tensor | None, b: torch.Tensor | None, rtol: float, atol: float) -> bool:
    """Whether ``||a - b|| <= rtol ||b|| + atol`` (None only matches None)."""
    return not _mismatches([a], [b], rtol, atol)


def _mismatches(a: list, b: list, rtol: float, atol: float) -> list[int]:
    """The indices ``i`` where not ``||a_i - b_i|| <= rtol ||b_i|| + atol`` (None only matches None),
    with one host read for all of them: a LoRA's check compares hundreds of gradient tensors, and a
    read per tensor stalls a GPU that other runs share."""
    if len(a) != len(b):
        raise ValueError(f"compared {len(a)} tensors with {len(b)}: the two gradient lists must match")
    bad = [i for i, (x, y) in enumerate(zip(a, b)) if (x is None) != (y is None)]
    both = [(i, x, y) for i, (x, y) in enumerate(zip(a, b)) if x is not None and y is not None]
    if both:
        diff = torch.stack([(x.float() - y.float()).norm() for _, x, y in both])
        ref = torch.stack([y.float().norm() for _, _, y in both])
        ok = (diff <= rtol * ref + atol).tolist()
        bad += [i for (i, _, _), good in zip(both, ok) if not good]
    return sorted(bad)


class _TrainGraph:
    """One recorded signature: static inputs, the two replays, and the checks against eager."""

    def __init__(self, owner: GraphedTrainPredict, fn: Callable, args: list, autocast: torch.dtype | None,
                 record: Callable):
        self.owner, self.fn, self.autocast = owner, fn, autocast
        self.static = [None if a is None else a.detach().clone() for a in args]
        self.inputs = [a for a in self.static if a is not None]  # what a replay copies into
        self.forward, self.backward, self.out, self.grad_out, self.grads = record(self.run, owner.params)
        self.pointers = [p.data_ptr() for p in owner.params]  # where the graphs read the weights
        self.schedule = CheckSchedule(owner.params, owner.check_every)
        self.eager_out = None  # the eager forward of a checked replay, kept for its backward's check
        self.failed = False

    def run(self) -> torch.Tensor:
        """The call, eagerly, on the static inputs (what is recorded, and the checks' reference)."""
        return run_static(self.fn, self.static, self.autocast)

    def replay_forward(self, args: list) -> torch.Tensor:
        """``args``: the call's tensors, the None ones (no pooled text, no time ids) left out."""
        if [p.data_ptr() for p in self.owner.params] != self.pointers:
            raise RuntimeError("the trainable parameters moved in memory since the graph was recorded (e.g. "
                               "reassigned by a load); the graph would read their old storage")
        for buf, a in zip(self.inputs, args):
            buf.copy_(a)
        self.forward()
        self.owner.clock += 1
        out = self.out.clone()
        self.eager_out = None
        if self.schedule.due():
            with torch.enable_grad():  # as recorded: the same kernels, and a graph for the backward's check
                eager = self.run()
            if not _close(out, eager, self.owner.rtol, self.owner.atol):
                err = float((out.float() - eager.float()).abs().max())
                raise RuntimeError(f"the forward replay differs from the eager call by up to {err:.3g}")
            self.eager_out = eager
            # a checked call goes on with eager's values, which it has anyway: a stale read small enough to
            # pass this check (the thirtieth round's, one step after B = 0) is then never used, only seen
            return self.eager_out.detach().clone()
        return out

    def replay_backward(self, grad: torch.Tensor, clock: int) -> tuple[torch.Tensor | None, ...]:
        if clock != self.owner.clock:
            raise RuntimeError("a graphed policy call was replayed again before the backward of the one before "
                               "it; its gradients would be the later call's (run each backward before the next "
                               "forward, or turn cuda_graphs off)")
        self.grad_out.copy_(grad)
        self.backward()
        # copies out of the graph's static buffers, in a few multi-tensor kernels rather than one clone a tensor
        # (x * 1 is x exactly, -0, inf and NaN included): the trainings in one process have 1,056 of them a step
        present = [g for g in self.grads if g is not None]
        copies = iter(torch._foreach_mul(present, 1.0) if present else ())
        grads = tuple(None if g is None else next(copies) for g in self.grads)
        eager_out, self.eager_out = self.eager_out, None
        if eager_out is None:
            return grads
        params, rtol, atol = self.owner.params, self.owner.rtol, self.owner.atol
        try:
            eager = torch.autograd.grad(eager_out, params, grad, allow_unused=True)
        except Exception as e:  # noqa: BLE001 - e.g. out of memory for the check's second backward
            self.failed = True
            warnings.warn(f"CUDA graphs of the policy's training call turned off for this run (their backward "
                          f"could not be checked: {type(e).__name__}: {e}); this step uses the replay's "
                          "gradients, unchecked", stacklevel=2)
            return grads
        bad = _mismatches(grads, eager, rtol, atol)
        if bad:
            self.failed = True
            i = bad[0]
            warnings.warn(f"CUDA graphs of the policy's training call turned off for this run (a backward replay "
                          f"differs from the eager gradients: {len(bad)} of {len(grads)} tensors, the first by "
                          f"{_distance(grads[i], eager[i]):.3g} in norm against {_distance(eager[i], None):.3g}); "
                          "this step uses the eager ones", stacklevel=2)
        return eager  # the checked call's own gradients (its forward gave eager's output)


class _Replay(torch.autograd.Function):
    """The graphed forward as one autograd node over (inputs..., params...); its backward replays
    the backward graph. Inputs get no gradient (the latents, timesteps and text states are data)."""

    @staticmethod
    def forward(ctx, graph: _TrainGraph, n_args: int, *tensors):
        out = graph.replay_forward(list(tensors[:n_args]))
        ctx.graph, ctx.n_args, ctx.clock = graph, n_args, graph.owner.clock
        return out

    @staticmethod
    def backward(ctx, grad):
        grads = ctx.graph.replay_backward(grad.contiguous(), ctx.clock)
        return (None, None) + (None,) * ctx.n_args + tuple(grads)


class GraphedTrainPredict(GraphCache):
    """``model.predict`` for the policy's calls with gradients, replayed from CUDA graphs (see the
    module docstring). ``params``: the trainable parameters the gradients go to (the LoRA or the
    whole UNet). ``record``: how a signature is recorded (default :func:`cuda_train_recorder`, only
    on a CUDA model; tests pass an eager stand-in). ``rtol``, ``atol``: the checks' tolerance, on
    norms (bf16 kernels that reduce in another order still pass; a wrong graph does not);
    ``check_every``: after the first checks, every how many replays of a graph are checked again
    (each check is one more eager forward and backward, once in ``check_every`` replays); ``pad``:
    rows padded to powers of two (False where every call has the same rows: padding is extra work)."""

    def __init__(self, model, params, enabled: bool = True, record: Callable | None = None,
                 rtol: float = 1e-2, atol: float = 1e-6, check_every: int = 200, pad: bool = True):
        super().__init__(model, enabled, record, cuda_train_recorder)
        self.params, self.rtol, self.atol, self.check_every = list(params), rtol, atol, check_every
        self.pad = pad
        self.clock = 0  # forward replays so far, of every signature: a backward must follow the last one

    def __call__(self, x: torch.Tensor, t, cond) -> torch.Tensor:
        if any(g.failed for g in self.graphs.values()):  # a backward check failed and warned: eager from now on
            self.failed = True
            self.off()
        if not self.enabled or not torch.is_grad_enabled():
            return self.model.predict(x, t, cond)
        n = x.shape[0]
        args, autocast, key = graph_inputs(self.model, x, t, cond, self.pad)
        try:
            graph = self.graph(key, lambda record: _TrainGraph(self, eager_call(self.model), args, autocast, record))
            present = [a for a in args if a is not None]
            out = _Replay.apply(graph, len(present), *present, *self.params)
        except Exception as e:  # noqa: BLE001 - any failure falls back to eager, once, loudly
            self.turn_off(f"of the policy's training call turned off for this run ({type(e).__name__}: {e}); "
                          "the policy runs eagerly")
            return self.model.predict(x, t, cond)
        self.replays += 1
        return out[:n]
