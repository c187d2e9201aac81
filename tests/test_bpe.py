"""Byte-level BPE (kind "bpe"): trained with tokenizers' ByteLevelBPE trainer, ids equal to transformers'
RobertaTokenizerFast, RoBERTa's specials as the row builder's cls/sep, and the Hugging Face files."""

import os
import pickle
import shutil

import numpy as np
import pytest
import tokenizers
import transformers

from data_pipelines import bpe, hf_tokenizer_files, rows, vocab_training
from data_pipelines import tokenizer as tokenizer_lib

CORPUS = [
    "The quick brown fox jumps over the lazy dog. Paris is the capital of France!",
    "Rivers flow into the sea; the sea is salty, and the capital's rivers are long.",
    "Hello  world,\n naïve café — 東京 😀 tabs\tand  spaces, numbers 12345 and CamelCase words.",
] * 30
SAMPLES = [
    "The quick brown fox.",
    " leading space and trailing space ",
    "Hello  world,\n naïve café — 東京 😀 never-seen-before tokens: zxqv!",
    "Paris is the <mask> of France.",
    "a <s> b </s> c<pad>",
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("bpe")
    return vocab_training.train_tokenizer(CORPUS, {"kind": "bpe", "vocab_size": 400}, str(out)), out


@pytest.fixture(scope="module")
def reference(trained, tmp_path_factory):
    """transformers' RobertaTokenizerFast built from the vocab.json + merges.txt alone (RoBERTa's <mask>
    absorbs the space before it, as in roberta-base's tokenizer.json)."""
    _, out = trained
    only = tmp_path_factory.mktemp("vocab_merges")
    for name in (bpe.VOCAB_FILE, bpe.MERGES_FILE):
        shutil.copy(out / name, only)
    mask = tokenizers.AddedToken("<mask>", lstrip=True, rstrip=False, normalized=False, special=True)
    return transformers.RobertaTokenizerFast.from_pretrained(only, mask_token=mask)


def test_trained_vocabulary_has_robertas_specials_first(trained):
    tokenizer, out = trained
    assert tokenizer.kind == "bpe" and sorted(os.listdir(out)) == ["merges.txt", "tokenizer.json", "vocab.json"]
    assert [tokenizer.id_to_token(i) for i in range(5)] == ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    assert (tokenizer.cls_id, tokenizer.pad_id, tokenizer.sep_id, tokenizer.unk_id, tokenizer.mask_id) == (0, 1, 2, 3, 4)
    assert tokenizer.special_ids().tolist() == [0, 1, 2, 3, 4]
    starts = tokenizer.word_start_mask()
    assert starts[tokenizer.token_to_id("\u0120the")] and not starts[tokenizer.token_to_id("e")]


@pytest.mark.parametrize("spelling", ["vocab.json", "tokenizer.json"])
def test_ids_equal_roberta_tokenizer_fast(trained, reference, spelling):
    _, out = trained
    tokenizer = tokenizer_lib.load_tokenizer({"kind": "bpe", "vocab_file": str(out / spelling)})
    for text in SAMPLES:
        assert tokenizer.encode(text).tolist() == reference(text, add_special_tokens=False)["input_ids"], text
        if "<mask>" not in text:  # the mask absorbs the space before it
            assert tokenizer.decode(tokenizer.encode(text)) == text
    (ids, offsets), = tokenizer.encode_batch_with_offsets([SAMPLES[2]])
    theirs = reference(SAMPLES[2], add_special_tokens=False, return_offsets_mapping=True)
    assert ids.tolist() == theirs["input_ids"] and offsets.tolist() == [list(o) for o in theirs["offset_mapping"]]
    assert pickle.loads(pickle.dumps(tokenizer)).encode(SAMPLES[0]).tolist() == tokenizer.encode(SAMPLES[0]).tolist()


def test_rows_are_s_text_slash_s(trained, reference):
    tokenizer, _ = trained
    laid = rows.encoder_rows([tokenizer.encode(SAMPLES[0])], length=16, cls_id=tokenizer.cls_id,
                             sep_id=tokenizer.sep_id, pad_id=tokenizer.pad_id)
    expected = reference(SAMPLES[0])["input_ids"]
    assert laid["input_ids"][0].tolist() == expected + [tokenizer.pad_id] * (16 - len(expected))


def test_hf_files_load_with_auto_tokenizer(trained, reference, tmp_path):
    tokenizer, _ = trained
    written = hf_tokenizer_files.write_hf_tokenizer_files(tokenizer.spec, str(tmp_path), model_max_length=62)
    assert {"tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json"} <= set(written)
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(auto).__name__ == "RobertaTokenizer" and auto.model_max_length == 62
    for text in SAMPLES:
        assert auto(text)["input_ids"] == reference(text)["input_ids"], text
    assert auto(SAMPLES[0], SAMPLES[1])["input_ids"] == reference(SAMPLES[0], SAMPLES[1])["input_ids"]
    spec = hf_tokenizer_files.find_hf_tokenizer_spec(tmp_path)
    assert spec == {"kind": "bpe", "vocab_file": str(tmp_path / "tokenizer.json")}
    assert np.array_equal(tokenizer_lib.load_tokenizer(spec).encode(SAMPLES[2]), tokenizer.encode(SAMPLES[2]))


def test_bad_bpe_files_are_named(tmp_path, trained):
    _, out = trained
    with pytest.raises(FileNotFoundError, match="missing.json"):
        tokenizer_lib.load_tokenizer({"kind": "bpe", "vocab_file": str(tmp_path / "missing.json")})
    shutil.copy(out / "vocab.json", tmp_path)
    with pytest.raises(FileNotFoundError, match="merges.txt"):
        tokenizer_lib.load_tokenizer({"kind": "bpe", "vocab_file": str(tmp_path / "vocab.json")})
    wordpiece = tmp_path / "wp.json"
    wordpiece.write_text('{"model": {"type": "WordPiece", "vocab": {}}}')
    with pytest.raises(ValueError, match="model.type is 'WordPiece'"):
        tokenizer_lib.load_tokenizer({"kind": "bpe", "vocab_file": str(wordpiece)})
    with pytest.raises(ValueError, match="no text"):
        vocab_training.train_tokenizer(["", " "], {"kind": "bpe", "vocab_size": 300}, str(tmp_path / "empty"))
