"""Loss weightings and gradient surgeries against hand-computed values; options, registries, state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from hf_mtl import Task, TaskConfigError
from hf_mtl.optim.surgery import GRADIENT_SURGERIES, build_gradient_surgery
from hf_mtl.optim.task_gradients import loss_coefficients
from hf_mtl.optim.weighting import LOSS_WEIGHTINGS, Progress, build_loss_weighting


TASKS = {"a": Task("a", loss_weight=2.0), "b": Task("b", loss_weight=0.5)}
SIZES = {"a": 10, "b": 30}
P0 = Progress(step=0, epoch=0.0, max_steps=10, steps_per_epoch=5)


def weighting(name: str, **options):
    return build_loss_weighting(name, TASKS, SIZES, options)


def losses(a: float, b: float) -> dict[str, torch.Tensor]:
    return {"a": torch.tensor(a, requires_grad=True), "b": torch.tensor(b, requires_grad=True)}


def value(tensor: torch.Tensor) -> float:
    return float(tensor.detach())


def through_json(state: dict) -> dict:
    return json.loads(json.dumps(state))


# ---------------------------------------------------------------------------------------------- weightings

def test_fixed_weightings():
    assert weighting("equal").weights(P0) == {"a": 0.5, "b": 0.5}
    assert value(weighting("equal").combine(losses(2.0, 4.0), P0)) == pytest.approx(3.0)
    assert value(weighting("static").combine(losses(2.0, 4.0), P0)) == pytest.approx(2 * 2.0 + 0.5 * 4.0)
    size = weighting("size").weights(P0)  # 1/10 and 1/30, normalized
    assert size == pytest.approx({"a": 0.75, "b": 0.25})
    assert float(weighting("size").combine({"b": torch.tensor(4.0)}, P0)) == pytest.approx(1.0)  # one task present


def test_uncertainty_weighting_loss_and_gradient():
    w = weighting("uncertainty")
    assert w.weights(P0) == pytest.approx({"a": 0.5, "b": 0.5})  # σ = 1
    with torch.no_grad():
        w.log_sigma.copy_(torch.tensor([math.log(2.0), 0.0]))
    total = w.combine(losses(3.0, 1.0), P0)
    # Σ L_t / (2σ_t²) + log σ_t = 3/8 + log 2 + 1/2 + 0
    assert value(total) == pytest.approx(3 / 8 + math.log(2.0) + 0.5)
    total.backward()
    # d/ds [½ e^{-2s} L + s] = 1 − e^{-2s} L
    assert w.log_sigma.grad.tolist() == pytest.approx([1 - 3 / 4, 1 - 1.0])
    restored = weighting("uncertainty")
    restored.load_state_dict(through_json(w.state_dict()))
    assert torch.equal(restored.log_sigma, w.log_sigma)


def test_dwa_ratio_of_recent_window_losses():
    w = weighting("dwa", temperature=2.0, window_steps=1)
    assert w.weights(P0) == {"a": 1.0, "b": 1.0}
    w.update({"a": 4.0, "b": 2.0}, Progress(step=0))
    assert w.weights(P0) == {"a": 1.0, "b": 1.0}  # λ = 1 for the first two windows
    w.update({"a": 2.0, "b": 2.0}, Progress(step=1))
    ratios = np.array([2.0 / 4.0, 2.0 / 2.0])
    expected = 2 * np.exp(ratios / 2) / np.exp(ratios / 2).sum()
    assert list(w.weights(P0).values()) == pytest.approx(expected.tolist())
    assert w.weights(P0)["b"] > w.weights(P0)["a"]  # the task whose loss stalled gains weight


def test_dwa_window_of_several_steps_and_state():
    w = weighting("dwa", window_steps=2)
    for step, (a, b) in enumerate([(4, 2), (2, 2), (1, 3), (1, 1)]):
        w.update({"a": a, "b": b}, Progress(step=step))
    ratios = np.array([1.0 / 3.0, 2.0 / 2.0])  # window means (3, 2) then (1, 2)
    expected = 2 * np.exp(ratios / 2) / np.exp(ratios / 2).sum()
    assert list(w.weights(P0).values()) == pytest.approx(expected.tolist())
    w.update({"a": 5.0}, Progress(step=4))  # half a window, saved in the state
    restored = weighting("dwa", window_steps=2)
    restored.load_state_dict(through_json(w.state_dict()))
    assert restored.state_dict() == w.state_dict()


def test_dwa_default_window_is_one_epoch():
    w = weighting("dwa")
    for step in range(10):
        w.update({"a": 1.0 / (step + 1), "b": 1.0}, Progress(step=step, steps_per_epoch=5))
    assert len(w.history) == 2


def test_tchebycheff_max_of_weighted_losses():
    w = weighting("tchebycheff", beta=0.5)
    assert w.weights(P0) == {"a": 0.5, "b": 0.5}  # before any running loss
    w.update({"a": 1.0, "b": 3.0}, P0)  # the first step sets l_t
    assert w.weights(P0) == pytest.approx({"a": 1 / (1 * (1 + 1 / 3)), "b": 1 / (3 * (1 + 1 / 3))})  # 0.75, 0.25
    task_losses = losses(2.0, 9.0)
    total = w.combine(task_losses, P0)  # max(0.75·2, 0.25·9) = 2.25, task b
    assert value(total) == pytest.approx(2.25)
    total.backward()
    assert task_losses["a"].grad is None and float(task_losses["b"].grad) == pytest.approx(0.25)
    w.update({"a": 3.0, "b": 1.0}, P0)  # EMA: l = 0.5·old + 0.5·new = (2, 2)
    assert w.weights(P0) == pytest.approx({"a": 0.5, "b": 0.5})
    coefficients, _ = loss_coefficients(w, {"a": 1.0, "b": 1.0}, P0, ["a", "b"])
    assert coefficients.tolist() == [0.5, 0.0]  # ties go to the first task


def test_curriculum_sigmoid_and_linear_ramp():
    w = weighting("curriculum", midpoints={"a": 2.0}, alpha=1.0, linear=["b"])
    def at(epoch, step):
        return w.weights(Progress(step=step, epoch=epoch, max_steps=10))
    assert at(2.0, 0)["a"] == pytest.approx(2.0 * 0.5)  # λ^const (loss_weight 2) at the midpoint
    assert at(3.0, 0)["a"] == pytest.approx(2.0 / (1 + math.exp(-1.0)))
    assert at(0.0, 0)["a"] == pytest.approx(2.0 / (1 + math.exp(2.0)))
    assert at(0.0, 0)["b"] == 0.0 and at(0.0, 5)["b"] == pytest.approx(0.25) and at(0.0, 20)["b"] == 0.5
    steps = weighting("curriculum", midpoints={"b": 100}, alpha=10.0, unit="step")
    assert steps.weights(Progress(step=100))["b"] == pytest.approx(0.25) and steps.weights(P0)["a"] == 2.0


@pytest.mark.parametrize("name, options, match", [
    ("dwa", {"temperature": 0}, "temperature 0.*finite number > 0"),
    ("dwa", {"window": 3}, r"Invalid option\(s\) \['window'\].*temperature, window_steps"),
    ("tchebycheff", {"beta": 1.0}, r"beta 1.0.*\[0, 1\)"),
    ("curriculum", {"midpoints": {"zz": 1}}, r"unknown task\(s\) \['zz'\]. Known tasks: \['a', 'b'\]"),
    ("curriculum", {}, "non-empty"),
    ("curriculum", {"midpoints": {"a": 1}, "linear": ["a"]}, "disjoint"),
    ("uncertainty", {"init_log_sigma": "x"}, "finite number"),
])
def test_bad_weighting_options_name_the_field(name, options, match):
    with pytest.raises(TaskConfigError, match=match):
        weighting(name, **options)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(TaskConfigError, match=r"Unknown loss_weighting 'nope'. Fix: use one of \['curriculum', 'dwa'"):
        weighting("nope")
    with pytest.raises(TaskConfigError, match=r"Unknown gradient_surgery 'nope'. Fix: use one of \['gradvac', 'pcgrad'\]"):
        build_gradient_surgery("nope", 2)
    assert set(LOSS_WEIGHTINGS.names()) == {"equal", "static", "size", "uncertainty", "dwa", "tchebycheff", "curriculum"}
    assert GRADIENT_SURGERIES.names() == ["gradvac", "pcgrad"]


def test_weighting_state_mismatch_names_the_field():
    with pytest.raises(TaskConfigError, match="field 'name'.*'dwa'.*'tchebycheff'"):
        weighting("tchebycheff").load_state_dict(weighting("dwa").state_dict())


# ---------------------------------------------------------------------------------------------- surgery

def test_pcgrad_known_vectors():
    grads = torch.tensor([[1.0, 0.0], [-1.0, 1.0]])
    projected = build_gradient_surgery("pcgrad", 2).project(grads, 0, 0)
    # g1' = g1 − (g1·g2/|g2|²) g2 = (1, 0) + ½(−1, 1);  g2' = g2 − (g2·g1/|g1|²) g1 = (0, 1)
    assert projected.tolist() == [[0.5, 0.5], [0.0, 1.0]]
    assert build_gradient_surgery("pcgrad", 2).combine(grads, 0, [2]).tolist() == [0.5, 1.5]
    agreeing = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert build_gradient_surgery("pcgrad", 2).combine(agreeing, 0, [2]).tolist() == [2.0, 1.0]  # no conflict


def test_pcgrad_leaves_no_conflict_between_two_tasks():
    surgery = build_gradient_surgery("pcgrad", 2, seed=3)
    generator = torch.Generator().manual_seed(0)
    for step in range(200):
        grads = torch.randn(2, 16, generator=generator)
        p = surgery.project(grads, step, 0)
        assert float(p[0] @ grads[1]) >= -1e-5 and float(p[1] @ grads[0]) >= -1e-5
        assert float(p[0] @ p[1]) >= -1e-5


def test_pcgrad_random_order_is_seeded_per_step():
    surgery = build_gradient_surgery("pcgrad", 4, seed=1)
    assert surgery.task_order(5, 0) == build_gradient_surgery("pcgrad", 4, seed=1).task_order(5, 0)
    assert sorted(surgery.task_order(5, 2)) == [0, 1, 3]
    assert len({tuple(surgery.task_order(s, 0)) for s in range(30)}) > 1


def test_gradvac_with_zero_target_equals_pcgrad():
    generator = torch.Generator().manual_seed(1)
    pcgrad = build_gradient_surgery("pcgrad", 3, seed=2)
    gradvac = build_gradient_surgery("gradvac", 3, seed=2, options={"beta": 0.0})
    for step in range(20):
        grads = torch.randn(3, 32, generator=generator)
        torch.testing.assert_close(gradvac.project(grads, step, 0), pcgrad.project(grads, step, 0), atol=1e-5, rtol=1e-5)
    first = build_gradient_surgery("gradvac", 3, seed=2)  # φ̂ starts at 0: the first step is PCGrad's whatever β
    grads = torch.randn(3, 32, generator=generator)
    torch.testing.assert_close(first.project(grads, 0, 0), pcgrad.project(grads, 0, 0), atol=1e-5, rtol=1e-5)


def test_gradvac_reaches_the_target_similarity_and_tracks_it():
    surgery = build_gradient_surgery("gradvac", 2, options={"beta": 0.5})
    surgery.targets[0] = torch.full((2, 2), 0.5, dtype=torch.float64)
    grads = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # orthogonal: φ = 0 < φ̂ = 0.5
    p = surgery.project(grads, 0, 0)
    def cos(u, v):
        return float(u @ v / (u.norm() * v.norm()))
    assert cos(p[0], grads[1]) == pytest.approx(0.5, abs=1e-6) and cos(p[1], grads[0]) == pytest.approx(0.5, abs=1e-6)
    assert p[0].tolist() == pytest.approx([1.0, 0.5 / math.sqrt(0.75)])  # g1 + |g1|·0.5/(|g2|·√0.75)·g2
    assert surgery.targets[0][0, 1] == pytest.approx(0.25)  # φ̂ <- ½·0.5 + ½·0
    restored = build_gradient_surgery("gradvac", 2, options={"beta": 0.5})
    restored.load_state_dict(through_json(surgery.state_dict()))
    assert torch.equal(restored.targets[0], surgery.targets[0])


def test_parameter_granularity_operates_per_tensor():
    grads = torch.tensor([[1.0, 0.0, 1.0], [-1.0, 1.0, 1.0]])  # block 1 conflicts, block 2 agrees
    surgery = build_gradient_surgery("pcgrad", 2, options={"granularity": "parameter"})
    assert surgery.combine(grads, 0, [2, 1]).tolist() == [0.5, 1.5, 2.0]
    whole = build_gradient_surgery("pcgrad", 2).combine(grads, 0, [2, 1])  # dot = 0: no projection
    assert whole.tolist() == [0.0, 1.0, 2.0]


def test_bad_surgery_options():
    with pytest.raises(TaskConfigError, match="granularity 'layer'.*'all', 'parameter'"):
        build_gradient_surgery("pcgrad", 2, options={"granularity": "layer"})
    with pytest.raises(TaskConfigError, match=r"beta 2.*\[0, 1\]"):
        build_gradient_surgery("gradvac", 2, options={"beta": 2})
    state = build_gradient_surgery("gradvac", 2).state_dict()
    state["targets"] = {"0": [[0.0] * 3] * 3}
    with pytest.raises(TaskConfigError, match="2 x 2 matrix"):
        build_gradient_surgery("gradvac", 2).load_state_dict(state)
