"""Label sets as the transformers examples build them, labels only the evaluation data hold, blank labels,
and the rows `max_train_samples` selects (issue 20, items 1 and 9)."""

from __future__ import annotations

import warnings
from pathlib import Path

import datasets
import pytest

from helpers import tiny_bert_config, tiny_tokenizer
from hf_mtl import DataError, Task
from hf_mtl.data.dataset import load_raw_splits, prepare_datasets
from hf_mtl.data.preprocess import sorted_labels
from hf_mtl.data.readers import load_task_split


def write(path: Path, text: str) -> str:
    path.write_text(text, encoding="utf-8")
    return str(path)


def column_file(path: Path, sentences: list[list[tuple[str, str]]]) -> str:
    return write(path, "\n\n".join("\n".join(f"{w}\t{t}" for w, t in s) for s in sentences) + "\n")


def load_like_run_training(task: Task) -> tuple[dict, dict]:
    """The data loading of `run_training`: raw train and validation splits, then tokenized as the trainer does."""
    train_raw, eval_raw = load_raw_splits([task], "train"), load_raw_splits([task], "validation")
    tok = tiny_tokenizer()
    train = prepare_datasets([task], train_raw, tok, 32, "train", label_data=eval_raw)
    return train, prepare_datasets([task], eval_raw, tok, 32, "validation")


# ------------------------------------------------------------------ label set from the whole training split
def test_label_set_comes_from_the_whole_training_split(tmp_path: Path) -> None:
    train = column_file(tmp_path / "train.txt", [[("john", "B-PER"), ("is", "O")], [("paris", "B-LOC")],
                                                 [("x", "goeswith"), ("y", "O")]])
    dev = column_file(tmp_path / "dev.txt", [[("x", "goeswith"), ("paris", "B-LOC")]])
    task = Task("ner", kind="token_classification", label_column="tags", train_file=train, validation_file=dev,
                max_train_samples=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 'goeswith' is in the training file: nothing to warn about
        train_set, dev_set = load_like_run_training(task)
    assert task.labels == ["O", "B-LOC", "B-PER", "goeswith"]  # sorted, "O" first, as before
    assert len(train_set["ner"]) == 1 and len(dev_set["ner"]) == 1


def test_ud_english_ewt_slice_keeps_rare_labels(shared_data: Path) -> None:
    ud = shared_data / "ud_english_ewt"
    task = Task("dep", kind="token_classification", label_column="deprel", train_file=str(ud / "en_ewt-ud-train.conllu"),
                validation_file=str(ud / "en_ewt-ud-dev.conllu"), max_train_samples=20)
    full = load_task_split(Task("full", kind="token_classification", label_column="deprel",
                                train_file=task.train_file, labels=["O"]), "train")
    train_raw = load_raw_splits([task], "train")
    assert len(train_raw["dep"]) == 20
    first_rows = {tag for tags in train_raw["dep"]["deprel"] for tag in tags}
    assert "goeswith" not in first_rows and "goeswith" in task.labels
    assert task.labels == sorted_labels(task, {tag for tags in full["deprel"] for tag in tags})
    eval_raw = load_raw_splits([task], "validation")
    prepare_datasets([task], eval_raw, tiny_tokenizer(), 32, "validation")  # every dev tag has an id


# ------------------------------------------------------------------ labels only the evaluation data hold
def test_evaluation_only_label_is_added_with_one_warning(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\ngood,pos\nbad,neg\nfine,pos\n")
    dev = write(tmp_path / "dev.csv", "text,label\ngood,pos\nmeh,neutral\nso so,neutral\nbad,mixed\n")
    task = Task("sa", train_file=train, validation_file=dev)
    with pytest.warns(UserWarning, match=r"\['mixed', 'neutral'\].*the model cannot learn them") as record:
        load_like_run_training(task)
    assert sum("mixed" in str(w.message) for w in record) == 1
    assert task.labels == ["neg", "pos", "mixed", "neutral"]  # after the training labels


def test_evaluation_only_label_through_the_trainer_api(tmp_path: Path) -> None:
    from hf_mtl.modeling import MultiTaskModel
    from hf_mtl.trainer import MultiTaskTrainer
    from hf_mtl.training_args import MultiTaskTrainingArguments

    tok = tiny_tokenizer()
    task = Task("sa")
    model = MultiTaskModel.from_config(tiny_bert_config(tok.vocab_size), [task], tokenizer=tok)
    train = datasets.Dataset.from_dict({"text": ["good", "bad"], "label": ["pos", "neg"]})
    dev = datasets.Dataset.from_dict({"text": ["good", "so so"], "label": ["pos", "neutral"]})
    args = MultiTaskTrainingArguments(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True)
    with pytest.warns(UserWarning, match="'neutral'"):
        MultiTaskTrainer(model=model, args=args, tasks=[task], train_dataset={"sa": train}, eval_dataset={"sa": dev})
    assert task.labels == ["neg", "pos", "neutral"]
    assert model(**tok(["good"], return_tensors="pt"), task="sa").logits.shape == (1, 3)  # the head has its output


def test_explicit_labels_stay_strict(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\ngood,pos\nbad,neg\n")
    dev = write(tmp_path / "dev.csv", "text,label\nmeh,neutral\n")
    task = Task("sa", train_file=train, validation_file=dev, labels=["neg", "pos"])
    with pytest.raises(DataError, match=r"label 'neutral' in the validation split .* Fix: add it to `labels`"):
        load_like_run_training(task)


# ------------------------------------------------------------------ rows max_train_samples selects
def test_single_class_slice_names_the_fix(tmp_path: Path) -> None:
    rows = "".join(f"t{i},neg\n" for i in range(5)) + "".join(f"t{i},pos\n" for i in range(5, 10))
    train = write(tmp_path / "sorted.csv", "text,label\n" + rows)
    with pytest.raises(DataError, match=r"first 3 training rows .* all have the label 'neg'.*`sample_seed`"):
        load_task_split(Task("sa", train_file=train, max_train_samples=3), "train")
    task = Task("sa", train_file=train, max_train_samples=6, sample_seed=7)
    sample = load_task_split(task, "train")
    assert len(sample) == 6 and set(sample["label"]) == {"neg", "pos"} and task.labels == ["neg", "pos"]
    again = load_task_split(Task("sa", train_file=train, max_train_samples=6, sample_seed=7), "train")
    assert again["text"] == sample["text"]  # the seed fixes the rows
    assert sample["text"] == sorted(sample["text"], key=lambda t: int(t[1:]))  # kept in file order


def test_first_rows_stay_the_default(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\na,x\nb,y\nc,x\nd,y\n")
    assert load_task_split(Task("sa", train_file=train, max_train_samples=2), "train")["text"] == ["a", "b"]


# ------------------------------------------------------------------ blank labels
def test_blank_labels_are_refused_with_row_numbers(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\ngood,pos\nbad,\nfine,pos\nugly, \nawful,neg\n")
    with pytest.raises(DataError, match=r"2 row\(s\) .* blank label in column 'label' \(rows 1, 3.*`drop_unlabeled: true`"):
        load_task_split(Task("sa", train_file=train), "train")


def test_drop_unlabeled_drops_them_with_a_warning(tmp_path: Path) -> None:
    train = write(tmp_path / "train.csv", "text,label\ngood,pos\nbad,\nfine,pos\nawful,neg\n")
    task = Task("sa", train_file=train, drop_unlabeled=True)
    with pytest.warns(UserWarning, match=r"dropped 1 row\(s\)"):
        data = load_task_split(task, "train")
    assert data["text"] == ["good", "fine", "awful"] and task.labels == ["neg", "pos"]


@pytest.mark.parametrize("task, raw", [
    (Task("sa"), {"text": ["a", "b", "c"], "label": ["pos", "", "neg"]}),
    (Task("sa"), {"text": ["a", "b", "c"], "label": ["pos", None, "neg"]}),
    (Task("r", kind="regression"), {"text": ["a", "b"], "label": [1.0, None]}),
    (Task("t", kind="token_classification"), {"tokens": [["a"], ["b", "c"]], "label": [["O"], ["O", ""]]}),
])
def test_blank_labels_refused_in_datasets_given_to_the_trainer(task: Task, raw: dict) -> None:
    with pytest.raises(DataError, match=r"row\(s\) of the train data have a blank .* \(rows 1,"):
        prepare_datasets([task], {task.name: datasets.Dataset.from_dict(raw)}, tiny_tokenizer(), 32, "train")


def test_evaluation_only_labels_are_never_predicted_so_their_rows_are_errors(tmp_path: Path) -> None:
    """Rows of a label the training split lacks count as errors, whatever the untrained output says."""
    import numpy as np

    from hf_mtl.metrics import compute_task_metrics

    train = write(tmp_path / "train.csv", "text,label\ngood,pos\nbad,neg\n")
    dev = write(tmp_path / "dev.csv", "text,label\ngood,pos\nmeh,neutral\n")
    task = Task("sa", train_file=train, validation_file=dev, metrics=["accuracy"])
    with pytest.warns(UserWarning, match="neutral"):
        load_like_run_training(task)
    assert task.evaluation_only_labels == ["neutral"] and task.never_predicted() == [2]
    logits = np.array([[0.0, 5.0, 1.0], [0.0, 1.0, 9.0]])  # row 2's largest logit is the unlearned label's
    assert compute_task_metrics(task, logits, np.array([1, 2]))["accuracy"] == 0.5
    assert Task.from_dict(task.to_dict()).never_predicted() == [2]  # saved with the store


def test_predict_never_answers_an_evaluation_only_label() -> None:
    import torch

    from hf_mtl.modeling import MultiTaskModel

    tok = tiny_tokenizer()
    task = Task("sa", labels=["neg", "pos", "neutral"], evaluation_only_labels=["neutral"])
    model = MultiTaskModel.from_config(tiny_bert_config(tok.vocab_size), [task], tokenizer=tok).eval()
    last = [m for m in model.heads["sa"].modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.bias[2] = 100.0  # the untrained output would win every row
    rows = model.predict(["good", "bad", "so so"], task="sa", max_length=32)
    assert all(row["label"] != "neutral" and row["scores"]["neutral"] == 0.0 for row in rows)
