"""The all_tasks, bandit and uncertainty schedulers and the sequential curriculum option: formulas under
scripted feedback, determinism, ranks, state."""

from __future__ import annotations

import json
import math
from itertools import islice

import numpy as np
import pytest
import torch

from hf_mtl import Task, TaskConfigError
from hf_mtl.data.samplers import MultiTaskBatchSampler
from hf_mtl.optim.schedulers import build_scheduler
from hf_mtl.optim.schedulers.uncertainty import select_rows, uncertainty_scores


NAMES = ["a", "b", "c"]
SIZES = [50, 23, 7]


def sampler(strategy: str, *, batch_size=4, num_replicas=1, rank=0, seed=0, **options) -> MultiTaskBatchSampler:
    scheduler = build_scheduler(strategy, NAMES, SIZES, seed=seed, **options)
    return MultiTaskBatchSampler(NAMES, SIZES, batch_size, scheduler, seed=seed, num_replicas=num_replicas, rank=rank)


def tasks_of(s: MultiTaskBatchSampler, batch: list[int]) -> list[str]:
    return [s.task_of_index(i) for i in batch]


# ---------------------------------------------------------------------------------------------- all_tasks

def test_all_tasks_batches_hold_every_task_in_order():
    s = sampler("all_tasks")
    assert len(s) == math.ceil(50 / 4)  # one pass over the largest dataset
    batches = list(s)
    for batch in batches:
        assert tasks_of(s, batch) == ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    seen_a = {i for b in batches for i in b[:4]}
    assert seen_a == set(range(50))  # the largest task is covered once; c (7 rows) cycles
    assert s.last_task is None and s.history == []
    np.testing.assert_allclose(s.current_probabilities()["a"], 1 / 3)


def test_all_tasks_ranks_take_disjoint_slices_of_the_same_global_batch():
    one = list(islice(sampler("all_tasks", batch_size=4), 3))
    r0 = list(islice(sampler("all_tasks", batch_size=2, num_replicas=2, rank=0), 3))
    r1 = list(islice(sampler("all_tasks", batch_size=2, num_replicas=2, rank=1), 3))
    for full, a, b in zip(one, r0, r1):
        for t in range(3):  # the combined batch of one process = rank 0's slice + rank 1's, task by task
            assert full[4 * t: 4 * t + 4] == a[2 * t: 2 * t + 2] + b[2 * t: 2 * t + 2]


def test_all_tasks_resume_skips_exactly():
    reference = list(sampler("all_tasks"))
    resumed = sampler("all_tasks")
    resumed.load_state_dict(json.loads(json.dumps(sampler("all_tasks").state_dict())))
    assert list(islice(iter(resumed), 5, None)) == reference[5:]


# ---------------------------------------------------------------------------------------------- bandit

def test_bandit_probabilities_follow_scripted_rewards():
    s = build_scheduler("bandit", NAMES, SIZES, seed=0, tau=0.1, decay=0.5)
    np.testing.assert_allclose(s.probabilities(0), 1 / 3)
    s.update({"eval_losses": {"a": 1.0}})  # the baseline: no reward yet
    assert s.q.tolist() == [0, 0, 0]
    s.update({"trained": {"a": 30, "b": 10}})
    s.update({"eval_losses": {"a": 0.8}})  # r = 0.2, shares (0.75, 0.25, 0)
    assert s.q.tolist() == pytest.approx([0.5 * 0.75 * 0.2, 0.5 * 0.25 * 0.2, 0.0])
    q = np.array([0.075, 0.025, 0.0])
    np.testing.assert_allclose(s.probabilities(0), np.exp(q / 0.1) / np.exp(q / 0.1).sum())
    s.update({"trained": {"b": 8}})
    s.update({"eval_losses": {"a": 0.9}})  # r = −0.1 for b alone
    assert s.q.tolist() == pytest.approx([0.075, 0.025 + 0.5 * (-0.1 - 0.025), 0.0])
    assert s.probabilities(0)[1] < 1 / 3 < s.probabilities(0)[0]


def test_bandit_average_reward_and_feedback_request():
    s = build_scheduler("bandit", NAMES, SIZES, reward="average", reward_every=5, eval_samples=16)
    assert s.eval_feedback() == (5, 16, NAMES)
    assert build_scheduler("bandit", NAMES, SIZES, primary_task="b").eval_feedback() == (10, 64, ["b"])
    s.update({"eval_losses": {"a": 1.0, "b": 2.0, "c": 3.0}})
    s.update({"trained": {"c": 4}, "eval_losses": {"a": 1.0, "b": 1.0, "c": 1.0}})  # mean 2 -> 1: r = 1
    assert s.q.tolist() == pytest.approx([0.0, 0.0, 0.3])


def test_bandit_draws_are_deterministic_and_state_round_trips():
    s = build_scheduler("bandit", NAMES, SIZES, seed=4)
    s.update({"eval_losses": {"a": 1.0}})
    s.update({"trained": {"c": 1}, "eval_losses": {"a": 0.5}})
    draws = [s.task_for_step(0, k, 100, 8) for k in range(200)]
    restored = build_scheduler("bandit", NAMES, SIZES, seed=4)
    restored.load_state_dict(json.loads(json.dumps(s.state_dict())))
    assert [restored.task_for_step(0, k, 100, 8) for k in range(200)] == draws
    assert np.bincount(draws, minlength=3)[2] > np.bincount(draws, minlength=3)[0]  # the rewarded arm


@pytest.mark.parametrize("options, match", [
    ({"tau": 0}, "tau 0.*> 0"), ({"decay": 0}, r"decay 0.*\(0, 1\]"), ({"reward": "best"}, "reward 'best'"),
    ({"primary_task": "z"}, r"primary_task 'z'.*\['a', 'b', 'c'\]"), ({"reward_every": 0}, "reward_every 0"),
])
def test_bandit_bad_options(options, match):
    with pytest.raises(TaskConfigError, match=match):
        build_scheduler("bandit", NAMES, SIZES, **options)


# ---------------------------------------------------------------------------------------------- uncertainty

UTASKS = {"pos": Task("pos", labels=["x", "y"]), "topic": Task("topic", labels=["1", "2", "3", "4"]),
          "sim": Task("sim", kind="regression"), "tag": Task("tag", kind="token_classification", labels=["O", "B-X"])}


def test_uncertainty_scores_follow_the_formula():
    # pos: a uniform and a confident row; topic: a uniform row and a half-uniform row
    logits = {"pos": torch.tensor([[0.0, 0.0], [20.0, -20.0]]),
              "topic": torch.tensor([[0.0, 0.0, 0.0, 0.0], [30.0, 30.0, -30.0, -30.0]]),
              "sim": torch.tensor([[1.0], [2.0]])}
    rows = {"pos": torch.tensor([0, 1]), "topic": torch.tensor([2, 3]), "sim": torch.tensor([4, 5])}
    scores = uncertainty_scores(UTASKS, logits, rows, None, 6)
    # normalized entropies S/S' = (1, 0) and (1, log 2 / log 4 = 0.5); means 0.5 and 0.75; Ŝ = 0.75
    expected = torch.tensor([1 / 0.75, 0.0, 1 / 0.75, 0.5 / 0.75])
    torch.testing.assert_close(scores[:4], expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(scores[4:], expected.mean().repeat(2), atol=1e-5, rtol=0)  # regression: the mean
    assert select_rows(scores, 3).tolist() == [0, 2, 4]  # the uniform rows, then the first (tied) regression row
    # a regression task keeps its share of the pool: 2 of 6 rows -> 1 of 3, its first; the scored rows share the rest
    assert select_rows(scores, 3, {"sim": rows["sim"]}).tolist() == [0, 2, 4]
    assert select_rows(scores, 6, {"sim": rows["sim"]}).tolist() == [0, 1, 2, 3, 4, 5]


def test_uncertainty_sampling_does_not_starve_a_regression_task():
    """Ranked at the mean U, a regression row loses to every above-average row; its reserved share keeps it."""
    scores = torch.tensor([2.0, 1.5, 1.2, 1.1, 1.0, 1.0, 1.0, 1.0])  # rows 4-7: regression (the mean would be lower)
    reserved = {"sim": torch.tensor([4, 5, 6, 7])}
    assert select_rows(scores, 2).tolist() == [0, 1]
    assert select_rows(scores, 4, reserved).tolist() == [0, 1, 4, 5]  # 4 of 8 rows -> 2 of 4
    assert select_rows(scores, 1, reserved).tolist() == [4]  # ⌊1·4/8 + ½⌋ = 1 row for the regression task
    assert select_rows(scores, 3, reserved).tolist() == [0, 4, 5]  # ⌊1.5 + ½⌋ = 2


def test_uncertainty_token_rows_average_their_scored_tokens():
    logits = torch.tensor([[[0.0, 0.0], [9.0, -9.0], [0.0, 0.0]]])  # (1, L=3, C=2)
    labels = torch.tensor([[0, 1, -100]])  # the third token is not scored
    scores = uncertainty_scores(UTASKS, {"tag": logits}, {"tag": torch.tensor([0])}, labels, 1)
    assert float(scores[0]) == pytest.approx(1.0, abs=1e-4)  # mean normalized entropy (1 + 0)/2 over Ŝ = 0.5


def test_uncertainty_selection_ties_keep_the_pool_order():
    assert select_rows(torch.tensor([1.0, 2.0, 2.0, 1.0, 2.0]), 2).tolist() == [1, 2]


def test_uncertainty_scheduler_shares_move_towards_the_selected_tasks():
    s = build_scheduler("uncertainty", NAMES, SIZES)
    assert s.draws_all_tasks and s.selects_rows and s.dynamic
    np.testing.assert_allclose(s.probabilities(0), 1 / 3)
    s.update({"trained": {"a": 4.0}})
    np.testing.assert_allclose(s.probabilities(0), 0.9 * np.full(3, 1 / 3) + 0.1 * np.array([1.0, 0, 0]))
    restored = build_scheduler("uncertainty", NAMES, SIZES)
    restored.load_state_dict(json.loads(json.dumps(s.state_dict())))
    np.testing.assert_allclose(restored.probabilities(0), s.probabilities(0))


# ---------------------------------------------------------------------------------------------- sequential stages

def test_sequential_stages_switch_task_sets_at_the_given_steps():
    stages = [{"step": 0, "tasks": ["c"]}, {"step": 6, "tasks": ["a", "c"]}, {"step": 25, "tasks": "all"}]
    s = sampler("sequential", stages=stages)
    epoch0 = [set(tasks_of(s, b)) for b in s]  # 21 steps per epoch
    assert all(t == {"c"} for t in epoch0[:6]) and all(t <= {"a", "c"} for t in epoch0[6:])
    assert {"a"} in epoch0[6:]
    epoch1 = [tasks_of(s, b)[0] for b in s]  # global steps 21..41: stage 2 from global step 25 (epoch 1, step 4)
    assert set(epoch1[:4]) <= {"a", "c"} and "b" in epoch1[4:]
    np.testing.assert_allclose(s.current_probabilities()["b"], 23 / 80)  # the stage of the last drawn step
    again = sampler("sequential", stages=stages)
    assert [tasks_of(again, b)[0] for b in again] == [next(iter(t)) for t in epoch0]


@pytest.mark.parametrize("stages, match", [
    ([{"step": 1, "tasks": ["a"]}], "first stage starts at step 0"),
    ([{"step": 0, "tasks": ["a"]}, {"step": 0, "tasks": "all"}], "increase strictly"),
    ([{"step": 0, "tasks": ["z"]}], r"unknown task\(s\) \['z'\]"),
    ([{"step": 0}], "each stage is"),
    ("all", "give a list like"),
])
def test_sequential_bad_stages(stages, match):
    with pytest.raises(TaskConfigError, match=match):
        build_scheduler("sequential", NAMES, SIZES, stages=stages)
    with pytest.raises(TaskConfigError, match="either `task_order`"):
        build_scheduler("sequential", NAMES, SIZES, stages=[{"step": 0, "tasks": "all"}], task_order=NAMES)
