"""Tiny models and tokenizers built from configs: no download, fast on a CPU."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
from transformers import BertConfig, PreTrainedTokenizerFast


SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = """the a an and or but not no is was were are be been good bad great terrible film movie food service
i you he she it we they this that what who where when how why which many much city river country company
paris london berlin new york john mary smith acme corp inc of in on at to for from with by very really
love hate like boring fun excellent awful nice lovely plot actor story question name year number
""".split()


def tiny_tokenizer(extra_words: list[str] | None = None, max_length: int = 64) -> PreTrainedTokenizerFast:
    """A word-level BERT-style fast tokenizer over a small vocabulary (unknown words -> [UNK])."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL + sorted(set(WORDS + (extra_words or []))))}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=max_length,
    )


def words_of(paths: list[Path]) -> list[str]:
    words: set[str] = set()
    for path in paths:
        words.update(re.findall(r"[a-z0-9]+", path.read_text(encoding="utf-8").lower()))
    return sorted(words)


def tiny_bert_config(vocab_size: int, **kwargs) -> BertConfig:
    defaults = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=128, type_vocab_size=2)
    defaults.update(kwargs)
    return BertConfig(vocab_size=vocab_size, **defaults)


def launch_two_processes(script_text: str, out: Path, script: Path, timeout: int) -> tuple[dict, dict]:
    """Run `script_text` (a format string with {tests}, {repo}, {out}) in 2 processes and return each rank's
    `rank<r>.json` from `out`.

    accelerate 1.15 runs a single process for `--cpu --num_processes 2` (multi-CPU needs MPI there); on a
    host without GPUs `--multi_gpu` starts the processes through torchrun and they join a gloo group.
    """
    repo = Path(__file__).resolve().parents[1]
    out.mkdir(parents=True, exist_ok=True)
    script.write_text(script_text.format(tests=str(repo / "tests"), repo=str(repo), out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1))
    return r0, r1


def assert_mixed_equals_single(model, inputs: dict, rows: list[str]) -> None:
    """A mixed-task batch gives each task's rows the logits of those rows run as a one-task batch (1e-5);
    token logits are compared on the one-task batch's (shorter) padded length."""
    import torch

    with torch.no_grad():
        mixed = model(**inputs, task=rows)
        for name in dict.fromkeys(rows):
            idx = mixed.task_rows[name]
            single = model(**{k: v[idx] for k, v in inputs.items()}, task=name).logits
            got = mixed.task_logits[name]
            got = got[:, : single.shape[1]] if single.dim() == 3 else got
            torch.testing.assert_close(got, single, rtol=1e-5, atol=1e-5)


TINY_ROWS = [("good film", "pos"), ("bad film", "neg"), ("great movie", "pos"), ("terrible food", "neg"),
             ("nice plot", "pos"), ("awful story", "neg")]


def write_tiny_recipe(root: Path, validation: bool = True, **fields) -> Path:
    """A recipe over a tiny BERT saved in `root/backbone` (weights from seed 0) and a one-task JSON-lines data
    set: `hf-mtl train` and `run_training` run it in about a second, with no download."""
    import torch
    from transformers import AutoModel

    root.mkdir(parents=True, exist_ok=True)
    tok = tiny_tokenizer()
    with torch.random.fork_rng():  # the caller's random state stays as it was
        torch.manual_seed(0)
        AutoModel.from_config(tiny_bert_config(tok.vocab_size)).save_pretrained(root / "backbone")
    tok.save_pretrained(root / "backbone")
    lines = "".join(json.dumps({"text": text, "label": label}) + "\n" for text, label in TINY_ROWS * 3)
    task = {"name": "sent", "train_file": str(root / "train.jsonl")}
    (root / "train.jsonl").write_text(lines)
    if validation:
        (root / "validation.jsonl").write_text(lines)
        task["validation_file"] = str(root / "validation.jsonl")
    recipe = {"output_dir": str(root / "out"), "model_name_or_path": str(root / "backbone"), "tasks": [task],
              "max_steps": 4, "per_device_train_batch_size": 4, "learning_rate": 1e-3, "save_strategy": "no",
              "eval_strategy": "no", "report_to": "none", "seed": 3, "disable_tqdm": True, "logging_steps": 1}
    recipe.update(fields)
    path = root / "recipe.json"
    path.write_text(json.dumps(recipe))
    return path


# ----------------------------------------------------------------- tiny generative LMs (ByT5 bytes: no files)
def tiny_lm_config(arch: str, decoder_layers: int = 2, **overrides):
    """A tiny random config of a generative family for the ByT5 tokenizer (vocab 384, pad 0, eos 1), every dropout
    off: `llama`, `gpt2` (decoder-only), `t5`, `bart` (encoder-decoder, `decoder_layers` decoder blocks)."""
    from transformers import BartConfig, GPT2Config, LlamaConfig, T5Config

    common = {"vocab_size": 384, "pad_token_id": 0, "eos_token_id": 1}
    if arch == "llama":
        config = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                             num_key_value_heads=2, max_position_embeddings=256, bos_token_id=None, **common)
    elif arch == "gpt2":
        config = GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=256, bos_token_id=1, resid_pdrop=0.0,
                            embd_pdrop=0.0, attn_pdrop=0.0, **common)
    elif arch == "t5":
        config = T5Config(d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=decoder_layers, num_heads=4,
                          decoder_start_token_id=0, dropout_rate=0.0, **common)
    elif arch == "bart":
        config = BartConfig(d_model=32, encoder_layers=2, decoder_layers=decoder_layers, encoder_attention_heads=4,
                            decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64,
                            max_position_embeddings=256, bos_token_id=1, decoder_start_token_id=1,
                            forced_eos_token_id=None, dropout=0.0, **common)
    else:
        raise ValueError(f"no tiny config for {arch!r}")
    for name, value in overrides.items():
        setattr(config, name, value)
    return config
