"""MultiTaskTrainer: per-task keys, exact resume, output-dir safety, 2-process DDP."""

from __future__ import annotations

import textwrap
from pathlib import Path

import datasets
import pytest
import torch
from transformers import TrainerCallback

from helpers import launch_two_processes, tiny_bert_config, tiny_tokenizer
from hf_mtl import Task, TaskConfigError
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.trainer import MultiTaskTrainer
from hf_mtl.training_args import MultiTaskTrainingArguments


REPO = Path(__file__).resolve().parents[1]


def toy_data() -> dict[str, datasets.Dataset]:
    return {
        "sent": datasets.Dataset.from_dict({"text": ["good film", "bad film", "great movie", "terrible food", "nice plot", "awful story"] * 4,
                                            "label": ["pos", "neg", "pos", "neg", "pos", "neg"] * 4}),
        "sim": datasets.Dataset.from_dict({"text": ["good film", "bad film"] * 6, "b": ["great movie", "bad movie"] * 6,
                                           "label": [4.0, 1.5] * 6}),
        "ner": datasets.Dataset.from_dict({"tokens": [["john", "smith", "in", "paris"], ["acme", "corp", "is", "good"]] * 5,
                                           "tags": [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "O", "O"]] * 5}),
    }


def toy_tasks() -> list[Task]:
    return [Task("sent"), Task("sim", kind="regression", text_pair_column="b"),
            Task("ner", kind="token_classification", label_column="tags")]


class TaskRecorder(TrainerCallback):
    """Records which task each optimizer step trained (read from the sampler's history)."""

    def __init__(self) -> None:
        self.trainer = None
        self.tasks: list[str] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.tasks.append(self.trainer.task_sampler.last_task)


def make_trainer(out: Path, max_steps: int, eval_dataset: dict | None = None,
                 **overrides) -> tuple[MultiTaskTrainer, TaskRecorder]:
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    model = MultiTaskModel.from_config(tiny_bert_config(tok.vocab_size), toy_tasks(), tokenizer=tok, freeze_backbone=False)
    fields = dict(output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=4, learning_rate=1e-3,
                  save_steps=4, save_strategy="steps", logging_steps=2, report_to=[], seed=7,
                  sampling_strategy="temperature", use_cpu=True, dataloader_pin_memory=False, disable_tqdm=True)
    fields.update(overrides)
    args = MultiTaskTrainingArguments(**fields)
    data = toy_data()
    recorder = TaskRecorder()
    trainer = MultiTaskTrainer(model=model, args=args, train_dataset=data, eval_dataset=eval_dataset or data,
                               callbacks=[recorder])
    recorder.trainer = trainer
    return trainer, recorder


def weights(trainer: MultiTaskTrainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def test_eval_keys_per_task_and_average(tmp_path: Path) -> None:
    trainer, _ = make_trainer(tmp_path / "run", max_steps=2)
    trainer.train()
    metrics = trainer.evaluate()
    for key in ("eval_sent_accuracy", "eval_sent_f1", "eval_sim_pearson", "eval_ner_entity_f1", "eval_ner_accuracy", "eval_average"):
        assert key in metrics, key
    history = [entry for entry in trainer.state.log_history if any(k.startswith("train_") and k.endswith("_loss") for k in entry)]
    assert history, "per-task train losses were not logged"


def test_resume_is_exact(tmp_path: Path) -> None:
    full, full_rec = make_trainer(tmp_path / "full", max_steps=10)
    full.train()
    first, first_rec = make_trainer(tmp_path / "resumed", max_steps=10)
    first.args.max_steps = 10
    # stop after the checkpoint of step 4, as a crash would
    class Stop(TrainerCallback):
        def on_save(self, args, state, control, **kwargs):
            control.should_training_stop = True
    first.add_callback(Stop())
    first.train()
    assert (tmp_path / "resumed" / "checkpoint-4" / "hf_mtl_state.json").is_file()
    second, second_rec = make_trainer(tmp_path / "resumed", max_steps=10)
    second.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-4"))
    assert first_rec.tasks[:4] + second_rec.tasks == full_rec.tasks
    a, b = weights(full), weights(second)
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_output_dir_with_a_run_is_refused(tmp_path: Path) -> None:
    trainer, _ = make_trainer(tmp_path / "run", max_steps=2)
    trainer.train()
    trainer.save_model()
    again, _ = make_trainer(tmp_path / "run", max_steps=2)
    with pytest.raises(TaskConfigError, match="already holds a run.*overwrite_output_dir"):
        again.train()
    allowed, _ = make_trainer(tmp_path / "run", max_steps=2, overwrite_output_dir=True)
    allowed.train()


def test_unknown_sampling_strategy() -> None:
    with pytest.raises(TaskConfigError, match="Unknown sampling_strategy 'nope'. Fix: use one of"):
        MultiTaskTrainingArguments(output_dir="x", sampling_strategy="nope")


def test_checkpoint_has_no_pickled_model_or_args(tmp_path: Path) -> None:
    trainer, _ = make_trainer(tmp_path / "run", max_steps=4)
    trainer.train()
    files = {p.name for p in (tmp_path / "run" / "checkpoint-4").rglob("*")}
    assert "training_args.bin" not in files and "pytorch_model.bin" not in files
    assert "training_args.json" in files and "head.safetensors" in files


DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    sys.path[:0] = [{tests!r}, {repo!r}]  # the checkout under test, installed or not
    from transformers import TrainerCallback
    from test_trainer import make_trainer
    from pathlib import Path
    out = Path({out!r})
    trainer, recorder = make_trainer(out, max_steps=6, save_strategy="no", sampling_strategy="proportional")
    trainer.train()
    rank = int(os.environ.get("RANK", 0))
    state = {{k: v.tolist() for k, v in trainer.model.state_dict().items()}}
    (out / f"rank{{rank}}.json").write_text(json.dumps({{"tasks": recorder.tasks, "world": trainer.args.world_size, "state": state}}))
    """
)


def test_two_process_ddp_same_tasks_and_weights(tmp_path: Path) -> None:
    r0, r1 = launch_two_processes(DDP_SCRIPT, tmp_path / "ddp", tmp_path / "ddp_train.py", timeout=300)
    assert r0["world"] == r1["world"] == 2
    assert r0["tasks"] == r1["tasks"] and len(r0["tasks"]) == 6
    assert r0["state"] == r1["state"]
