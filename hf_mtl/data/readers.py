"""Readers: turn a `Task`'s data fields into one raw `datasets.Dataset` per split.

One public entry point, `load_task_split(task, split)`. Where the rows come from is chosen from the
task's fields, per split:

1. a local file (`train_file`, `validation_file`, `test_file`), read by its extension;
2. otherwise `dataset_name` (+ `dataset_config` and `train_split`/`validation_split`/`test_split`),
   read with `datasets.load_dataset` (a Hub id, a local dataset folder, or a builder name);
3. otherwise nothing: `None` for validation and test, an error for train.

Every reader returns the columns the rest of the library expects, so a task config needs no
reader-specific names: sequence tasks keep the file's own columns (`text_column`, `text_pair_column`,
`label_column` name them), token-classification tasks always get a `tokens` column (a list of words
per example) next to their `label_column` (a list of tags per example).

Local files are read into memory through a throw-away `datasets` cache, so nothing is ever written
next to the data (source folders may be read-only) or left behind in the user's cache.
"""

from __future__ import annotations

import codecs
import csv
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from conllu.exceptions import ParseException
from conllu.parser import DEFAULT_FIELD_PARSERS, parse_line
from datasets.exceptions import DatasetsError

from ..errors import DataError
from ..tasks import Task
from .preprocess import (
    LABEL_KINDS,
    add_evaluation_labels,
    handle_unlabeled,
    label_values,
    sorted_labels,
    training_labels,
)
from .text2text import check_columns as check_text2text_columns


SPLITS = ("train", "validation", "test")
TOKENS_COLUMN = "tokens"
CONLLU_LABEL_COLUMNS = ("upos", "xpos", "deprel")
FORMATS = ("csv", "tsv", "json", "parquet", "conllu", "columns", "text")

# file field, split-name field, sample-limit field, and the word used in messages, per split
_SPLIT_FIELDS = {
    "train": ("train_file", "train_split", "max_train_samples", "training"),
    "validation": ("validation_file", "validation_split", "max_eval_samples", "validation"),
    "test": ("test_file", "test_split", "max_eval_samples", "test"),
}
_EXTENSION_FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "json", ".parquet": "parquet",
                      ".conllu": "conllu"}
_BUILDERS = {"csv": "csv", "tsv": "csv", "json": "json", "parquet": "parquet", "text": "text"}
_CONLLU_FIELDS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel")
_LANGUAGE_PREFIX = re.compile(r"^[a-z]{2,3}:")
_QUOTING = {"minimal": csv.QUOTE_MINIMAL, "none": csv.QUOTE_NONE}


def load_task_split(task: Task, split: str) -> datasets.Dataset | None:
    """Read the raw examples of one split ("train", "validation" or "test") of a task.

    The source is, in this order: the split's file field (`train_file`, `validation_file`,
    `test_file`), then `dataset_name` with the split's name field (`train_split`, ...). Files are read
    by extension:

    - `.csv` and `.tsv`: the `datasets` csv builder; quoted fields may span lines. Cells are kept as
      written (an empty cell or "NA" stays a string, never becomes null). For token tasks a `.tsv` file
      is a column file (see below), since a table cell cannot hold a list of words.
    - `.json` / `.jsonl`: the `datasets` json builder (JSON lines, or one JSON list of objects).
    - `.parquet`: the `datasets` parquet builder.
    - `.conllu` (token tasks): CoNLL-U read with the `conllu` package. Columns `tokens` (word forms;
      multiword-token lines such as `3-4` and empty nodes such as `8.1` are skipped) and the task's
      `label_column`, which must be `upos`, `xpos` or `deprel`.
    - any other extension, `.txt` and `.tsv` included (token tasks): a column file, one `token<TAB>tag` per line
      and a blank line between sentences. Columns `tokens` and the task's `label_column`, whatever its
      name. When every token of the file starts with a language prefix such as `en:` (WikiANN), the
      prefix is removed. `-DOCSTART-` lines (CoNLL-2003) are skipped.
    - `.txt` (masked_lm tasks): one example per line, in a column `text`.

    Optional keys of `task.extra` adjust the reading of files:

    - `format`: one of `csv`, `tsv`, `json`, `parquet`, `conllu`, `columns`, `text`, for a file whose
      extension does not say it (e.g. `TREC.train.iso-8859-1`).
    - `column_names`: names of the columns of a CSV/TSV file that has no header row
      (e.g. `["sentence1", "sentence2", "score"]` for STSb-multi-mt).
    - `delimiter`: the CSV/TSV field separator (default `,` for `.csv`, a tab for `.tsv`).
    - `quoting`: `"minimal"` (default: `"` starts a quoted field, which may span lines) or `"none"`
      (quotes are plain text, as in the GLUE TSV files of MRPC, STS-B and RTE).
    - `encoding`: text encoding of CSV/TSV, CoNLL-U and column files (default `utf-8`),
      e.g. `"iso-8859-1"`.

    For token-classification tasks the words are always returned in a column named `tokens`: from a
    table source (Hub, CSV, JSON, Parquet) they are read from `text_column`, where the default
    `"text"` means `tokens`, and renamed to `tokens` when needed. The split's rows are checked (the
    text and label columns exist, no label is blank, token tasks have one tag per word), then cut to the first
    `max_train_samples` (train) or `max_eval_samples` (validation, test) rows (`sample_seed`: that many rows at
    random instead). Rows with a blank label are refused, or dropped with a warning under `drop_unlabeled`.

    Reading the training split of a classification or token task without `labels` also sets `task.labels`, as
    the transformers examples do: the sorted labels of the whole split (before `max_train_samples`), then any
    label that only the validation or test data hold, with a warning (the model cannot learn those).

    Args:
        task: the task whose data to read.
        split: `"train"`, `"validation"` or `"test"`.

    Returns:
        The split's examples, or `None` when the task names no source for a validation or test split
        (no file, and no such split in `dataset_name`).

    Raises:
        DataError: the source is missing, unreadable or malformed, is empty, lacks a needed column, has rows
            with a blank label, the selected training rows hold a single class, or (token tasks) an example has
            not one tag per word. The message names the task, the field
            or file, and the fix.
    """
    if split not in SPLITS:
        raise DataError(f"task {task.name!r}: unknown split {split!r}. Fix: ask for one of {list(SPLITS)}.")
    source = _read_source(task, split)
    if source is None:
        return None
    dataset, origin = source
    _check_not_empty(task, split, dataset, origin)
    _check_columns(task, split, dataset, origin)
    dataset = _class_ids_to_names(task, dataset)
    dataset = handle_unlabeled(task, dataset, split, origin)
    _check_not_empty(task, split, dataset, origin)  # every row may have been dropped as unlabeled
    if split == "train" and task.kind in LABEL_KINDS and task.labels is None:
        _read_label_set(task, dataset)
    sample = _select_rows(task, split, dataset)
    if split == "train":
        _check_sample_has_classes(task, dataset, sample, origin)
    _check_token_lengths(task, sample, origin)
    return sample


def _read_label_set(task: Task, train: datasets.Dataset) -> None:
    """The label list of a task without `labels`, as the transformers examples build it: from the whole training
    split, before `max_train_samples` selects rows (a slice may lack a rare label that evaluation data has).
    Labels that only the validation or test data hold are appended after them (`add_evaluation_labels`)."""
    labels = training_labels(task, train)
    if task.kind == "classification" and len(labels) < 2:
        return  # no task can learn one class: left to `ensure_labels`, which names that problem
    task.set_labels(labels)
    evaluation = [_evaluation_labels(task, split) for split in ("validation", "test")]
    add_evaluation_labels(task, [data for data in evaluation if data is not None])


def _evaluation_labels(task: Task, split: str) -> datasets.Dataset | None:
    """The label column of an evaluation split, as `load_task_split` reads it, or None when it has none."""
    source = _read_source(task, split)
    if source is None or task.label_column not in source[0].column_names:
        return None
    return _class_ids_to_names(task, source[0].select_columns([task.label_column]))


def _class_ids_to_names(task: Task, dataset: datasets.Dataset) -> datasets.Dataset:
    """Labels stored as `ClassLabel` ids (Hub and Parquet exports) become their names, so a task's label
    list is readable and the same whatever the source; a task without `labels` takes the ClassLabel order."""
    feature = dataset.features.get(task.label_column)
    inner = getattr(feature, "feature", None)  # Sequence(ClassLabel) / List(ClassLabel) for token tags
    label_feature = feature if isinstance(feature, datasets.ClassLabel) else inner
    if not isinstance(label_feature, datasets.ClassLabel):
        return dataset
    if task.labels is None and task.kind in ("classification", "token_classification"):
        task.set_labels(list(label_feature.names))
    column = task.label_column

    def to_names(batch: dict[str, list]) -> dict[str, list]:
        values = batch[column]
        if label_feature is feature:
            return {column: [label_feature.int2str(v) if v is not None and v >= 0 else None for v in values]}
        return {column: [[label_feature.int2str(v) for v in row] for row in values]}

    new_type = datasets.Value("string") if label_feature is feature else datasets.List(datasets.Value("string"))
    features = dataset.features.copy()
    features[column] = new_type
    return dataset.map(to_names, batched=True, features=features, keep_in_memory=True, load_from_cache_file=False,
                       desc=f"Label names {task.name}")


# ---------------------------------------------------------------------------------------- sources
def _read_source(task: Task, split: str) -> tuple[datasets.Dataset, str] | None:
    """Pick the split's source (file, then `dataset_name`) and read it; also return how to name it."""
    file_field, split_field, _, _ = _SPLIT_FIELDS[split]
    file_value = getattr(task, file_field)
    if file_value:
        path = _existing_file(task, file_field, file_value)
        origin = f"`{file_field}` {str(path)!r}"
        if _is_blank(path):  # datasets' builders fail on empty files in several unhelpful ways
            raise _empty_split_error(task, split, origin)
        return _read_file(task, file_field, path, origin), origin
    if task.dataset_name:
        split_name = getattr(task, split_field)
        origin = _hub_origin(task, split_name)
        dataset = _read_hub_split(task, split, split_name, origin)
        return None if dataset is None else (_as_token_table(task, dataset, origin), origin)
    if split == "train":
        raise DataError(
            f"task {task.name!r} names no training data: neither `train_file` nor `dataset_name` is set. "
            f"Fix: set `train_file` or `dataset_name`."
        )
    return None


def _existing_file(task: Task, field: str, value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise DataError(
            f"task {task.name!r}: `{field}` {value!r} {what} (looked at {path.absolute()}). "
            f"Fix: set `{field}` to the path of an existing file."
        )
    return path


def _is_blank(path: Path, probe: int = 1 << 16) -> bool:
    """True for an empty file, or a small one holding only whitespace."""
    if path.stat().st_size > probe:
        return False
    return not path.read_bytes().strip()


def _hub_origin(task: Task, split_name: str) -> str:
    config = f", config {task.dataset_config!r}" if task.dataset_config else ""
    return f"`dataset_name` {task.dataset_name!r}{config}, split {split_name!r}"


def _read_hub_split(task: Task, split: str, split_name: str, origin: str) -> datasets.Dataset | None:
    """`datasets.load_dataset` one split; a missing validation/test split is `None`, a missing train split an error."""
    try:
        return datasets.load_dataset(task.dataset_name, task.dataset_config, split=split_name)
    except ValueError as err:
        # datasets reports a split the dataset lacks as a plain ValueError("Unknown split ...").
        if "Unknown split" not in str(err):
            raise DataError(f"task {task.name!r}: could not load {origin}: {err}. "
                            f"Fix: check `dataset_name` and `dataset_config`.") from err
        if split != "train":
            return None
        raise DataError(f"task {task.name!r}: {origin} does not exist ({err}). "
                        f"Fix: set `train_split` to one of the dataset's splits.") from err
    except (OSError, DatasetsError) as err:
        raise DataError(
            f"task {task.name!r}: could not load {origin}: {_root_message(err)}. Fix: check `dataset_name` and "
            f"`dataset_config`; offline, the dataset must already be in the `datasets` cache, or use a local file "
            f"(`{_SPLIT_FIELDS[split][0]}`)."
        ) from err


# ------------------------------------------------------------------------------------ local files
def _file_format(task: Task, field: str, path: Path) -> str:
    """The format of a file: `extra.format`, else its extension (token tasks read other files as columns)."""
    explicit = task.extra.get("format")
    if explicit is not None:
        if explicit not in FORMATS:
            raise DataError(f"task {task.name!r}: `extra.format` {explicit!r} is not a known format. "
                            f"Fix: use one of {list(FORMATS)}, or remove it to go by the file extension.")
        return _check_format_kind(task, field, path, explicit)
    suffix = path.suffix.lower()
    if suffix == ".tsv" and task.kind == "token_classification":
        return "columns"  # a table cell cannot hold a list of words: a token task's .tsv is `token<TAB>tag` lines
    if suffix in _EXTENSION_FORMATS:
        return _check_format_kind(task, field, path, _EXTENSION_FORMATS[suffix])
    if task.kind == "token_classification":
        return "columns"
    if task.kind == "masked_lm" and suffix == ".txt":
        return "text"
    raise DataError(
        f"task {task.name!r}: `{field}` {str(path)!r} has an unknown extension {suffix or '(none)'!r}. "
        f"Fix: use a .csv, .tsv, .json, .jsonl or .parquet file (token tasks also read .conllu and "
        f"`token<TAB>tag` column files), or name the format with `extra: {{\"format\": \"csv\"}}`."
    )


def _check_format_kind(task: Task, field: str, path: Path, fmt: str) -> str:
    """CoNLL-U and column files hold one tag per word: only token-classification tasks can read them."""
    if fmt in ("conllu", "columns") and task.kind != "token_classification":
        raise DataError(
            f"task {task.name!r}: `{field}` {str(path)!r} is a {fmt} file, which holds one tag per word, but the "
            f"task's `kind` is {task.kind!r}. Fix: set `kind` to \"token_classification\", or use a CSV, JSON or "
            f"Parquet file."
        )
    return fmt


def _read_file(task: Task, field: str, path: Path, origin: str) -> datasets.Dataset:
    fmt = _file_format(task, field, path)
    if fmt == "conllu":
        return _read_conllu(task, path, origin)
    if fmt == "columns":
        return _read_column_file(task, path, origin)
    options = _csv_options(task, fmt) if fmt in ("csv", "tsv") else {}
    dataset = _read_with_builder(task, path, origin, fmt, options)
    return _as_token_table(task, dataset, origin)


def _csv_options(task: Task, fmt: str) -> dict[str, Any]:
    """Keyword arguments of the csv builder, from the format and `task.extra`."""
    extra = task.extra
    delimiter = extra.get("delimiter", "\t" if fmt == "tsv" else ",")
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise DataError(f"task {task.name!r}: `extra.delimiter` must be one character, got {delimiter!r}. "
                        f"Fix: e.g. \",\", \"\\t\" or \";\".")
    quoting = extra.get("quoting", "minimal")
    if quoting not in _QUOTING:
        raise DataError(f"task {task.name!r}: `extra.quoting` must be one of {list(_QUOTING)}, got {quoting!r}.")
    # na_filter=False: a text cell that reads "NA", "null" or "" stays a string instead of becoming null.
    options: dict[str, Any] = {"delimiter": delimiter, "quoting": _QUOTING[quoting], "na_filter": False,
                               "encoding": _encoding(task)}
    names = extra.get("column_names")
    if names is not None:
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise DataError(f"task {task.name!r}: `extra.column_names` must be a non-empty list of column names, "
                            f"got {names!r}. Fix: e.g. [\"sentence1\", \"sentence2\", \"score\"].")
        options["column_names"] = names
    return options


def _encoding(task: Task) -> str:
    """The text encoding of the task's files: `extra.encoding`, default utf-8."""
    encoding = task.extra.get("encoding", "utf-8")
    try:
        codecs.lookup(encoding)
    except (LookupError, TypeError) as err:
        raise DataError(f"task {task.name!r}: `extra.encoding` {encoding!r} is not a known text encoding. "
                        f"Fix: use a Python codec name such as \"utf-8\" or \"iso-8859-1\".") from err
    return encoding


def _read_with_builder(task: Task, path: Path, origin: str, fmt: str, options: dict[str, Any]) -> datasets.Dataset:
    """Read a file with a packaged `datasets` builder, in memory, through a temporary cache folder."""
    # A private cache folder: nothing is written next to the data or into the user's cache, and the
    # arrow files are loaded into memory before the folder is removed.
    with tempfile.TemporaryDirectory(prefix="hf_mtl_read_") as cache_dir:
        try:
            dataset = datasets.load_dataset(_BUILDERS[fmt], data_files={"train": str(path)}, split="train",
                                            cache_dir=cache_dir, keep_in_memory=True, **options)
        except (DatasetsError, ValueError, OSError) as err:
            if "corresponds to no data" in _root_message(err):  # a header but no rows
                return datasets.Dataset.from_dict({})
            raise DataError(
                f"task {task.name!r}: could not read {origin} as {fmt.upper()}: {_root_message(err)}. "
                f"Fix: {_read_fix(fmt)}"
            ) from err
    _check_column_names_count(task, dataset, origin)
    return dataset


def _read_fix(fmt: str) -> str:
    if fmt in ("csv", "tsv"):
        return ("check the file; for a file without a header row set `extra: {\"column_names\": [...]}`, for "
                "quotes that are plain text set `extra: {\"quoting\": \"none\"}`, for another separator set "
                "`extra: {\"delimiter\": ...}`, for another text encoding set `extra: {\"encoding\": ...}`.")
    return "check that the file is valid, or set `extra: {\"format\": ...}` to the file's real format."


def _root_message(err: BaseException) -> str:
    """The innermost cause of an error, which says what is wrong (datasets wraps it in a generic error)."""
    while err.__cause__ is not None:
        err = err.__cause__
    return f"{type(err).__name__}: {str(err).strip().rstrip('.')}"


def _check_column_names_count(task: Task, dataset: datasets.Dataset, origin: str) -> None:
    """pandas silently turns the leading columns into an index when there are fewer names than columns."""
    if not any(name.startswith("__index_level_") for name in dataset.column_names):
        return
    names = task.extra.get("column_names")
    if names:
        raise DataError(f"task {task.name!r}: `extra.column_names` lists {len(names)} names but {origin} has more "
                        f"columns. Fix: name every column of the file in `extra.column_names`.")
    raise DataError(f"task {task.name!r}: the rows of {origin} have more fields than its header row. Fix: give every "
                    f"column a name in the header, or (no header) set `extra: {{\"column_names\": [...]}}`.")


# ---------------------------------------------------------------------------------------- CoNLL-U
def _check_not_conllu_label(task: Task, origin: str) -> None:
    """A column file has one tag column, named by `label_column`; the CoNLL-U layer names would mislead."""
    if task.label_column in CONLLU_LABEL_COLUMNS:
        raise DataError(
            f"task {task.name!r}: `label_column` {task.label_column!r} is not valid for the file type of {origin}: "
            f"it is a `token<TAB>tag` column file, and {list(CONLLU_LABEL_COLUMNS)} name CoNLL-U columns. "
            f"Fix: set `label_column` to another name for the tags (e.g. \"tags\"), or read a .conllu file."
        )


def _read_conllu(task: Task, path: Path, origin: str) -> datasets.Dataset:
    """Read a CoNLL-U file into `tokens` (word forms) and the task's `label_column` (upos, xpos or deprel)."""
    label = task.label_column
    if label not in CONLLU_LABEL_COLUMNS:
        raise DataError(
            f"task {task.name!r}: `label_column` {label!r} is not valid for the CoNLL-U file {origin}. "
            f"Fix: set `label_column` to one of {list(CONLLU_LABEL_COLUMNS)}."
        )
    fields = _CONLLU_FIELDS[: _CONLLU_FIELDS.index(label) + 1]
    all_tokens, all_labels = [], []
    for start, lines in _sentence_blocks(task, path, origin):
        tokens, labels = _parse_conllu_sentence(task, origin, start, lines, fields)
        if tokens:
            all_tokens.append(tokens)
            all_labels.append(labels)
    return datasets.Dataset.from_dict({TOKENS_COLUMN: all_tokens, label: all_labels})


def _parse_conllu_sentence(
    task: Task, origin: str, start: int, lines: list[str], fields: tuple[str, ...]
) -> tuple[list[str], list[str]]:
    """Return the word forms and labels of one sentence (its lines start at line `start` of the file)."""
    column = len(fields) - 1  # the label is the last field asked for
    tokens, labels = [], []
    for offset, line in enumerate(lines):
        if line.startswith("#"):
            continue
        values = line.split("\t")
        # Fast path for the common line: 10 tab-separated columns and an integer ID (a word). Any other
        # line goes through `conllu`, which validates it and parses ranges (3-4) and empty nodes (8.1).
        if len(values) != 10 or not values[0].isdigit():
            values = _conllu_line_values(task, origin, start + offset, line, fields)
            if values is None:
                continue
        tokens.append(values[1])
        labels.append(values[column])
    return tokens, labels


def _conllu_line_values(task: Task, origin: str, number: int, line: str, fields: tuple[str, ...]) -> list[str] | None:
    """Parse one irregular CoNLL-U line with `conllu`: its field values, or None for a range or an empty node."""
    parsers = {name: _raw_field for name in fields}  # keep fields as written ("_" stays "_")
    parsers["id"] = DEFAULT_FIELD_PARSERS["id"]
    try:
        token = parse_line(line, fields, parsers)
    except ParseException as err:
        raise DataError(f"task {task.name!r}: {origin} line {number} is not valid CoNLL-U: {err} (line: "
                        f"{line[:80]!r}). Fix: give each token line 10 tab-separated columns (ID FORM LEMMA UPOS "
                        f"XPOS FEATS HEAD DEPREL DEPS MISC).") from err
    if not isinstance(token["id"], int):  # conllu parses ranges (3-4) and empty nodes (8.1) to tuples
        return None
    if fields[-1] not in token:
        raise DataError(f"task {task.name!r}: {origin} line {number} has no {fields[-1]} column (column "
                        f"{len(fields)}). Fix: give each token line the 10 CoNLL-U columns.")
    return [token[name] for name in fields]


def _raw_field(line: list[str], i: int) -> str:
    return line[i]


def _sentence_blocks(task: Task, path: Path, origin: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (1-based line number of the first line, lines) for each blank-line separated block."""
    start, lines = 0, []
    try:
        with open(path, encoding=_encoding(task)) as handle:
            for number, line in enumerate(handle, start=1):
                line = line.rstrip("\r\n")
                if line.strip():
                    start = start if lines else number
                    lines.append(line)
                elif lines:
                    yield start, lines
                    lines = []
    except UnicodeDecodeError as err:
        raise DataError(
            f"task {task.name!r}: {origin} is not {_encoding(task)} text ({err}). "
            f"Fix: set `extra: {{\"encoding\": ...}}` to the file's encoding, e.g. \"iso-8859-1\"."
        ) from err
    if lines:
        yield start, lines


# ----------------------------------------------------------------------------------- column files
def _read_column_file(task: Task, path: Path, origin: str) -> datasets.Dataset:
    """Read `token<TAB>tag` lines (blank line between sentences) into `tokens` and `label_column`."""
    _check_not_conllu_label(task, origin)
    all_tokens, all_tags, all_prefixed = [], [], True
    for start, lines in _sentence_blocks(task, path, origin):
        tokens, tags = _parse_column_sentence(task, origin, start, lines)
        if tokens:
            all_prefixed = all_prefixed and all(_LANGUAGE_PREFIX.match(token) for token in tokens)
            all_tokens.append(tokens)
            all_tags.append(tags)
    if all_tokens and all_prefixed:
        all_tokens = _strip_language_prefix(all_tokens)
    return datasets.Dataset.from_dict({TOKENS_COLUMN: all_tokens, task.label_column: all_tags})


def _parse_column_sentence(task: Task, origin: str, start: int, lines: list[str]) -> tuple[list[str], list[str]]:
    tokens, tags = [], []
    for offset, line in enumerate(lines):
        parts = line.split("\t")
        if len(parts) != 2 or not parts[0] or not parts[1].strip():
            raise DataError(
                f"task {task.name!r}: {origin} line {start + offset} is not `token<TAB>tag`: {line[:80]!r}. "
                f"Fix: write one token and its tag per line, separated by one tab, with a blank line between "
                f"sentences (or use a .conllu file)."
            )
        if parts[0] == "-DOCSTART-":  # CoNLL-2003 document separators are not words
            continue
        tokens.append(parts[0])
        tags.append(parts[1].strip())
    return tokens, tags


def _strip_language_prefix(sentences: list[list[str]]) -> list[list[str]]:
    """Remove a `xx:` language prefix (WikiANN's `en:Paris`); only called when every token has one."""
    return [[_LANGUAGE_PREFIX.sub("", token, count=1) for token in tokens] for tokens in sentences]


# ---------------------------------------------------------------------------------------- checks
def _as_token_table(task: Task, dataset: datasets.Dataset, origin: str) -> datasets.Dataset:
    """For token tasks read from a table, put the words in `tokens` (from `text_column`, default `tokens`)."""
    if task.kind != "token_classification":
        return dataset
    source = TOKENS_COLUMN if task.text_column == "text" else task.text_column
    if source == TOKENS_COLUMN:
        return dataset
    if source not in dataset.column_names:
        raise DataError(f"task {task.name!r}: `text_column` {source!r} is not a column of {origin}; its columns are "
                        f"{dataset.column_names}. Fix: set `text_column` to the column holding the words.")
    if TOKENS_COLUMN in dataset.column_names:
        raise DataError(f"task {task.name!r}: {origin} has both `text_column` {source!r} and a {TOKENS_COLUMN!r} "
                        f"column. Fix: set `text_column` to {TOKENS_COLUMN!r} if that column holds the words.")
    return dataset.rename_column(source, TOKENS_COLUMN)


def _check_not_empty(task: Task, split: str, dataset: datasets.Dataset, origin: str) -> None:
    if len(dataset) == 0:
        raise _empty_split_error(task, split, origin)


def _empty_split_error(task: Task, split: str, origin: str) -> DataError:
    file_field, _, _, word = _SPLIT_FIELDS[split]
    return DataError(f"task {task.name!r} has no {word} examples in {origin}. "
                     f"Fix: point `{file_field}` (or `dataset_name`) at data with examples.")


def _required_columns(task: Task, split: str) -> list[tuple[str, str]]:
    """(field, column) pairs the split must have; test splits may lack labels."""
    if task.kind == "token_classification":
        needed = [("text_column", TOKENS_COLUMN)]
    else:
        needed = [("text_column", task.text_column)]
        if task.text_pair_column:
            needed.append(("text_pair_column", task.text_pair_column))
    if split != "test" and task.kind != "masked_lm":
        needed.append(("label_column", task.label_column))
    return needed


def _check_columns(task: Task, split: str, dataset: datasets.Dataset, origin: str) -> None:
    if task.is_generative:  # the columns its templates and target name
        check_text2text_columns(task, dataset.column_names, split, origin)
        return
    for field, column in _required_columns(task, split):
        if column not in dataset.column_names:
            hint = " (token tasks read the words from `tokens`)" if column == TOKENS_COLUMN else ""
            raise DataError(
                f"task {task.name!r}: `{field}` {column!r}{hint} is not a column of {origin}; its columns are "
                f"{dataset.column_names}. Fix: set `{field}` to one of these columns."
            )


def _select_rows(task: Task, split: str, dataset: datasets.Dataset) -> datasets.Dataset:
    """The first `max_train_samples` / `max_eval_samples` rows (the transformers examples' convention), or with
    `sample_seed` that many rows drawn at random (kept in file order)."""
    limit = getattr(task, _SPLIT_FIELDS[split][2])
    if limit is None or limit >= len(dataset):
        return dataset
    if task.sample_seed is None:
        return dataset.select(range(limit))
    rows = np.random.default_rng(task.sample_seed).choice(len(dataset), size=limit, replace=False)
    return dataset.select(np.sort(rows).tolist())


def _check_sample_has_classes(task: Task, train: datasets.Dataset, sample: datasets.Dataset, origin: str) -> None:
    """A classification task cannot learn from selected training rows that hold a single class (the first rows
    of a file sorted by label): say so, and name the fix."""
    if task.kind != "classification" or len(sample) == len(train):
        return
    chosen = label_values(task, sample)
    if len(chosen) > 1:
        return
    labels = sorted_labels(task, label_values(task, train))
    if len(labels) < 2:
        return  # the whole split has one class: `infer_labels` names that problem
    limit = task.max_train_samples
    if task.sample_seed is None:
        which = f"the first {limit} training rows"
        fix = (f"set `sample_seed` (e.g. 42) in the task to draw {limit} random rows instead of the first ones, "
               f"or raise `max_train_samples`")
    else:
        which = f"the {limit} training rows drawn with `sample_seed` {task.sample_seed}"
        fix = "raise `max_train_samples`, or try another `sample_seed`"
    raise DataError(
        f"task {task.name!r}: {which} of {origin} (`max_train_samples` {limit}) all have the label {chosen[0]!r}, "
        f"while the whole split has the labels {labels}; the file is probably sorted by label, and the model would "
        f"learn a single class. Fix: {fix}."
    )


def _check_token_lengths(task: Task, dataset: datasets.Dataset, origin: str) -> None:
    """Token tasks: every example must have exactly one tag per word."""
    if task.kind != "token_classification" or task.label_column not in dataset.column_names:
        return
    table = dataset.with_format("arrow")
    lengths = {}
    for field, column in (("text_column", TOKENS_COLUMN), ("label_column", task.label_column)):
        values = table[column]
        if not (pa.types.is_list(values.type) or pa.types.is_large_list(values.type)
                or pa.types.is_fixed_size_list(values.type)):
            raise DataError(f"task {task.name!r}: column {column!r} (`{field}`) of {origin} holds {values.type}, "
                            f"not a list per example. Fix: a token task needs a list of words and a list of tags.")
        lengths[column] = pc.fill_null(pc.list_value_length(values), -1)
    different = pc.not_equal(lengths[TOKENS_COLUMN], lengths[task.label_column])
    index = pc.index(different, True).as_py()
    if index >= 0:
        n_tokens, n_tags = lengths[TOKENS_COLUMN][index].as_py(), lengths[task.label_column][index].as_py()
        raise DataError(
            f"task {task.name!r}: example {index} of {origin} has {n_tokens} tokens but {n_tags} "
            f"`label_column` {task.label_column!r} values. Fix: give exactly one tag per token."
        )
