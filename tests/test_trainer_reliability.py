"""MultiTaskTrainer reliability: checkpoints killed mid-save, one seed = one run, quiet CPU evaluation,
evaluation that says what it skips, processes that each think they are alone."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from helpers import write_tiny_recipe
from hf_mtl import DataError, HfMtlError, Task
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.run import load_recipe, run_evaluation, run_training
from hf_mtl.trainer import CHECKPOINT_COMPLETE_NAME, MultiTaskTrainer, check_world_size
from hf_mtl.training_args import MultiTaskTrainingArguments
from test_trainer import make_trainer, toy_data, weights


REPO = Path(__file__).resolve().parents[1]


def store_tensors(out: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a saved store, keyed by file and name."""
    return {f"{path.relative_to(out)}:{key}": value
            for path in sorted(out.rglob("*.safetensors")) for key, value in load_file(str(path)).items()}


# ---------------------------------------------------------------------------------------------- one seed, one run
def test_same_seed_same_weights_through_run_training(tmp_path: Path) -> None:
    """Two fresh runs of one recipe give bitwise equal weights, whatever the random state before them
    (the heads used to be drawn before the recipe's seed was set)."""
    recipe = write_tiny_recipe(tmp_path / "recipe")
    stores = []
    for run in ("a", "b"):
        torch.rand(1 + len(stores))  # a different random state before each run, as in a fresh process
        out = tmp_path / run
        run_training(load_recipe(recipe, ["--output_dir", str(out)]))
        stores.append(store_tensors(out))
    assert stores[0].keys() == stores[1].keys() and any("head" in key for key in stores[0])
    for key in stores[0]:
        assert torch.equal(stores[0][key], stores[1][key]), key


def test_same_seed_same_weights_python_path(tmp_path: Path) -> None:
    """A model built from a pretrained backbone before the arguments: the heads the trainer adds (labels read
    from the data) come from `args.seed`, not from whatever the global random state was."""
    write_tiny_recipe(tmp_path / "recipe")
    results = []
    for run in ("a", "b"):
        torch.rand(3 + len(results))
        model = MultiTaskModel.from_backbone(str(tmp_path / "recipe" / "backbone"), [Task("sent")])
        args = MultiTaskTrainingArguments(output_dir=str(tmp_path / run), max_steps=2, per_device_train_batch_size=4,
                                          report_to=[], seed=5, save_strategy="no", disable_tqdm=True)
        trainer = MultiTaskTrainer(model=model, args=args, train_dataset={"sent": toy_data()["sent"]})
        trainer.train()
        results.append(weights(trainer))
    for key in results[0]:
        assert torch.equal(results[0][key], results[1][key]), key


# ---------------------------------------------------------------------------------------------- checkpoints
KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    sys.path[:0] = [{tests!r}, {repo!r}]
    from pathlib import Path
    import torch
    import hf_mtl.io_utils as io_utils
    from test_trainer import make_trainer

    trainer, _ = make_trainer(Path({out!r}), max_steps=6, save_steps=2)

    def killed_after(real):
        def write(*args, **kwargs):
            real(*args, **kwargs)
            if trainer.state.global_step == 4:
                os.kill(os.getpid(), signal.SIGKILL)
        return write

    if {point!r} == "store":  # mid-write of checkpoint-4's store: its staging folder holds the first file
        io_utils.save_file = killed_after(io_utils.save_file)
    else:  # the store is in place, the Trainer's own files are being written: no completion marker yet
        torch.save = killed_after(torch.save)
    trainer.train()
    """
)


@pytest.mark.parametrize("point", ["store", "trainer_files"])
def test_resume_skips_a_checkpoint_killed_mid_save(tmp_path: Path, caplog, point: str) -> None:
    out = tmp_path / "run"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT.format(tests=str(REPO / "tests"), repo=str(REPO), out=str(out), point=point))
    # the threads of this process: the resumed steps run here and are compared bitwise with a run made here
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads()), "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert (out / "checkpoint-2" / CHECKPOINT_COMPLETE_NAME).is_file()
    killed = out / "checkpoint-4"
    if point == "store":  # the store is saved atomically: the killed save left only its staging folder
        assert not killed.exists() and [p for p in out.iterdir() if p.name.startswith(".checkpoint-4")]
        resumed, resumed_rec = make_trainer(out, max_steps=6, save_steps=2)
        resumed.train(resume_from_checkpoint=True)
        _check_resumed(tmp_path, out, resumed, resumed_rec)
        return
    assert killed.is_dir() and not (killed / CHECKPOINT_COMPLETE_NAME).exists()

    # an explicit path to the killed checkpoint is refused, naming the newest complete one
    trainer, _ = make_trainer(out, max_steps=6, save_steps=2)
    with pytest.raises(DataError, match=r"checkpoint-4 is incomplete.*Fix: .*checkpoint-2"):
        trainer.train(resume_from_checkpoint=str(killed))

    # resume_from_checkpoint=True takes checkpoint-2, says why checkpoint-4 was skipped, and ends like an unbroken run
    resumed, resumed_rec = make_trainer(out, max_steps=6, save_steps=2)
    with caplog.at_level(logging.WARNING, logger="hf_mtl.trainer"):
        resumed.train(resume_from_checkpoint=True)
    skipped = [r.getMessage() for r in caplog.records if "checkpoint-4" in r.getMessage()]
    assert len(skipped) == 1 and "incomplete" in skipped[0] and "checkpoint-2" in skipped[0], skipped
    _check_resumed(tmp_path, out, resumed, resumed_rec)


def _check_resumed(tmp_path: Path, out: Path, resumed: Any, resumed_rec: Any) -> None:
    """The resumed run trained steps 3..6, left no partial files, and ends like an unbroken run."""
    assert len(resumed_rec.tasks) == 4  # steps 3..6
    assert not list(out.rglob("*.tmp")) and not [p for p in out.iterdir() if p.name.startswith(".")]
    for step in (2, 4, 6):
        assert (out / f"checkpoint-{step}" / CHECKPOINT_COMPLETE_NAME).is_file()
    full, _ = make_trainer(tmp_path / "full", max_steps=6, save_steps=2)
    full.train()
    a, b = weights(full), weights(resumed)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_checkpoint_rotation_waits_for_the_new_checkpoint(tmp_path: Path, monkeypatch) -> None:
    """With save_total_limit=1 the older checkpoint goes only once the new one is complete: a run stopped
    before that still has a checkpoint to resume from."""
    import hf_mtl.trainer as trainer_module

    real_write = trainer_module.atomic_write_json

    def write(path, obj):
        if Path(path).name == CHECKPOINT_COMPLETE_NAME and Path(path).parent.name == "checkpoint-4":
            raise KeyboardInterrupt  # stopped just before checkpoint-4 was marked complete
        real_write(path, obj)

    monkeypatch.setattr(trainer_module, "atomic_write_json", write)
    trainer, _ = make_trainer(tmp_path / "run", max_steps=4, save_steps=2, save_total_limit=1)
    with pytest.raises(KeyboardInterrupt):
        trainer.train()
    assert (tmp_path / "run" / "checkpoint-2" / CHECKPOINT_COMPLETE_NAME).is_file()
    monkeypatch.setattr(trainer_module, "atomic_write_json", real_write)
    again, _ = make_trainer(tmp_path / "again", max_steps=4, save_steps=2, save_total_limit=1)
    again.train()
    assert sorted(p.name for p in (tmp_path / "again").glob("checkpoint-*")) == ["checkpoint-4"]


def test_cpu_evaluation_does_not_ask_for_pinned_memory(tmp_path: Path) -> None:
    """Pinned memory only helps copies to an accelerator; on the CPU torch warns on every evaluation."""
    trainer, _ = make_trainer(tmp_path / "run", max_steps=1, use_cpu=False, dataloader_pin_memory=True)
    assert trainer.args.device.type == "cpu" and trainer.args.dataloader_pin_memory is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.evaluate()
    assert not [w for w in caught if "pin_memory" in str(w.message)]


def test_training_names_a_task_without_validation_data(tmp_path: Path, caplog) -> None:
    recipe = write_tiny_recipe(tmp_path / "recipe", validation=False)
    with caplog.at_level(logging.WARNING, logger="hf_mtl"):
        out = run_training(load_recipe(recipe, ["--output_dir", str(tmp_path / "store")]))
    assert "eval" not in out
    said = [r.getMessage() for r in caplog.records if "'sent'" in r.getMessage()]
    assert len(said) == 1 and "not evaluated" in said[0] and "validation_file" in said[0], said


def test_eval_of_a_store_reports_no_epoch(tmp_path: Path) -> None:
    """`hf-mtl eval` of a saved store: no training, so no `epoch` (it used to say 0)."""
    recipe = write_tiny_recipe(tmp_path / "recipe")
    run_training(load_recipe(recipe, ["--output_dir", str(tmp_path / "store"), "--max_steps", "1"]))
    metrics = run_evaluation(str(tmp_path / "store"))
    assert "eval_sent_accuracy" in metrics and not [key for key in metrics if "epoch" in key], metrics


def test_evaluation_names_a_task_without_validation_data_once(tmp_path: Path, caplog) -> None:
    data = toy_data()
    with caplog.at_level(logging.WARNING, logger="hf_mtl.trainer"):
        trainer, _ = make_trainer(tmp_path / "run", max_steps=1, eval_dataset={"sent": data["sent"], "sim": data["sim"]})
        trainer.evaluate()
        metrics = trainer.evaluate()
    said = [r.getMessage() for r in caplog.records if "'ner'" in r.getMessage()]
    assert len(said) == 1 and "not evaluated" in said[0] and "validation_file" in said[0], said
    assert "eval_sent_accuracy" in metrics and not any(key.startswith("eval_ner") for key in metrics)


# ---------------------------------------------------------------------------------------------- processes
def test_processes_that_each_think_they_are_alone_are_refused(tmp_path: Path, monkeypatch) -> None:
    """A launcher started 2 processes (WORLD_SIZE=2) but the arguments set up a single-process run: two
    independent trainings into one output_dir. Refused, naming the fix."""
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path), report_to=[])
    assert args.world_size == 1
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(HfMtlError, match=r"2 processes .* world_size 1 .*Fix: "):
        check_world_size(args)
    monkeypatch.setenv("WORLD_SIZE", "1")
    check_world_size(args)


def test_cli_refuses_a_launch_of_lone_processes(tmp_path: Path, monkeypatch, capsys) -> None:
    """`hf-mtl train` in a process of a 2-process launch whose arguments end up alone: one error line, before any
    data or model is loaded (here the CPU processes are kept from joining, as a launcher might)."""
    import hf_mtl.training_args as training_args_module
    from hf_mtl.cli import main

    recipe = write_tiny_recipe(tmp_path)
    capsys.readouterr()
    monkeypatch.setattr(training_args_module, "_cpu_processes_of_one_run", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: 2 processes were launched together") and "Fix: " in err and "\n" not in err
    assert not (tmp_path / "out").exists()
