"""Task schedulers and MultiTaskBatchSampler: formulas, determinism, ranks, exact resume, errors."""

from __future__ import annotations

import json
import math
from collections import Counter
from itertools import islice

import numpy as np
import pytest
import torch

from hf_mtl.data.samplers import MultiTaskBatchSampler
from hf_mtl.errors import DataError, TaskConfigError
from hf_mtl.optim.schedulers import SAMPLING_STRATEGIES, TaskScheduler, build_scheduler, register_scheduler


NAMES = ["a", "b", "c"]
SIZES = [50, 23, 7]  # c is smaller than a global batch of 8
STRATEGIES = {
    "proportional": {},
    "temperature": {"temperature": 2.0},
    "annealed": {"num_epochs": 3},
    "uniform": {},
    "round_robin": {},
    "sequential": {"task_order": ["c", "a", "b"]},
}
CHI2_CRIT_DF2 = 13.82  # chi-square critical value, 2 degrees of freedom, p = 0.001


def make(strategy="proportional", *, names=NAMES, sizes=SIZES, batch_size=4, seed=0, num_replicas=1, rank=0,
         steps_per_epoch=None, options=None):
    options = STRATEGIES.get(strategy, {}) if options is None else options
    scheduler = build_scheduler(strategy, names, sizes, seed=seed, **options)
    return MultiTaskBatchSampler(names, sizes, batch_size, scheduler, seed=seed, num_replicas=num_replicas,
                                 rank=rank, steps_per_epoch=steps_per_epoch)


def task_of_batch(sampler, batch):
    tasks = {sampler.task_of_index(i) for i in batch}
    assert len(tasks) == 1, f"mixed-task batch {batch}"
    return tasks.pop()


def empirical(scheduler, epoch, n=20_000):
    return np.bincount([scheduler.task_for_step(epoch, s, n, 8) for s in range(n)], minlength=scheduler.num_tasks)


def chi2(counts, p):
    expected = counts.sum() * np.asarray(p)
    return float(((counts - expected) ** 2 / expected).sum())


# ---------------------------------------------------------------------------------------------- formulas

BIG = [1000, 100, 10]


def test_temperature_frequencies_match_formula():
    s = build_scheduler("temperature", NAMES, BIG, temperature=2.0)
    p = np.array(BIG, dtype=float) ** 0.5
    np.testing.assert_allclose(s.probabilities(0), p / p.sum())
    assert chi2(empirical(s, 0), s.probabilities(0)) < CHI2_CRIT_DF2


def test_temperature_extremes_are_stable():
    # Small T must not overflow |D|^(1/T); it concentrates on the largest task.
    p = build_scheduler("temperature", NAMES, [10**9, 10, 1], temperature=0.01).probabilities(0)
    assert np.isfinite(p).all() and p[0] == pytest.approx(1.0)
    np.testing.assert_allclose(build_scheduler("temperature", NAMES, BIG, temperature=1e9).probabilities(0), 1 / 3)


def test_uniform_frequencies():
    s = build_scheduler("uniform", NAMES, BIG)
    np.testing.assert_allclose(s.probabilities(4), 1 / 3)
    assert chi2(empirical(s, 0, 8_000), [1 / 3] * 3) < CHI2_CRIT_DF2


def test_annealed_alpha_and_frequencies():
    s = build_scheduler("annealed", NAMES, BIG, num_epochs=5)
    assert [s.alpha(e) for e in range(5)] == pytest.approx([1.0, 0.8, 0.6, 0.4, 0.2])
    assert s.alpha(9) == pytest.approx(0.2)  # stays at the final value past E
    sizes = np.array(BIG, dtype=float)
    np.testing.assert_allclose(s.probabilities(0), sizes / sizes.sum())  # e = 1: proportional
    last = sizes**0.2 / (sizes**0.2).sum()
    np.testing.assert_allclose(s.probabilities(4), last)  # e = E
    assert chi2(empirical(s, 0, 8_000), s.probabilities(0)) < CHI2_CRIT_DF2
    assert chi2(empirical(s, 4, 8_000), last) < CHI2_CRIT_DF2
    one = build_scheduler("annealed", NAMES, BIG, num_epochs=1)
    assert one.alpha(0) == 1.0 and one.alpha(3) == 1.0


def test_round_robin_cycles_in_task_order():
    sampler = make("round_robin")
    tasks = [task_of_batch(sampler, b) for b in sampler]
    assert tasks == [NAMES[i % 3] for i in range(len(sampler))]
    np.testing.assert_allclose(sampler.current_probabilities()["a"], 1 / 3)


def test_proportional_epoch_is_exact_and_covers_each_dataset():
    sampler = make("proportional", batch_size=4)
    assert len(sampler) == sum(math.ceil(n / 4) for n in SIZES) == 21
    seen = {n: set() for n in NAMES}
    tasks = []
    for batch in sampler:
        tasks.append(task_of_batch(sampler, batch))
        seen[tasks[-1]].update(batch)
    assert Counter(tasks) == {n: math.ceil(size / 4) for n, size in zip(NAMES, SIZES)}
    for name, offset, size in zip(NAMES, sampler.offsets, SIZES):
        assert seen[name] == set(range(offset, offset + size))  # one epoch covers every example
    assert tasks != sorted(tasks, key=NAMES.index)  # shuffled, not blocks
    epoch1 = [task_of_batch(sampler, b) for b in sampler]
    assert epoch1 != tasks and Counter(epoch1) == Counter(tasks)


def test_proportional_custom_epoch_length_uses_largest_remainder():
    sampler = make("proportional", steps_per_epoch=40)
    counts = Counter(task_of_batch(sampler, b) for b in sampler)
    # 40 * [50, 23, 7] / 80 = [25, 11.5, 3.5] -> remainders tie, the earlier task gets the extra step
    assert counts == {"a": 25, "b": 12, "c": 3}
    p = build_scheduler("proportional", NAMES, SIZES).probabilities(0)
    np.testing.assert_allclose(p, np.array(SIZES) / 80)


def test_sequential_blocks_in_task_order():
    sampler = make("sequential", batch_size=4)
    tasks = [task_of_batch(sampler, b) for b in sampler]
    assert tasks == ["c"] * 2 + ["a"] * 13 + ["b"] * 6
    short = make("sequential", steps_per_epoch=8, options={})
    assert [task_of_batch(short, b) for b in short] == ["a"] * 5 + ["b"] * 2 + ["c"]


# ---------------------------------------------------------------------------------------------- batches


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_batches_are_full_single_task_and_in_range(strategy):
    sampler = make(strategy, sizes=[50, 3, 23], batch_size=8)  # task b is smaller than a batch
    for _ in range(2):
        for batch in sampler:
            name = task_of_batch(sampler, batch)
            assert name == sampler.last_task and len(batch) == 8
            t = NAMES.index(name)
            assert all(sampler.offsets[t] <= i < sampler.offsets[t] + sampler.sizes[t] for i in batch)
            assert all(isinstance(i, int) for i in batch)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_determinism_and_seed_sensitivity(strategy):
    def epochs(seed):
        s = make(strategy, seed=seed)
        return [list(s) for _ in range(2)]

    assert epochs(3) == epochs(3)
    assert epochs(3) != epochs(4)


@pytest.mark.parametrize("strategy", list(STRATEGIES))
def test_ranks_share_the_task_and_split_its_data(strategy):
    sizes = [48, 24, 16]  # multiples of the global batch: no batch straddles two permutations
    ranks = [make(strategy, sizes=sizes, num_replicas=2, rank=r) for r in (0, 1)]
    union = {n: set() for n in NAMES}
    for b0, b1 in zip(*ranks):
        name = task_of_batch(ranks[0], b0)
        assert task_of_batch(ranks[1], b1) == name
        assert not set(b0) & set(b1)
        union[name] |= set(b0) | set(b1)
    if strategy in ("proportional", "sequential"):
        for name, offset, size in zip(NAMES, ranks[0].offsets, sizes):
            assert union[name] == set(range(offset, offset + size))


def test_rank_split_of_global_batch():
    # Two ranks of 4 see exactly the halves of what one rank of 8 sees.
    whole = make("temperature", batch_size=8)
    halves = [make("temperature", batch_size=4, num_replicas=2, rank=r) for r in (0, 1)]
    for b, h0, h1 in zip(whole, *halves):
        assert b == h0 + h1


def test_dataloader_integration():
    data = [torch.utils.data.TensorDataset(torch.arange(n) + 1000 * t) for t, n in enumerate(SIZES)]
    sampler = make("uniform")
    loader = torch.utils.data.DataLoader(torch.utils.data.ConcatDataset(data), batch_sampler=sampler)
    assert len(loader) == len(sampler)
    for (values,) in loader:
        assert len(values) == 4 and len(set((values // 1000).tolist())) == 1


def test_task_of_index_and_offsets():
    sampler = make()
    assert sampler.offsets == [0, 50, 73]
    assert [sampler.task_of_index(i) for i in (0, 49, 50, 72, 73, 79)] == ["a", "a", "b", "b", "c", "c"]
    with pytest.raises(IndexError):
        sampler.task_of_index(80)


def test_set_epoch_and_auto_advance():
    auto = make("temperature")
    first = [list(auto) for _ in range(3)]  # nobody calls set_epoch
    assert auto.epoch == 3
    manual = make("temperature")
    for e in (2, 0, 1):
        manual.set_epoch(e)
        assert list(manual) == first[e]
    partial = make("temperature")
    next(iter(partial))
    partial.set_epoch(1)  # set_epoch wins over a half-done pass
    assert list(partial) == first[1]


# ---------------------------------------------------------------------------------------------- resume


class CountingScheduler(TaskScheduler):
    """A dynamic test scheduler: its choice depends on how many updates it has seen."""

    name = "test_counting"

    def __init__(self, task_names, sizes, *, seed=0, **options):
        super().__init__(task_names, sizes, seed=seed, **options)
        self.updates = 0

    def probabilities(self, epoch):
        return np.full(self.num_tasks, 1 / self.num_tasks)

    def task_for_step(self, epoch, step, steps_per_epoch, global_batch_size):
        return (step * 7 + self.updates // 3) % self.num_tasks

    def update(self, feedback):
        self.updates += 1

    def state_dict(self):
        return {**super().state_dict(), "updates": self.updates}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.updates = state["updates"]


@pytest.fixture
def counting_registered():
    register_scheduler(CountingScheduler)
    yield
    SAMPLING_STRATEGIES.unregister(CountingScheduler.name)


def prefetching(iterator, depth):
    """Yield from `iterator` while keeping `depth` batches fetched ahead (dataloader prefetch)."""
    buffer = list(islice(iterator, depth))
    for item in iterator:
        buffer.append(item)
        yield buffer.pop(0)
    yield from buffer


def train(sampler, num_epochs, *, depth=1, start=(0, 0), stop=None):
    """A Trainer-like loop: set_epoch, skip the first batches on resume, update the scheduler per step.

    Returns the trained (epoch, step, batch) and, if `stop=(epoch, step)`, the JSON state saved there.
    """
    trained = []
    for epoch in range(start[0], num_epochs):
        sampler.set_epoch(epoch)
        for step, batch in enumerate(prefetching(iter(sampler), depth)):
            if epoch == start[0] and step < start[1]:
                continue  # accelerate.skip_first_batches: iterate and discard
            if (epoch, step) == stop:
                return trained, json.loads(json.dumps(sampler.state_dict()))
            trained.append((epoch, step, batch))
            sampler.scheduler.update({"task": sampler.task_of_index(batch[0])})
    return trained, None


@pytest.mark.usefixtures("counting_registered")
@pytest.mark.parametrize("strategy", [*STRATEGIES, "test_counting"])
@pytest.mark.parametrize("depth", [0, 3])
def test_resume_is_exact(strategy, depth):
    reference, _ = train(make(strategy), 3, depth=depth)
    steps = len(make(strategy))
    stops = [(0, 0), (0, 1), (0, 5), (1, steps - 3), (1, steps - 1), (2, steps - 2)]  # incl. the last step
    for stop in stops:
        _, state = train(make(strategy), 3, depth=depth, stop=stop)
        resumed = make(strategy)
        resumed.load_state_dict(state)
        rest, _ = train(resumed, 3, depth=depth, start=stop)
        done = reference.index(next(r for r in reference if r[:2] == stop))
        assert rest == reference[done:], f"{strategy}: resume at {stop} diverged"


@pytest.mark.usefixtures("counting_registered")
def test_resume_replays_history_instead_of_redrawing():
    sampler = make("test_counting")
    it = iter(sampler)
    drawn = [next(it) for _ in range(6)]
    state = sampler.state_dict()
    resumed = make("test_counting")
    resumed.load_state_dict(state)
    for _ in range(10):  # the scheduler moves on; the recorded steps must not change
        resumed.scheduler.update({})
    assert list(islice(iter(resumed), 6)) == drawn
    assert len(resumed.history) == 6


def test_resume_without_set_epoch_and_across_epoch_boundary():
    ref = make("uniform")
    reference = [list(ref) for _ in range(3)]
    sampler = make("uniform")
    list(sampler)  # a full pass: the sampler moved to epoch 1 by itself
    resumed = make("uniform")
    resumed.load_state_dict(json.loads(json.dumps(sampler.state_dict())))
    assert resumed.epoch == 1
    assert list(resumed) == reference[1] and list(resumed) == reference[2]


def test_state_allows_a_different_split_of_the_same_global_batch():
    two = make("temperature", batch_size=4, num_replicas=2, rank=1)
    it = iter(two)
    [next(it) for _ in range(3)]
    one = make("temperature", batch_size=8)
    one.load_state_dict(two.state_dict())
    reference = list(make("temperature", batch_size=8))
    assert list(one) == reference


# ---------------------------------------------------------------------------------------------- errors


def test_unknown_strategy_lists_the_valid_ones():
    with pytest.raises(TaskConfigError) as err:
        build_scheduler("softmax", NAMES, SIZES)
    for name in STRATEGIES:
        assert name in str(err.value)
    assert build_scheduler("Round-Robin", NAMES, SIZES).name == "round_robin"


@pytest.mark.parametrize("bad", [0, -1.5, float("nan"), float("inf"), "2", True])
def test_bad_temperature(bad):
    with pytest.raises(TaskConfigError, match="temperature"):
        build_scheduler("temperature", NAMES, SIZES, temperature=bad)


def test_bad_annealed_num_epochs():
    with pytest.raises(TaskConfigError, match="num_epochs"):
        build_scheduler("annealed", NAMES, SIZES)
    with pytest.raises(TaskConfigError, match="num_epochs"):
        build_scheduler("annealed", NAMES, SIZES, num_epochs=0)


def test_bad_task_order():
    with pytest.raises(TaskConfigError, match="task_order") as err:
        build_scheduler("sequential", NAMES, SIZES, task_order=["a", "zz", "b", "c"])
    assert "zz" in str(err.value) and "['a', 'b', 'c']" in str(err.value)
    with pytest.raises(TaskConfigError, match="task_order.*missing"):
        build_scheduler("sequential", NAMES, SIZES, task_order=["a", "b"])
    with pytest.raises(TaskConfigError, match="task_order.*repeated"):
        build_scheduler("sequential", NAMES, SIZES, task_order=["a", "b", "c", "a"])


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(TaskConfigError, match="alpha.*temperature"):
        build_scheduler("temperature", NAMES, SIZES, alpha=0.3)
    with pytest.raises(TaskConfigError, match="options are: none"):
        build_scheduler("uniform", NAMES, SIZES, temperature=2.0)
    assert build_scheduler("temperature", NAMES, SIZES, temperature=None).options == {"temperature": 2.0}


def test_bad_sampler_arguments():
    scheduler = build_scheduler("uniform", NAMES, SIZES)
    with pytest.raises(TaskConfigError, match="rank"):
        MultiTaskBatchSampler(NAMES, SIZES, 4, scheduler, num_replicas=2, rank=2)
    with pytest.raises(TaskConfigError, match="batch_size"):
        MultiTaskBatchSampler(NAMES, SIZES, 0, scheduler)
    with pytest.raises(TaskConfigError, match="scheduler"):
        MultiTaskBatchSampler(NAMES, [50, 23, 8], 4, scheduler)
    with pytest.raises(DataError, match="'b'"):
        build_scheduler("uniform", NAMES, [5, 0, 3])
    with pytest.raises(TaskConfigError, match="task_names"):
        build_scheduler("uniform", ["a", "a"], [1, 2])
    with pytest.raises(TaskConfigError, match="seed"):
        build_scheduler("uniform", NAMES, SIZES, seed=-1)


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"names": ["a", "b", "d"]}, "task_names"),
        ({"sizes": [50, 24, 7]}, "sizes"),
        ({"batch_size": 8}, "batch_size"),
        ({"seed": 1}, "seed"),
        ({"steps_per_epoch": 30}, "steps_per_epoch"),
    ],
)
def test_mismatching_state_names_the_field(changes, field):
    state = make("uniform").state_dict()
    with pytest.raises(TaskConfigError, match=field) as err:
        make("uniform", **changes).load_state_dict(state)
    if field in ("task_names", "sizes", "batch_size"):
        assert "must match the checkpoint" in str(err.value)


def test_mismatching_scheduler_state():
    state = make("uniform").state_dict()
    with pytest.raises(TaskConfigError, match="'name'.*'uniform'"):
        make("round_robin").load_state_dict(state)
    annealed = make("annealed", options={"num_epochs": 3}).state_dict()
    with pytest.warns(UserWarning, match="num_epochs"):
        make("annealed", options={"num_epochs": 6}).load_state_dict(annealed)
    with pytest.raises(TaskConfigError, match="missing"):
        make("uniform").load_state_dict({"epoch": 0})


def test_register_scheduler_rejects_nameless_and_duplicates():
    class Nameless(TaskScheduler):
        pass

    class Duplicate(TaskScheduler):
        name = "uniform"

    with pytest.raises(TypeError, match="name"):
        register_scheduler(Nameless)
    with pytest.raises(TypeError, match="already registered"):
        register_scheduler(Duplicate)
