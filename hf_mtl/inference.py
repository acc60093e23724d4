"""Inference on raw text: one task, a task per row, or every task, with the backbone loaded once.

How a chunk of rows runs depends on the adapter method:

- methods that route per row (`model.adapter.routes_per_row`: bottleneck, MAD-X, PALs, prefix
  tuning, Hyperformer, CA-MTL, and the head-only method `none`): the rows of a chunk go through ONE
  forward whatever their tasks (`model(task=[one name per row])`), each task's head reading its rows;
- methods that run one adapter per forward (PEFT's LoRA): rows are grouped by task, one forward per group;
- `task="all"`: every task answers every input. When the tasks share all backbone computation
  (method `none`: heads over one backbone), each input goes through the backbone once and every
  head reads that pass; otherwise each (input, task) pair is a row of the routes above.

Rows of generative tasks (`causal_lm`, `seq2seq`) are generated instead (`hf_mtl.generation.generate`): the rows of
every generative task in the call run as one batched generation, each row with its task's adapter and generation
settings; each result is the generated text, and for tasks with `label_words` also the label that text maps to.

Each row is tokenized the way its task was trained (words for token tasks, pairs for pair tasks),
then the rows of a chunk are padded together. A token-task input longer than `max_length` tokens runs
as consecutive windows of whole words, so every word gets a tag; sequence tasks read the first
`max_length` tokens.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .adapters import Routing
from .errors import DataError
from .tasks import Task


ALL = "all"
_INPUT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


def predict(
    model: Any,
    texts: Sequence[Any],
    task: str | Sequence[str] | None = None,
    *,
    batch_size: int = 32,
    max_length: int = 128,
    language: str | None = None,
    tokenizer: Any = None,
    **generation: Any,
) -> list[dict[str, Any]]:
    """Predict labels (encoder tasks) or generate texts (generative tasks) for raw inputs.

    Args:
        model: a `MultiTaskModel`.
        texts: strings; `(text, text_pair)` pairs for pair tasks; for token tasks a string (split on
            whitespace) or a list of words; for generative tasks a string (a template over one column), a
            `{column: value}` row (the columns of its `prompt_template`), or a `(text, text_pair)` pair.
        task: one task name for all rows, one per row, or `"all"` (every task; a task named `all`
            takes precedence). Default: the model's active task (`set_task`).
        batch_size: rows per forward pass.
        max_length: tokens per row, at most the backbone's positions. Sequence-task inputs are truncated to
            it; longer token-task inputs run in windows of whole words, so every word gets a tag. A generative
            row's prompt is cut as in training (the template's own words stay); a decoder-only LM's new tokens
            count towards it.
        language: language adapter to use for every row (MAD-X / language adapters), overriding the
            tasks' own: zero-shot transfer to another language (encoder tasks).
        tokenizer: defaults to `model.tokenizer` (generative tasks always use `model.tokenizer`).
        generation: `GenerationConfig` options for the generative rows (e.g. `num_beams=4`,
            `max_new_tokens=8`), over their tasks' own `generation`.

    Returns:
        One dict per input: `{"task", "label", "score", "scores"}` for classification, `{"task", "score"}`
        for regression, `{"task", "tokens", "tags", "scores"}` for token tasks, `{"task", "text"}` for
        generative tasks, plus `"label"` with `label_words` (the label whose word was generated; None when the
        text matches no word). With `task="all"`: `{task name: that dict}` per input.
    """
    tokenizer = tokenizer or model.tokenizer
    if tokenizer is None:
        raise DataError("predict() needs a tokenizer: the model has none. Fix: pass tokenizer=.")
    _check_sizes(model, batch_size, max_length)
    if isinstance(task, str) and task == ALL and ALL not in model.heads:
        return _predict_all(model, tokenizer, texts, batch_size, max_length, language, generation)
    names = _per_row_tasks(model, task, len(texts))
    _check_inputs(model, texts, names)
    generative = [i for i, name in enumerate(names) if model.tasks[name].is_generative]
    _check_generative_call(model, names, generative, language, tokenizer, generation)
    if generative:
        return _predict_with_generation(model, texts, names, generative, batch_size, max_length, language,
                                        tokenizer, generation)
    # long token-task inputs become several rows (windows), merged back after the forwards
    texts, names, owners = _windows_of_rows(model, tokenizer, texts, names, max_length)
    results: list[dict[str, Any] | None] = [None] * len(texts)
    with _eval_mode(model):
        for rows in _chunks(model, names, batch_size):
            outputs = _run_rows(model, tokenizer, [texts[i] for i in rows], [names[i] for i in rows], max_length, language)
            for i, out in zip(rows, outputs):
                results[i] = out
    return _merge_windows(results, owners)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------- checks
# families whose position ids start after the padding index (RoBERTa's `create_position_ids_from_input_ids`)
_PADDING_OFFSET_POSITIONS = {"roberta", "xlm-roberta", "camembert", "data2vec-text", "xmod", "roberta-prelayernorm"}


def max_input_length(config: Any) -> int | None:
    """The most tokens a row of this backbone can hold: `max_position_embeddings`, less the positions
    RoBERTa-like models skip (pad_token_id + 1); None when the config sets no such limit."""
    positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(positions, int) or positions <= 0:
        return None
    if getattr(config, "model_type", None) in _PADDING_OFFSET_POSITIONS:
        positions -= (getattr(config, "pad_token_id", None) or 0) + 1
    return positions


def _check_sizes(model: Any, batch_size: Any, max_length: Any) -> None:
    for field, value in (("batch_size", batch_size), ("max_length", max_length)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DataError(f"predict({field}={value!r}): {field} must be a positive integer.")
    check_max_length(model.config, max_length)


def check_max_length(config: Any, max_length: int) -> None:
    """Refuse a row length the backbone's position embeddings cannot hold (predict and eval)."""
    limit = max_input_length(config)
    if limit is not None and max_length > limit:
        raise DataError(f"max_length={max_length} is above the {limit} tokens a row of this "
                        f"{getattr(config, 'model_type', 'backbone')} backbone holds (max_position_embeddings="
                        f"{config.max_position_embeddings}). Fix: --max-seq-length (max_length=) {limit} or less.")


def _check_inputs(model: Any, texts: Sequence[Any], names: list[str]) -> None:
    """Each input as its task reads it: a string; a word list (token tasks); a (text, text_pair) pair; a
    `{column: value}` row (generative tasks)."""
    for i, (text, name) in enumerate(zip(texts, names)):
        if isinstance(text, str):
            continue
        task = model.tasks[name]
        if isinstance(text, (list, tuple)) and all(isinstance(t, str) for t in text):
            if task.is_token_level or (task.text_pair_column and len(text) == 2):
                continue
        if task.is_generative and isinstance(text, dict) and all(isinstance(k, str) for k in text):
            continue
        want = "a string or a list of words" if task.is_token_level else (
            "a string or a (text, text_pair) pair of strings" if task.text_pair_column else "a string")
        if task.is_generative:
            want += " or a {column: value} row"
        raise DataError(f"input {i} for task {name!r} is {type(text).__name__} {str(text)[:40]!r}: give {want}.")


def _check_generative_call(model: Any, names: list[str], generative: list[int], language: str | None,
                           tokenizer: Any, generation: dict[str, Any]) -> None:
    """Options that only one family of tasks reads must find rows of that family (none is dropped unread)."""
    if generation and not generative:
        raise DataError(f"predict() got generation options {sorted(generation)}, but no input is for a generative "
                        f"task (tasks: {sorted(set(names))}). Fix: drop them, or predict with a generative task.")
    if not generative:
        return
    first = names[generative[0]]
    if language is not None:
        raise DataError(f"predict(language={language!r}): task {first!r} is generative and generates with its own "
                        f"task's language adapter. Fix: drop language= (--language) for generative tasks.")
    if tokenizer is not model.tokenizer:
        raise DataError(f"predict(tokenizer=...): task {first!r} is generative and its prompts and outputs use the "
                        f"model's own tokenizer. Fix: drop tokenizer=.")


def shares_backbone(model: Any) -> bool:
    """True when every task reads the same backbone pass (the method's `shares_backbone_pass`: head-only or
    full fine-tuning, method `none`)."""
    return model.adapter.shares_backbone_pass


def _per_row_tasks(model: Any, task: str | Sequence[str] | None, n: int) -> list[str]:
    if task is None:
        task = model.active_task or (model.task_names[0] if len(model.heads) == 1 else None)
        if task is None:
            raise DataError(f"predict() needs task=... (a name, one per input, or 'all'); known tasks: {sorted(model.heads)}.")
    names = [task] * n if isinstance(task, str) else list(task)
    if len(names) != n:
        raise DataError(f"predict() got {len(names)} task names for {n} inputs: give one per input, or a single name.")
    model._check_tasks(dict.fromkeys(names))
    for name in dict.fromkeys(names):
        if model.tasks[name].kind == "masked_lm":
            raise DataError(f"task {name!r} is a masked_lm task (it trains a language adapter): predict() serves "
                            f"classification, regression and token tasks. Fix: predict with another task.")
    return names


def _chunks(model: Any, names: list[str], batch_size: int) -> list[list[int]]:
    """Row indices of each forward: in input order for per-row methods, else grouped by task."""
    if model.adapter.routes_per_row:
        return [list(range(i, min(i + batch_size, len(names)))) for i in range(0, len(names), batch_size)]
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name, []).append(i)
    return [rows[i:i + batch_size] for rows in groups.values() for i in range(0, len(rows), batch_size)]


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was_training)


# ---------------------------------------------------------------------------------------------------- one forward
def _run_rows(model: Any, tokenizer: Any, texts: list[Any], names: list[str], max_length: int,
              language: str | None) -> list[dict[str, Any]]:
    """One forward for rows of one or several tasks; one result dict per row."""
    tasks = [model.tasks[n] for n in names]
    enc = encode_rows(tokenizer, tasks, texts, max_length, _device(model))
    distinct = list(dict.fromkeys(names))
    out = model(**enc.inputs, task=distinct[0] if len(distinct) == 1 else names, language=language)
    if out.task_logits is None:
        per_row = list(out.logits.float().cpu())
    else:
        per_row = [None] * len(names)
        for name, rows in out.task_logits.items():
            for j, i in enumerate(out.task_rows[name].tolist()):
                per_row[i] = rows[j].float().cpu()
    return [_result(task, logits, enc.words[i], enc.word_ids[i]) for i, (task, logits) in enumerate(zip(tasks, per_row))]


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


# ---------------------------------------------------------------------------------------------------- generation
def _predict_with_generation(model: Any, texts: Sequence[Any], names: list[str], generative: list[int],
                             batch_size: int, max_length: int, language: str | None, tokenizer: Any,
                             generation: dict[str, Any]) -> list[dict[str, Any]]:
    """The generative rows as one batched generation (their tasks mixed); other rows (if any) as usual."""
    from .generation import generate

    results: list[dict[str, Any] | None] = [None] * len(texts)
    rows = [_generative_row(model.tasks[names[i]], texts[i]) for i in generative]
    outputs = generate(model, rows, task=[names[i] for i in generative], max_length=max_length,
                       batch_size=batch_size, **generation)
    for i, text in zip(generative, outputs):
        results[i] = generated_result(model.tasks[names[i]], text)
    others = [i for i in range(len(texts)) if results[i] is None]
    if others:
        rest = predict(model, [texts[i] for i in others], task=[names[i] for i in others], batch_size=batch_size,
                       max_length=max_length, language=language, tokenizer=tokenizer)
        for i, result in zip(others, rest):
            results[i] = result
    return results  # type: ignore[return-value]


def _generative_row(task: Task, value: Any) -> str | dict[str, Any]:
    """A generative input as `generate` reads it: a `(text, text_pair)` pair becomes the row of the two columns."""
    if isinstance(value, (list, tuple)):
        return {task.text_column: value[0], task.text_pair_column: value[1]}
    return value


def generated_result(task: Task, text: str) -> dict[str, Any]:
    """One generative row's prediction: its text, and with `label_words` the label that text is the word of (None
    when it matches no word)."""
    result: dict[str, Any] = {"task": task.name, "text": text}
    if task.label_words:
        from .generation_metrics import output_to_label

        result["label"] = output_to_label(task, text)
    return result


# ---------------------------------------------------------------------------------------------------- task="all"
def _predict_all(model: Any, tokenizer: Any, texts: Sequence[Any], batch_size: int, max_length: int,
                 language: str | None, generation: dict[str, Any]) -> list[dict[str, Any]]:
    names = [n for n in model.heads if model.tasks[n].kind != "masked_lm"]
    if not names:
        raise DataError("predict(task='all'): the model has no task to predict with (only masked_lm tasks).")
    # generative tasks each generate their own text: only encoder heads can share one backbone pass
    if not shares_backbone(model) or any(model.tasks[n].is_generative for n in names):
        pairs = [(i, n) for i in range(len(texts)) for n in names]
        flat = predict(model, [texts[i] for i, _ in pairs], task=[n for _, n in pairs], batch_size=batch_size,
                       max_length=max_length, language=language, tokenizer=tokenizer, **generation)
        return [{n: flat[k * len(names) + j] for j, n in enumerate(names)} for k in range(len(texts))]
    _check_generative_call(model, names, [], language, tokenizer, generation)
    out: list[dict[str, Any]] = []
    with _eval_mode(model):
        for start in range(0, len(texts), batch_size):
            out += _shared_pass(model, tokenizer, list(texts[start:start + batch_size]), names, max_length)
    # the shared pass truncates: token tasks answer inputs longer than max_length again, in windows
    token_names = [n for n in names if model.tasks[n].is_token_level]
    long = [i for i, w in enumerate(word_windows(tokenizer, texts, max_length) if token_names else []) if w]
    for name in token_names if long else []:
        again = predict(model, [texts[i] for i in long], task=name, batch_size=batch_size, max_length=max_length,
                        language=language, tokenizer=tokenizer)
        for i, row in zip(long, again):
            out[i][name] = row
    return out


def _shared_pass(model: Any, tokenizer: Any, texts: list[Any], names: list[str], max_length: int) -> list[dict[str, Any]]:
    """Every task's head on one backbone pass per distinct tokenization of the chunk.

    Token tasks read words and sequence tasks read sentences; when both tokenize to the same ids (as
    with BERT's word-piece tokenizers) they share one pass, otherwise each tokenization gets its own.
    """
    device = _device(model)
    by_form: dict[str, Encoded] = {}
    passes: list[tuple[dict[str, torch.Tensor], list[str]]] = []  # (inputs, tasks reading them)
    for name in names:
        form = _form(model.tasks[name])
        if form not in by_form:
            by_form[form] = encode_rows(tokenizer, [model.tasks[name]] * len(texts), texts, max_length, device)
        inputs = by_form[form].inputs
        shared = next((p for p in passes if _same_inputs(p[0], inputs)), None)
        if shared is None:
            passes.append((inputs, [name]))
        else:
            shared[1].append(name)
    results: list[dict[str, Any]] = [{} for _ in texts]
    for inputs, readers in passes:
        hidden = _encode_for(model, inputs, readers)
        for name in readers:
            task = model.tasks[name]
            enc = by_form[_form(task)]
            logits = model._head(name, hidden, inputs.get("attention_mask")).float().cpu()
            for i in range(len(texts)):
                results[i][name] = _result(task, logits[i], enc.words[i], enc.word_ids[i])
    return results


def _same_inputs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def _encode_for(model: Any, inputs: dict[str, torch.Tensor], readers: list[str]) -> dict[int | None, torch.Tensor]:
    """One backbone pass with every hidden layer the `readers`' heads need (the model's own `_encode`;
    with method `none` the pass does not depend on the task, so one routing serves every head)."""
    batch = inputs["input_ids"].shape[0]
    routing = Routing.of([readers[0]] * batch, inputs["input_ids"].device, owners=readers)
    return model._encode(routing, inputs["input_ids"], inputs.get("attention_mask"), inputs.get("token_type_ids"))


# ---------------------------------------------------------------------------------------------------- tokenization
@dataclass
class Encoded:
    """A padded batch and, for rows of token tasks, their words and each position's word index."""

    inputs: dict[str, torch.Tensor]
    words: list[list[str] | None]
    word_ids: list[list[int | None] | None]


def encode_rows(tokenizer: Any, tasks: Sequence[Task], texts: Sequence[Any], max_length: int,
                device: torch.device | None = None) -> Encoded:
    """Tokenize each row as its task reads it (words, a pair or a sentence), then pad the rows together.

    Args:
        tokenizer: a fast tokenizer (word alignment of token tasks needs `word_ids`).
        tasks: one task per row.
        texts: the raw inputs.
        max_length: truncation length.
        device: where to put the tensors.

    Returns:
        `Encoded` with `input_ids`, `attention_mask` (and `token_type_ids`) of shape (B, L).
    """
    n = len(texts)
    rows: list[dict[str, list[int]]] = [{} for _ in range(n)]
    words: list[list[str] | None] = [None] * n
    word_ids: list[list[int | None] | None] = [None] * n
    for form, idx in _forms(tasks).items():
        part = [texts[i] for i in idx]
        if form == "words":
            split = [t.split() if isinstance(t, str) else list(t) for t in part]
            enc = tokenizer(split, is_split_into_words=True, truncation=True, max_length=max_length)
        else:
            firsts, seconds = _split_pairs(tasks[idx[0]], part, form == "pair")
            enc = tokenizer(firsts, seconds, truncation=True, max_length=max_length)
        for j, i in enumerate(idx):
            rows[i] = {k: enc[k][j] for k in _INPUT_KEYS if k in enc}
            if form == "words":
                words[i], word_ids[i] = split[j], enc.word_ids(j)
    inputs, offsets = _pad(tokenizer, rows)
    for i, offset in enumerate(offsets):
        if word_ids[i] is not None and offset:
            word_ids[i] = [None] * offset + word_ids[i]
    return Encoded({k: v.to(device) for k, v in inputs.items()} if device is not None else inputs, words, word_ids)


def _form(task: Task) -> str:
    """How a task reads its input: `words` (token tasks), `pair` (pair tasks) or `single`."""
    return "words" if task.is_token_level else "pair" if task.text_pair_column else "single"


def _forms(tasks: Sequence[Task]) -> dict[str, list[int]]:
    """Row indices by input form."""
    forms: dict[str, list[int]] = {}
    for i, task in enumerate(tasks):
        forms.setdefault(_form(task), []).append(i)
    return forms


def _split_pairs(task: Task, texts: list[Any], pair: bool) -> tuple[list[str], list[str] | None]:
    if pair:
        pairs = [t if isinstance(t, (list, tuple)) else (t, "") for t in texts]
        if any(len(p) != 2 for p in pairs):
            raise DataError(f"task {task.name!r} reads sentence pairs: give each input as (text, text_pair).")
        return [p[0] for p in pairs], [p[1] for p in pairs]
    return [t if isinstance(t, str) else " ".join(t) for t in texts], None


def _pad(tokenizer: Any, rows: list[dict[str, list[int]]]) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Pad token-id lists to one length on the tokenizer's padding side; returns the tensors and each
    row's left offset (non-zero only with left padding)."""
    if tokenizer.pad_token_id is None:
        raise DataError("The tokenizer has no pad token, so rows cannot be batched. Fix: set tokenizer.pad_token.")
    length = max(len(r["input_ids"]) for r in rows)
    left = getattr(tokenizer, "padding_side", "right") == "left"
    fill = {"input_ids": tokenizer.pad_token_id, "attention_mask": 0,
            "token_type_ids": getattr(tokenizer, "pad_token_type_id", 0)}
    out: dict[str, torch.Tensor] = {}
    for key in (k for k in _INPUT_KEYS if k in rows[0]):
        padded = []
        for r in rows:
            pad = [fill[key]] * (length - len(r[key]))
            padded.append(pad + list(r[key]) if left else list(r[key]) + pad)
        out[key] = torch.tensor(padded, dtype=torch.long)
    offsets = [length - len(r["input_ids"]) if left else 0 for r in rows]
    return out, offsets


# ---------------------------------------------------------------------------------------------------- windows
def _windows_of_rows(model: Any, tokenizer: Any, texts: Sequence[Any], names: list[str],
                     max_length: int) -> tuple[list[Any], list[str], list[int]]:
    """The rows to run: each input once, but a token-task input longer than `max_length` tokens as
    consecutive windows of its words. Returns the rows, their tasks and each row's input index."""
    token_rows = [i for i, n in enumerate(names) if model.tasks[n].is_token_level]
    windows = dict(zip(token_rows, word_windows(tokenizer, [texts[i] for i in token_rows], max_length)))
    rows: list[Any] = []
    row_names: list[str] = []
    owners: list[int] = []
    for i, (text, name) in enumerate(zip(texts, names)):
        pieces = windows.get(i) or [text]
        rows += pieces
        row_names += [name] * len(pieces)
        owners += [i] * len(pieces)
    return rows, row_names, owners


def word_windows(tokenizer: Any, texts: Sequence[Any], max_length: int) -> list[list[list[str]] | None]:
    """For each token-task input, its words cut into consecutive windows whose tokens (with the special
    tokens) fit `max_length`, or None when the input fits as it is. A single word longer than a window
    gets a window of its own (its first tokens are kept, which is all its tag needs)."""
    words = [t.split() if isinstance(t, str) else list(t) for t in texts]
    budget = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    out: list[list[list[str]] | None] = [None] * len(words)
    if not words:
        return out
    enc = tokenizer(words, is_split_into_words=True, add_special_tokens=False, truncation=False, verbose=False)
    for j, row in enumerate(words):
        if len(enc["input_ids"][j]) <= budget:
            continue
        if budget < 1:
            raise DataError(f"max_length={max_length} leaves no room for words next to the "
                            f"{max_length - budget} special tokens. Fix: a larger --max-seq-length (max_length=).")
        counts = [0] * len(row)
        for w in enc.word_ids(j):
            counts[w] += 1
        out[j] = [row[a:b] for a, b in _spans(counts, budget)]
    return out


def _spans(counts: list[int], budget: int) -> list[tuple[int, int]]:
    """Greedy (start, end) word spans whose token counts sum to at most `budget` (a longer word alone)."""
    spans, start, used = [], 0, 0
    for k, count in enumerate(counts):
        if used + count > budget and k > start:
            spans.append((start, k))
            start, used = k, 0
        used += count
    spans.append((start, len(counts)))
    return spans


def _merge_windows(results: list[dict[str, Any]], owners: list[int]) -> list[dict[str, Any]]:
    """One result per input: the windows of an input (consecutive rows) joined in word order."""
    merged: list[dict[str, Any]] = []
    for k, (result, owner) in enumerate(zip(results, owners)):
        if k and owners[k - 1] == owner:
            for key in ("tokens", "tags", "scores"):
                merged[-1][key] = merged[-1][key] + result[key]
        else:
            merged.append(result)
    return merged


# ---------------------------------------------------------------------------------------------------- results
def _result(task: Task, logits: torch.Tensor, words: list[str] | None, word_ids: list[int | None] | None) -> dict[str, Any]:
    """One row's prediction from its logits: (C,) for sequence tasks, (L, C) for token tasks."""
    if task.kind == "regression":
        return {"task": task.name, "score": float(logits.view(-1)[0])}
    never = task.never_predicted()
    if never:  # labels the model never learned (only evaluation data had them) are never predicted
        logits = logits.index_fill(-1, torch.tensor(never, device=logits.device), float("-inf"))
    probs = logits.softmax(-1)
    if task.kind == "classification":
        return _class_result(task, probs)
    return _token_result(task, words or [], word_ids or [], probs)


def _class_result(task: Task, probs: torch.Tensor) -> dict[str, Any]:
    best = int(probs.argmax())
    labels = task.labels or [str(i) for i in range(len(probs))]
    return {"task": task.name, "label": labels[best], "score": float(probs[best]),
            "scores": {label: float(p) for label, p in zip(labels, probs)}}


def _token_result(task: Task, words: list[str], word_ids: list[int | None], probs: torch.Tensor) -> dict[str, Any]:
    labels = task.labels or []
    tags, scores, seen = [], [], set()
    for position, word in enumerate(word_ids):
        if word is None or word in seen:
            continue
        seen.add(word)
        best = int(probs[position].argmax())
        tags.append(labels[best])
        scores.append(float(probs[position, best]))
    return {"task": task.name, "tokens": words[: len(tags)], "tags": tags, "scores": scores}
