"""Offline scores of generated texts, for the generative kinds (`causal_lm`, `seq2seq`).

Evaluation generates a text per row and scores it here against the row's reference, with no model and no network:

- `accuracy`: classification as generation. A generated text is normalized (first line, stripped, lower-cased)
  and mapped back to the label whose word it is (`Task.label_words`); the reference is the row's label. A text
  that matches no label word counts as wrong.
- `exact_match`: the generated text equals the reference text, both stripped of surrounding whitespace.
- `rouge1`, `rouge2`, `rougeL`: mean F-measure of the `rouge-score` package (its default tokenizer keeps ASCII
  letters and digits only, so use chrF for other scripts).
- `bleu`, `chrf`: corpus BLEU and chrF of `sacrebleu`, divided by 100.
- `pearson`, `spearmanr`: correlation of numbers written as text (a score task such as STS-B: "3.8"). A text
  that does not parse as a number counts as a fallback value, and `unparsed` reports how many did not.

Every score lies in [0, 1] (correlations in [-1, 1]) like the encoder metrics, so `eval_average` can mix them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import TaskConfigError
from .metrics import BUILTIN_METRICS
from .tasks import GENERATION_METRICS, SCORE_METRICS, Task


SCORE_FALLBACK = -1.0  # what T5's `string_to_float` postprocessor gives a text that is not a number
UNPARSED_KEY = "unparsed"


def normalize_output(text: str) -> str:
    """The part of a generated text compared with label words: its first non-blank line, stripped, lower-cased.

    A model may go on after its answer ("positive\\nThe review ..."): only the first line counts.
    """
    lines = text.strip().splitlines()
    return lines[0].strip().lower() if lines else ""


def output_to_label(task: Task, text: str) -> str | None:
    """The label whose word a generated text is (see `normalize_output`), or None when it matches no word.

    Args:
        task: a generative task with `label_words`.
        text: a generated text.
    """
    if task.label_words is None:
        raise TaskConfigError(f"task {task.name!r}: it has no `label_words`, so a text cannot map to a label. "
                              f"Fix: give `label_words`.")
    words = {word.strip().lower(): label for label, word in task.label_words.items()}
    return words.get(normalize_output(text))


def parse_score(text: str) -> float | None:
    """The number a generated text writes (first line), or None when it is not a finite number."""
    try:
        value = float(normalize_output(text))
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def compute_generation_metrics(task: Task, predictions: Sequence[str], references: Sequence[str],
                               score_fallback: float = SCORE_FALLBACK) -> dict[str, float]:
    """Score generated texts with every metric of `task` (`perplexity` excepted: the trainer adds it from the loss).

    Args:
        task: a generative task; its `metrics` name the scores.
        predictions: one generated text per row (the new tokens only, decoded).
        references: one reference per row: the row's label (as text) for `label_words` tasks, else the target text.
        score_fallback: the number that an output which does not parse counts as (`pearson`, `spearmanr`).

    Returns:
        `{metric: value}`; with `pearson` or `spearmanr` also `unparsed`, the number of outputs that did not parse.
    """
    if len(predictions) != len(references):
        raise ValueError(f"task {task.name!r}: {len(predictions)} predictions for {len(references)} references.")
    predictions, references = [str(p) for p in predictions], [str(r) for r in references]
    results: dict[str, float] = {}
    rouge = [name for name in task.metrics if name.startswith("rouge")]
    if rouge:
        results.update(rouge_scores(predictions, references, rouge))
    for name in task.metrics:
        if name in SCORE_METRICS:
            results.update(score_correlation(name, predictions, references, score_fallback, task))
        elif name in _TEXT_METRICS:
            results[name] = _TEXT_METRICS[name](predictions, references) if references else float("nan")
        elif name == "accuracy":
            results[name] = label_accuracy(task, predictions, references)
        elif name not in GENERATION_METRICS and name != "perplexity":
            raise TaskConfigError(f"task {task.name!r}: metric {name!r} does not score generated text. Fix: use "
                                  f"metrics among {list(GENERATION_METRICS)}.")
    return results


def label_accuracy(task: Task, predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of rows whose generated text maps to the row's label; a text matching no label word is wrong."""
    if not references:
        return float("nan")
    hits = sum(output_to_label(task, text) == str(label) for text, label in zip(predictions, references))
    return hits / len(references)


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Share of rows whose generated text equals the reference, both stripped of surrounding whitespace."""
    return sum(p.strip() == r.strip() for p, r in zip(predictions, references)) / len(references)


def bleu(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU of sacrebleu (its default 13a tokenizer), in [0, 1]."""
    import sacrebleu

    return sacrebleu.corpus_bleu(list(predictions), [list(references)]).score / 100.0


def chrf(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Corpus chrF of sacrebleu (character 6-grams, beta 2), in [0, 1]."""
    import sacrebleu

    return sacrebleu.corpus_chrf(list(predictions), [list(references)]).score / 100.0


_TEXT_METRICS = {"exact_match": exact_match, "bleu": bleu, "chrf": chrf}


def rouge_scores(predictions: Sequence[str], references: Sequence[str], names: Sequence[str]) -> dict[str, float]:
    """Mean ROUGE F-measure per row (`rouge-score`, Porter stemming as in the summarization examples)."""
    from rouge_score import rouge_scorer

    if not references:
        return {name: float("nan") for name in names}
    scorer = rouge_scorer.RougeScorer(list(names), use_stemmer=True)
    totals = dict.fromkeys(names, 0.0)
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)  # (target, prediction)
        for name in names:
            totals[name] += scores[name].fmeasure
    return {name: total / len(references) for name, total in totals.items()}


def score_correlation(name: str, predictions: Sequence[str], references: Sequence[str], fallback: float,
                      task: Task) -> dict[str, float]:
    """`pearson` or `spearmanr` of the numbers the texts write; outputs that do not parse count as `fallback`.

    Returns:
        `{name: correlation, "unparsed": count of outputs that did not parse}`.
    """
    values = [parse_score(text) for text in predictions]
    gold = []
    for row, reference in enumerate(references):
        number = parse_score(reference)
        if number is None:
            raise TaskConfigError(f"task {task.name!r}: reference {reference!r} (row {row}) is not a number, so "
                                  f"metric {name!r} cannot use it. Fix: use a text metric such as `exact_match`, or "
                                  f"check the target column.")
        gold.append(number)
    preds = np.array([fallback if v is None else v for v in values], dtype=np.float64)
    return {name: BUILTIN_METRICS[name](preds, np.array(gold, dtype=np.float64), task),
            UNPARSED_KEY: float(sum(v is None for v in values))}
