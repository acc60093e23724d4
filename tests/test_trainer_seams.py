"""MultiTaskTrainer's seams with transformers and accelerate: the extra checkpoint state (task sampler, optimization
strategies) saved with every checkpoint and required on resume, the accelerate shard adjustment against the
accelerate API it relies on, and CI's warning filters that let deprecations in the hooks' libraries show up."""

from __future__ import annotations

import inspect
import json
import re
import warnings
from pathlib import Path

import accelerate
import pytest
from accelerate.data_loader import BatchSamplerShard
from packaging.specifiers import SpecifierSet
from torch.utils.data import DataLoader
from transformers import TrainerCallback

import hf_mtl.trainer as trainer_module
from hf_mtl import DataError, TaskConfigError
from hf_mtl.io_utils import atomic_write_json
from hf_mtl.trainer import CHECKPOINT_COMPLETE_NAME, MTL_STATE_NAME, keep_rank_aware_batches, load_checkpoint_state
from test_trainer import make_trainer


REPO = Path(__file__).resolve().parents[1]


class StopAtSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        control.should_training_stop = True


def first_checkpoint(out: Path, **overrides) -> Path:
    trainer, _ = make_trainer(out, max_steps=4, save_steps=2, **overrides)
    trainer.add_callback(StopAtSave())
    trainer.train()
    return out / "checkpoint-2"


# ---------------------------------------------------------------------------------------------- checkpoint state

def test_resume_without_the_extra_state_is_an_error(tmp_path: Path) -> None:
    """Without the sampler's state a resumed run would silently draw a different task sequence."""
    checkpoint = first_checkpoint(tmp_path / "run")
    assert (checkpoint / CHECKPOINT_COMPLETE_NAME).is_file()
    (checkpoint / MTL_STATE_NAME).unlink()
    resumed, recorder = make_trainer(tmp_path / "run", max_steps=4, save_steps=2)
    with pytest.raises(DataError, match=rf"{re.escape(str(checkpoint))} has no {MTL_STATE_NAME}.*Fix: "):
        resumed.train(resume_from_checkpoint=str(checkpoint))
    assert recorder.tasks == []  # refused before any step


def test_extra_state_is_written_before_the_complete_marker(tmp_path: Path, monkeypatch) -> None:
    """The marker stays the checkpoint's last file: a checkpoint without the extra state is incomplete."""
    written = []

    def write(path, obj):
        written.append(Path(path).name)
        atomic_write_json(path, obj)

    monkeypatch.setattr(trainer_module, "atomic_write_json", write)
    checkpoint = first_checkpoint(tmp_path / "run")
    assert written[-2:] == [MTL_STATE_NAME, CHECKPOINT_COMPLETE_NAME], written
    assert set(json.loads((checkpoint / MTL_STATE_NAME).read_text())) == {"sampler", "optim"}


@pytest.mark.parametrize("content", ['{"sampler": {}}', "[]"])
def test_extra_state_without_a_part_is_an_error(tmp_path: Path, content: str) -> None:
    (tmp_path / MTL_STATE_NAME).write_text(content)
    with pytest.raises(DataError, match=rf"{MTL_STATE_NAME} lacks .*optim.*Fix: "):
        load_checkpoint_state(str(tmp_path))


def test_extra_state_is_saved_with_model_only_checkpoints(tmp_path: Path) -> None:
    """`save_only_model` skips the Trainer's RNG/optimizer hooks; the run's task sequence is still saved."""
    checkpoint = first_checkpoint(tmp_path / "run", save_only_model=True)
    assert (checkpoint / MTL_STATE_NAME).is_file()


# ---------------------------------------------------------------------------------------------- accelerate shard

def allowed_accelerate() -> SpecifierSet:
    match = re.search(r'"accelerate([^"]+)"', (REPO / "setup.py").read_text())
    assert match, "setup.py names no accelerate range"
    return SpecifierSet(match.group(1))


class RankAwareSampler:
    """A batch sampler like the task sampler: batches of different sizes (one task's, every task's)."""

    batch_size = 2
    drop_last = False

    def __iter__(self):
        return iter([[0, 1], [2, 3, 4, 5, 6, 7], [8, 9], [10, 11]][:self.n])

    def __init__(self, n: int = 3) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n


def test_shard_adjustment_against_the_installed_accelerate() -> None:
    """Runs against the installed accelerate, which setup.py's range (accelerate>=1.10,<2) must contain; the
    function relies on `BatchSamplerShard(batch_sampler, num_processes, process_index, ...)` keeping those as
    attributes plus `batch_size`, and on iterating with `batch_size=None` as a pass-through of variable batches."""
    assert allowed_accelerate().contains(accelerate.__version__), (accelerate.__version__, str(allowed_accelerate()))
    params = inspect.signature(BatchSamplerShard.__init__).parameters
    assert {"batch_sampler", "num_processes", "process_index"} <= set(params)
    for n in (3, 4):  # an odd number of batches would otherwise be evened out with batches from the start
        sampler = RankAwareSampler(n)
        loader = DataLoader(list(range(12)), batch_sampler=BatchSamplerShard(sampler, num_processes=2, process_index=1))
        assert [len(b) for b in loader.batch_sampler] != [len(b) for b in sampler]  # accelerate re-shards it
        keep_rank_aware_batches(loader, sampler)
        assert list(loader.batch_sampler) == list(sampler)
        assert len(loader.batch_sampler) == len(sampler)


def test_shard_adjustment_leaves_a_single_process_loader_alone() -> None:
    sampler = RankAwareSampler()
    loader = DataLoader(list(range(12)), batch_sampler=sampler)
    keep_rank_aware_batches(loader, sampler)
    assert loader.batch_sampler is sampler


def test_shard_adjustment_refuses_an_unknown_wrapper() -> None:
    """A future accelerate that wraps the sampler some other way fails loudly instead of re-sharding batches."""

    class OtherWrapper(RankAwareSampler):
        def __init__(self, batch_sampler) -> None:
            super().__init__()
            self.batch_sampler = batch_sampler

    sampler = RankAwareSampler()
    loader = DataLoader(list(range(12)), batch_sampler=OtherWrapper(sampler))
    with pytest.raises(TaskConfigError, match=r"OtherWrapper.*Fix: install accelerate>=1.10,<2"):
        keep_rank_aware_batches(loader, sampler)


# ---------------------------------------------------------------------------------------------- warnings in CI

@pytest.mark.parametrize("module", ["transformers.trainer", "accelerate.data_loader", "peft.tuners.lora", "hf_mtl.trainer"])
@pytest.mark.parametrize("category", [DeprecationWarning, FutureWarning])
def test_deprecations_from_the_hooked_libraries_fail_the_tests(module: str, category: type[Warning]) -> None:
    """pytest.ini turns these into errors (only named, understood warnings are filtered), so drift shows up."""
    with pytest.raises(category):
        warnings.warn_explicit("drift", category, filename=f"{module}.py", lineno=1, module=module)
