"""Offline scores of generated texts (issue 22, part 4), each checked against values computed by hand."""

from __future__ import annotations

import math

import pytest

from hf_mtl.errors import TaskConfigError
from hf_mtl.generation_metrics import (
    compute_generation_metrics,
    normalize_output,
    output_to_label,
    parse_score,
)
from hf_mtl.metrics import primary_metric_key
from hf_mtl.tasks import Task


def text_task(*metrics: str) -> Task:
    return Task(name="t", kind="seq2seq", target_column="y", metrics=list(metrics))


def test_accuracy_maps_outputs_back_to_labels() -> None:
    task = Task(name="s", kind="causal_lm", label_words={"0": "negative", "1": "Positive"})
    assert normalize_output("  Positive \nThe review is ...") == "positive"
    assert output_to_label(task, " POSITIVE") == "1" and output_to_label(task, "neutral") is None
    # right (first line, case), right, no label word (wrong), no label word with the dot (wrong)
    predictions = [" Positive\nmore text", "negative", "neutral", "positive."]
    assert compute_generation_metrics(task, predictions, ["1", "0", "0", "1"]) == {"accuracy": 0.5}


def test_exact_match_strips_whitespace_only() -> None:
    assert compute_generation_metrics(text_task("exact_match"), [" a b ", "A b"], ["a b", "a b"]) == {"exact_match": 0.5}


def test_rouge_by_hand() -> None:
    # unigrams 2/3 match, bigrams {the cat, cat sat} vs {the cat, cat ran}: 1/2, longest common subsequence 2 of 3
    out = compute_generation_metrics(text_task("rouge1", "rouge2", "rougeL"), ["the cat sat"], ["the cat ran"])
    assert out == pytest.approx({"rouge1": 2 / 3, "rouge2": 1 / 2, "rougeL": 2 / 3})


def test_bleu_by_hand() -> None:
    # n-gram precisions 4/5, 3/4, 2/3, 1/2; same length, so no brevity penalty: BLEU = (0.8 * 0.75 * 2/3 * 0.5) ** 0.25
    out = compute_generation_metrics(text_task("bleu"), ["a b c d e"], ["a b c d f"])
    assert out["bleu"] == pytest.approx((0.8 * 0.75 * (2 / 3) * 0.5) ** 0.25)


def test_chrf_by_hand() -> None:
    # character n-grams of "abc" vs "abd": 1-grams 2/3, 2-grams 1/2, 3-grams 0 (orders 4-6 have none): precision
    # and recall both average (2/3 + 1/2 + 0) / 3 = 7/18, and F-beta of two equal values is that value
    out = compute_generation_metrics(text_task("chrf", "exact_match"), ["abc"], ["abd"])
    assert out == pytest.approx({"chrf": 7 / 18, "exact_match": 0.0})
    assert compute_generation_metrics(text_task("chrf"), ["same text"], ["same text"])["chrf"] == pytest.approx(1.0)


def test_string_score_correlations_count_unparsed_outputs() -> None:
    task = text_task("pearson", "spearmanr")
    assert parse_score(" 3.8\n") == 3.8 and parse_score("three") is None and parse_score("nan") is None
    # "x" does not parse and counts as the fallback -1: predictions (1, 2, -1) against (1, 2, 3)
    out = compute_generation_metrics(task, ["1", "2.0", "x"], ["1", "2", "3"])
    # Pearson: deviations (1/3, 4/3, -5/3) and (-1, 0, 1): -2 / sqrt(42/9 * 2); Spearman: ranks (2, 3, 1) vs
    # (1, 2, 3), sum of squared rank differences 6: 1 - 6 * 6 / (3 * 8)
    assert out == pytest.approx({"pearson": -2 / math.sqrt(42 / 9 * 2), "spearmanr": -0.5, "unparsed": 1.0})
    fallback = compute_generation_metrics(task, ["1", "2.0", "x"], ["1", "2", "3"], score_fallback=3.0)
    assert fallback == pytest.approx({"pearson": 1.0, "spearmanr": 1.0, "unparsed": 1.0})
    with pytest.raises(TaskConfigError, match="reference 'high' .* is not a number"):
        compute_generation_metrics(task, ["1", "2"], ["1", "high"])


def test_primary_metric_is_the_first() -> None:
    task = text_task("chrf", "bleu")
    assert primary_metric_key(task) == "chrf"
    assert primary_metric_key(Task(name="s", kind="causal_lm", label_words={"0": "a", "1": "b"})) == "accuracy"
