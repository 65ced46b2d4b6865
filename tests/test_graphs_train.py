"""The policy's training call replayed from graphs (scdpo.models.graphs_train), with an eager
stand-in for the CUDA recorder (no GPU here): gradients routed to the parameters as an eager
backward routes them, padding, accumulation, in-place updates, the forward-before-backward guard,
the first-use checks and the fallbacks; and the trainer's step with it gives the eager step."""

from __future__ import annotations

import pytest
import torch

from scdpo.models.graphs_train import GraphedTrainPredict
from tests.test_graphs import inputs


class StubModel:
    """predict = a trainable function of every input, row by row (a mixed-up or padded row shows)."""

    device = torch.device("cpu")

    def __init__(self):
        torch.manual_seed(0)
        self.unet = torch.nn.Linear(5, 5)
        self.scale = torch.nn.Parameter(torch.tensor(1.5))
        self.calls = 0

    @property
    def params(self):
        return [self.unet.weight, self.unet.bias, self.scale]

    def predict(self, x, t, cond):
        self.calls += 1
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1, 1, 1)
        text = self.unet(cond.context).tanh().mean((1, 2)).reshape(-1, 1, 1, 1)
        return self.scale * x * text + t / 100


def eager_train_recorder(log, corrupt_grads: bool = False, nudge: float = 0.0):
    """record(run, params) as cuda_train_recorder returns it, computed eagerly: a forward replay
    reruns ``run`` on the static inputs (keeping its graph), a backward replay writes its gradients
    into the static buffers."""
    def record(run, params):
        out = run().detach().clone()
        log.append(out.shape[0])
        grad_out, grads, state = torch.empty_like(out), [torch.zeros_like(p) for p in params], {}

        def forward():
            with torch.enable_grad():
                state["out"] = run()
            out.copy_(state["out"].detach() * (1 + nudge))  # nudge: a stale read too small for the check

        def backward():
            for buf, g in zip(grads, torch.autograd.grad(state["out"], params, grad_out)):
                buf.copy_(g * (2 if corrupt_grads else 1))
        return forward, backward, out, grad_out, grads
    return record


def grads_of(model, fn, calls):
    for p in model.params:
        p.grad = None
    for x, t, cond, w in calls:
        (fn(x, t, cond) * w).sum().backward()
    return [p.grad.clone() for p in model.params]


def test_replayed_gradients_are_the_eager_ones_padded_and_accumulated():
    model, log = StubModel(), []
    graphed = GraphedTrainPredict(model, model.params, record=eager_train_recorder(log))
    calls = []
    for seed in range(3):  # three micro-batches of 3 rows (padded to 4), accumulated
        x, t, cond = inputs(3, seed)
        calls.append((x, t, cond, torch.randn(3, 4, 2, 2, generator=torch.Generator().manual_seed(seed))))
    eager = grads_of(model, model.predict, calls)
    replayed = grads_of(model, graphed, calls)
    assert log == [4] and graphed.replays == 3 and graphed.enabled
    for e, r in zip(eager, replayed):
        assert torch.allclose(e, r, atol=1e-6)
    x, t, cond, _ = calls[0]
    assert torch.allclose(graphed(x, t, cond), model.predict(x, t, cond))


def test_an_in_place_update_shows_in_the_next_replay_and_no_grad_calls_stay_eager():
    model = StubModel()
    graphed = GraphedTrainPredict(model, model.params, record=eager_train_recorder(log := []))
    x, t, cond = inputs(4)
    graphed(x, t, cond).sum().backward()
    with torch.no_grad():
        model.scale.mul_(3.0)
        assert torch.allclose(graphed(x, t, cond), model.predict(x, t, cond))  # eager: no replay
    assert torch.allclose(graphed(x, t, cond), model.predict(x, t, cond))
    assert graphed.replays == 2 and log == [4]


@pytest.mark.parametrize("rows", [4, 5])  # the same graph, or another one of the same memory pool
def test_a_second_forward_before_the_first_backward_refuses_that_backward(rows):
    model = StubModel()
    graphed = GraphedTrainPredict(model, model.params, record=eager_train_recorder([]))
    first = graphed(*inputs(4))
    graphed(*inputs(rows, seed=1)).sum().backward()
    with pytest.raises(RuntimeError, match="replayed again before the backward"):
        first.sum().backward()


def predict_calls(model, graphed, steps: int, update_after) -> list[int]:
    """model.predict calls (recordings, eager replays of the stand-in, checks) of each of ``steps``
    training calls, the parameters updated in place after the steps in ``update_after``."""
    x, t, cond = inputs(4)
    calls = []
    for step in range(steps):
        before = model.calls
        graphed(x, t, cond).sum().backward()
        calls.append(model.calls - before)
        if step in update_after:
            with torch.no_grad():
                model.scale.mul_(1.01)  # the optimizer's in-place update
    return calls


def test_replays_are_checked_against_eager_until_the_parameters_have_changed():
    """A LoRA starts with B = 0, where a graph reading stale adapter weights still agrees with eager:
    the checks go on until one runs on parameters other than the first check's."""
    model = StubModel()
    graphed = GraphedTrainPredict(model, model.params, record=eager_train_recorder([]))
    # recording + replay + check; replay + check (same parameters); replay + the last check; replay alone
    assert predict_calls(model, graphed, 4, update_after={1}) == [3, 2, 2, 1]


def test_mismatches_names_each_tensor_off_by_more_than_the_tolerance():
    from scdpo.models.graphs_train import _mismatches

    b = [torch.ones(3), None, torch.zeros(2), torch.ones(2), torch.ones(1)]
    a = [torch.ones(3) * 1.001, None, torch.zeros(2), torch.ones(2) * 2, None]
    # 0: within 1e-2 of its norm; 1: both None; 2: both zero; 3: off by its whole norm; 4: None against a tensor
    assert _mismatches(a, b, rtol=1e-2, atol=1e-6) == [3, 4]
    assert _mismatches([], [], 1e-2, 1e-6) == []
    with pytest.raises(ValueError, match="must match"):
        _mismatches(a, b[:2], 1e-2, 1e-6)


def test_the_checks_stop_after_a_fused_adamw_step():
    """Fused AdamW, the trainer's optimizer on CUDA, moves the weights without bumping their version
    counters: the thirty-second round's runs, whose checks waited on the counters, checked all 1,000
    steps (an eager forward and backward each) and ran slower than eager."""
    model = StubModel()
    graphed = GraphedTrainPredict(model, model.params, record=eager_train_recorder([]))
    opt = torch.optim.AdamW(model.params, lr=0.1, fused=True)
    x, t, cond = inputs(4)
    calls = []
    for _ in range(4):
        before = model.calls
        graphed(x, t, cond).sum().backward()
        opt.step(), opt.zero_grad()
        calls.append(model.calls - before)
    assert calls == [3, 2, 1, 1]  # recording + replay + check; replay + the check after the move; replays


def test_later_replays_are_checked_every_so_often_and_moved_parameters_are_refused():
    model = StubModel()
    graphed = GraphedTrainPredict(model, model.params, record=eager_train_recorder([]), check_every=3)
    # checks at replays 1-2 (until the weights moved), then 3, 6, ...
    assert predict_calls(model, graphed, 7, update_after=set(range(7))) == [3, 2, 2, 1, 1, 2, 1]
    model.scale.data = model.scale.data.clone()  # reassigned storage: the graph would read the old one
    x, t, cond = inputs(4)
    with pytest.warns(UserWarning, match="moved in memory"):
        out = graphed(x, t, cond)
    assert torch.allclose(out, model.predict(x, t, cond)) and not graphed.enabled


def test_a_failing_recording_falls_back_to_eager_with_one_warning():
    model = StubModel()

    def broken(run, params):
        raise RuntimeError("capture failed")
    graphed = GraphedTrainPredict(model, model.params, record=broken)
    x, t, cond = inputs(4)
    with pytest.warns(UserWarning, match="turned off for this run .*capture failed"):
        out = graphed(x, t, cond)
    assert torch.allclose(out, model.predict(x, t, cond)) and out.requires_grad and not graphed.enabled
    assert not GraphedTrainPredict(model, model.params).enabled  # no recorder given and no CUDA device


def test_a_backward_replay_that_differs_returns_the_eager_gradients_and_turns_graphs_off():
    model = StubModel()
    graphed = GraphedTrainPredict(model, model.params, record=eager_train_recorder([], corrupt_grads=True))
    x, t, cond = inputs(4)
    w = torch.randn(4, 4, 2, 2)
    eager = grads_of(model, model.predict, [(x, t, cond, w)])
    with pytest.warns(UserWarning, match=r"backward replay differs .*: 3 of 3 tensors, the first by"):
        replayed = grads_of(model, graphed, [(x, t, cond, w)])
    assert all(torch.allclose(e, r) for e, r in zip(eager, replayed))
    graphed(x, t, cond)
    assert not graphed.enabled and not graphed.graphs and len(graphed.kept) == 1  # switched off, not destroyed
    assert graphed.failed


def test_a_checked_call_goes_on_with_eager_values_and_an_unchecked_one_with_the_replay():
    model = StubModel()
    graphed = GraphedTrainPredict(model, model.params, record=eager_train_recorder([], nudge=1e-4))
    x, t, cond = inputs(4)
    w = torch.randn(4, 4, 2, 2)
    first = graphed(x, t, cond)  # checked: within rtol of eager, so it passes, and eager's values are used
    assert torch.equal(first, model.predict(x, t, cond)) and graphed.enabled
    grads_of(model, graphed, [(x, t, cond, w)])
    with torch.no_grad():
        model.scale.add_(0.5)  # the weights move: one more check, then replays go unchecked
    graphed(x, t, cond).sum().backward()
    later = graphed(x, t, cond)
    assert graphed.enabled and not torch.equal(later, model.predict(x, t, cond))
    assert torch.allclose(later, model.predict(x, t, cond), rtol=1e-3)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    from scdpo.models import testing

    return testing.tiny_sd_pipeline(tmp_path_factory.mktemp("pipe") / "sd")


def test_the_step_with_graphed_policy_and_reference_gives_the_eager_errors(pipe, tmp_path):
    """pair_errors with the trainer's cuda_graphs objects (eager stand-ins for the recorders) gives
    the eager step's errors and LoRA gradients on the tiny SD pipeline."""
    from scdpo.models.graphs import GraphedPredict
    from scdpo.train import model as tm
    from scdpo.train.step import pair_errors, step_generator
    from tests.test_graphs import eager_recorder
    from scdpo.train.data import PreferencePairs
    from tests.test_trainer import SIZE, collate, lora_model, write_pairs

    m = lora_model(pipe)
    params = [p for p in m.unet.parameters() if p.requires_grad]
    with torch.no_grad():  # a nonzero LoRA, so the reference and the policy differ
        for p in params:
            p.add_(0.05 * torch.randn_like(p))
    batch = collate(PreferencePairs(write_pairs(tmp_path / "pairs.parquet", n=8), SIZE), range(3))

    def run(graphed: bool):
        ref = tm.Reference(m.unet, full=False, dtype=torch.float32)
        predict = None
        if graphed:
            ref.predict = GraphedPredict(m, record=eager_recorder([]))
            predict = GraphedTrainPredict(m, params, record=eager_train_recorder([]))
        for p in params:
            p.grad = None
        errors = pair_errors(m, m.unet, ref, batch, step_generator(0, 0, 0), predict=predict)
        (errors.err_w - errors.err_l).sum().backward()
        return errors, [p.grad.clone() for p in params], predict, ref
    eager, eager_grads, _, _ = run(False)
    graphed, graphed_grads, predict, ref = run(True)
    assert predict.replays == 1 and ref.predict.replays == 1
    for a, b in zip(eager[:5], graphed[:5]):  # the errors and the drift (no anchor rows: no extra)
        assert torch.allclose(a, b, atol=1e-6)
    assert not torch.allclose(eager.err_w, eager.ref_err_w)  # the reference is the adapters-off UNet
    for a, b in zip(eager_grads, graphed_grads):
        assert torch.allclose(a, b, atol=1e-6)


def test_a_training_run_with_graphs_gives_the_eager_run(tmp_path, monkeypatch, pipe):
    """The trainer with cuda_graphs (graphs forced on with the eager stand-in recorders) trains the
    same LoRA as without, over accumulated micro-batches, and replays every policy and reference call."""
    import functools

    from safetensors.torch import load_file

    import scdpo.train.trainer as trainer
    from scdpo.models.graphs import GraphedPredict
    from scdpo.train.config import TrainConfig
    from tests.test_graphs import eager_recorder
    from tests.test_trainer import FAST, write_pairs

    recorded = {"train": [], "predict": []}
    monkeypatch.setattr(trainer, "GraphedTrainPredict", functools.partial(
        GraphedTrainPredict, record=eager_train_recorder(recorded["train"])))
    monkeypatch.setattr(trainer, "GraphedPredict", functools.partial(
        GraphedPredict, record=eager_recorder(recorded["predict"])))
    common = dict(model=str(pipe), dataset=str(write_pairs(tmp_path / "pairs.parquet", n=8)), loss="sc-dpo",
                  batch_size=4, grad_accum=2, lr=1e-3, max_steps=3, **FAST)
    eager = trainer.train(TrainConfig(out=str(tmp_path / "eager"), **common))
    graphed = trainer.train(TrainConfig(out=str(tmp_path / "graphed"), cuda_graphs=True, **common))
    a, b = (load_file(str(tmp_path / r / "pytorch_lora_weights.safetensors")) for r in ("eager", "graphed"))
    # 4 pairs = 8 rows, no padding: the same arithmetic to the bit (a padded batch is the same step up to
    # float rounding, which AdamW's normalised update carries into the weights: the unit tests above)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a) and eager["loss"] == graphed["loss"]
    # one 8-row graph for the policy; the reference's no-grad calls recorded by the other cache
    assert recorded["train"] == [8] and 8 in recorded["predict"]
    assert graphed["cuda_graph_replays"] == 6 and graphed["cuda_graphs_on"] and "cuda_graph_replays" not in eager
