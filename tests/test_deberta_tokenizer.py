"""DeBERTa-v2/v3's SentencePiece conventions (``convention="deberta"``, data_pipelines/deberta_spm.py) against
transformers' DebertaV2Tokenizer on a model trained here on gensim's Wikipedia excerpt: ids, rows, pairs,
specials, word starts, the export and import of a Hugging Face directory."""

import json
import pickle

import numpy as np
import pytest
import transformers

from data_pipelines import deberta_spm, hf_tokenizer_files, masking, rows, vocab_training
from data_pipelines import text as text_lib
from data_pipelines import tokenizer as tok_lib
from tests.test_tokenizer import HARD_TEXT, _wiki_texts

PIECES = 800


@pytest.fixture(scope="module")
def articles():
    """The excerpt's articles with real text (redirects and stubs left out)."""
    return [text for text in _wiki_texts() if len(text) > 1000]


@pytest.fixture(scope="module")
def texts(articles):
    """The training text: 30 articles (1.2 MB)."""
    return articles[:30]


@pytest.fixture(scope="module")
def sentences(articles):
    """51 texts: 48 real sentences (the first of each article with more than 6 words; 18 from articles the
    model was not trained on), hard text and special-token text."""
    real = []
    for text in articles:
        real += [s for s in text_lib.split_sentences(text) if len(s.split()) > 6][:1]
    assert len(real) >= 48
    return real[:48] + [HARD_TEXT, "  leading and   trailing\tspaces \n", "a[MASK]b [CLS]x [SEP] [PAD][UNK]"]


@pytest.fixture(scope="module")
def trained(texts, tmp_path_factory):
    return deberta_spm.train_deberta_spm(texts, PIECES, str(tmp_path_factory.mktemp("deberta_spm")),
                                         input_sentence_size=2000)


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    """The tokenizer written as a Hugging Face directory, and transformers' AutoTokenizer of it."""
    out = tmp_path_factory.mktemp("hf")
    written = hf_tokenizer_files.write_hf_tokenizer_files(trained.spec, str(out), model_max_length=4096)
    return out, written, transformers.AutoTokenizer.from_pretrained(out)


def test_deberta_v3_special_layout(trained):
    assert [trained.id_to_token(i) for i in range(4)] == ["[PAD]", "[CLS]", "[SEP]", "[UNK]"]
    assert (trained.pad_id, trained.cls_id, trained.sep_id, trained.unk_id) == (0, 1, 2, 3)
    assert trained.mask_id == PIECES and trained.vocab_size == PIECES + 1  # [MASK] after the pieces
    assert trained.spec == {"kind": "sentencepiece", "model_file": trained.spec["model_file"],
                            "convention": "deberta", "lowercase": False, "split_by_punct": False}
    np.testing.assert_array_equal(trained.special_ids(), [0, 1, 2, 3, PIECES])
    assert isinstance(tok_lib.load_tokenizer(trained.spec), deberta_spm.DebertaSentencePieceTokenizer)


def test_the_generic_trainer_builds_the_deberta_layout_at_the_spec_size(texts, tmp_path):
    """``vocab_training.train_tokenizer`` (what ``tokenizer.build_if_missing`` runs) on a DeBERTa spec: the
    v3 layout, ``vocab_size`` ids in all ([MASK] the last), so a recipe's ``model.vocab_size`` matches."""
    spec = {"kind": "sentencepiece", "convention": "deberta", "vocab_size": 500, "input_sentence_size": 2000}
    built = vocab_training.train_tokenizer(texts[:10], spec, str(tmp_path))
    assert isinstance(built, deberta_spm.DebertaSentencePieceTokenizer)
    assert (built.pad_id, built.cls_id, built.sep_id, built.unk_id, built.mask_id) == (0, 1, 2, 3, 499)
    assert built.vocab_size == 500 and (tmp_path / "spm.model").exists()


def test_ids_rows_and_pairs_equal_debertav2_tokenizer(trained, exported, sentences):
    _, written, theirs = exported
    assert type(theirs).__name__ == "DebertaV2Tokenizer" and written[0] == "spm.model"
    assert (theirs.cls_token_id, theirs.sep_token_id, theirs.pad_token_id, theirs.unk_token_id,
            theirs.mask_token_id) == (1, 2, 0, 3, PIECES)
    ours = trained.encode_batch(sentences)
    for text, ids in zip(sentences, ours):
        assert ids.tolist() == theirs(text, add_special_tokens=False)["input_ids"], text
    heads = [" ".join(text.split()[:9]) for text in sentences[:48]]  # short: no truncation on either side
    pairs = list(zip(heads[:-1], heads[1:]))
    first, second = trained.encode_batch([a for a, _ in pairs]), trained.encode_batch([b for _, b in pairs])
    laid = rows.encoder_rows(first, second, length=128, cls_id=trained.cls_id, sep_id=trained.sep_id,
                             pad_id=trained.pad_id)
    hf = theirs([a for a, _ in pairs], [b for _, b in pairs], max_length=128, padding="max_length",
                return_token_type_ids=True)
    for row, (a, b) in enumerate(pairs):  # [CLS] A [SEP] B [SEP], segment 1 from B on, padded with [PAD]
        assert len(hf["input_ids"][row]) == 128, (a, b)
        assert laid["input_ids"][row].tolist() == hf["input_ids"][row], (a, b)
        assert laid["segment_ids"][row].tolist() == hf["token_type_ids"][row]
        assert laid["input_mask"][row].tolist() == hf["attention_mask"][row]
    single = rows.encoder_rows(ours[:1], length=len(ours[0]) + 2, cls_id=1, sep_id=2, pad_id=0)
    assert single["input_ids"][0].tolist() == theirs(sentences[0])["input_ids"]
    assert trained.decode(ours[0]) == theirs.decode(ours[0].tolist())


def test_the_exported_directory_imports_as_the_same_tokenizer(trained, exported, sentences):
    out, _, _ = exported
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "DebertaV2Tokenizer" and config["do_lower_case"] is False
    spec = hf_tokenizer_files.find_hf_tokenizer_spec(out)
    assert spec == {"kind": "sentencepiece", "model_file": str(out / "spm.model"), "convention": "deberta",
                    "lowercase": False, "split_by_punct": False}
    imported = tok_lib.load_tokenizer(spec)
    for a, b in zip(imported.encode_batch(sentences), trained.encode_batch(sentences)):
        np.testing.assert_array_equal(a, b)
    # Microsoft's DeBERTa-v3 layout: no tokenizer_class, model_type deberta-v2 in config.json.
    (out / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False, "vocab_type": "spm"}))
    assert "convention" not in hf_tokenizer_files.find_hf_tokenizer_spec(out)  # nothing says DeBERTa yet
    (out / "config.json").write_text(json.dumps({"model_type": "deberta-v2"}))
    assert hf_tokenizer_files.find_hf_tokenizer_spec(out)["convention"] == "deberta"


def test_a_directory_transformers_saved_imports_with_the_same_ids(exported, sentences, tmp_path):
    _, _, theirs = exported
    theirs.save_pretrained(tmp_path / "saved")  # transformers 5: tokenizer.json + tokenizer_config.json, no spm.model
    spec = hf_tokenizer_files.find_hf_tokenizer_spec(tmp_path / "saved")
    assert spec["convention"] == "deberta" and spec["model_file"] == str(tmp_path / "saved" / "tokenizer.json")
    ours = tok_lib.load_tokenizer(spec)
    assert (ours.cls_id, ours.sep_id, ours.pad_id, ours.unk_id, ours.mask_id) == (1, 2, 0, 3, PIECES)
    for text, ids in zip(sentences, ours.encode_batch(sentences)):
        assert ids.tolist() == theirs(text, add_special_tokens=False)["input_ids"], text
    written = hf_tokenizer_files.write_hf_tokenizer_files(spec, str(tmp_path / "again"), model_max_length=4096)
    assert written[0] == "tokenizer.json"
    again = transformers.AutoTokenizer.from_pretrained(tmp_path / "again")
    assert again(sentences)["input_ids"] == theirs(sentences)["input_ids"]


def test_lowercase_and_punctuation_options_match_transformers(trained, sentences, tmp_path):
    spec = {**trained.spec, "lowercase": True, "split_by_punct": True}
    ours = tok_lib.load_tokenizer(spec)
    hf_tokenizer_files.write_hf_tokenizer_files(spec, str(tmp_path), model_max_length=4096)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    for text, ids in zip(sentences, ours.encode_batch(sentences)):
        assert ids.tolist() == theirs(text, add_special_tokens=False)["input_ids"], text
    assert hf_tokenizer_files.find_hf_tokenizer_spec(tmp_path)["split_by_punct"] is True
    assert ours.encode("Paris, FRANCE.").tolist() == trained.encode("paris , france .").tolist()


def test_word_starts_offsets_and_pickle(trained, sentences):
    starts = trained.word_start_mask()
    assert starts[[0, 1, 2, 3, PIECES]].all()
    plain = [s for s in sentences[:48] if "[" not in s]
    counted = 0
    for text, (ids, offsets) in zip(plain, trained.encode_batch_with_offsets(plain)):
        if trained.unk_id not in ids:  # ([UNK], a special token, counts as a word of its own)
            assert starts[ids].sum() == len(text.split()), text  # one "▁" piece begins every word
            counted += 1
        for i, (start, end) in zip(ids, offsets):
            piece = trained.id_to_token(int(i)).lstrip("\u2581")
            if i != trained.unk_id and piece:
                assert text[start:end] == piece, (text, piece)
    assert counted >= 30, counted
    copy = pickle.loads(pickle.dumps(trained))
    np.testing.assert_array_equal(copy.encode(sentences[0]), trained.encode(sentences[0]))


def test_whole_word_masking_keeps_the_pieces_of_a_word_together(trained, sentences):
    masker = masking.TokenMasker.from_tokenizer(trained, masked_lm_prob=0.3, max_predictions_per_seq=20,
                                                whole_word_masking=True)
    ids = [x[:46] for x in trained.encode_batch(sentences[:48])]
    batch = rows.encoder_rows(ids, length=48, cls_id=trained.cls_id, sep_id=trained.sep_id, pad_id=trained.pad_id)
    selected = masker.select(batch["input_ids"], np.random.default_rng(0))
    assert selected.sum() > 100 and not selected[np.isin(batch["input_ids"], trained.special_ids())].any()
    starts = trained.word_start_mask()[batch["input_ids"]]
    maskable = masker.maskable(batch["input_ids"])  # special tokens ([UNK] too) are never predicted
    words = np.cumsum(starts, axis=1)  # the word each position belongs to
    split = 0
    for row in range(len(ids)):
        for word in np.unique(words[row][selected[row]]):
            split += len(set(selected[row][(words[row] == word) & maskable[row]])) > 1
    assert split == 0  # a word is predicted whole or not at all
    assert trained.mask_id not in masker._replacement_ids  # pylint: disable=protected-access


def test_bad_models_and_specs_are_named(trained, texts, tmp_path):
    with pytest.raises(ValueError, match=r"lacks \['\[MASK\]'\]"):  # the plain convention needs [MASK] in the model
        tok_lib.load_tokenizer({"kind": "sentencepiece", "model_file": trained.spec["model_file"]})
    import sentencepiece  # pylint: disable=import-outside-toplevel

    plain = tmp_path / "plain.model"  # SentencePiece's defaults: <unk>, <s>, </s>
    lines = "\n".join(texts[:2]).splitlines()
    sentencepiece.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(plain)[:-6],
                                             vocab_size=100, input_sentence_size=300, minloglevel=2)
    with pytest.raises(ValueError, match=r"plain.model: a DeBERTa SentencePiece model needs the pieces "
                                         r"\['\[PAD\]', '\[CLS\]', '\[SEP\]', '\[UNK\]'\]"):
        tok_lib.load_tokenizer({"kind": "sentencepiece", "model_file": str(plain), "convention": "deberta"})
    with pytest.raises(ValueError, match=r"'convention' must be one of \('bert', 'deberta'\), got 'albert'"):
        tok_lib.load_tokenizer({**trained.spec, "convention": "albert"})
    garbage = tmp_path / "spm.model"
    garbage.write_bytes(b"\x89PNG not a model")
    with pytest.raises(ValueError, match=r"spm.model: not a SentencePiece model"):
        deberta_spm.DebertaSentencePieceTokenizer(str(garbage))
    with pytest.raises(FileNotFoundError, match="python -m launch.build_vocab"):
        deberta_spm.DebertaSentencePieceTokenizer(str(tmp_path / "missing.model"))
