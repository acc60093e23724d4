"""Training and evaluating generative tasks through `MultiTaskTrainer` and `hf-mtl train|eval` (issue 22, parts 4
and 7): teacher-forced loss per task, evaluation by generation (each rank its shard, every row scored once),
`predict` giving the generated texts, the recipe errors of generative runs, and a 2-process launch whose metrics
equal a 1-process evaluation of the saved model. Tiny random Llama / T5 with the file-less ByT5 tokenizer; full
fine-tuning (`adapter_method: "none"`, `freeze_backbone: false`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, ByT5Tokenizer, LlamaConfig, T5Config

from hf_mtl import MultiTaskModel, MultiTaskTrainer, Task
from hf_mtl.cli import main
from hf_mtl.data.collators import GenerativeCollator
from hf_mtl.errors import TaskConfigError
from hf_mtl.generation_metrics import compute_generation_metrics
from hf_mtl.trainer import generation_shard
from hf_mtl.training_args import MultiTaskTrainingArguments


REPO = Path(__file__).resolve().parents[1]
TOK = ByT5Tokenizer()
COMMON = dict(vocab_size=len(TOK), pad_token_id=0, eos_token_id=1)
SENT = {"text": ["good", "bad", "fine", "awful", "great", "dull"], "label": [1, 0, 1, 0, 1, 0]}
CITY = {"country": ["France", "Italy", "Spain", "Peru", "Chile"], "city": ["Paris", "Rome", "Madrid", "Lima", "Quito"]}


def llama_config() -> LlamaConfig:
    return LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, max_position_embeddings=256, bos_token_id=None, **COMMON)


def task_entries() -> list[dict]:
    """A label-words task (accuracy) and a free-text task scored by every text metric."""
    return [{"name": "sent", "kind": "causal_lm", "prompt_template": "Review: {text} Answer:", "label_column": "label",
             "label_words": {"0": "neg", "1": "pos"}},
            {"name": "city", "kind": "causal_lm", "prompt_template": "Capital of {country}:", "target_column": "city",
             "metrics": ["exact_match", "chrf", "rougeL", "bleu"], "generation": {"max_new_tokens": 8}}]


def llama_model(seed: int = 0) -> MultiTaskModel:
    torch.manual_seed(seed)
    tasks = [Task.from_dict(entry) for entry in task_entries()]
    return MultiTaskModel.from_config(llama_config(), tasks, tokenizer=TOK, adapter_method="none",
                                      freeze_backbone=False, fast_dropout=False)


def raw_data() -> dict[str, datasets.Dataset]:
    return {"sent": datasets.Dataset.from_dict(SENT), "city": datasets.Dataset.from_dict(CITY)}


def trainer_for(model: MultiTaskModel, tmp_path: Path, steps: int, eval_batch: int = 4, **fields) -> MultiTaskTrainer:
    args = MultiTaskTrainingArguments(
        output_dir=str(tmp_path / "out"), max_steps=steps, per_device_train_batch_size=4, learning_rate=1e-2,
        lr_scheduler_type="constant", per_device_eval_batch_size=eval_batch, save_strategy="no", report_to=[],
        disable_tqdm=True, seed=0, sampling_strategy="round_robin", **fields)
    return MultiTaskTrainer(model, args, train_dataset=raw_data(), eval_dataset=raw_data())


def expected_metrics(model: MultiTaskModel, batch_size: int) -> dict[str, float]:
    """What evaluation must report: the task's metrics of `model.generate` on the raw validation rows."""
    out = {}
    for name, data in raw_data().items():
        task = model.tasks[name]
        texts = model.generate(list(data), task=name, batch_size=batch_size)
        refs = [str(v) for v in data["label"]] if task.label_words else list(data["city"])
        out.update({f"eval_{name}_{k}": v for k, v in compute_generation_metrics(task, texts, refs).items()})
    return out


# ------------------------------------------------------------------------------------ MultiTaskTrainer
def train_and_evaluate(model: MultiTaskModel, tmp_path: Path, steps: int) -> dict[str, float]:
    """Train `model` on both tasks, check that each task's teacher-forced loss fell, and return the evaluation."""
    trainer = trainer_for(model, tmp_path, steps=steps)
    before = {name: trainer.target_loss(name, data) for name, data in trainer.eval_dataset.items()}
    trainer.train()
    after = trainer.evaluate()
    for name in ("sent", "city"):
        assert after[f"eval_{name}_loss"] < 0.8 * before[name]
    return after


def test_generative_tasks_train_and_evaluate_by_generation(tmp_path: Path) -> None:
    """Training lowers each task's teacher-forced loss; evaluation reports the scores of the generated texts (equal
    to generate() on the same rows with the same batch size), the loss and the average of the primary metrics."""
    model = llama_model()
    metrics = train_and_evaluate(model, tmp_path, steps=20)
    expected = expected_metrics(model, 4)
    assert set(expected) == {"eval_sent_accuracy", "eval_city_exact_match", "eval_city_chrf", "eval_city_rougeL",
                             "eval_city_bleu"}
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)
    assert metrics["eval_average"] == pytest.approx(np.mean([metrics["eval_sent_accuracy"],
                                                             metrics["eval_city_exact_match"]]))


@pytest.mark.parametrize("eval_batch", [8, 4])
def test_eval_loss_is_the_teacher_forced_loss_of_the_full_examples(tmp_path: Path, eval_batch: int) -> None:
    """`eval_<task>_loss` is the model's loss on prompt + target (the target tokens scored) as training sees it, over
    the whole set at once: the mean over its target tokens, whatever the evaluation batch size."""
    model = llama_model()
    trainer = trainer_for(model, tmp_path, steps=1, eval_batch=eval_batch)
    metrics = trainer.evaluate()
    for name in ("sent", "city"):
        rows = [{k: v for k, v in row.items() if k in ("input_ids", "labels")} for row in trainer.eval_dataset[name].data]
        batch = GenerativeCollator(TOK)(rows)
        with torch.no_grad():
            loss = model.eval()(**batch, task=name).loss
        assert metrics[f"eval_{name}_loss"] == pytest.approx(float(loss), rel=1e-5)


def test_generation_runs_in_batches_of_the_eval_batch_size(tmp_path: Path, monkeypatch) -> None:
    """Each task's rows go to generate_ids with the task's name and per_device_eval_batch_size, prompts only."""
    import hf_mtl.trainer as trainer_module

    calls = []
    original = trainer_module.generate_ids

    def spy(model, prompts, names, *, batch_size, **options):
        calls.append((list(dict.fromkeys(names)), len(prompts), batch_size, [len(p) for p in prompts]))
        return original(model, prompts, names, batch_size=batch_size, **options)

    monkeypatch.setattr(trainer_module, "generate_ids", spy)
    model = llama_model()
    trainer = trainer_for(model, tmp_path, steps=1, eval_batch=3)
    trainer.evaluate()
    prompt_lengths = {name: list(trainer.eval_dataset[name].data["prompt_length"]) for name in ("sent", "city")}
    assert calls == [(["sent"], 6, 3, prompt_lengths["sent"]), (["city"], 5, 3, prompt_lengths["city"])]


def test_seq2seq_tasks_train_and_evaluate_by_generation(tmp_path: Path) -> None:
    """An encoder-decoder (T5) trains its seq2seq tasks and is scored by generation like a decoder-only LM."""
    torch.manual_seed(0)
    config = T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4, decoder_start_token_id=0, **COMMON)
    entries = [dict(entry, kind="seq2seq") for entry in task_entries()]
    model = MultiTaskModel.from_config(config, [Task.from_dict(e) for e in entries], tokenizer=TOK,
                                       adapter_method="none", freeze_backbone=False, fast_dropout=False)
    metrics = train_and_evaluate(model, tmp_path, steps=10)
    expected = expected_metrics(model, 4)
    assert {k: metrics[k] for k in expected} == pytest.approx(expected)


def test_predict_gives_the_generated_texts(tmp_path: Path) -> None:
    """`predict` of a generative task: the generated texts as predictions; a split without targets has no label_ids
    and no metrics, one with targets gets the references and the generation metrics."""
    model = llama_model()
    trainer = trainer_for(model, tmp_path, steps=1)
    unlabeled = datasets.Dataset.from_dict({"country": CITY["country"]})
    out = trainer.predict({"city": unlabeled, "sent": datasets.Dataset.from_dict(SENT)})
    assert out["city"].predictions == model.generate(CITY["country"], task="city", batch_size=4)
    assert out["city"].label_ids is None and not any(k.endswith(("exact_match", "loss")) for k in out["city"].metrics)
    assert out["sent"].predictions == model.generate(SENT["text"], task="sent", batch_size=4)
    assert out["sent"].label_ids == [str(v) for v in SENT["label"]]
    assert {"test_sent_accuracy", "test_sent_loss"} <= set(out["sent"].metrics)


def test_predict_of_an_encoder_task_gives_its_logits(tmp_path: Path) -> None:
    """`predict` is per task for encoder tasks too: the logits, the label ids and `test_<task>_<metric>`."""
    from helpers import TINY_ROWS, tiny_bert_config, tiny_tokenizer

    tok = tiny_tokenizer()
    model = MultiTaskModel.from_config(tiny_bert_config(tok.vocab_size), [Task("sent")], tokenizer=tok)
    data = datasets.Dataset.from_dict({"text": [t for t, _ in TINY_ROWS], "label": [lab for _, lab in TINY_ROWS]})
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], disable_tqdm=True)
    trainer = MultiTaskTrainer(model, args, train_dataset={"sent": data})
    out = trainer.predict({"sent": data})["sent"]
    assert out.predictions.shape == (len(TINY_ROWS), 2) and list(out.label_ids) == [1, 0, 1, 0, 1, 0]
    assert out.metrics["test_sent_accuracy"] == pytest.approx(np.mean(out.predictions.argmax(-1) == out.label_ids))


def test_generative_recipe_with_nothing_to_train_is_one_error(tmp_path: Path, capsys) -> None:
    """The recipe defaults (adapter_method "none", a frozen backbone) leave a generative task no parameter: one line
    naming the task and the fix, instead of a failing backward pass."""
    recipe_path = write_generative_recipe(tmp_path)
    recipe = json.loads(recipe_path.read_text())
    del recipe["adapter_method"], recipe["freeze_backbone"]
    recipe_path.write_text(json.dumps(recipe))
    capsys.readouterr()
    assert main(["train", str(recipe_path)]) == 2
    err = error_line(capsys.readouterr().err)
    for part in ("task 'sent'", "nothing would train", "adapter_method 'none'", "freeze_backbone",
                 "Fix: set adapter_method"):
        assert part in err, err


@pytest.mark.parametrize("rows, world", [(5, 2), (6, 2), (1, 2), (7, 3), (4, 1)])
def test_generation_shards_cover_every_row_once(rows: int, world: int) -> None:
    """Every rank gets as many rows (so ranks run the same number of batches); the shards in rank order, cut to the
    row count, are the rows in order: the gathered texts count each row exactly once."""
    shards = [generation_shard(rows, rank, world) for rank in range(world)]
    assert len({len(s) for s in shards}) == 1
    assert [i for s in shards for i in s][:rows] == list(range(rows))
    assert [i for rank in range(world) for i in generation_shard(rows, rank, world, pad=False)] == list(range(rows))


def test_evaluation_by_generation_under_fsdp_is_refused_with_the_fix(tmp_path: Path, monkeypatch) -> None:
    """Under FSDP (each rank holds a shard of the weights) generation is refused: when the trainer is built with
    generative evaluation data, before any step, and when evaluation data comes later."""
    from transformers import Trainer

    create = Trainer.create_accelerator_and_postprocess

    def as_if_fsdp(self) -> None:
        create(self)
        self.is_fsdp_enabled = True

    monkeypatch.setattr(Trainer, "create_accelerator_and_postprocess", as_if_fsdp)
    with pytest.raises(TaskConfigError, match=r"task 'sent'.*FSDP.*Fix: .*no `validation_file`.*hf-mtl eval"):
        trainer_for(llama_model(), tmp_path, steps=1)
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], disable_tqdm=True)
    trainer = MultiTaskTrainer(llama_model(), args, train_dataset=raw_data())  # training alone is not refused
    with pytest.raises(TaskConfigError, match=r"task 'sent'.*FSDP"):
        trainer.evaluate(raw_data())


# ------------------------------------------------------------------------------------ hf-mtl train | eval
def write_generative_recipe(root: Path, tasks: list[dict] | None = None, **fields) -> Path:
    """A tiny Llama (seed 0) with the ByT5 tokenizer saved in `root/backbone`, the two tasks' data as JSON lines, and
    a recipe over them."""
    root.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        AutoModelForCausalLM.from_config(llama_config()).save_pretrained(root / "backbone")
    TOK.save_pretrained(root / "backbone")
    entries = []
    for entry, data in zip(task_entries(), (SENT, CITY)):
        path = root / f"{entry['name']}.jsonl"
        path.write_text("".join(json.dumps(dict(zip(data, values))) + "\n" for values in zip(*data.values())))
        entries.append({**entry, "train_file": str(path), "validation_file": str(path)})
    recipe = {"output_dir": str(root / "out"), "model_name_or_path": str(root / "backbone"),
              "tasks": tasks if tasks is not None else entries, "adapter_method": "none", "freeze_backbone": False,
              "max_steps": 10, "per_device_train_batch_size": 2, "per_device_eval_batch_size": 2,
              "learning_rate": 1e-2, "lr_scheduler_type": "constant", "sampling_strategy": "round_robin", "save_strategy": "no", "report_to": "none",
              "seed": 0, "disable_tqdm": True, "max_seq_length": 64}
    recipe.update(fields)
    path = root / "recipe.json"
    path.write_text(json.dumps(recipe))
    return path


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU-host launch: this host has a GPU")
def test_two_process_launch_evaluates_each_rank_shard_and_matches_one_process(tmp_path: Path, capsys) -> None:
    """`accelerate launch --multi_gpu --num_processes 2 -m hf_mtl.cli train RECIPE` of a generative recipe (2 CPU
    processes over gloo): the ranks generate their shards of 6 and 5 rows (3 each, one padded row on the odd set),
    and the gathered metrics equal `hf-mtl eval` of the saved model in one process."""
    recipe = write_generative_recipe(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "accelerate.commands.accelerate_cli", "launch", "--multi_gpu", "--num_processes", "2",
           "-m", "hf_mtl.cli", "train", str(recipe)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    launched = json.loads((tmp_path / "out" / "eval_results.json").read_text())
    assert proc.stdout.count('"output_dir"') == 1, proc.stdout  # one evaluation, reported once
    assert '"eval_city_chrf"' in proc.stdout and '"eval_sent_accuracy"' in proc.stdout  # the generation scores too
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "out"), "--batch-size", "4", "--max-seq-length", "64"]) == 0
    alone = json.loads(capsys.readouterr().out)
    scores = [k for k in alone if k.endswith(("_accuracy", "_exact_match", "_chrf", "_rougeL", "_bleu", "_average"))]
    assert len(scores) == 6
    assert {k: launched[k] for k in scores} == pytest.approx({k: alone[k] for k in scores}, abs=1e-9)
    for name in ("sent", "city"):  # the loss too: the mean over every target token, each row counted once
        assert launched[f"eval_{name}_loss"] == pytest.approx(alone[f"eval_{name}_loss"], rel=1e-5)


def test_recipe_mixing_encoder_and_generative_tasks_is_one_error(tmp_path: Path, capsys) -> None:
    """An encoder kind next to generative tasks on a decoder-only LM: one line naming the task, its kind, the
    backbone's layout and the fix, before any data is read (the encoder task's file does not exist)."""
    tasks = [*task_entries(), {"name": "topic", "kind": "classification", "train_file": str(tmp_path / "nope.jsonl")}]
    tasks[0]["train_file"] = tasks[1]["train_file"] = str(tmp_path / "nope.jsonl")
    recipe = write_generative_recipe(tmp_path, tasks=tasks)
    capsys.readouterr()
    assert main(["train", str(recipe)]) == 2
    err = error_line(capsys.readouterr().err)
    for part in ("task 'topic'", "kind='classification'", "'decoder-only'", "['city', 'sent']",
                 "share the backbone", "Fix: give 'topic' kind 'causal_lm'"):
        assert part in err, err


def test_recipe_mixing_generative_and_encoder_tasks_on_an_encoder_is_one_error(tmp_path: Path, capsys) -> None:
    """The other way round: a generative task next to an encoder task on a BERT backbone."""
    from helpers import write_tiny_recipe

    recipe_path = write_tiny_recipe(tmp_path)
    recipe = json.loads(recipe_path.read_text())
    recipe["tasks"].append({**task_entries()[1], "train_file": str(tmp_path / "nope.jsonl")})
    recipe_path.write_text(json.dumps(recipe))
    capsys.readouterr()
    assert main(["train", str(recipe_path)]) == 2
    err = error_line(capsys.readouterr().err)
    for part in ("task 'city'", "kind='causal_lm'", "'encoder'", "encoder tasks ['sent']", "Fix: train the generative "
                 "tasks ['city'] in a separate run"):
        assert part in err, err


def error_line(stderr: str) -> str:
    """The one `error: ...` line of a failed command (data loading may have drawn progress bars before it)."""
    errors = [line for line in stderr.splitlines() if "error: " in line]
    assert len(errors) == 1 and stderr.strip().endswith(errors[0]), stderr
    return errors[0][errors[0].index("error: "):]


BAD_GENERATIVE = [
    ({"prompt_template": "Review: {review} Answer:"}, ["task 'sent'", "`prompt_template`", "'review'", "Fix:"]),
    ({"label_words": {"0": "neg"}}, ["task 'sent'", "`label_words`", "Fix:"]),
    ({"label_words": {"0": "neg", "1": "Neg"}}, ["task 'sent'", "`label_words`", "same word", "Fix:"]),
    ({"label_words": {"0": "neg", "2": "pos"}}, ["task 'sent'", "label(s) ['1']", "`label_words`", "Fix:"]),
    ({"label_words": None, "label_column": "stars"}, ["task 'sent'", "no target", "`target_column`", "Fix:"]),
    ({"generation": {"max_new_token": 3}}, ["task 'sent'", "'max_new_token'", "'max_new_tokens'", "Fix:"]),
    ({"prompt_template": "Review: {text} " + "please answer " * 10 + "Answer:"},
     ["task 'sent'", "`max_seq_length` 64", "Fix:"]),
]


@pytest.mark.parametrize("change, parts", BAD_GENERATIVE, ids=["missing_column", "one_label_word", "same_word",
                                                              "label_without_word", "no_target", "generation_option",
                                                              "no_room_for_target"])
def test_bad_generative_recipe_is_one_error_line(tmp_path: Path, capsys, change: dict, parts: list[str]) -> None:
    recipe_path = write_generative_recipe(tmp_path)
    recipe = json.loads(recipe_path.read_text())
    recipe["tasks"][0].update(change)
    recipe["tasks"][0] = {k: v for k, v in recipe["tasks"][0].items() if v is not None}
    recipe_path.write_text(json.dumps(recipe))
    capsys.readouterr()
    assert main(["train", str(recipe_path)]) == 2
    err = error_line(capsys.readouterr().err)
    for part in parts:
        assert part in err, err
