"""Recipe parsing: value types checked when the recipe is read, unknown fields with a suggestion, and the list
of hf_mtl's own recipe fields (issue 20 item 9, issue 19 item 10)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hf_mtl.cli import main
from hf_mtl.errors import TaskConfigError
from hf_mtl.run import load_recipe, parse_recipe_dict
from hf_mtl.training_args import RECIPE_FIELDS_NOTE, MultiTaskTrainingArguments, recipe_fields_help


def recipe_file(tmp_path: Path, **fields) -> Path:
    path = tmp_path / "recipe.json"
    body = {"output_dir": str(tmp_path / "out"), "tasks": [{"name": "sa", "labels": ["neg", "pos"]}], **fields}
    path.write_text(json.dumps(body), encoding="utf-8")
    return path


@pytest.mark.parametrize("fields, overrides, message", [
    ({"learning_rate": "1e-3"}, [], r"`learning_rate` must be a number, got \"1e-3\" \(a string\). Fix: write it "
                                    r"without quotes, e.g. \"learning_rate\": 1e-3"),
    ({"max_seq_length": "sixty"}, [], r"`max_seq_length` must be an integer, got \"sixty\""),
    ({}, ["--learning_rate", "abc"], r"`learning_rate` must be a number, got \"abc\""),
    ({"tasks": "sentiment"}, [], r"`tasks` must be a list of JSON objects or null, got \"sentiment\""),
    ({"tasks": ["sentiment"]}, [], r"`tasks` must be a list of JSON objects"),
    ({"freeze_backbone": "false"}, [], r"`freeze_backbone` must be true or false, got \"false\".*without quotes"),
    ({"adapter_config": "r=8"}, [], r"`adapter_config` must be a JSON object or null"),
    ({}, ["--tasks.0.max_train_samples", "true"], r"task 'sa': `max_train_samples` must be an integer or null"),
])
def test_wrong_types_fail_when_the_recipe_is_read(tmp_path: Path, fields: dict, overrides: list, message: str) -> None:
    with pytest.raises(TaskConfigError, match=message):
        load_recipe(recipe_file(tmp_path, **fields), overrides)


def test_text_fields_keep_text_overrides(tmp_path: Path) -> None:
    args = load_recipe(recipe_file(tmp_path), ["--run_name", "2024", "--learning_rate", "1e-3", "--tasks.0.language", "1"])
    assert args.run_name == "2024" and args.learning_rate == 1e-3 and args.task_objects()[0].language == "1"


def test_unknown_field_suggests_the_close_one() -> None:
    with pytest.raises(TaskConfigError, match=r"unknown field\(s\) \['learning_rat'\] \(did you mean 'learning_rate'\?\)"):
        parse_recipe_dict({"output_dir": "x", "learning_rat": 1e-3})
    with pytest.raises(TaskConfigError, match=r"\['zzz'\]\. Fix"):  # nothing close: no suggestion
        parse_recipe_dict({"output_dir": "x", "zzz": 1})


def test_cli_prints_one_error_line(tmp_path: Path, capsys) -> None:
    assert main(["train", str(recipe_file(tmp_path)), "--learning_rate", "abc"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "`learning_rate`" in err[0]


def test_recipe_fields_help_lists_hf_mtl_fields() -> None:
    fields = dict(recipe_fields_help())
    assert list(fields)[:3] == ["model_name_or_path", "model_revision", "tasks"]
    assert "learning_rate" not in fields  # TrainingArguments' own fields: the note points to them
    assert fields["max_seq_length"].endswith("(default: 128)") and "truncated" in fields["max_seq_length"]
    own = set(MultiTaskTrainingArguments.__annotations__)
    assert set(fields) == own and all(help_text for help_text in fields.values())
    assert "TrainingArguments" in RECIPE_FIELDS_NOTE and "hf_mtl.Task" in RECIPE_FIELDS_NOTE
