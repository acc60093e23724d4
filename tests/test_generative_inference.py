"""Generative tasks at inference and in stores (issue 22): generation checks at Task construction, `predict` and
`hf-mtl predict` for generative tasks (a text, and a label for label words), and stores: save, load, push and pull
per task through the test Hub server with the same generations, and the model card of generative tasks."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import ByT5Tokenizer, LlamaConfig

from hf_mtl.errors import TaskConfigError
from hf_mtl.tasks import Task


def sentiment(**generation) -> Task:
    return Task("sent", kind="causal_lm", prompt_template="Review: {text} Answer:", label_column="label",
                label_words={"0": "neg", "1": "pos"}, generation=generation or None)


# ------------------------------------------------------------------------------------------------ Task checks
@pytest.mark.parametrize("generation, field", [
    ({"num_return_sequences": 2, "num_beams": 4}, "num_return_sequences"),
    ({"num_return_sequences": 3, "do_sample": True}, "num_return_sequences"),
    ({"num_beams": 0}, "num_beams"),
    ({"num_beams": -1}, "num_beams"),
])
def test_generation_options_each_row_cannot_serve_are_refused_at_construction(generation, field):
    with pytest.raises(TaskConfigError, match=rf"task 'sent'.*{field}.*Fix:"):
        sentiment(**generation)


def test_generation_options_within_limits_are_kept():
    task = sentiment(num_beams=2, num_return_sequences=1, max_new_tokens=3)
    assert task.generation == {"num_beams": 2, "num_return_sequences": 1, "max_new_tokens": 3}
    assert Task.from_dict(json.loads(task.to_json())).generation == task.generation
