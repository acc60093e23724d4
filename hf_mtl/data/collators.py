"""Collators chosen by task kind, and `MultiTaskCollator`, which routes a batch by its `task` field."""

from __future__ import annotations

from typing import Any

import torch
from transformers import DataCollatorForLanguageModeling

from ..errors import DataError, TaskConfigError, UnknownTaskError
from ..tasks import Task


IGNORE_INDEX = -100
_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class _Padder:
    """Pads the tokenizer's inputs of a list of examples."""

    def __init__(self, tokenizer: Any, pad_to_multiple_of: int | None = None):
        self.tokenizer = tokenizer
        self.pad_to_multiple_of = pad_to_multiple_of

    def pad_inputs(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        inputs = [{k: f[k] for k in _INPUT_KEYS if k in f} for f in features]
        return dict(self.tokenizer.pad(inputs, padding=True, pad_to_multiple_of=self.pad_to_multiple_of, return_tensors="pt"))


class SequenceCollator(_Padder):
    """Classification (long labels) or regression (float labels): one label per row."""

    def __init__(self, tokenizer: Any, regression: bool, pad_to_multiple_of: int | None = None):
        super().__init__(tokenizer, pad_to_multiple_of)
        self.dtype = torch.float32 if regression else torch.long

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.pad_inputs(features)
        if "labels" in features[0]:
            batch["labels"] = torch.tensor([f["labels"] for f in features], dtype=self.dtype)
        return batch


class TokenCollator(_Padder):
    """A tag per token: labels padded with -100 to the padded input length."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.pad_inputs(features)
        if "labels" in features[0]:
            batch["labels"] = pad_labels([f["labels"] for f in features], batch["input_ids"].shape[1], torch.long)
        return batch


class MaskedLMCollator:
    """Random masking (15%, BERT's 80/10/10) for `masked_lm` tasks."""

    def __init__(self, tokenizer: Any, mlm_probability: float = 0.15, pad_to_multiple_of: int | None = None):
        self.inner = DataCollatorForLanguageModeling(
            tokenizer, mlm=True, mlm_probability=mlm_probability, pad_to_multiple_of=pad_to_multiple_of
        )

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        keys = (*_INPUT_KEYS, "special_tokens_mask")
        return dict(self.inner([{k: f[k] for k in keys if k in f} for f in features]))


def pad_labels(rows: list[list[float]], length: int, dtype: torch.dtype) -> torch.Tensor:
    out = torch.full((len(rows), length), IGNORE_INDEX, dtype=dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = torch.tensor(row[:length], dtype=dtype)
    return out


# ------------------------------------------------------------------------------------ generative kinds
def pad_token_id(tokenizer: Any) -> int:
    """The id padding fills with: the tokenizer's pad token, else its EOS (decoder-only tokenizers such as GPT-2's
    and Llama's have no pad token; padded positions are masked out of attention and loss either way)."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad is None:
        raise DataError("The tokenizer has neither a pad token nor an EOS token to pad generative batches with. "
                        "Fix: set `tokenizer.pad_token`.")
    return int(pad)


def pad_rows(rows: list[list[int]], value: int, side: str = "right", pad_to_multiple_of: int | None = None
             ) -> torch.Tensor:
    """Stack rows of ids into a `(B, L)` long tensor, filling with `value` on the `side` ("right" or "left")."""
    length = max(len(row) for row in rows)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    out = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        if not row:
            continue
        if side == "left":
            out[i, length - len(row):] = torch.tensor(row, dtype=torch.long)
        else:
            out[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return out


class GenerativeCollator:
    """Training batches of text-to-text rows (`causal_lm`, `seq2seq`; see `hf_mtl.data.text2text`).

    Right padding: `input_ids` with the pad id (`pad_token_id`), `attention_mask` with 0, `labels` with -100, so
    padding is neither attended to nor scored. `seq2seq` labels are the decoder's, padded on their own length.
    Rows of several tasks may share a batch (their layout is the same); `prompt_length` and `reference` stay out.
    """

    def __init__(self, tokenizer: Any, pad_to_multiple_of: int | None = None):
        self.pad_id = pad_token_id(tokenizer)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        ids = [list(f["input_ids"]) for f in features]
        batch = {"input_ids": pad_rows(ids, self.pad_id, "right", self.pad_to_multiple_of),
                 "attention_mask": pad_rows([[1] * len(row) for row in ids], 0, "right", self.pad_to_multiple_of)}
        if "labels" in features[0]:
            batch["labels"] = pad_rows([list(f["labels"]) for f in features], IGNORE_INDEX, "right",
                                       self.pad_to_multiple_of)
        return batch


def prompt_rows(features: list[dict[str, Any]]) -> list[list[int]]:
    """Each encoded text-to-text row's prompt: its first `prompt_length` input ids (what generation starts from)."""
    return [list(f["input_ids"])[: f["prompt_length"]] for f in features]


class PromptCollator:
    """Generation batches: each row's prompt only (its first `prompt_length` ids), padded for `generate`.

    Decoder-only models (`causal_lm`) need left padding, so that every row's last prompt token sits at the end
    and new tokens follow it; encoder inputs (`seq2seq`) are padded on the right. The rows' references, when the
    split has them, come along as `references` (a list of strings) for scoring.
    """

    def __init__(self, tokenizer: Any, kind: str, pad_to_multiple_of: int | None = None):
        self.pad_id = pad_token_id(tokenizer)
        self.side = "left" if kind == "causal_lm" else "right"
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        prompts = prompt_rows(features)
        batch: dict[str, Any] = {
            "input_ids": pad_rows(prompts, self.pad_id, self.side, self.pad_to_multiple_of),
            "attention_mask": pad_rows([[1] * len(row) for row in prompts], 0, self.side, self.pad_to_multiple_of),
        }
        if "reference" in features[0]:
            batch["references"] = [f["reference"] for f in features]
        return batch


def collator_for(task: Task, tokenizer: Any, pad_to_multiple_of: int | None = None) -> Any:
    if task.is_generative:
        return GenerativeCollator(tokenizer, pad_to_multiple_of)
    if task.kind == "token_classification":
        return TokenCollator(tokenizer, pad_to_multiple_of)
    if task.kind == "masked_lm":
        return MaskedLMCollator(tokenizer, task.extra.get("mlm_probability", 0.15), pad_to_multiple_of)
    return SequenceCollator(tokenizer, task.kind == "regression", pad_to_multiple_of)


class MultiTaskCollator:
    """Collate examples that carry a `task` field.

    A single-task batch goes to its kind's collator and gets `task: str`. A mixed-task batch (per-row
    routing) is padded jointly and gets `task: list[str]`; its labels are a float (B, L) tensor where
    sequence-level labels sit in column 0 and every unscored position holds -100.
    """

    def __init__(self, tokenizer: Any, tasks: list[Task] | dict[str, Task], pad_to_multiple_of: int | None = None):
        self.tokenizer = tokenizer
        self.tasks = tasks if isinstance(tasks, dict) else {t.name: t for t in tasks}
        self.pad_to_multiple_of = pad_to_multiple_of
        self.collators = {name: collator_for(t, tokenizer, pad_to_multiple_of) for name, t in self.tasks.items()}
        self._padder = _Padder(tokenizer, pad_to_multiple_of)

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        names = [f["task"] for f in features]
        for name in dict.fromkeys(names):
            if name not in self.collators:
                raise UnknownTaskError(f"Batch holds task {name!r}, unknown to the collator. Known: {sorted(self.collators)}.")
        stripped = [{k: v for k, v in f.items() if k != "task"} for f in features]
        if len(set(names)) == 1:
            batch = self.collators[names[0]](stripped)
            batch["task"] = names[0]
            return batch
        return self._mixed(stripped, names)

    def _mixed(self, features: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
        generative = {name for name in names if self.tasks[name].is_generative}
        if generative:
            if len(generative) < len(set(names)):
                raise TaskConfigError(f"A batch mixes generative tasks {sorted(generative)} with encoder tasks "
                                      f"{sorted(set(names) - generative)}; their inputs and labels differ. Fix: "
                                      f"sample them in separate batches.")
            batch = self.collators[names[0]](features)  # one layout for every text-to-text row
            batch["task"] = names
            return batch
        batch = self._padder.pad_inputs(features)
        if all("labels" in f for f in features):
            rows = [f["labels"] if isinstance(f["labels"], list) else [f["labels"]] for f in features]
            batch["labels"] = pad_labels(rows, batch["input_ids"].shape[1], torch.float32)
        batch["task"] = names
        return batch
