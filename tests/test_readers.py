"""Readers: every file format, `dataset_name` sources, every error, and slices of the real data."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hf_mtl.data.readers import TOKENS_COLUMN, load_task_split
from hf_mtl.errors import DataError
from hf_mtl.tasks import Task


CONLLU = """# sent_id = 1
# text = I don't know.
1\tI\tI\tPRON\tPRP\t_\t4\tnsubj\t_\t_
2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_
2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_
3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_
4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_
5\t.\t.\tPUNCT\t.\t_\t4\tpunct\t_\t_

# sent_id = 2
1\tGo\tgo\tVERB\tVB\t_\t0\troot\t_\t_
1.1\tgone\t_\t_\t_\t_\t_\t_\t0:root\t_
2\t!\t!\tPUNCT\t.\t_\t1\tpunct\t_\t_
"""


def write(path: Path, text: str, encoding: str = "utf-8") -> str:
    path.write_text(text, encoding=encoding)
    return str(path)


def token_task(train_file: str, label_column: str = "tags", **kwargs) -> Task:
    return Task("ner", kind="token_classification", label_column=label_column, train_file=train_file, **kwargs)


def read_error(task: Task, split: str = "train") -> str:
    with pytest.raises(DataError) as info:
        load_task_split(task, split)
    return str(info.value)


# ---------------------------------------------------------------------------------------- formats
def test_csv_keeps_columns_and_text_as_written(tmp_path):
    path = write(tmp_path / "train.csv", 'text,label\nNA,0\n"a, b",1\n,1\n')
    ds = load_task_split(Task("sa", train_file=path), "train")
    assert ds.column_names == ["text", "label"]
    assert ds["text"] == ["NA", "a, b", ""]  # never turned into nulls
    assert ds["label"] == [0, 1, 1]


def test_tsv_quoted_multiline_fields(tmp_path):
    path = write(tmp_path / "dev.tsv", 'sentence\tlabel\n"line one\nline two\twith tab"\t1\nplain\t0\n')
    ds = load_task_split(Task("sa", text_column="sentence", validation_file=path), "validation")
    assert ds["sentence"] == ["line one\nline two\twith tab", "plain"]
    assert ds["label"] == [1, 0]


def test_tsv_quoting_none_keeps_quotes_as_text(tmp_path):
    path = write(tmp_path / "dev.tsv", 'sentence\tlabel\n"quoted" start\t1\nsay "hi\t0\n')
    ds = load_task_split(Task("sa", text_column="sentence", train_file=path, extra={"quoting": "none"}), "train")
    assert ds["sentence"] == ['"quoted" start', 'say "hi']


def test_headerless_csv_with_column_names(tmp_path):
    path = write(tmp_path / "sts.csv", "A man.,A person.,4.5\nA cat.,A dog.,1.0\n")
    task = Task("sts", kind="regression", text_column="s1", text_pair_column="s2", label_column="score",
                train_file=path, extra={"column_names": ["s1", "s2", "score"]})
    ds = load_task_split(task, "train")
    assert ds.column_names == ["s1", "s2", "score"]
    assert ds[0] == {"s1": "A man.", "s2": "A person.", "score": 4.5}


def test_encoding_and_delimiter(tmp_path):
    path = write(tmp_path / "train.csv", "text;label\ncafé;1\nnaïve;0\n", encoding="iso-8859-1")
    ds = load_task_split(Task("fr", train_file=path, extra={"encoding": "iso-8859-1", "delimiter": ";"}), "train")
    assert ds["text"] == ["café", "naïve"]


def test_explicit_format_for_unusual_extension(tmp_path):
    path = write(tmp_path / "TREC.train.iso-8859-1", "DESC\tHow did serfdom develop ?\n", encoding="iso-8859-1")
    task = Task("trec", label_column="coarse", train_file=path,
                extra={"format": "tsv", "column_names": ["coarse", "text"], "encoding": "iso-8859-1"})
    assert load_task_split(task, "train")[0] == {"coarse": "DESC", "text": "How did serfdom develop ?"}


@pytest.mark.parametrize("name", ["train.json", "train.jsonl"])
def test_json_and_jsonl(tmp_path, name):
    rows = [{"text": "good", "label": 1}, {"text": "bad", "label": 0}]
    body = json.dumps(rows) if name.endswith(".json") else "\n".join(json.dumps(r) for r in rows)
    ds = load_task_split(Task("sa", train_file=write(tmp_path / name, body)), "train")
    assert ds["text"] == ["good", "bad"] and ds["label"] == [1, 0]


def test_parquet(tmp_path):
    path = tmp_path / "test.parquet"
    pq.write_table(pa.table({"sentence1": ["a", "b"], "sentence2": ["c", "d"], "label": [-1, -1]}), path)
    task = Task("rte", text_column="sentence1", text_pair_column="sentence2", train_file="unused.csv",
                test_file=str(path))
    ds = load_task_split(task, "test")
    assert ds.column_names == ["sentence1", "sentence2", "label"] and len(ds) == 2


def test_test_split_may_lack_labels(tmp_path):
    path = write(tmp_path / "test.csv", "text\nunlabeled\n")
    assert load_task_split(Task("sa", test_file=path), "test").column_names == ["text"]


def test_conllu_upos_skips_multiword_and_empty_nodes(tmp_path):
    ds = load_task_split(token_task(write(tmp_path / "a.conllu", CONLLU), "upos"), "train")
    assert ds.column_names == [TOKENS_COLUMN, "upos"]
    assert ds[TOKENS_COLUMN] == [["I", "do", "n't", "know", "."], ["Go", "!"]]
    assert ds["upos"] == [["PRON", "AUX", "PART", "VERB", "PUNCT"], ["VERB", "PUNCT"]]


@pytest.mark.parametrize("label,expected", [("xpos", ["VB", "."]), ("deprel", ["root", "punct"])])
def test_conllu_other_layers(tmp_path, label, expected):
    ds = load_task_split(token_task(write(tmp_path / "a.conllu", CONLLU), label), "train")
    assert ds[1][label] == expected


def test_conllu_lenient_line_goes_through_conllu(tmp_path):
    # two-space separated fields are accepted by the conllu package
    path = write(tmp_path / "a.conllu", "1  Hi  hi  INTJ  UH  _  0  root  _  _\n")
    assert load_task_split(token_task(path, "upos"), "train")["upos"] == [["INTJ"]]


def test_column_file_strips_language_prefix(tmp_path):
    text = "en:Paris\tB-LOC\nen:is\tO\n\nen:http://x\tO\nen:en:\tO\n"
    ds = load_task_split(token_task(write(tmp_path / "train", text), "tags"), "train")
    assert ds.column_names == [TOKENS_COLUMN, "tags"]
    assert ds[TOKENS_COLUMN] == [["Paris", "is"], ["http://x", "en:"]]  # only the first prefix goes
    assert ds["tags"] == [["B-LOC", "O"], ["O", "O"]]


def test_column_file_keeps_prefix_unless_every_token_has_one(tmp_path):
    text = "-DOCSTART-\tO\n\nde:Berlin\tB-LOC\nund\tO\n"
    ds = load_task_split(token_task(write(tmp_path / "train.tsv", text), "label"), "train")
    assert ds[TOKENS_COLUMN] == [["de:Berlin", "und"]]  # -DOCSTART- skipped, prefixes kept
    assert ds["label"] == [["B-LOC", "O"]]


def test_token_task_from_table_renames_text_column(tmp_path):
    rows = [{"words": ["a", "b"], "ner": ["O", "B-PER"]}]
    path = write(tmp_path / "train.jsonl", "\n".join(json.dumps(r) for r in rows))
    ds = load_task_split(token_task(path, "ner", text_column="words"), "train")
    assert ds.column_names == [TOKENS_COLUMN, "ner"] and ds[0][TOKENS_COLUMN] == ["a", "b"]


def test_masked_lm_text_file(tmp_path):
    task = Task("mlm", kind="masked_lm", train_file=write(tmp_path / "corpus.txt", "one line\ntwo line\n"))
    assert load_task_split(task, "train")["text"] == ["one line", "two line"]


def test_max_samples_keep_first_rows(tmp_path):
    path = write(tmp_path / "d.csv", "text,label\n" + "".join(f"t{i},{i % 2}\n" for i in range(10)))
    task = Task("sa", train_file=path, validation_file=path, test_file=path, max_train_samples=3,
                max_eval_samples=2)
    assert load_task_split(task, "train")["text"] == ["t0", "t1", "t2"]
    assert load_task_split(task, "validation")["text"] == ["t0", "t1"]
    assert len(load_task_split(task, "test")) == 2
    assert len(load_task_split(Task("big", train_file=path, max_train_samples=50), "train")) == 10


def test_missing_validation_and_test_sources_are_none(tmp_path):
    task = Task("sa", train_file=write(tmp_path / "t.csv", "text,label\na,1\n"))
    assert load_task_split(task, "validation") is None
    assert load_task_split(task, "test") is None


def test_reading_writes_nothing_next_to_the_data(tmp_path):
    path = write(tmp_path / "t.csv", "text,label\na,1\n")
    load_task_split(Task("sa", train_file=path), "train")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


# ------------------------------------------------------------------------------------ dataset_name
@pytest.fixture
def dataset_folder(tmp_path, monkeypatch) -> str:
    """A local dataset folder (train + test, no validation); its `datasets` cache goes to tmp_path."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "cache"))
    folder = tmp_path / "folder"
    folder.mkdir()
    write(folder / "train.csv", "text,label\na,0\nb,1\nc,0\n")
    write(folder / "test.csv", "text,label\nd,1\n")
    return str(folder)


def test_dataset_name_splits(dataset_folder):
    task = Task("sa", dataset_name=dataset_folder, max_train_samples=2)
    assert load_task_split(task, "train")["text"] == ["a", "b"]
    assert load_task_split(task, "test")["text"] == ["d"]
    assert load_task_split(task, "validation") is None  # the dataset has no such split


def test_dataset_name_custom_split_names(dataset_folder):
    task = Task("sa", dataset_name=dataset_folder, validation_split="test")
    assert load_task_split(task, "validation")["text"] == ["d"]


def test_dataset_name_missing_train_split_raises(dataset_folder):
    message = read_error(Task("sa", dataset_name=dataset_folder, train_split="training"))
    assert "'sa'" in message and "`train_split`" in message and "training" in message


def test_file_wins_over_dataset_name(dataset_folder, tmp_path):
    task = Task("sa", dataset_name=dataset_folder, train_file=write(tmp_path / "own.csv", "text,label\nz,1\n"))
    assert load_task_split(task, "train")["text"] == ["z"]


def test_dataset_name_not_found(tmp_path):
    message = read_error(Task("sa", dataset_name=str(tmp_path / "no_such_dataset")))
    assert "'sa'" in message and "`dataset_name`" in message


# ----------------------------------------------------------------------------------------- errors
def test_error_no_training_source():
    message = read_error(Task("sa"))
    assert "'sa'" in message and "Fix: set `train_file` or `dataset_name`" in message


@pytest.mark.parametrize("split,field", [("train", "train_file"), ("validation", "validation_file"),
                                         ("test", "test_file")])
def test_error_file_not_found_names_the_field(tmp_path, split, field):
    task = Task("sa", **{field: str(tmp_path / "missing.csv")})
    message = read_error(task, split)
    assert "'sa'" in message and f"`{field}`" in message and "missing.csv" in message and "does not exist" in message


def test_error_unknown_extension(tmp_path):
    message = read_error(Task("sa", train_file=write(tmp_path / "data.xml", "<x/>")))
    assert "'sa'" in message and "`train_file`" in message and "'.xml'" in message and "extra" in message


def test_error_unknown_explicit_format(tmp_path):
    message = read_error(Task("sa", train_file=write(tmp_path / "d.csv", "text\n"), extra={"format": "xls"}))
    assert "'sa'" in message and "`extra.format`" in message


def test_error_conllu_for_a_sequence_task(tmp_path):
    message = read_error(Task("sa", train_file=write(tmp_path / "a.conllu", CONLLU)))
    assert "'sa'" in message and "`kind`" in message and "token_classification" in message


def test_error_conllu_label_column(tmp_path):
    message = read_error(token_task(write(tmp_path / "a.conllu", CONLLU), "tags"))
    assert "'ner'" in message and "`label_column`" in message and "a.conllu" in message
    assert "['upos', 'xpos', 'deprel']" in message


def test_error_conllu_parse_names_the_line(tmp_path):
    bad = CONLLU.replace("4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_", "this line is broken")
    message = read_error(token_task(write(tmp_path / "a.conllu", bad), "upos"))
    assert "'ner'" in message and "a.conllu" in message and "line 7" in message and "CoNLL-U" in message


def test_error_conllu_bad_id_names_the_line(tmp_path):
    bad = CONLLU.replace("2\t!\t!", "x\t!\t!")
    message = read_error(token_task(write(tmp_path / "a.conllu", bad), "upos"))
    assert "line 13" in message and "'ner'" in message


def test_error_conllu_missing_label_column(tmp_path):
    path = write(tmp_path / "a.conllu", "1\tHi\thi\tINTJ\n")
    message = read_error(token_task(path, "deprel"))
    assert "line 1" in message and "deprel" in message and "'ner'" in message


def test_error_conllu_label_on_column_file(tmp_path):
    message = read_error(token_task(write(tmp_path / "train.txt", "a\tO\n"), "upos"))
    assert "'ner'" in message and "`label_column`" in message and "not valid for the file type" in message


def test_error_column_file_bad_line(tmp_path):
    path = write(tmp_path / "train.txt", "a\tO\nb\tO\n\nc O\n")
    message = read_error(token_task(path))
    assert "'ner'" in message and "train.txt" in message and "line 4" in message and "token<TAB>tag" in message


def test_error_token_lengths_differ(tmp_path):
    rows = [{"tokens": ["a"], "tags": ["O"]}, {"tokens": ["a", "b"], "tags": ["O"]}]
    path = write(tmp_path / "train.jsonl", "\n".join(json.dumps(r) for r in rows))
    message = read_error(token_task(path))
    assert "'ner'" in message and "example 1" in message and "`label_column`" in message


def test_error_token_column_not_a_list(tmp_path):
    path = write(tmp_path / "train.jsonl", json.dumps({"tokens": "a b", "tags": ["O", "O"]}))
    message = read_error(token_task(path))
    assert "'ner'" in message and "not a list" in message


@pytest.mark.parametrize("body", ["", "text,label\n", "  \n"])
def test_error_empty_split(tmp_path, body):
    path = write(tmp_path / "train.csv", body)
    message = read_error(Task("sa", train_file=path))
    assert "task 'sa' has no training examples in `train_file`" in message and "train.csv" in message


def test_error_empty_validation_split(tmp_path):
    task = token_task("unused", validation_file=write(tmp_path / "dev.txt", "\n\n"))
    assert "task 'ner' has no validation examples" in read_error(task, "validation")


@pytest.mark.parametrize("field,kwargs", [("text_column", {}), ("label_column", {"label_column": "y"}),
                                          ("text_pair_column", {"text_pair_column": "second"})])
def test_error_missing_column_lists_columns(tmp_path, field, kwargs):
    path = write(tmp_path / "train.csv", "sentence,label\na,1\n")
    task = Task("sa", text_column="sentence" if field != "text_column" else "text", train_file=path, **kwargs)
    message = read_error(task)
    assert "'sa'" in message and f"`{field}`" in message and "['sentence', 'label']" in message


def test_error_token_task_missing_tokens_column(tmp_path):
    path = write(tmp_path / "train.jsonl", json.dumps({"words": ["a"], "tags": ["O"]}))
    message = read_error(token_task(path))
    assert "'ner'" in message and "`text_column`" in message and "'tokens'" in message and "words" in message


def test_error_too_few_column_names(tmp_path):
    path = write(tmp_path / "sts.csv", "a,b,1.0\n")
    message = read_error(Task("sts", train_file=path, extra={"column_names": ["text", "label"]}))
    assert "'sts'" in message and "`extra.column_names`" in message


def test_error_rows_wider_than_header(tmp_path):
    message = read_error(Task("sa", train_file=write(tmp_path / "train.tsv", "text\tlabel\na\t1\textra\n")))
    assert "'sa'" in message and "more fields than its header" in message and "`extra" in message


def test_error_parse_failure_suggests_quoting(tmp_path):
    path = write(tmp_path / "train.tsv", 'text\tlabel\na\t1\nb\t0\textra\n')
    message = read_error(Task("sa", train_file=path))
    assert "'sa'" in message and "`train_file`" in message and "Expected 2 fields" in message
    assert '"quoting": "none"' in message


def test_error_wrong_encoding(tmp_path):
    path = write(tmp_path / "train.txt", "café\tO\n", encoding="iso-8859-1")
    message = read_error(token_task(path))
    assert "'ner'" in message and "encoding" in message


@pytest.mark.parametrize("extra,field", [
    ({"delimiter": "ab"}, "extra.delimiter"),
    ({"quoting": "all"}, "extra.quoting"),
    ({"column_names": "a,b"}, "extra.column_names"),
    ({"encoding": 5}, "extra.encoding"),
    ({"encoding": "klingon"}, "extra.encoding"),
])
def test_error_bad_extra_options(tmp_path, extra, field):
    message = read_error(Task("sa", train_file=write(tmp_path / "d.csv", "text,label\na,1\n"), extra=extra))
    assert "'sa'" in message and f"`{field}`" in message


def test_error_unknown_split_name(tmp_path):
    message = read_error(Task("sa"), "dev")
    assert "'sa'" in message and "'dev'" in message


# ---------------------------------------------------------------------------------- real data
def test_real_glue_sst2_dev(shared_data):
    ds = load_task_split(Task("sst2", text_column="sentence", validation_file=str(shared_data / "glue_sst2/dev.tsv")),
                         "validation")
    assert len(ds) == 872 and ds.column_names == ["sentence", "label"]
    assert set(ds["label"]) == {0, 1}


def test_real_multidomain_multiline_tsv(shared_data):
    path = shared_data / "multidomain_sentiment/books/dev.tsv"
    ds = load_task_split(Task("books", text_column="sentence", train_file=str(path)), "train")
    assert len(ds) == 300 and set(ds["label"]) == {0, 1}
    assert any("\n" in text for text in ds["sentence"])


def test_real_glue_rte_parquet(shared_data):
    task = Task("rte", text_column="sentence1", text_pair_column="sentence2",
                validation_file=str(shared_data / "glue_rte/validation.parquet"))
    ds = load_task_split(task, "validation")
    assert len(ds) == 277 and {"sentence1", "sentence2", "label"} <= set(ds.column_names)


def test_real_stsb_headerless_csv(shared_data):
    task = Task("stsb", kind="regression", text_column="sentence1", text_pair_column="sentence2",
                label_column="score", validation_file=str(shared_data / "stsb_multi_mt/stsb-en-dev.csv"),
                extra={"column_names": ["sentence1", "sentence2", "score"]})
    ds = load_task_split(task, "validation")
    assert len(ds) == 1500
    assert ds[0] == {"sentence1": "A man with a hard hat is dancing.",
                     "sentence2": "A man wearing a hard hat is dancing.", "score": 5.0}
    assert all(0.0 <= score <= 5.0 for score in ds["score"])


def test_real_plue_mrpc_quotes_as_text(shared_data):
    task = Task("mrpc_pt", text_column="#1 String", text_pair_column="#2 String", label_column="Quality",
                validation_file=str(shared_data / "plue_pt/MRPC/dev.tsv"), extra={"quoting": "none"})
    assert len(load_task_split(task, "validation")) == 408


def test_real_ud_english_ewt_dev(shared_data):
    task = Task("upos", kind="token_classification", label_column="upos",
                validation_file=str(shared_data / "ud_english_ewt/en_ewt-ud-dev.conllu"))
    ds = load_task_split(task, "validation")
    assert len(ds) == 2001  # SOURCE.md: dev 2,001 sentences / 25,147 tokens (multiword lines excluded)
    assert sum(len(tokens) for tokens in ds[TOKENS_COLUMN]) == 25147
    tags = {tag for sentence in ds["upos"] for tag in sentence}
    assert tags == {"ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
                    "PUNCT", "SCONJ", "SYM", "VERB", "X"}


def test_real_wikiann_en_dev(shared_data):
    task = Task("ner_en", kind="token_classification", label_column="tags",
                validation_file=str(shared_data / "wikiann/en/dev.txt"))
    ds = load_task_split(task, "validation")
    assert len(ds) == 10000  # SOURCE.md: dev 10,000 sentences
    assert ds[0][TOKENS_COLUMN][:3] == ["Sioux", "Falls", "Arena"]
    assert not any(token.startswith("en:") for tokens in ds[TOKENS_COLUMN][:500] for token in tokens)
    assert {tag for tags in ds["tags"] for tag in tags} == {"O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC"}
