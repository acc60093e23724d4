"""MultiTaskTrainer with the optimization strategies: exactness of all_tasks under gradient accumulation
and 2-process DDP, exact resume with each strategy's state, the survey's architecture options, bad input."""

from __future__ import annotations

import copy
import json
import textwrap
from pathlib import Path

import datasets
import pytest
import torch
from transformers import TrainerCallback

from helpers import launch_two_processes, tiny_bert_config, tiny_tokenizer
from hf_mtl import DataError, Task, TaskConfigError
from hf_mtl.modeling import MultiTaskModel
from hf_mtl.modeling.adversarial import GradientReversal
from hf_mtl.optim.mixed import forward_per_task
from hf_mtl.optim.plan import shared_parameters
from hf_mtl.optim.task_gradients import TaskGradients
from hf_mtl.tasks import tasks_from_config
from hf_mtl.trainer import MultiTaskTrainer
from hf_mtl.training_args import MultiTaskTrainingArguments
from test_trainer import toy_data


REPO = Path(__file__).resolve().parents[1]
NO_DROPOUT = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}


def toy_tasks(adversarial: float = 0.0) -> list[Task]:
    return [Task("sent", adversarial_weight=adversarial), Task("sim", kind="regression", text_pair_column="b", adversarial_weight=adversarial),
            Task("ner", kind="token_classification", label_column="tags")]


def make(out: Path, max_steps: int = 4, *, tasks: list[Task] | None = None, dropout: bool = True, eval_data: dict | None = None,
         adapter_method: str = "none", adapter_config: dict | None = None, freeze_backbone: bool = False,
         **overrides) -> MultiTaskTrainer:
    """A tiny trainer on the toy data; `dropout=False` makes runs with different batch splits comparable."""
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    config = tiny_bert_config(tok.vocab_size, **({} if dropout else NO_DROPOUT))
    tasks = copy.deepcopy(tasks) if tasks else toy_tasks()  # a trainer sets the labels of its tasks: never share them
    model = MultiTaskModel.from_config(config, tasks, tokenizer=tok, freeze_backbone=freeze_backbone,
                                       adapter_method=adapter_method, adapter_config=adapter_config,
                                       head_dropout=None if dropout else 0.0)
    fields = dict(output_dir=str(out), max_steps=max_steps, per_device_train_batch_size=4, learning_rate=1e-3,
                  save_strategy="no", logging_steps=1, report_to=[], seed=7, use_cpu=True, dataloader_pin_memory=False,
                  disable_tqdm=True)
    fields.update(overrides)
    data = toy_data()
    return MultiTaskTrainer(model=model, args=MultiTaskTrainingArguments(**fields), train_dataset=data,
                            eval_dataset=data if eval_data is None else eval_data)


def weights(trainer: MultiTaskTrainer) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=atol, rtol=0, msg=key)


# ---------------------------------------------------------------------------------------------- exactness

EXACT = {  # all_tasks + ...: the same update however the step's batch is split (SGD: no Adam amplification)
    "plain": {},
    "pcgrad": {"gradient_surgery": "pcgrad"},
    "tchebycheff": {"loss_weighting": "tchebycheff"},
    "uncertainty+gradvac+adversarial": {"loss_weighting": "uncertainty", "gradient_surgery": "gradvac", "tasks": toy_tasks(0.5)},
}
COMBINED = dict(sampling_strategy="all_tasks", optim="sgd", learning_rate=0.1, dropout=False, max_steps=3)


@pytest.mark.parametrize("case", list(EXACT))
def test_gradient_accumulation_gives_the_combined_batch_update(tmp_path: Path, case: str) -> None:
    options = {**COMBINED, **EXACT[case]}
    combined = make(tmp_path / "combined", per_device_train_batch_size=8, **options)
    combined.train()
    accumulated = make(tmp_path / "accumulated", per_device_train_batch_size=4, gradient_accumulation_steps=2, **options)
    accumulated.train()
    assert accumulated.optim_plan.per_task_gradients == (case != "plain")
    assert_same_weights(weights(combined), weights(accumulated), atol=1e-6)
    a, b = combined.optim_plan.state_dict(), accumulated.optim_plan.state_dict()
    for key in ("log_sigma", "running"):
        if key in a["loss_weighting"]:
            assert a["loss_weighting"][key] == pytest.approx(b["loss_weighting"][key], abs=1e-6)


def test_per_task_gradients_match_the_plain_step_without_surgery(tmp_path: Path) -> None:
    """The per-task path (G, c_t, Σ_t c_t G_t) writes the gradient the Trainer's own backward gives."""
    plain = make(tmp_path / "plain", **COMBINED, loss_weighting="uncertainty", tasks=toy_tasks(0.5))
    plain.train()
    per_task = make(tmp_path / "per_task", **COMBINED, loss_weighting="uncertainty", tasks=toy_tasks(0.5))
    per_task.optim_plan.per_task_gradients = per_task.optim_plan.manual_sync = True
    model = per_task.model
    per_task.optim_plan.task_gradients = TaskGradients(per_task.optim_plan.task_names,
                                                       [p for p in model.parameters() if p.requires_grad],
                                                       shared_parameters(model), None)
    per_task.train()
    assert_same_weights(weights(plain), weights(per_task), atol=1e-6)


# ---------------------------------------------------------------------------------------------- resume

RESUME = {
    "all_tasks+uncertainty+gradvac+adversarial": dict(sampling_strategy="all_tasks", loss_weighting="uncertainty",
                                                      gradient_surgery="gradvac", tasks=toy_tasks(0.5)),
    "all_tasks+tchebycheff+pcgrad+ga2": dict(sampling_strategy="all_tasks", loss_weighting="tchebycheff",
                                             gradient_surgery="pcgrad", gradient_accumulation_steps=2),
    "bandit+dwa": dict(sampling_strategy="bandit", sampling_options={"reward_every": 2, "tau": 0.05},
                       loss_weighting="dwa", loss_weighting_options={"window_steps": 2}),
    "uncertainty+curriculum": dict(sampling_strategy="uncertainty", loss_weighting="curriculum",
                                   loss_weighting_options={"midpoints": {"sim": 0.5}, "linear": ["ner"]}),
    "sequential_stages+size": dict(sampling_strategy="sequential", loss_weighting="size",
                                   sampling_options={"stages": [{"step": 0, "tasks": ["ner"]}, {"step": 2, "tasks": "all"}]}),
}


class StopAtFirstSave(TrainerCallback):
    def on_save(self, args, state, control, **kwargs):
        control.should_training_stop = True


def states(trainer: MultiTaskTrainer) -> tuple[dict, dict]:
    return trainer.optim_plan.state_dict(), trainer.task_sampler.scheduler.state_dict()


@pytest.mark.parametrize("case", list(RESUME))
def test_resume_is_exact_with_each_strategy_state(tmp_path: Path, case: str) -> None:
    options = dict(RESUME[case], max_steps=6, save_strategy="steps", save_steps=3)
    full = make(tmp_path / "full", **options)
    full.train()
    first = make(tmp_path / "resumed", **options)
    first.add_callback(StopAtFirstSave())
    first.train()
    saved = json.loads((tmp_path / "resumed" / "checkpoint-3" / "hf_mtl_state.json").read_text())
    assert saved["optim"]["loss_weighting"]["name"] == options["loss_weighting"]
    second = make(tmp_path / "resumed", **options)
    second.train(resume_from_checkpoint=str(tmp_path / "resumed" / "checkpoint-3"))
    a, b = weights(full), weights(second)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert states(full) == states(second)
    logged = {k for entry in full.state.log_history for k in entry}
    if full.optim_plan.weighting.name != "static":
        assert {"weight_sent", "weight_sim", "weight_ner"} <= logged
    if full.task_sampler.scheduler.dynamic:
        assert {"prob_sent", "prob_sim", "prob_ner"} <= logged


# ---------------------------------------------------------------------------------------------- mixed batches

def test_split_forward_gives_the_mixed_forward_losses() -> None:
    trainer_free = MultiTaskModel.from_config(tiny_bert_config(tiny_tokenizer().vocab_size, **NO_DROPOUT), toy_tasks(),
                                              tokenizer=tiny_tokenizer(), head_dropout=0.0)
    tasks = {t.name: t for t in toy_tasks()}
    for task in tasks.values():
        trainer_free.add_task(task)
    tok = trainer_free.tokenizer
    sent = tok(["good film", "bad film"])
    sim = tok(["good film", "bad film"], ["great movie", "bad movie"])
    ner = tok(["john smith in paris", "acme corp is good"])
    trainer_free.tasks["sent"].set_labels(["neg", "pos"])
    trainer_free.tasks["ner"].set_labels(["B-ORG", "B-LOC", "B-PER", "I-ORG", "I-PER", "O"])
    for name in ("sent", "ner"):
        trainer_free.add_task(trainer_free.tasks[name])
    features = ([{**{k: sent[k][i] for k in sent}, "labels": [1.0 - i]} for i in range(2)]
                + [{**{k: sim[k][i] for k in sim}, "labels": [4.0 - i]} for i in range(2)]
                + [{**{k: ner[k][i] for k in ner}, "labels": [-100, 2, 4, 5, 1, -100][: len(ner["input_ids"][i])]} for i in range(2)])
    padded = tok.pad([{k: v for k, v in f.items() if k != "labels"} for f in features], return_tensors="pt")
    labels = torch.full(padded["input_ids"].shape, -100.0)
    for i, f in enumerate(features):
        labels[i, : len(f["labels"])] = torch.tensor(f["labels"], dtype=torch.float32)
    batch = {**padded, "labels": labels, "task": ["sent"] * 2 + ["sim"] * 2 + ["ner"] * 2}
    trainer_free.train()
    one = trainer_free(**batch).task_losses
    split = forward_per_task(trainer_free, batch, tasks)["task_losses"]
    for name in one:
        torch.testing.assert_close(one[name], split[name], atol=1e-6, rtol=0)


@pytest.mark.parametrize("adapter_config, split", [({"r": 2}, False), ({"r": 2, "use_dora": True}, True)])
def test_lora_trains_mixed_batches_per_row_or_through_split_forwards(tmp_path: Path, adapter_config: dict,
                                                                     split: bool) -> None:
    """Plain LoRA runs a mixed batch in one forward (per-row adapters); DoRA, which cannot, one forward per task."""
    trainer = make(tmp_path / "lora", max_steps=2, sampling_strategy="all_tasks", adapter_method="lora",
                   adapter_config=adapter_config, freeze_backbone=True)
    assert trainer.optim_plan.split_forward is split and trainer.optim_plan.manual_sync is split
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.train()
    logged = {k for entry in trainer.state.log_history for k in entry}
    assert {"train_sent_loss", "train_sim_loss", "train_ner_loss"} <= logged
    for task in ("sent", "sim", "ner"):  # every task's adapter trained
        changed = [n for n, p in trainer.model.named_parameters()
                   if n in before and f".{task}." in n and "lora_" in n and not torch.equal(p, before[n])]
        assert changed, task


def test_bf16_autocast_with_pcgrad(tmp_path: Path) -> None:
    trainer = make(tmp_path / "bf16", max_steps=2, sampling_strategy="all_tasks", gradient_surgery="pcgrad", bf16=True)
    before = weights(trainer)
    trainer.train()
    after = weights(trainer)
    assert all(torch.isfinite(v).all() for v in after.values())
    assert not torch.equal(before["backbone.encoder.layer.0.attention.self.query.weight"],
                           after["backbone.encoder.layer.0.attention.self.query.weight"])


# ---------------------------------------------------------------------------------------------- architecture options

def encode(model: MultiTaskModel, texts: list[str]) -> dict[str, torch.Tensor]:
    return dict(model.tokenizer(texts, padding=True, return_tensors="pt"))


def test_head_layer_reads_that_layers_hidden_states() -> None:
    tok = tiny_tokenizer()
    model = MultiTaskModel.from_config(tiny_bert_config(tok.vocab_size), [Task("low", labels=["a", "b"], head_layer=1),
                                                                          Task("top", labels=["a", "b"])], tokenizer=tok).eval()
    enc = encode(model, ["good film", "john smith in paris"])
    hidden = model.backbone(**enc, output_hidden_states=True).hidden_states  # (embeddings, layer 1, layer 2)
    torch.testing.assert_close(model(**enc, task="low").logits, model.heads["low"](hidden[1], enc["attention_mask"]))
    torch.testing.assert_close(model(**enc, task="top").logits, model.heads["top"](hidden[2], enc["attention_mask"]))
    mixed = model(**enc, task=["low", "top"])  # a mixed batch: each head reads its own layer
    torch.testing.assert_close(mixed.task_logits["low"], model.heads["low"](hidden[1][:1], enc["attention_mask"][:1]))


def test_head_layer_beyond_the_depth_is_refused() -> None:
    tok = tiny_tokenizer()
    with pytest.raises(TaskConfigError, match="task 'deep': head_layer=3 but the backbone has 2 layers. Fix: use a layer between 1 and 2"):
        MultiTaskModel.from_config(tiny_bert_config(tok.vocab_size), [Task("deep", labels=["a", "b"], head_layer=3)], tokenizer=tok)


def hierarchical_tasks() -> list[Task]:
    return [Task("ner", kind="token_classification", labels=["O", "B-PER", "I-PER"], input_from_tasks=["upos"]),
            Task("sent", labels=["neg", "pos"], input_from_tasks=["upos", "sim"]),
            Task("upos", kind="token_classification", labels=["NOUN", "VERB", "ADP"], head_layer=1),
            Task("sim", kind="regression")]


def test_input_from_tasks_feeds_lower_predictions_to_the_head(tmp_path: Path) -> None:
    tok = tiny_tokenizer()
    model = MultiTaskModel.from_config(tiny_bert_config(tok.vocab_size), hierarchical_tasks(), tokenizer=tok,
                                       freeze_backbone=False)  # a trained backbone is saved: the store reloads alone
    assert list(model.heads) == ["upos", "ner", "sim", "sent"]  # lower tasks first
    h = model.config.hidden_size
    assert model.heads["ner"].out.in_features == h + 3 and model.heads["sent"].dense.in_features == h + 3 + 1
    enc = encode(model, ["john smith in paris", "good film"])
    out = model(**enc, task="ner", labels=torch.zeros_like(enc["input_ids"]))
    out.task_losses["ner"].backward()
    assert model.heads["upos"].out.weight.grad.abs().sum() > 0  # the higher task's loss reaches the lower head
    assert model(**enc, task=["sent", "ner"]).task_logits["sent"].shape == (1, 2)
    model.eval()
    model.save_pretrained(str(tmp_path / "store"))
    loaded = MultiTaskModel.from_pretrained(str(tmp_path / "store"), tokenizer=tok).eval()
    torch.testing.assert_close(loaded(**enc, task="sent").logits, model(**enc, task="sent").logits)


def test_cyclic_or_unknown_input_from_tasks_is_refused() -> None:
    cyclic = [{"name": "a", "input_from_tasks": ["b"]}, {"name": "b", "input_from_tasks": ["c"]}, {"name": "c", "input_from_tasks": ["a"]}]
    with pytest.raises(TaskConfigError, match="`input_from_tasks` forms a cycle a -> b -> c -> a"):
        tasks_from_config(cyclic)
    with pytest.raises(TaskConfigError, match="names 'z', which is not among the tasks"):
        tasks_from_config([{"name": "a", "input_from_tasks": ["z"]}])
    with pytest.raises(TaskConfigError, match="names the task itself"):
        Task("a", input_from_tasks=["a"])
    with pytest.raises(TaskConfigError, match="cycle"):
        MultiTaskTrainingArguments(output_dir="x", tasks=cyclic)


def test_gradient_reversal_and_the_adversarial_loss(tmp_path: Path) -> None:
    x = torch.ones(3, requires_grad=True)
    (2 * GradientReversal.apply(x)).sum().backward()
    assert x.grad.tolist() == [-2.0, -2.0, -2.0]
    trainer = make(tmp_path / "adv", max_steps=2, sampling_strategy="all_tasks", tasks=toy_tasks(1.0),
                   save_strategy="steps", save_steps=2)
    discriminator = trainer.model.task_discriminator
    assert discriminator.task_names == ["sent", "sim"] and discriminator.classifier.out_features == 2
    enc = encode(trainer.model, ["good film", "bad film"])
    trainer.model.train()
    loss = trainer.model(**enc, task=["sent", "sim"], labels=torch.tensor([[1.0], [2.0]])).adversarial_loss
    assert loss is not None and float(loss.detach()) > 0
    trainer.model.eval()
    assert trainer.model(**enc, task="sent").adversarial_loss is None
    trainer.train()
    assert (tmp_path / "adv" / "checkpoint-2" / "task_discriminator.safetensors").is_file()


# ---------------------------------------------------------------------------------------------- bad input

def test_strategies_that_compare_tasks_need_all_tasks() -> None:
    for field in ({"loss_weighting": "tchebycheff"}, {"gradient_surgery": "pcgrad"}, {"gradient_surgery": "gradvac"}):
        with pytest.raises(TaskConfigError, match="Fix: set sampling_strategy='all_tasks'"):
            MultiTaskTrainingArguments(output_dir="x", sampling_strategy="uniform", **field)
    MultiTaskTrainingArguments(output_dir="x", sampling_strategy="all_tasks", gradient_surgery="pcgrad", loss_weighting="tchebycheff")


def test_unknown_strategy_names_list_the_valid_ones() -> None:
    with pytest.raises(TaskConfigError, match=r"Unknown loss_weighting 'focal'. Fix: use one of \['curriculum', 'dwa', 'equal'"):
        MultiTaskTrainingArguments(output_dir="x", loss_weighting="focal")
    with pytest.raises(TaskConfigError, match=r"Unknown gradient_surgery 'cagrad'. Fix: use one of \['none', 'gradvac', 'pcgrad'\]"):
        MultiTaskTrainingArguments(output_dir="x", gradient_surgery="cagrad", sampling_strategy="all_tasks")
    with pytest.raises(TaskConfigError, match=r"Unknown sampling_strategy 'greedy'. Fix: use one of \['all_tasks', 'annealed', 'bandit'"):
        MultiTaskTrainingArguments(output_dir="x", sampling_strategy="greedy")


def test_bandit_without_evaluation_data_is_refused(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"'bandit' measures its reward on held-out data of task\(s\) \['sent'\].*Fix: pass eval_dataset"):
        make(tmp_path / "b", sampling_strategy="bandit", eval_data={})
    with pytest.raises(DataError, match=r"task\(s\) \['sent'\]"):
        make(tmp_path / "b", sampling_strategy="bandit", eval_data={"sim": toy_data()["sim"]})
    make(tmp_path / "b", sampling_strategy="bandit", sampling_options={"primary_task": "sim"}, eval_data={"sim": toy_data()["sim"]})


def test_surgery_without_shared_trainable_parameters_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TaskConfigError, match="has none that train.*Fix: set freeze_backbone=false"):
        make(tmp_path / "s", sampling_strategy="all_tasks", gradient_surgery="pcgrad", freeze_backbone=True)


def test_single_adversarial_task_and_masked_lm_in_mixed_batches_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TaskConfigError, match="task 'sent': adversarial_weight > 0 on a single task"):
        make(tmp_path / "a", tasks=[Task("sent", adversarial_weight=1.0), Task("sim", kind="regression", text_pair_column="b"),
                                    Task("ner", kind="token_classification", label_column="tags")])
    with pytest.raises(TaskConfigError, match=r"task\(s\) \['mlm'\]: masked_lm tasks"):
        tok = tiny_tokenizer()
        model = MultiTaskModel.from_config(tiny_bert_config(tok.vocab_size), [Task("sent"), Task("mlm", kind="masked_lm")], tokenizer=tok)
        data = {"sent": toy_data()["sent"], "mlm": datasets.Dataset.from_dict({"text": ["good film", "bad food"] * 4})}
        MultiTaskTrainer(model=model, args=MultiTaskTrainingArguments(output_dir=str(tmp_path / "m"), sampling_strategy="all_tasks",
                                                                      use_cpu=True, report_to=[]), train_dataset=data)


def test_bad_field_values_name_the_task_and_field() -> None:
    with pytest.raises(TaskConfigError, match="task 'x': `adversarial_weight` must be a number >= 0, got -1"):
        Task("x", adversarial_weight=-1)
    with pytest.raises(TaskConfigError, match="a masked_lm head is tied"):
        Task("x", kind="masked_lm", input_from_tasks=["y"])
    with pytest.raises(TaskConfigError, match=r"Invalid option\(s\) \['temp'\] for loss_weighting 'dwa'"):
        make(Path("unused"), loss_weighting="dwa", loss_weighting_options={"temp": 1})


def test_eval_task_loss_is_the_unweighted_task_loss(tmp_path: Path) -> None:
    """`eval_<task>_loss` reports L_t whatever the weighting: equal (1/M), uncertainty and static x0.5 agree."""
    tasks = [Task("sent", loss_weight=0.5), Task("sim", kind="regression", text_pair_column="b"),
             Task("ner", kind="token_classification", label_column="tags")]
    results = []
    for name, options in {"static": {}, "equal": {"loss_weighting": "equal"},
                          "uncertainty": {"loss_weighting": "uncertainty", "sampling_strategy": "all_tasks"}}.items():
        metrics = make(tmp_path / name, tasks=tasks, dropout=False, **options).evaluate()
        results.append({k: v for k, v in metrics.items() if k.endswith("_loss")})
    assert set(results[0]) == {"eval_sent_loss", "eval_sim_loss", "eval_ner_loss"}
    for other in results[1:]:
        assert other == pytest.approx(results[0], rel=1e-6)


# ---------------------------------------------------------------------------------------------- 2-process DDP

DDP_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    sys.path[:0] = [{tests!r}, {repo!r}]  # the checkout under test, installed or not
    from pathlib import Path
    from test_optim_trainer import DDP_CASES, make, weights
    out = Path({out!r})
    rank = int(os.environ.get("RANK", 0))
    result = {{}}
    for name, options in DDP_CASES.items():
        trainer = make(out / name, **options)
        trainer.train()
        result[name] = {{"world": trainer.args.world_size, "state": {{k: v.tolist() for k, v in weights(trainer).items()}},
                        "plan": trainer.optim_plan.state_dict(), "scheduler": trainer.task_sampler.scheduler.state_dict()}}
    (out / f"rank{{rank}}.json").write_text(json.dumps(result))
    """
)
DDP_CASES = {  # per-device batch 4 on each of 2 ranks; the reference is one process with batch 8
    "pcgrad+uncertainty+adversarial": {**COMBINED, "gradient_surgery": "pcgrad", "loss_weighting": "uncertainty", "tasks": toy_tasks(0.5)},
    "tchebycheff": {**COMBINED, "loss_weighting": "tchebycheff"},
    "bandit+dwa": dict(max_steps=4, sampling_strategy="bandit", sampling_options={"reward_every": 2},
                       loss_weighting="dwa", loss_weighting_options={"window_steps": 1}),
    "uncertainty+lora": dict(max_steps=3, sampling_strategy="uncertainty", adapter_method="lora", adapter_config={"r": 2},
                             freeze_backbone=True),
}


def test_two_process_ddp_matches_one_process_with_the_combined_batch(tmp_path: Path) -> None:
    r0, r1 = launch_two_processes(DDP_SCRIPT, tmp_path / "ddp", tmp_path / "ddp_optim.py", timeout=600)
    for name in DDP_CASES:
        assert r0[name]["world"] == 2 and r0[name] == r1[name], name  # every rank: same weights and strategy states
    for name in ("pcgrad+uncertainty+adversarial", "tchebycheff"):
        reference = make(tmp_path / f"one_{name}", per_device_train_batch_size=8, **DDP_CASES[name])
        reference.train()
        ddp = {k: torch.tensor(v) for k, v in r0[name]["state"].items()}
        assert_same_weights(weights(reference), ddp, atol=1e-6)
    assert r0["bandit+dwa"]["scheduler"]["last_loss"] is not None
