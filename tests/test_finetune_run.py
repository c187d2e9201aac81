"""The fine-tuning entry point end to end: every init_from kind, every task's files, seeds, folds, bad input.

Data are tiny files written in each benchmark's original format (GLUE TSV, SQuAD JSON, CoNLL columns,
SWAG CSV, local JSONL). The encoder is a tiny random "pretraining run" (so runs take seconds), except
for the real-data check, which fine-tunes the pretrained MiniLM on gensim's polarity sentences.
Metrics in the summaries are recomputed from the prediction files the runs wrote.
"""

import csv
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from bert_jax import checkpoint, finetune, finetune_inputs, logs, metrics, run_config
from bert_jax.interop import export, hf_files
from bert_jax.config import ModelConfig
from bert_jax.tasks import Benchmark, finetune_task, get_task
from configs import finetune_glue, finetune_local, finetune_ner, finetune_polarity, finetune_squad, finetune_swag
from data_pipelines.finetune import get_finetune_reader, squad
from data_pipelines.tokenizer import load_tokenizer
from tests.helpers import (CONLL_TRAIN, LOCAL_ROWS, MINILM, ROOT, STSB_HEADER,
                           STSB_ROWS, SWAG_HEADER, SWAG_ROWS, TINY, VOCAB, _jsonl, _mrpc_dir, _read_tsv, _small,
                           _squad_file, _tsv, _write, write_pretraining_workdir)


@pytest.fixture(scope="module")
def pretraining_workdir(tmp_path_factory):
    """A tiny pretraining run: its saved run config (model + tokenizer sections) and one checkpoint."""
    return write_pretraining_workdir(tmp_path_factory.mktemp("pretraining_run"))


# ----------------------------------------------------------------------------------------------------
# init_from: each kind loads the encoder it was given; the head starts fresh


@pytest.mark.parametrize("kind", ["pretraining_workdir", "hugging_face_minilm", "exported"])
def test_init_from_each_kind_loads_the_encoder_it_was_given(kind, pretraining_workdir, tmp_path):
    workdir, pretrained = pretraining_workdir
    if kind == "pretraining_workdir":
        init_from, expected = workdir, pretrained["bert"]
    elif kind == "hugging_face_minilm":
        init_from, expected = MINILM, hf_files.load_hf_checkpoint(MINILM)[1]["bert"]
    else:
        cfg = ModelConfig(**run_config.load_saved_config(workdir)["model"])
        init_from = str(export.export_hf(pretrained, cfg, tmp_path / "exported", vocab_file=VOCAB))
        # The export holds the real vocabulary (the recipe's padding rows are sliced off); this run is unpadded.
        embeddings = {**pretrained["bert"]["embeddings"],
                      "word_embeddings": pretrained["bert"]["embeddings"]["word_embeddings"][:cfg.vocab_size]}
        expected = {**pretrained["bert"], "embeddings": embeddings}
    config, source, tokenizer = finetune.prepare(_small(finetune_glue.get_config("task=mrpc"), init_from, tmp_path))
    assert source.kind == ("checkpoint" if kind == "pretraining_workdir" else "hf")
    assert tokenizer.vocab_size == 30522
    task = get_task("classification", ModelConfig(**config.model), num_labels=2)
    trainer, how, fresh = finetune.init_trainer(config, task, str(tmp_path / "run"), source)
    got = jax.device_get(trainer.state.params)
    trainer.close()
    assert set(got) == {"bert", "classifier"} and fresh == ["classifier"], how
    assert checkpoint.tree_equal(got["bert"], expected)


# ----------------------------------------------------------------------------------------------------
# GLUE TSV: classification (MNLI, several seeds) and regression (STS-B), dev metrics, test submissions


def test_stsb_regression_scores_pearson_spearman_and_writes_floats(pretraining_workdir, tmp_path):
    meta = ["main-captions", "MSRvid", "2012test", "0001", "none", "none"]
    rows = [[i, *meta, a, b, f"{score:.3f}"] for i, (a, b, score) in enumerate(STSB_ROWS)]
    _write(f"{tmp_path}/glue/STS-B/train.tsv", _tsv(STSB_HEADER + ["score"], rows))
    _write(f"{tmp_path}/glue/STS-B/dev.tsv", _tsv(STSB_HEADER + ["score"], rows))
    _write(f"{tmp_path}/glue/STS-B/test.tsv", _tsv(STSB_HEADER, [r[:-1] for r in rows[:3]]))
    config = _small(finetune_glue.get_config("task=stsb"), pretraining_workdir[0], tmp_path / "glue")
    (run,) = finetune.run(config, str(tmp_path / "stsb"))["runs"]
    rows = _read_tsv(run["predictions"]["validation"]["predictions"])
    predicted, gold = [float(r[1]) for r in rows[1:]], [float(r[2]) for r in rows[1:]]
    assert gold == [score for _, _, score in STSB_ROWS]
    recomputed = metrics.glue_metrics("stsb", np.array(predicted), np.array(gold))
    assert run["metrics"]["validation"] == pytest.approx(recomputed, abs=1e-4)
    assert "validation/mse" in run["eval"]  # the task's own loss metric, logged beside Pearson/Spearman
    submission = _read_tsv(run["predictions"]["test"]["submission"])
    assert os.path.basename(run["predictions"]["test"]["submission"]) == "STS-B.tsv" and len(submission) == 4
    assert all(len(r[1].split(".")[1]) == 3 for r in submission[1:])


MNLI_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
               "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
MNLI_ROWS = [
    ("Conceptually cream skimming has two basic dimensions - product and geography.",
     "Product and geography are what make cream skimming work.", "neutral"),
    ("you know during the season and i guess at at your level uh you lose them to the next level",
     "You lose the things to the following level if the people recall.", "entailment"),
    ("One of our number will carry out your instructions minutely.",
     "A member of my team will execute your orders with immense precision.", "entailment"),
    ("How do you know? All this is their information again.", "This information belongs to them.", "entailment"),
    ("yeah i tell you what though if you go price some of those tennis shoes",
     "The tennis shoes have a range of prices.", "neutral"),
    ("my walkman broke so i'm upset now i just have to turn the stereo up real loud",
     "I'm upset that my walkman broke and now I have to turn the stereo up really loud.", "entailment"),
    ("But a few Christian mosaics survive above the apse is the Virgin with the infant Jesus.",
     "Most of the Christian mosaics were destroyed by Muslims.", "neutral"),
    ("The new rights are nice enough", "Everyone really likes the newest benefits", "contradiction"),
]


def test_mnli_runs_each_seed_scores_both_dev_sets_and_writes_both_submissions(pretraining_workdir, tmp_path, capsys):
    def rows(labelled):
        return [[i, 100 + i, f"{100 + i}e", "fiction", "", "", "", "", a, b, *([label, label] if labelled else [])]
                for i, (a, b, label) in enumerate(MNLI_ROWS)]

    labelled_header = MNLI_HEADER + ["label1", "gold_label"]
    for name in ("train", "dev_matched", "dev_mismatched"):
        _write(f"{tmp_path}/glue/MNLI/{name}.tsv", _tsv(labelled_header, rows(True)))
    for name in ("test_matched", "test_mismatched"):
        _write(f"{tmp_path}/glue/MNLI/{name}.tsv", _tsv(MNLI_HEADER, rows(False)))
    config = _small(finetune_glue.get_config("task=mnli"), pretraining_workdir[0], tmp_path / "glue")
    config.seeds = "0,1"
    config.train.progress_bar = True
    summary = finetune.run(config, str(tmp_path / "mnli"))
    printed = capsys.readouterr().err
    for run in summary["runs"]:  # a bar per seed, named after it, and its result line as it finishes
        accuracy = run["metrics"]["validation_matched"]["accuracy"]
        assert f"seed_{run['seed']}:" in printed  # the bar's name
        assert (f"seed_{run['seed']} done at step 1: validation_matched accuracy={accuracy:.4g}; "
                "validation_mismatched accuracy=") in printed
    assert printed.index("seed_0 done") < printed.index("seed_1:")  # seed 0's result before seed 1 trains
    assert [r["seed"] for r in summary["runs"]] == [0, 1]
    assert [os.path.basename(r["workdir"]) for r in summary["runs"]] == ["seed_0", "seed_1"]
    names = ["entailment", "neutral", "contradiction"]
    for run in summary["runs"]:
        assert run["restored"].startswith("params from") and run["initialised_fresh"] == ["classifier"]
        assert run["num_steps"] == 1 and run["step"] == 1  # ceil(8 examples x 1 epoch / 8)
        assert set(run["metrics"]) == {"validation_matched", "validation_mismatched"}  # test splits: no scores
        for split in run["metrics"]:
            table = _read_tsv(run["predictions"][split]["predictions"])
            assert table[0] == ["index", "prediction", "label"]
            assert [r[2] for r in table[1:]] == [label for _, _, label in MNLI_ROWS]
            recomputed = metrics.glue_metrics("mnli", [names.index(r[1]) for r in table[1:]],
                                              [names.index(r[2]) for r in table[1:]])
            assert run["metrics"][split] == pytest.approx(recomputed)
        for split, file_name in (("test_matched", "MNLI-m.tsv"), ("test_mismatched", "MNLI-mm.tsv")):
            submission = _read_tsv(run["predictions"][split]["submission"])
            assert os.path.basename(run["predictions"][split]["submission"]) == file_name
            assert submission[0] == ["index", "prediction"]
            assert [r[0] for r in submission[1:]] == [str(i) for i in range(len(MNLI_ROWS))]
            assert {r[1] for r in submission[1:]} <= set(names)
        assert os.path.isfile(os.path.join(run["workdir"], finetune.SUMMARY_FILE))
    values = [run["metrics"]["validation_matched"]["accuracy"] for run in summary["runs"]]
    stats = summary["mean_std"]["validation_matched/accuracy"]
    assert stats["n"] == 2 and stats["mean"] == pytest.approx(np.mean(values))
    assert stats["std"] == pytest.approx(np.std(values, ddof=1))
    with open(tmp_path / "mnli" / finetune.SUMMARY_FILE, encoding="utf-8") as f:
        assert json.load(f)["mean_std"] == summary["mean_std"]


def test_curves_show_held_out_metrics_beside_the_training_loss():
    records = [{"step": 1, "split": "train", "loss": 0.9}, {"step": 2, "split": "train", "loss": 0.7},
               {"step": 2, "split": "eval", "dev/loss": 0.8, "dev/accuracy": 0.6, "dev/cross_entropy": 0.8,
                "test/loss": 0.85, "test/accuracy": 0.55, "dev/f1": 0.5}]
    panels = logs.curve_panels(records)
    assert panels == [
        ("loss", [("train", "train", "loss"), ("dev", "eval", "dev/loss"), ("test", "eval", "test/loss")]),
        ("held-out accuracy", [("dev", "eval", "dev/accuracy"), ("test", "eval", "test/accuracy")]),
        ("held-out f1", [("dev", "eval", "dev/f1")]),
    ]


# ----------------------------------------------------------------------------------------------------
# SQuAD v1.1 / v2.0: official JSON in, predictions.json / nbest / null_odds out


def test_squad_v2_writes_official_prediction_files_and_scores_them(pretraining_workdir, tmp_path):
    for prefix in ("train", "dev"):
        _squad_file(f"{tmp_path}/squad/{prefix}-v2.0.json", version_2=True)
    config = _small(finetune_squad.get_config("version=v2.0"), pretraining_workdir[0], tmp_path / "squad")
    config.data.featurize_options.update(doc_stride=16, max_query_length=16)  # 48-token rows: several windows
    (run,) = finetune.run(config, str(tmp_path / "squad_run"))["runs"]
    assert run["featurization"]["validation"]["windows"] > run["featurization"]["validation"]["examples"]
    files = run["predictions"]["validation"]
    assert set(files) == {"predictions", "nbest_predictions", "null_odds"}
    with open(files["predictions"], encoding="utf-8") as f:
        predictions = json.load(f)
    examples = squad.read_squad_json(f"{tmp_path}/squad/dev-v2.0.json")
    assert set(predictions) == {e.qas_id for e in examples}
    contexts = {e.qas_id: e.context for e in examples}
    assert all(text in contexts[qid] for qid, text in predictions.items())  # spans of the original context, or ""
    with open(files["nbest_predictions"], encoding="utf-8") as f:
        nbest = json.load(f)
    assert all(sum(c["probability"] for c in nbest[qid]) == pytest.approx(1, abs=1e-5) for qid in nbest)
    with open(files["null_odds"], encoding="utf-8") as f:
        null_odds = json.load(f)
    gold = squad.gold_answers(examples)
    assert run["metrics"]["validation"] == pytest.approx(metrics.squad_v2_scores(gold, predictions, null_odds))
    assert {"HasAns_f1", "NoAns_f1", "best_f1_thresh"} <= set(run["metrics"]["validation"])


def test_squad_v1_logits_pointing_at_the_answers_decode_to_them_and_score_100(tmp_path):
    _squad_file(f"{tmp_path}/dev-v1.1.json", version_2=False)
    config = finetune_squad.get_config("version=v1.1")
    config.data.max_seq_length = 48
    config.data.featurize_options.update(doc_stride=16, max_query_length=16)
    reader = get_finetune_reader("squad/v1.1")
    examples = squad.read_squad_json(f"{tmp_path}/dev-v1.1.json")
    split = finetune_inputs.featurize(config, reader, load_tokenizer({"kind": "wordpiece", "vocab_file": VOCAB}),
                                      "validation", examples, training=False)
    rows = split.features.arrays
    start_logits = np.where(np.arange(48) == rows["start_positions"][:, None], 5.0, -5.0)
    end_logits = np.where(np.arange(48) == rows["end_positions"][:, None], 5.0, -5.0)
    start_logits[:, 0] = end_logits[:, 0] = -5.0  # windows without the answer hold no candidate at [CLS]
    task = finetune_task("span")(ModelConfig(**TINY, vocab_size=64))
    scores, files = task.score(split, {"start_logits": start_logits, "end_logits": end_logits},
                               Benchmark("squad/v1.1", None, dict(config.decode)), str(tmp_path / "out"))
    assert scores == {"exact_match": 100.0, "f1": 100.0}
    with open(files["predictions"], encoding="utf-8") as f:
        assert json.load(f) == {qid: answers[0] for qid, answers in squad.gold_answers(examples).items()}
    assert "null_odds" not in files


# ----------------------------------------------------------------------------------------------------
# CoNLL-2003 and SWAG


def test_conll_writes_conlleval_lines_and_scores_entities(pretraining_workdir, tmp_path):
    _write(f"{tmp_path}/conll/train.txt", CONLL_TRAIN)
    _write(f"{tmp_path}/conll/valid.txt", CONLL_TRAIN)
    config = _small(finetune_ner.get_config(), pretraining_workdir[0], tmp_path / "conll")
    config.data.eval_splits = "validation"
    (run,) = finetune.run(config, str(tmp_path / "ner"))["runs"]
    with open(run["predictions"]["validation"]["predictions"], encoding="utf-8") as f:
        blocks = [block.splitlines() for block in f.read().strip().split("\n\n")]
    assert [len(b) for b in blocks] == [11, 2, 19]
    assert blocks[2][3].split()[:2] == ["Phil", "B-PER"]
    gold = [[line.split()[1] for line in b] for b in blocks]
    predicted = [[line.split()[2] for line in b] for b in blocks]
    expected = metrics.entity_scores(gold, predicted)
    assert run["metrics"]["validation"]["f1"] == pytest.approx(expected["f1"])
    assert run["metrics"]["validation"]["precision"] == pytest.approx(expected["precision"])


def test_swag_multiple_choice_accuracy_from_its_predictions(pretraining_workdir, tmp_path):
    rows = [[f"anetv_{i}", i, f"{c} {s}", c, s, "gold", *endings, label]
            for i, (c, s, endings, label) in enumerate(SWAG_ROWS)]
    for name in ("train.csv", "val.csv"):
        os.makedirs(tmp_path / "swag", exist_ok=True)
        with open(tmp_path / "swag" / name, "w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows([SWAG_HEADER, *rows, *rows])
    config = _small(finetune_swag.get_config(), pretraining_workdir[0], tmp_path / "swag")
    (run,) = finetune.run(config, str(tmp_path / "swag_run"))["runs"]
    table = _read_tsv(run["predictions"]["validation"]["predictions"])[1:]
    assert [r[0] for r in table] == [f"{tmp_path / 'swag' / 'val.csv'}:{line}" for line in range(2, 10)]
    predicted, labels = [int(r[1]) for r in table], [int(r[2]) for r in table]
    assert labels == [row[-1] for row in SWAG_ROWS] * 2
    assert run["metrics"]["validation"]["accuracy"] == pytest.approx(metrics.accuracy(predicted, labels))


# ----------------------------------------------------------------------------------------------------
# Bad input stops the run before training, naming the file and line


def test_bad_input_is_reported_with_file_and_line(pretraining_workdir, tmp_path):
    _write(f"{tmp_path}/local/train.jsonl", _jsonl(LOCAL_ROWS))
    bad_row = json.dumps({"text": "ok", "label": "meh"}) + "\n"
    _write(f"{tmp_path}/local/validation.jsonl", _jsonl(LOCAL_ROWS[:2]) + bad_row)
    config = _small(finetune_local.get_config(), pretraining_workdir[0], tmp_path / "local")
    with pytest.raises(ValueError, match=r"validation.jsonl:3: label 'meh' is not one of \['neg', 'pos'\]"):
        finetune.run(config, str(tmp_path / "bad_label"))
    glue_dir = _mrpc_dir(tmp_path / "glue")
    with open(f"{glue_dir}/MRPC/dev.tsv", "a", encoding="utf-8") as f:
        f.write("1\t5\tonly three columns\n")
    command = [sys.executable, "-m", "launch.finetune", "--config=configs/finetune_glue.py:task=mrpc",
               f"--config.train.init_from={pretraining_workdir[0]}", f"--config.data.data_dir={glue_dir}",
               "--config.data.max_seq_length=48",
               f"--workdir={tmp_path / 'bad_row'}"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 2  # an expected error: one line, exit status 2 (bert_jax/entry.py)
    assert "MRPC/dev.tsv:8: expected 5 tab-separated columns, got 3" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "bad_row" / "checkpoints")  # stopped before training


# ----------------------------------------------------------------------------------------------------
# The real-data check: pretrained MiniLM on gensim's polarity sentences, held-out fold


def test_minilm_fine_tuned_on_polarity_beats_chance_on_a_held_out_fold(tmp_path):
    config = finetune_polarity.get_config()  # measured: 0.825 (33 of 40) held-out accuracy on fold 0
    config.data.folds = "0"
    config.data.max_seq_length = 48  # cut 6% of the sentences a little, for speed
    config.train.num_epochs = 4.0  # 40 steps (the documented run: 6 epochs, length 64)
    config.train.update(async_checkpoint=False, tensorboard=False, plot=False, checkpoint_every=1000)
    summary = finetune.run(config, str(tmp_path / "polarity"))
    (run,) = summary["runs"]
    assert run["fold"] == "fold_0" and run["train_examples"] == 160
    table = _read_tsv(run["predictions"]["heldout"]["predictions"])[1:]
    assert len(table) == 40 and sorted(r[2] for r in table).count("pos") == 20  # stratified fold
    accuracy = np.mean([r[1] == r[2] for r in table])
    assert run["metrics"]["heldout"]["accuracy"] == pytest.approx(accuracy)
    assert accuracy >= 0.7, f"held-out accuracy {accuracy:.3f}"
