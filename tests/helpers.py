"""Tiny models and tokenizers built from configs: no download, fast on a CPU."""

from __future__ import annotations

import re
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
