"""Beyond English: Korean, CJK and accented text through vocabulary training, the saved files, reload,
Hugging Face export and import, and against transformers' tokenizers on the same folders.

Text: ``tests/data/korean_prose.txt`` (142 paragraphs of Korean prose, three sentences each, with a
few Chinese, Japanese, accented Latin, Cyrillic and Greek sentences inside), the 2,350 common Hangul
syllables of KS X 1001 (decoded from EUC-KR) and gensim's English Wikipedia excerpt.
"""

import itertools
import json
import os

import numpy as np
import pytest
from transformers import AutoTokenizer, BertTokenizerFast

from configs import pretrain
from data_pipelines import hf_tokenizer_files
from data_pipelines import tokenizer as tok_lib
from data_pipelines import vocab_training

KOREAN_FILE = os.path.join(os.path.dirname(__file__), "data", "korean_prose.txt")
# One text per script the options act on differently.
PROBES = {
    "english": "The history of the City is long, and the PEOPLE of the region speak many languages.",
    "accented": "Héllo Wörld! Ça va? naïve CAFÉ Ångström Straße café",
    "korean": "한국어 문장을 토큰화합니다. 서울은 대한민국의 수도이며 가장 큰 도시이다.",
    "chinese": "中文 我们学习语言模型。 學校와 圖書館",
    "japanese": "東京は日本の首都です。 ひらがな カタカナ",
    "mask": "서울은 대한민국의 [MASK] 이다.",
}
# (lowercase, strip_accents, tokenize_chinese_chars): cased; BERT uncased; uncased keeping accents and
# Hangul; cased with accents stripped; no CJK splitting.
SETTINGS = [(False, None, True), (True, None, True), (True, False, True), (False, True, True), (False, None, False)]


def _korean_paragraphs() -> list[str]:
    with open(KOREAN_FILE, encoding="utf-8") as f:
        return f.read().splitlines()


def _common_syllables() -> list[str]:
    """The 2,350 Hangul syllables of KS X 1001 (EUC-KR rows 0xB0-0xC8, cells 0xA1-0xFE)."""
    return [bytes([row, cell]).decode("euc-kr") for row in range(0xB0, 0xC9) for cell in range(0xA1, 0xFF)]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return _korean_paragraphs() + list(PROBES.values()) * 3


def _train(corpus, tmp_path, **spec) -> tok_lib.WordPieceTokenizer:
    return vocab_training.train_tokenizer(corpus, {"kind": "wordpiece", "vocab_size": 3000, **spec}, str(tmp_path))


def _is_syllable(token: str) -> bool:
    return len(token) == 1 and "\uac00" <= token <= "\ud7a3"


def _is_jamo(token: str) -> bool:
    return len(token) == 1 and "\u1100" <= token <= "\u11ff"


# --- item 1/5: every normaliser option survives training, the saved files and reload ----------------

@pytest.mark.parametrize("lowercase, strip_accents, chinese", SETTINGS)
def test_normaliser_options_survive_saving_and_reload(corpus, tmp_path, lowercase, strip_accents, chinese):
    trained = _train(corpus, tmp_path, lowercase=lowercase, strip_accents=strip_accents,
                     tokenize_chinese_chars=chinese)
    assert (trained.lowercase, trained.strip_accents, trained.tokenize_chinese_chars) == (
        lowercase, strip_accents, chinese)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert (config["do_lower_case"], config["strip_accents"], config["tokenize_chinese_chars"]) == (
        lowercase, strip_accents, chinese)
    reloaded = tok_lib.load_tokenizer({"kind": "wordpiece", "vocab_file": str(tmp_path / "vocab.txt")})
    assert reloaded.spec == trained.spec
    for text in PROBES.values():
        np.testing.assert_array_equal(reloaded.encode(text), trained.encode(text))
    if strip_accents is False or not (lowercase or strip_accents):  # Hangul kept whole
        # The repro: lowercase=True, strip_accents=False gave [UNK] on reload.
        assert reloaded.unk_id not in reloaded.encode("한국어").tolist()
    if not chinese:  # "中文" is one word then, and the trained vocabulary has it
        assert reloaded.encode("中文").tolist() != [reloaded.unk_id] and "中文" in reloaded._token_ids


def test_explicit_options_override_the_recorded_ones_with_a_warning(corpus, tmp_path, caplog):
    _train(corpus, tmp_path, lowercase=True, strip_accents=False)
    stripping = tok_lib.load_tokenizer({"kind": "wordpiece", "vocab_file": str(tmp_path / "vocab.txt"),
                                        "strip_accents": True})
    assert stripping.strip_accents is True and "strip_accents=True overrides the False recorded" in caplog.text
    assert stripping.encode("한국어").tolist() == [stripping.unk_id]  # jamo were never trained


# --- item 2: what lowercasing and accent stripping do to Hangul ------------------------------------

def test_uncased_accent_stripping_decomposes_hangul_and_strip_accents_false_keeps_it(corpus, tmp_path):
    uncased = _train(corpus, tmp_path / "uncased", lowercase=True)
    keeping = _train(corpus, tmp_path / "keeping", lowercase=True, strip_accents=False)
    cased = _train(corpus, tmp_path / "cased", lowercase=False)
    vocab = lambda t: [t.id_to_token(i) for i in range(t.vocab_size)]  # noqa: E731
    syllables = [sum(map(_is_syllable, vocab(t))) for t in (uncased, keeping, cased)]
    assert sum(map(_is_syllable, vocab(uncased))) == 0 and sum(map(_is_jamo, vocab(uncased))) > 50, syllables
    assert sum(map(_is_jamo, vocab(keeping))) == 0 and sum(map(_is_syllable, vocab(keeping))) > 500, syllables
    assert sum(map(_is_syllable, vocab(cased))) == sum(map(_is_syllable, vocab(keeping)))
    # Accented Latin: stripped by the uncased one only; CAFÉ -> café when lowercasing without stripping.
    assert uncased.decode(uncased.encode("CAFÉ café")) == "cafe cafe"
    assert keeping.decode(keeping.encode("CAFÉ café")) == "café café"
    assert cased.decode(cased.encode("CAFÉ café")) == "CAFÉ café"


def test_config_tokenizer_section_has_the_normaliser_fields_and_they_reach_training(corpus, tmp_path):
    section = pretrain.get_config().tokenizer
    assert section.strip_accents is None and section.tokenize_chinese_chars is None and section.limit_alphabet is None
    section.update_from_flattened_dict({"strip_accents": False, "limit_alphabet": 4000})
    spec = {k: v for k, v in section.items() if k not in ("build_if_missing", "vocab_file", "model_file")
            and v not in ("", None)}
    spec["vocab_size"] = 3000
    trained = vocab_training.train_tokenizer(corpus, spec, str(tmp_path))
    assert trained.lowercase is True and trained.strip_accents is False
    assert trained.unk_id not in trained.encode(PROBES["korean"]).tolist()


# --- item 3: the alphabet cap ------------------------------------------------------------------------

def test_default_alphabet_covers_the_common_hangul_syllables(tmp_path):
    syllables = _common_syllables()
    assert len(set(syllables)) == 2350
    # Every syllable in a few two-syllable words, twice over, shuffled deterministically.
    rng = np.random.default_rng(0)
    words = ["".join(pair) for pair in zip(syllables, np.roll(syllables, 1))] * 2
    texts = [" ".join(rng.permutation(words[i:i + 40]).tolist()) for i in range(0, len(words), 40)]
    covered = vocab_training.train_tokenizer(texts, {"kind": "wordpiece", "vocab_size": 6000, "lowercase": False},
                                             str(tmp_path / "default"))
    capped = vocab_training.train_tokenizer(
        texts, {"kind": "wordpiece", "vocab_size": 6000, "lowercase": False, "limit_alphabet": 1000},
        str(tmp_path / "capped"))
    probe = " ".join(syllables)
    assert covered.encode(probe).tolist().count(covered.unk_id) == 0
    assert capped.encode(probe).tolist().count(capped.unk_id) >= 1000  # the old fixed cap lost most of them


# --- item 6: what varies between builds ------------------------------------------------------------

def test_builds_of_the_same_korean_text_agree_in_alphabet_and_size_and_nearly_in_tokens(tmp_path):
    """docs/data.md: the alphabet and size are the same every build; up to ~1% of the merged pieces
    differ (equal-count merges are ordered by a randomly seeded hash map in ``tokenizers``)."""
    paragraphs = _korean_paragraphs()
    builds = [vocab_training.train_tokenizer(paragraphs, {"kind": "wordpiece", "vocab_size": 30000, "lowercase": False},
                                             str(tmp_path / str(i))) for i in range(3)]
    vocabs = [[b.id_to_token(i) for i in range(b.vocab_size)] for b in builds]
    assert len({len(v) for v in vocabs}) == 1
    assert len({tuple(t for t in v if len(t.removeprefix("##")) == 1) for v in vocabs}) == 1
    for a, b in itertools.combinations(vocabs, 2):
        assert len(set(a) ^ set(b)) <= 0.01 * len(a), sorted(set(a) ^ set(b))


# --- export: write_hf_tokenizer_files, loaded by transformers ---------------------------------------

def _assert_same_as_transformers(ours: tok_lib.Tokenizer, theirs, texts, offsets: bool = True) -> None:
    for text in texts:
        reference = theirs(text, add_special_tokens=False, return_offsets_mapping=offsets)
        (ids, spans), = ours.encode_batch_with_offsets([text])
        assert ids.tolist() == reference["input_ids"], text
        if offsets:
            assert [tuple(s) for s in spans.tolist()] == [tuple(s) for s in reference["offset_mapping"]], text


@pytest.mark.parametrize("lowercase, strip_accents, chinese", SETTINGS)
def test_exported_wordpiece_loads_in_transformers_with_the_same_ids_and_offsets(
        corpus, tmp_path, lowercase, strip_accents, chinese):
    trained = _train(corpus, tmp_path / "vocab", lowercase=lowercase, strip_accents=strip_accents,
                     tokenize_chinese_chars=chinese)
    out = tmp_path / "hf"
    written = hf_tokenizer_files.write_hf_tokenizer_files(trained.spec, str(out), model_max_length=128)
    assert sorted(written) == sorted(os.listdir(out)) == sorted(
        ["vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"])
    config = json.loads((out / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 128 and config["tokenizer_class"] == "BertTokenizer"
    texts = list(PROBES.values()) + _korean_paragraphs()[::20]
    for theirs in (AutoTokenizer.from_pretrained(out), BertTokenizerFast.from_pretrained(out)):
        assert (theirs.do_lower_case, theirs.strip_accents, theirs.tokenize_chinese_chars) == (
            lowercase, strip_accents, chinese)
        _assert_same_as_transformers(trained, theirs, texts)
        assert theirs("한국어", "문장")["input_ids"][0] == trained.cls_id
    # Import: the exported folder (vocab.txt, and tokenizer.json alone) reads back as the same tokenizer.
    spec = hf_tokenizer_files.find_hf_tokenizer_spec(out)
    assert spec == {"kind": "wordpiece", "vocab_file": str(out / "vocab.txt")}
    (out / "vocab.txt").unlink()
    imported = tok_lib.load_tokenizer(hf_tokenizer_files.find_hf_tokenizer_spec(out))
    assert imported.spec == trained.spec | {"vocab_file": str(out / "tokenizer.json")}
    for text in texts:
        np.testing.assert_array_equal(imported.encode(text), trained.encode(text))


@pytest.mark.parametrize("lowercase, strip_accents, chinese", SETTINGS)
def test_a_folder_transformers_saved_imports_with_its_normaliser_options(corpus, tmp_path, lowercase, strip_accents,
                                                                          chinese):
    _train(corpus, tmp_path / "vocab", lowercase=False)
    theirs = BertTokenizerFast(str(tmp_path / "vocab" / "vocab.txt"), do_lower_case=lowercase,
                               strip_accents=strip_accents, tokenize_chinese_chars=chinese)
    theirs.save_pretrained(tmp_path / "hf")  # transformers 5: tokenizer.json + tokenizer_config.json only
    spec = hf_tokenizer_files.find_hf_tokenizer_spec(tmp_path / "hf")
    assert spec == {"kind": "wordpiece", "vocab_file": str(tmp_path / "hf" / "tokenizer.json")}
    ours = tok_lib.load_tokenizer(spec)
    assert (ours.lowercase, ours.strip_accents, ours.tokenize_chinese_chars) == (lowercase, strip_accents, chinese)
    _assert_same_as_transformers(ours, AutoTokenizer.from_pretrained(tmp_path / "hf"),
                                 list(PROBES.values()) + _korean_paragraphs()[::20])


def test_exported_sentencepiece_matches_transformers_on_korean(tmp_path):
    paragraphs = _korean_paragraphs()
    trained = vocab_training.train_tokenizer(
        paragraphs, {"kind": "sentencepiece", "vocab_size": 800, "lowercase": False, "num_threads": 1},
        str(tmp_path / "spm"))
    out = tmp_path / "hf"
    written = hf_tokenizer_files.write_hf_tokenizer_files(trained.spec, str(out), model_max_length=64)
    assert sorted(written) == sorted(os.listdir(out)) == sorted(
        ["spiece.model", "tokenizer_config.json", "special_tokens_map.json"])
    theirs = AutoTokenizer.from_pretrained(out)
    assert theirs.mask_token_id == trained.mask_id and theirs.pad_token_id == trained.pad_id
    texts = paragraphs[::5] + [PROBES["korean"], PROBES["chinese"], PROBES["accented"], PROBES["mask"],
                               "서울은 [MASK]이다.", "[CLS] 서울 [SEP] 부산 [SEP]", "  두  칸  "]
    _assert_same_as_transformers(trained, theirs, texts, offsets=False)  # a slow tokenizer: no offsets there
    (ids, offsets), = trained.encode_batch_with_offsets([PROBES["mask"]])
    assert trained.mask_id in ids.tolist() and trained.id_to_token(int(ids[ids.tolist().index(trained.mask_id) - 1])) != "\u2581"
    spans = [PROBES["mask"][a:b] for a, b in offsets.tolist()]
    assert "[MASK]" in spans and "".join(spans).replace(" ", "") == PROBES["mask"].replace(" ", "")
    imported = tok_lib.load_tokenizer(hf_tokenizer_files.find_hf_tokenizer_spec(out))
    for text in texts:
        np.testing.assert_array_equal(imported.encode(text), trained.encode(text))
