"""Generation for generative tasks (`causal_lm`, `seq2seq`): rows of several tasks in one batched `generate`.

Each row is generated with its task's adapter and its task's generation settings (`Task.generation`, over
greedy defaults; call options override both). Rows whose settings agree up to `max_new_tokens` (greedy and
sampling), or agree in full (beam search), run as one batch through the backbone's own `generate`:

- routing: the batch's routing names every row's task; beam search expands each row into `num_beams` rows
  that keep their row's task, and the KV cache and beam reordering stay inside a row's beams, so the routing
  holds for every step. An encoder-decoder's encoder runs once, routed by row, before the beams expand.
- stopping: each row stops at its own task's `max_new_tokens` (a per-row stopping criterion) or at EOS; its
  tokens after that are dropped. A row's output equals generating it alone.
- padding: decoder-only prompts are padded on the left (new tokens follow every prompt's last token; positions
  come from the attention mask), encoder inputs on the right.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from transformers import DynamicCache, EncoderDecoderCache, GenerationConfig, StoppingCriteria, StoppingCriteriaList

from .data.collators import pad_rows, pad_token_id
from .data.text2text import TextToTextEncoder, eos_token_id, row_from_input
from .errors import TaskConfigError
from .tasks import Task, check_generation_options


DEFAULT_MAX_NEW_TOKENS = 64  # free-text targets without a `generation.max_new_tokens`
# Settings that differ between rows of one greedy batch without splitting it (each row gets its own limit).
_PER_ROW = ("max_new_tokens",)


def generation_config(model: Any, task: Task, overrides: dict[str, Any] | None = None) -> GenerationConfig:
    """The settings `task`'s rows generate with: greedy decoding with the backbone's special tokens and the
    task's EOS, then `task.generation`, then `overrides` (a call's options).

    Greedy by default rather than the checkpoint's `generation_config.json` (which may ask for sampling): per-task
    evaluation must be deterministic; a task that wants sampling says so in `generation`.

    Raises:
        TaskConfigError: an unknown or invalid option, `num_return_sequences` above 1 or `num_beams` below 1.
    """
    where = f"task {task.name!r}"
    if overrides:
        check_generation_options(overrides, f"{where} (generate options)")
    tokenizer = model.tokenizer
    base = getattr(model.backbone, "generation_config", None) or GenerationConfig()
    eos = eos_token_id(task, tokenizer)
    settings: dict[str, Any] = {
        "bos_token_id": base.bos_token_id, "eos_token_id": eos, "pad_token_id": pad_token_id(tokenizer),
        "decoder_start_token_id": base.decoder_start_token_id, "max_new_tokens": default_max_new_tokens(task, tokenizer),
        "do_sample": False, "num_beams": 1,
    }
    settings.update(task.generation or {})
    settings.update(overrides or {})
    config = GenerationConfig(**settings)
    if (config.num_return_sequences or 1) != 1:
        raise TaskConfigError(f"{where}: num_return_sequences={config.num_return_sequences}, but each row yields one "
                              f"text (scored, predicted, pushed). Fix: remove num_return_sequences.")
    if config.num_beams is None or config.num_beams < 1 or config.max_new_tokens is None or config.max_new_tokens < 1:
        raise TaskConfigError(f"{where}: num_beams={config.num_beams}, max_new_tokens={config.max_new_tokens}; both "
                              f"must be at least 1. Fix: set them in the task's `generation`.")
    return config


def default_max_new_tokens(task: Task, tokenizer: Any) -> int:
    """Label words: the longest word's tokens (either spacing) plus EOS; free text: `DEFAULT_MAX_NEW_TOKENS`."""
    if not task.label_words:
        return DEFAULT_MAX_NEW_TOKENS
    lengths = [len(tokenizer(form, add_special_tokens=False)["input_ids"])
               for word in task.label_words.values() for form in (word, " " + word)]
    return max(lengths) + 1


def _group_key(config: GenerationConfig) -> str:
    """Rows with equal keys run in one batch: greedy/sampling rows may differ in `max_new_tokens` (stopped per
    row); beam-search rows agree in everything (a beam's length budget shapes which beams win)."""
    settings = config.to_dict()
    if config.num_beams == 1:
        for name in _PER_ROW:
            settings.pop(name, None)
    return repr(sorted(settings.items()))


class RowLimits(StoppingCriteria):
    """Stops each row once it has `limits[row]` new tokens (rows of one batch may belong to different tasks)."""

    def __init__(self, limits: torch.Tensor, start: int):
        self.limits, self.start = limits, start

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        return (input_ids.shape[1] - self.start) >= self.limits


def generate_ids(model: Any, prompts: Sequence[Sequence[int]], names: Sequence[str], *, batch_size: int = 32,
                 **overrides: Any) -> list[list[int]]:
    """New token ids for tokenized prompts, each row with its task's adapter and settings.

    Args:
        model: a generative `MultiTaskModel`.
        prompts: each row's prompt ids as `TextToTextEncoder.prompt` builds them (special tokens included).
        names: each row's task.
        batch_size: rows per `generate` call.
        overrides: `GenerationConfig` options for every row (over the tasks' own).

    Returns:
        Each row's new tokens, cut at its limit and before its first EOS.
    """
    if len(prompts) != len(names):
        raise TaskConfigError(f"`task` has {len(names)} entries for {len(prompts)} inputs. Fix: one task per input.")
    model._check_tasks(dict.fromkeys(names))
    empty = next((row for row, prompt in enumerate(prompts) if not prompt), None)
    if empty is not None:  # nothing to continue from (a decoder-only LM without BOS, an empty template)
        raise TaskConfigError(f"task {names[empty]!r}: input {empty} has an empty prompt, so there is nothing to "
                              f"generate from. Fix: give the task a `prompt_template` with words of its own, or a "
                              f"non-empty input (a language task of MAD-X, `prompt_template: \"\"`, is scored by its "
                              f"loss, not by generation).")
    configs = {name: generation_config(model, model.tasks[name], overrides) for name in dict.fromkeys(names)}
    groups: dict[str, list[int]] = {}
    for row, name in enumerate(names):
        groups.setdefault(_group_key(configs[name]), []).append(row)
    out: list[list[int]] = [[] for _ in prompts]
    for rows in groups.values():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            results = _generate_batch(model, [list(prompts[i]) for i in chunk], [names[i] for i in chunk],
                                      [configs[names[i]] for i in chunk])
            for row, result in zip(chunk, results):
                out[row] = result
    return out


@torch.no_grad()
def _generate_batch(model: Any, prompts: list[list[int]], names: list[str],
                    configs: list[GenerationConfig]) -> list[list[int]]:
    """One `generate` call for rows that share their settings up to per-row limits."""
    config = copy.deepcopy(configs[0])
    limits = [c.max_new_tokens for c in configs]
    config.max_new_tokens = max(limits)
    beams = config.num_beams
    device = next(model.backbone.parameters()).device
    side = "right" if model.is_encoder_decoder else "left"
    input_ids = pad_rows(prompts, config.pad_token_id, side).to(device)
    attention_mask = pad_rows([[1] * len(p) for p in prompts], 0, side).to(device)
    expanded = [name for name in names for _ in range(beams)]  # generate's rows: each row's beams, in row order
    kwargs: dict[str, Any] = {}
    start = 1 if model.is_encoder_decoder else input_ids.shape[1]  # the decoder starts from one start token
    if len(set(limits)) > 1:
        row_limits = torch.tensor([limit for limit in limits for _ in range(beams)], device=device)
        kwargs["stopping_criteria"] = StoppingCriteriaList([RowLimits(row_limits, start)])
    if _uneven_t5(model.config):
        kwargs["cache"] = EncoderDecoderCache(DynamicCache(), DynamicCache())
    was_training = model.training
    model.eval()
    try:
        if model.is_encoder_decoder:  # the encoder runs once per row, before generate expands rows into beams
            with model.adapter.route(model.routing(names, len(names), device)):
                kwargs["encoder_outputs"] = model.backbone.get_encoder()(
                    input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        with model.adapter.route(model.routing(expanded, len(expanded), device)):
            sequences = model.backbone.generate(input_ids=input_ids, attention_mask=attention_mask,
                                                generation_config=config, **kwargs)
    finally:
        model.train(was_training)
    results = []
    for row, new in enumerate(sequences[:, start:].tolist()):
        new = new[:limits[row]]
        eos = configs[row].eos_token_id
        stops = set(eos) if isinstance(eos, list) else {eos}
        cut = next((i for i, token in enumerate(new) if token in stops), len(new))
        results.append(new[:cut])
    return results


def _uneven_t5(config: Any) -> bool:
    """T5 with more (or fewer) decoder blocks than encoder blocks: transformers 5.25's `generate` sizes its cache by
    the encoder's depth and fails with an IndexError in `cache_utils`; a cache built without the config grows to
    the decoder's depth."""
    decoder = getattr(config, "num_decoder_layers", None)
    return decoder is not None and decoder != getattr(config, "num_layers", decoder)


def generate(model: Any, inputs: Sequence[str | dict[str, Any]], task: str | Sequence[str] | None = None, *,
             max_length: int | None = None, batch_size: int = 32, **overrides: Any) -> list[str]:
    """Generate a text for every input, each with its task's adapter and generation settings, in batched calls.

    Args:
        model: a generative `MultiTaskModel`.
        inputs: raw texts (a template with one column) or `{column: value}` rows (the template's columns).
        task: one task for every input, or one per input (rows of several tasks in one call).
        max_length: prompt tokens at most (default: the backbone's positions, less the new tokens for decoder-only
            LMs); longer prompts are cut as in training (the template's own words stay).
        batch_size: rows per `generate` call.
        overrides: `GenerationConfig` options for every row (e.g. `num_beams=4`), over the tasks' own.

    Returns:
        The generated texts (special tokens removed, stripped), in input order.
    """
    if not model.is_generative:
        raise TaskConfigError("generate() needs a generative backbone (decoder-only or encoder-decoder LM); this "
                              "model's backbone is an encoder. Fix: use predict() for encoder tasks.")
    names = model.tasks_per_row(task, len(inputs), caller="generate()")
    encoders = {name: _prompt_encoder(model, model.tasks[name], max_length, overrides) for name in dict.fromkeys(names)}
    prompts = [encoders[name](value) for name, value in zip(names, inputs)]
    outputs = generate_ids(model, prompts, names, batch_size=batch_size, **overrides)
    return [model.tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in outputs]


def prompt_ids(model: Any, task: Task, value: str | dict[str, Any], max_length: int | None,
               overrides: dict[str, Any] | None = None) -> list[int]:
    """One input's prompt tokens for `task` (its template filled, cut to fit)."""
    return _prompt_encoder(model, task, max_length, overrides)(value)


def _prompt_encoder(model: Any, task: Task, max_length: int | None,
                    overrides: dict[str, Any] | None) -> Callable[[str | dict[str, Any]], list[int]]:
    """`input -> prompt ids` for `task`'s inputs: the template parsed, the tokenizer probed and the room kept for new
    tokens worked out once per task, not per input."""
    limit = max_length or backbone_positions(model)
    reserve = 0
    if not model.is_encoder_decoder:  # a decoder-only LM's new tokens take positions too
        reserve = generation_config(model, task, overrides).max_new_tokens
    if limit - reserve < 1:
        raise TaskConfigError(f"task {task.name!r}: max_length={limit} leaves no room for {reserve} new tokens. "
                              f"Fix: raise max_length or lower generation.max_new_tokens.")
    encoder = TextToTextEncoder(task, model.tokenizer, limit)
    return lambda value: encoder.prompt(row_from_input(task, value), reserve)[0]


def backbone_positions(model: Any) -> int:
    """The positions a row may use: the config's learned positions, else the tokenizer's maximum (T5: relative
    positions, no limit of the model's own), else 512."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    value = getattr(model.tokenizer, "model_max_length", None)
    return value if isinstance(value, int) and 0 < value < 1_000_000 else 512
