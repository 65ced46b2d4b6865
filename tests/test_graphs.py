"""CUDA-graphed no-grad denoiser calls (scdpo.models.graphs): padding, static buffers, keys, the
checks and their schedule, the fallback and autocast's cache, with an eager stand-in for the CUDA
recorder (no GPU here)."""

from __future__ import annotations

import pytest
import torch

from scdpo.models.graphs import GraphedPredict, padded_rows
from scdpo.models.t2i import Conditioning


class StubModel:
    """predict = a function of every input, row by row (so padding or a mixed-up row shows)."""

    device = torch.device("cpu")

    def __init__(self):
        self.unet = torch.nn.Linear(1, 1)  # its weight scales the output: in-place updates must show
        self.calls = 0

    def predict(self, x, t, cond):
        self.calls += 1
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1, 1, 1)
        return self.unet.weight[0, 0] * x + t + cond.context.mean((1, 2)).reshape(-1, 1, 1, 1)


def eager_recorder(log):
    def record(run):
        out = run()
        log.append(out.shape[0])
        return (lambda: out.copy_(run())), out
    return record


def inputs(n, seed=0, t=None):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, 2, 2, generator=g)
    ctx = torch.randn(n, 3, 5, generator=g)
    return x, (torch.arange(n) * 10.0 if t is None else t), Conditioning(ctx)


def test_padded_rows():
    assert [padded_rows(n) for n in (0, 1, 2, 3, 5, 8, 9, 33)] == [1, 1, 2, 4, 8, 8, 16, 64]


@torch.no_grad()
def test_replays_match_eager_with_padding_and_reuse_one_graph_per_padded_size():
    model, log = StubModel(), []
    graphed = GraphedPredict(model, record=eager_recorder(log))
    for n, seed in ((3, 0), (4, 1), (5, 2), (7, 3), (1, 4)):
        x, t, cond = inputs(n, seed)
        out = graphed(x, t, cond)
        assert out.shape == x.shape and torch.allclose(out, model.predict(x, t, cond))
    # 3 and 4 share the 4-row graph, 5 and 7 the 8-row one, 1 its own: three recordings
    assert log == [4, 8, 1] and len(graphed.graphs) == 3 and graphed.enabled and graphed.replays == 5
    x, t, cond = inputs(2, 5, t=torch.tensor(500.0))  # a 0-d timestep, as the sampler passes it
    assert torch.allclose(graphed(x, t, cond), model.predict(x, t, cond))


@torch.no_grad()
def test_outputs_are_copies_and_weight_updates_are_seen():
    model = StubModel()
    graphed = GraphedPredict(model, record=eager_recorder([]))
    x, t, cond = inputs(4, 0)
    first = graphed(x, t, cond)
    kept = first.clone()
    model.unet.weight.mul_(3.0)  # an optimizer's in-place step
    second = graphed(*inputs(4, 1))
    assert torch.equal(first, kept)  # the static output was not handed out
    x1, t1, c1 = inputs(4, 1)
    assert torch.allclose(second, model.predict(x1, t1, c1))


def test_a_replay_that_differs_turns_graphs_off_and_returns_eager():
    model = StubModel()

    def broken(run):
        out = run()
        return (lambda: out.copy_(run() + 1.0)), out

    graphed = GraphedPredict(model, record=broken)
    x, t, cond = inputs(3, 0)
    with torch.no_grad(), pytest.warns(UserWarning, match="CUDA graphs turned off"):
        out = graphed(x, t, cond)
    assert torch.allclose(out, model.predict(x, t, cond)) and not graphed.enabled and not graphed.graphs
    with torch.no_grad():
        assert torch.allclose(graphed(x, t, cond), model.predict(x, t, cond))  # eager from then on


def test_out_of_memory_passes_through_and_leaves_graphs_on():
    """Running out of memory is a shortage, not a broken graph: the error reaches the sampler (which halves its
    batch) and the graphs stay on, where a failure of the graphs themselves turns them off for the model."""
    model = StubModel()

    def short_of_memory(run):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    graphed = GraphedPredict(model, record=short_of_memory)
    with torch.no_grad(), pytest.raises(torch.cuda.OutOfMemoryError):
        graphed(*inputs(3, 0))
    assert graphed.enabled and not graphed.failed


def test_passthrough_on_cpu_and_with_gradients():
    model = StubModel()
    assert not GraphedPredict(model).enabled  # no recorder given and no CUDA device
    graphed = GraphedPredict(model, record=eager_recorder(log := []))
    x, t, cond = inputs(2, 0)
    out = graphed(x, t, cond)  # gradients on: never recorded
    assert out.requires_grad and log == []


def test_a_recorded_call_never_reads_a_cast_cached_before_it():
    """The thirty-first round's finding: accelerate wraps a prepared model's forward in its own
    autocast, cache on, so the step's autocast region caches the bf16 cast of a trainable fp32
    weight; a recording that reads that cache replays a stale cast (on the GPU: freed memory)."""
    import torch.nn.functional as F

    from scdpo.models.graphs import run_static

    torch.manual_seed(0)
    lin = torch.nn.Linear(4, 4)  # fp32 leaves that require grad: what autocast caches
    x = torch.randn(2, 4)

    wrapper = torch.autocast("cpu", dtype=torch.bfloat16)  # made once, at prepare(): its cache stays on

    def forward(x):  # as accelerate's prepare() wraps it
        with wrapper:
            return lin(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the training step's region
        forward(x)  # caches the weight's cast (the graphs' warm-up did this)
        with torch.no_grad():
            lin.weight.add_(1.0)  # the optimizer moves the weight in place
        stale = forward(x)
        recorded = run_static(forward, [x], torch.bfloat16)
        with torch.no_grad():
            lin.weight.add_(1.0)  # and again: nor may eager code after it find the recorded call's cast
        later = forward(x)
    want = F.linear(x.bfloat16(), (lin.weight - 1).bfloat16(), lin.bias.bfloat16())
    assert not torch.equal(stale, want)  # the mechanism: a cached cast is read stale within a region
    assert torch.equal(recorded, want)
    assert torch.equal(later, F.linear(x.bfloat16(), lin.weight.bfloat16(), lin.bias.bfloat16()))


def stale_recorder(run):
    """A graph that read the weights once, at its recording (the thirtieth round's stale cast)."""
    frozen = run().clone()
    out = frozen.clone()
    return (lambda: out.copy_(frozen)), out


@torch.no_grad()
def test_a_stale_replay_of_trainable_weights_is_caught_once_they_move():
    model = StubModel()
    graphed = GraphedPredict(model, record=stale_recorder, params=[model.unet.weight])
    x, t, cond = inputs(4, 0)
    assert torch.allclose(graphed(x, t, cond), model.predict(x, t, cond))  # agrees: nothing moved yet
    graphed(x, t, cond)  # checked again: no move yet
    model.unet.weight.mul_(3.0)
    with pytest.warns(UserWarning, match="CUDA graphs turned off"):
        out = graphed(x, t, cond)
    assert torch.allclose(out, model.predict(x, t, cond)) and not graphed.enabled
    # without params (the reference's frozen weights) only the first replay is checked
    frozen = GraphedPredict(model, record=stale_recorder)
    frozen(x, t, cond)
    model.unet.weight.mul_(3.0)
    assert not torch.allclose(frozen(x, t, cond), model.predict(x, t, cond)) and frozen.enabled


def test_the_check_schedule_checks_until_the_weights_moved_then_every_nth():
    from scdpo.models.graphs import CheckSchedule

    w = torch.zeros(2)
    schedule = CheckSchedule([w], every=3)
    due = [schedule.due() for _ in range(3)]  # the weights have not moved: every replay
    w.add_(1.0)
    due += [schedule.due() for _ in range(7)]  # one check after the move, then replays 6 and 9
    assert due == [True, True, True, True, False, True, False, False, True, False]
    alone = CheckSchedule([], every=3)
    assert [alone.due() for _ in range(4)] == [True, False, False, False]


def test_the_check_schedule_sees_a_move_that_leaves_the_version_counter_alone():
    """Fused AdamW (the trainer's optimizer on CUDA, and on the CPU here) updates the weights in place
    without bumping their version counters; the thirty-second round's schedule, which waited on the
    counters, then checked every replay of every run."""
    from scdpo.models.graphs import CheckSchedule

    w = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.AdamW([w], lr=0.1, fused=True)
    schedule = CheckSchedule([w], every=4)
    assert schedule.due() and schedule.due()  # not moved yet
    version = w._version
    w.grad = torch.ones(3)
    opt.step()
    assert w._version == version  # the counter stays: what the schedule must not rely on
    assert schedule.due()  # the check after the move, the last one before every 4th
    assert [schedule.due() for _ in range(5)] == [True, False, False, False, True]
