"""bert_jax.metrics: GLUE metrics vs scikit-learn/SciPy, conlleval entity scores vs seqeval, seed summaries."""

import numpy as np
import pytest
from scipy import stats as scipy_stats
from seqeval import metrics as seqeval_metrics
from sklearn import metrics as sk_metrics

from bert_jax import metrics


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 300)
    predictions = np.where(rng.random(300) < 0.7, labels, 1 - labels)
    assert metrics.accuracy(predictions, labels) == pytest.approx(sk_metrics.accuracy_score(labels, predictions))
    assert metrics.binary_f1(predictions, labels) == pytest.approx(sk_metrics.f1_score(labels, predictions))
    assert metrics.matthews_corr(predictions, labels) == pytest.approx(sk_metrics.matthews_corrcoef(labels, predictions))
    labels3 = rng.integers(0, 3, 300)
    predictions3 = np.where(rng.random(300) < 0.5, labels3, rng.integers(0, 3, 300))
    assert metrics.matthews_corr(predictions3, labels3) == pytest.approx(sk_metrics.matthews_corrcoef(labels3, predictions3))


@pytest.mark.parametrize("seed", [0, 1])
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    labels = np.round(rng.uniform(0, 5, 200), 1)  # ties, like STS-B's scores
    predictions = np.round(labels + rng.normal(0, 1, 200), 1)
    assert metrics.pearson(predictions, labels) == pytest.approx(scipy_stats.pearsonr(predictions, labels)[0])
    assert metrics.spearman(predictions, labels) == pytest.approx(scipy_stats.spearmanr(predictions, labels)[0])


def test_glue_metrics_hand_cases():
    # TP=2, FP=1, FN=1, TN=2: accuracy 4/6, F1 2*2/(3+3), MCC (2*2 - 1*1)/sqrt(3*3*3*3) = 1/3.
    predictions, labels = [1, 1, 1, 0, 0, 0], [1, 1, 0, 0, 0, 1]
    assert metrics.glue_metrics("mrpc", predictions, labels) == pytest.approx({"f1": 2 / 3, "accuracy": 4 / 6})
    assert metrics.glue_metrics("CoLA", predictions, labels) == pytest.approx({"matthews_corr": 1 / 3})
    assert metrics.glue_metrics("cola", [1, 1, 1, 1], [1, 0, 1, 0]) == {"matthews_corr": 0.0}  # constant: undefined -> 0
    assert metrics.glue_metrics("cola", [0, 1, 0, 1], [1, 0, 1, 0]) == pytest.approx({"matthews_corr": -1.0})
    assert metrics.binary_f1([0, 0], [0, 0]) == 0.0
    assert metrics.glue_metrics("MNLI-m", [0, 1, 2, 2], [0, 1, 2, 0]) == {"accuracy": 0.75}
    scores = metrics.glue_metrics("stsb", [1.0, 2.0, 3.0, 10.0], [0.5, 1.0, 1.5, 5.0])
    assert scores == pytest.approx({"pearson": 1.0, "spearman": 1.0})
    assert metrics.glue_metrics("stsb", [1.0, 2.0, 3.0, 4.0], [4.0, 1.0, 2.0, 3.0])["spearman"] == pytest.approx(-0.2)
    assert np.isnan(metrics.pearson([1.0, 1.0, 1.0], [0.0, 1.0, 2.0]))
    assert metrics.glue_task_score("mrpc", {"f1": 0.9, "accuracy": 0.8}) == pytest.approx(0.85)
    assert set(metrics.GLUE_METRICS) >= {"cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"}
    with pytest.raises(ValueError, match="equal 1-D shapes"):
        metrics.accuracy([1, 0], [1])


def test_summarize_over_seeds():
    runs = [{"accuracy": 0.8, "f1": 0.7}, {"accuracy": 0.9, "f1": 0.75}, {"accuracy": 1.0, "f1": 0.95}]
    summary = metrics.summarize_over_seeds(runs)
    assert summary["accuracy"] == pytest.approx({"mean": 0.9, "std": 0.1, "min": 0.8, "max": 1.0, "n": 3})
    assert summary["f1"]["std"] == pytest.approx(np.std([0.7, 0.75, 0.95], ddof=1))
    assert metrics.summarize_over_seeds(runs[:1])["f1"]["std"] == 0.0
    with pytest.raises(ValueError, match="run 1 has metrics"):
        metrics.summarize_over_seeds([{"a": 1.0}, {"b": 1.0}])


def _seqeval_scores(gold, predicted):
    report = seqeval_metrics.classification_report(gold, predicted, output_dict=True, zero_division=0)
    return {
        "precision": seqeval_metrics.precision_score(gold, predicted),
        "recall": seqeval_metrics.recall_score(gold, predicted),
        "f1": seqeval_metrics.f1_score(gold, predicted),
        "per_type": {k: v for k, v in report.items() if not k.endswith(" avg")},
    }


def _assert_matches_seqeval(gold, predicted):
    ours, reference = metrics.entity_scores(gold, predicted), _seqeval_scores(gold, predicted)
    for key in ("precision", "recall", "f1"):
        assert ours[key] == pytest.approx(reference[key]), key
    assert set(ours["per_type"]) == set(reference["per_type"])
    for entity_type, scores in reference["per_type"].items():
        for key, reference_key in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert ours["per_type"][entity_type][key] == pytest.approx(scores[reference_key]), (entity_type, key)
        assert ours["per_type"][entity_type]["support"] == scores["support"]


def test_entity_scores_hand_cases():
    # IOB1 (original eng.train): I- starts an entity, B- only separates two adjacent same-type entities.
    assert metrics.conll_entities(["I-PER", "I-PER", "B-PER", "O", "I-LOC"]) == {("PER", 0, 1), ("PER", 2, 2), ("LOC", 4, 4)}
    # Malformed IOB2: a stray I- after O or after another type starts a new entity.
    assert metrics.conll_entities(["O", "I-ORG", "I-ORG", "B-LOC", "I-PER"]) == {("ORG", 1, 2), ("LOC", 3, 3), ("PER", 4, 4)}
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "I-ORG", "I-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["B-ORG", "I-ORG", "O", "O"]]
    scores = metrics.entity_scores(gold, predicted)
    # Gold: PER, LOC, ORG(0-2). Predicted: PER, ORG(3), ORG(0-1). Only PER matches exactly.
    assert (scores["correct_entities"], scores["predicted_entities"], scores["gold_entities"]) == (1, 3, 3)
    assert scores["precision"] == pytest.approx(1 / 3) and scores["f1"] == pytest.approx(1 / 3)
    assert scores["accuracy"] == pytest.approx(6 / 8)
    assert scores["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    _assert_matches_seqeval(gold, predicted)
    with pytest.raises(ValueError, match="predicted sentence 0, token 1: tag 'PER'"):
        metrics.entity_scores([["O", "B-PER"]], [["O", "PER"]])
    with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1 predicted"):
        metrics.entity_scores([["O", "O"]], [["O"]])


def _random_sentence(rng, types, scheme):
    tags = []
    length = int(rng.integers(3, 25))
    previous_type = None
    while len(tags) < length:
        if rng.random() < 0.55:
            tags.append("O")
            previous_type = None
            continue
        entity_type = types[rng.integers(len(types))]
        span = int(rng.integers(1, 4))
        if scheme == "iob1":
            first = "B" if entity_type == previous_type else "I"
        else:
            first = "B"
        tags += [f"{first}-{entity_type}"] + [f"I-{entity_type}"] * (span - 1)
        previous_type = entity_type
    return tags[:length]


def _corrupt(rng, tags, types):
    out = list(tags)
    for j in range(len(out)):
        r = rng.random()
        if r < 0.08:
            out[j] = "O"
        elif r < 0.16:  # wrong type, or a malformed I- start
            out[j] = f"{'BI'[rng.integers(2)]}-{types[rng.integers(len(types))]}"
        elif r < 0.2 and out[j].startswith("B-"):
            out[j] = "I-" + out[j][2:]
    return out


@pytest.mark.parametrize("scheme", ["iob2", "iob1"])
def test_entity_scores_match_seqeval_on_realistic_sequences(scheme):
    rng = np.random.default_rng(7 if scheme == "iob2" else 8)
    types = ["PER", "ORG", "LOC", "MISC"]
    gold = [_random_sentence(rng, types, scheme) for _ in range(300)]
    predicted = [_corrupt(rng, sentence, types) for sentence in gold]
    _assert_matches_seqeval(gold, predicted)
    scores = metrics.entity_scores(gold, predicted)
    assert 0.3 < scores["f1"] < 0.95  # a realistic mix of hits and misses, not a degenerate case


def test_squad_normalisation_exact_match_and_f1():
    assert metrics.normalize_answer("The Cat!") == "cat"
    assert metrics.normalize_answer("  An  apple,   the PIE. ") == "apple pie"
    assert metrics.normalize_answer("theatre") == "theatre"  # articles only as whole words
    assert metrics.squad_exact_match("The Cat!", "cat") == 1.0
    assert metrics.squad_exact_match("cats", "cat") == 0.0
    # ['denver', 'broncos', 'team'] vs ['broncos']: P = 1/3, R = 1 -> F1 = 1/2.
    assert metrics.squad_f1("Denver Broncos team", "the Broncos") == pytest.approx(0.5)
    # Counter overlap: 'new' counts once. P = 2/3, R = 1 -> F1 = 0.8.
    assert metrics.squad_f1("new new york", "New York") == pytest.approx(0.8)
    # ['big', 'red', 'dog'] vs ['red', 'dog', 'barked']: P = R = 2/3.
    assert metrics.squad_f1("the big red dog", "red dog barked") == pytest.approx(2 / 3)
    assert metrics.squad_f1("Paris", "London") == 0.0
    assert metrics.squad_f1("", "") == 0.0 and metrics.squad_f1("", "", version_2=True) == 1.0
    assert metrics.squad_f1("the", "", version_2=True) == 1.0  # 'the' normalises to empty
    assert metrics.squad_f1("Paris", "", version_2=True) == 0.0


def test_squad_v1_scores_take_max_over_answers():
    gold = {
        "q1": ["Denver Broncos", "Broncos", "the Denver Broncos"],
        "q2": ["Santa Clara, California", "Levi's Stadium"],
        "q3": ["gold"],
    }
    predictions = {"q1": "Broncos", "q2": "Levi's Stadium in Santa Clara"}  # q3 unanswered: scores 0
    scores = metrics.squad_v1_scores(gold, predictions)
    # q2 F1: vs "santa clara california": common {santa, clara} -> P 2/5, R 2/3 -> 1/2;
    #        vs "levis stadium": common {levis, stadium} -> P 2/5, R 1 -> 4/7. Max 4/7.
    assert scores["exact_match"] == pytest.approx(100 * 1 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 4 / 7) / 3)


def test_squad_v2_scores_breakdown_and_best_threshold():
    gold = {"q1": ["Paris"], "q2": [], "q3": ["blue whale"]}
    predictions = {"q1": "Paris", "q2": "London", "q3": "whale"}
    na_probs = {"q1": 0.1, "q2": 0.8, "q3": 0.5}
    scores = metrics.squad_v2_scores(gold, predictions, na_probs)
    # Raw: exact (1, 0, 0); F1 (1, 0, 2/3) (q3: P 1, R 1/2).
    assert scores["exact"] == pytest.approx(100 / 3) and scores["f1"] == pytest.approx(100 * (5 / 3) / 3)
    assert scores["total"] == 3 and scores["HasAns_total"] == 2 and scores["NoAns_total"] == 1
    assert scores["HasAns_f1"] == pytest.approx(100 * (5 / 3) / 2) and scores["NoAns_exact"] == 0.0
    # Sweep in na_prob order q1, q3, q2 starting from 1 (the no-answer count):
    # exact 1 -> 2 (thresh 0.1) -> 2 -> 1; F1 1 -> 2 (0.1) -> 2 2/3 (0.5) -> 1 2/3.
    assert scores["best_exact"] == pytest.approx(100 * 2 / 3) and scores["best_exact_thresh"] == 0.1
    assert scores["best_f1"] == pytest.approx(100 * (8 / 3) / 3) and scores["best_f1_thresh"] == 0.5
    # q2's na_prob 0.8 > 0.6: counted as answered '' -> correct for a no-answer question.
    thresholded = metrics.squad_v2_scores(gold, predictions, na_probs, na_prob_thresh=0.6)
    assert thresholded["exact"] == pytest.approx(200 / 3) and thresholded["NoAns_f1"] == 100.0
    no_probs = metrics.squad_v2_scores(gold, {**predictions, "q2": ""})
    assert no_probs["NoAns_exact"] == 100.0 and "best_f1" not in no_probs
    assert metrics.squad_v2_scores({"q": ["the"]}, {"q": ""})["exact"] == 100.0  # gold normalising to '' is dropped
    with pytest.raises(ValueError, match="1 questions have no prediction"):
        metrics.squad_v2_scores(gold, {"q1": "Paris", "q2": ""})
