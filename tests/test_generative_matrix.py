"""The shared test matrix of generative models: every adapter method x Llama, GPT-2, T5 and BART (tiny random
configs, the ByT5 tokenizer: no files, no Hub).

Each (method, architecture) either works — frozen backbone, per-task parameter count equal to the method's formula,
training one task leaves the other tasks' weights bitwise unchanged, save -> load gives identical logits and
generations, a mixed-task batch equals task by task (logits in training mode; generated ids, greedy and beam) — or
is refused when the model is built, with the reason (`REFUSED`).
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from transformers import ByT5Tokenizer, OPTConfig

from helpers import tiny_lm_config
from hf_mtl import Task
from hf_mtl.adapters import ADAPTER_METHODS, load_builtin_methods
from hf_mtl.data.collators import GenerativeCollator
from hf_mtl.data.text2text import TextToTextEncoder
from hf_mtl.errors import TaskConfigError
from hf_mtl.generation import generate_ids, generation_config, prompt_ids
from hf_mtl.modeling import MultiTaskModel


load_builtin_methods()

# method -> options for tiny models
METHOD_CONFIGS: dict[str, dict] = {
    "none": {},
    "lora": {"r": 2},
    "bottleneck": {"reduction_factor": 8},
    "madx": {"languages": ["en", "de"], "language_reduction_factor": 4, "task_reduction_factor": 8},
    "prefix_tuning": {"num_virtual_tokens": 3},
    "hyperformer": {"reduction_factor": 8, "task_embedding_dim": 8, "projected_task_embedding_dim": 8,
                    "task_hidden_dim": 16},
    "hyperformer++": {"reduction_factor": 8, "task_embedding_dim": 8, "projected_task_embedding_dim": 8,
                      "task_hidden_dim": 16},
    "pals": {"pal_heads": 2},
    "ca_mtl": {"max_seq_length": 64, "num_blocks": 4, "freeze_lower_half": False, "bottleneck_layers": "all"},
}

# (method, architecture) -> a phrase of the error that refuses it when the model is built. OPT has no architecture
# spec: every method that inserts modules is refused by name; `none` (full fine-tuning) needs no spec and runs.
REFUSED: dict[tuple[str, str], str] = {(method, "opt"): "'opt'" for method in METHOD_CONFIGS if method != "none"}

_TOKENIZER = ByT5Tokenizer()
_COMMON = dict(vocab_size=len(_TOKENIZER), pad_token_id=0, eos_token_id=1)
ARCH_CONFIGS = {
    "llama": lambda: tiny_lm_config("llama"),
    "gpt2": lambda: tiny_lm_config("gpt2"),
    "t5": lambda: tiny_lm_config("t5"),
    "bart": lambda: tiny_lm_config("bart", init_std=0.2),  # near-uniform random logits end every row at once
    "opt": lambda: OPTConfig(hidden_size=32, ffn_dim=64, num_hidden_layers=2, num_attention_heads=4,
                             word_embed_proj_dim=32, max_position_embeddings=256, bos_token_id=1, dropout=0.0,
                             init_std=0.2, **_COMMON),
}
KIND = {"llama": "causal_lm", "gpt2": "causal_lm", "t5": "seq2seq", "bart": "seq2seq", "opt": "causal_lm"}

ALL_CASES = [(m, a) for m, a in itertools.product(sorted(METHOD_CONFIGS), sorted(ARCH_CONFIGS))
             if m in ADAPTER_METHODS]
CASES = [c for c in ALL_CASES if c not in REFUSED]

ROWS = [("sent", {"text": "good film", "label": "1"}), ("echo", {"text": "abc", "out": "cba"}),
        ("sent", {"text": "bad", "label": "0"}), ("echo", {"text": "hello there", "out": "ereht"})]


def make_tasks(kind: str) -> list[Task]:
    language = {"language": "en"}
    return [Task("sent", kind=kind, prompt_template="R: {text} A:", label_column="label",
                 label_words={"0": "no", "1": "yes"}, **language),
            Task("echo", kind=kind, prompt_template="C: {text}", target_column="out",
                 generation={"max_new_tokens": 6}, **language)]


def build(method: str, arch: str, seed: int = 0) -> MultiTaskModel:
    torch.manual_seed(seed)
    freeze = method != "none"  # `none` on a frozen backbone trains nothing: it is full fine-tuning here
    model = MultiTaskModel.from_config(ARCH_CONFIGS[arch](), make_tasks(KIND[arch]), tokenizer=_TOKENIZER,
                                       adapter_method=method, adapter_config=dict(METHOD_CONFIGS[method]),
                                       freeze_backbone=freeze)
    _randomize(model)
    return model.eval()


def _randomize(model: MultiTaskModel) -> None:
    """Adapters start as (or near) the identity, and tiny random LMs have near-tied logits: give every trainable
    weight a large random part so that tasks really generate differently."""
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.5)


def training_batch(model: MultiTaskModel, rows=ROWS) -> dict:
    features = []
    for name, row in rows:
        example = TextToTextEncoder(model.tasks[name], _TOKENIZER, 64).example(row)
        features.append({k: v for k, v in example.items() if k in ("input_ids", "attention_mask", "labels")})
    return GenerativeCollator(_TOKENIZER)(features)


def generated(model: MultiTaskModel, rows=ROWS, **options) -> list[list[int]]:
    """The new token ids of `rows` generated in one call (ids, not texts: ByT5 drops its special ids when decoding)."""
    names = [name for name, _ in rows]
    prompts = [prompt_ids(model, model.tasks[name], row["text"], 64) for name, row in rows]
    return generate_ids(model, prompts, names, **options)


@pytest.mark.parametrize("method,arch", sorted(REFUSED))
def test_refused_at_build_time(method: str, arch: str) -> None:
    with pytest.raises(TaskConfigError, match=REFUSED[(method, arch)]) as info:
        build(method, arch)
    assert method in str(info.value)


@pytest.mark.parametrize("method,arch", CASES)
def test_backbone_frozen_and_parameter_count(method: str, arch: str) -> None:
    model = build(method, arch)
    own = model._backbone_own_parameters()
    assert own and all(p.requires_grad == (method == "none") for p in own)
    report = model.trainable_parameters()
    for name in model.tasks:
        assert report["tasks"][name]["head"] == 0  # the backbone's LM head serves every generative task
        counted, formula = report["tasks"][name]["adapter"], model.adapter.formula_parameter_count(name)
        assert counted == formula, f"{method}/{arch}/{name}: counted {counted}, formula {formula}"


@pytest.mark.parametrize("method,arch", [c for c in CASES if c[0] != "none"])
def test_training_one_task_leaves_others_unchanged(method: str, arch: str) -> None:
    model = build(method, arch)
    model.train()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    batch = training_batch(model, [r for r in ROWS if r[0] == "sent"])
    for _ in range(2):
        model(**batch, task="sent").loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    owned = {id(p) for p in model.adapter.task_parameters("sent")} | {id(p) for p in model.adapter.shared_parameters()}
    owned |= {id(p) for lang in model.adapter.adapter_languages() for p in model.adapter.language_parameters(lang)
              if p.requires_grad}
    owned_names = {n for n, p in model.named_parameters() if id(p) in owned}
    changed = {n for n, p in model.named_parameters() if not torch.equal(p.detach(), before[n])}
    assert changed, "training changed nothing"
    assert changed <= owned_names, f"{method}/{arch}: changed outside task 'sent': {sorted(changed - owned_names)[:5]}"
    echo = {id(p) for p in model.adapter.task_parameters("echo")}
    assert not any(id(p) in echo for n, p in model.named_parameters() if n in changed)


@pytest.mark.parametrize("method,arch", CASES)
def test_save_load_identical_logits_and_generations(method: str, arch: str, tmp_path: Path) -> None:
    model = build(method, arch)
    model.save_pretrained(str(tmp_path))
    state = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    loaded = _load(tmp_path, model, state)
    batch = training_batch(model)
    names = [n for n, _ in ROWS]
    with torch.no_grad():
        torch.testing.assert_close(model(**batch, task=names).task_logits, loaded(**batch, task=names).task_logits,
                                   rtol=0, atol=0)
    assert generated(model) == generated(loaded)


def _load(path: Path, model: MultiTaskModel, backbone_state: dict) -> MultiTaskModel:
    """A frozen random backbone is not saved: rebuild the model from the store's task and adapter files on a backbone
    with the same weights (a trained backbone, `none` here, is saved and loaded by the store itself)."""
    import json

    from hf_mtl.store.layout import CONFIG_NAME
    from hf_mtl.store.load import _load_weights, _read_task

    config = json.loads((path / CONFIG_NAME).read_text())
    tasks = [_read_task(path, n) for n in config["tasks"]]
    fresh = MultiTaskModel.from_config(model.config, tasks, tokenizer=_TOKENIZER, adapter_method=config["adapter_method"],
                                       adapter_config=config["adapter_config"], freeze_backbone=model.freeze_backbone)
    own = dict(fresh.backbone.state_dict())
    fresh.backbone.load_state_dict({k: v for k, v in backbone_state.items() if k in own}, strict=False)
    _load_weights(fresh, path, config["tasks"])
    return fresh.eval()


# LoRA routes per row where its layers are FastLoraLinear (nn.Linear); GPT-2's Conv1D layers take PEFT's own layer
@pytest.mark.parametrize("method,arch", [c for c in CASES if ADAPTER_METHODS[c[0]].routes_per_row
                                         or c[0] == "lora" and c[1] != "gpt2"])
def test_mixed_training_batch_equals_task_by_task(method: str, arch: str) -> None:
    model = build(method, arch)
    assert model.adapter.routes_per_row
    model.train()  # dropout is 0 in these configs: training mode, same numbers
    names = [n for n, _ in ROWS]
    batch = training_batch(model)
    mixed = model(**batch, task=names)
    for task in ("sent", "echo"):
        rows = [i for i, n in enumerate(names) if n == task]
        alone = model(**training_batch(model, [ROWS[i] for i in rows]), task=task)
        length = alone.logits.shape[1]
        torch.testing.assert_close(mixed.task_logits[task][:, :length], alone.logits, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(mixed.task_losses[task], alone.loss, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("beams", [1, 3])
@pytest.mark.parametrize("method,arch", CASES)
def test_mixed_generation_equals_each_row_alone(method: str, arch: str, beams: int) -> None:
    model = build(method, arch)
    mixed = generated(model, num_beams=beams)
    alone = [generated(model, [row], num_beams=beams)[0] for row in ROWS]
    assert mixed == alone
    assert len({tuple(ids) for ids in mixed}) > 1, "every row generated the same tokens: the check would prove nothing"
    lengths = {name: max(len(ids) for ids, (n, _) in zip(mixed, ROWS) if n == name) for name in ("sent", "echo")}
    limits = {name: generation_config(model, model.tasks[name]).max_new_tokens for name in lengths}
    assert limits == {"sent": 5, "echo": 6}  # " yes" is 4 ByT5 tokens, + EOS; echo: its own generation setting
    assert all(lengths[name] <= limits[name] for name in lengths)  # each row stopped at its own task's limit


def test_an_empty_prompt_is_refused_by_name() -> None:
    model = build("none", "llama")
    with pytest.raises(TaskConfigError, match="task 'echo': input 1 has an empty prompt"):
        generate_ids(model, [[5, 6], []], ["sent", "echo"])


@pytest.mark.parametrize("method", ["none", "prefix_tuning", "bottleneck"])
def test_t5_with_more_decoder_than_encoder_blocks_generates(method: str) -> None:
    """transformers 5.25 sizes generate()'s cache by the encoder's depth (IndexError for a deeper decoder)."""
    torch.manual_seed(0)
    config = ARCH_CONFIGS["t5"]()
    config.num_decoder_layers = 3
    model = MultiTaskModel.from_config(config, make_tasks("seq2seq"), tokenizer=_TOKENIZER, adapter_method=method,
                                       adapter_config=dict(METHOD_CONFIGS[method]), freeze_backbone=method != "none")
    _randomize(model)
    model.eval()
    for beams in (1, 2):
        assert generated(model, num_beams=beams) == [generated(model, [row], num_beams=beams)[0] for row in ROWS]
