"""``bert_jax.predict`` on each task kind: a tiny fine-tuned run predicts what its own evaluation wrote.

Each run fine-tunes the tiny random "pretraining run" of ``tests/test_finetune_run.py`` for one step on
that module's real-format files (GLUE TSV, SQuAD JSON, CoNLL columns, SWAG CSV). ``predict`` then reads
the same dev examples as JSON lines or TSV and must give back, example by example, the predictions the
run's final evaluation wrote into its prediction files.
"""

import csv
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from bert_jax import finetune, predict
from configs import finetune_glue, finetune_ner, finetune_squad, finetune_swag
from data_pipelines.finetune import conll, get_finetune_reader, multiple_choice, squad
from tests.helpers import (CONLL_TRAIN, ROOT, STSB_HEADER, STSB_ROWS, SWAG_HEADER, SWAG_ROWS, _mrpc_dir, _read_tsv,
                           _small, _squad_file, _tsv, _write, write_pretraining_workdir)


@pytest.fixture(scope="module")
def pretraining_workdir(tmp_path_factory):
    """A tiny pretraining run: its saved run config (model + tokenizer sections) and one checkpoint."""
    return write_pretraining_workdir(tmp_path_factory.mktemp("pretraining_run"))



def _run(config, workdir):
    (run,) = finetune.run(config, str(workdir))["runs"]
    return run


def test_classification_labels_and_probabilities_match_the_runs_predictions(pretraining_workdir, tmp_path):
    glue_dir = _mrpc_dir(tmp_path / "glue")
    run = _run(_small(finetune_glue.get_config("task=mrpc"), pretraining_workdir[0], glue_dir), tmp_path / "mrpc")
    table = _read_tsv(run["predictions"]["validation"]["predictions"])[1:]
    dev = _read_tsv(f"{glue_dir}/MRPC/dev.tsv")[1:]
    inputs = tmp_path / "pairs.jsonl"
    inputs.write_text("".join(json.dumps({"text": r[3], "text_b": r[4]}) + "\n" for r in dev))
    records = predict.predict(run["workdir"], str(inputs), batch_size=4, progress=False)
    assert [r["label"] for r in records] == [r[1] for r in table]
    names = get_finetune_reader("glue/mrpc").label_names()
    assert all(list(r["probabilities"]) == list(names) for r in records)
    assert all(sum(r["probabilities"].values()) == pytest.approx(1.0) for r in records)
    assert all(r["probabilities"][r["label"]] == max(r["probabilities"].values()) for r in records)
    assert [r["id"] for r in records] == list(range(len(dev)))

    # The command line: TSV on stdin, JSON lines on stdout.
    command = [sys.executable, "-m", "launch.predict", f"--init_from={run['workdir']}", "--input=-", "--batch_size=8"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                            input="".join(f"{r[3]}\t{r[4]}\n" for r in dev),
                            env={**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"})
    assert result.returncode == 0, result.stderr[-2000:]
    printed = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["label"] for r in printed] == [r[1] for r in table]
    assert "predict" in result.stderr  # the progress bar

    bad = io.StringIO('{"text": "fine", "text_b": "pair"}\n\n{"text_b": "no first text"}\n')
    with pytest.raises(ValueError, match=r"^<input>:3: needs a non-empty 'text' or 'text_a' or 'sentence1' field$"):
        predict.predict(run["workdir"], bad, progress=False)


def test_regression_scores_match_the_runs_predictions(pretraining_workdir, tmp_path):
    meta = ["main-captions", "MSRvid", "2012test", "0001", "none", "none"]
    rows = [[i, *meta, a, b, f"{score:.3f}"] for i, (a, b, score) in enumerate(STSB_ROWS)]
    _write(f"{tmp_path}/glue/STS-B/train.tsv", _tsv(STSB_HEADER + ["score"], rows))
    _write(f"{tmp_path}/glue/STS-B/dev.tsv", _tsv(STSB_HEADER + ["score"], rows))
    config = _small(finetune_glue.get_config("task=stsb"), pretraining_workdir[0], tmp_path / "glue")
    config.data.test_splits = ""
    run = _run(config, tmp_path / "stsb")
    expected = [float(r[1]) for r in _read_tsv(run["predictions"]["validation"]["predictions"])[1:]]
    inputs = tmp_path / "pairs.tsv"
    inputs.write_text("".join(f"{a}\t{b}\n" for a, b, _ in STSB_ROWS))
    records = predict.predict(run["workdir"], str(inputs), progress=False)
    np.testing.assert_allclose([r["score"] for r in records], expected, rtol=1e-5, atol=1e-6)


def test_squad_answers_match_the_runs_predictions_json(pretraining_workdir, tmp_path):
    for prefix in ("train", "dev"):
        _squad_file(f"{tmp_path}/squad/{prefix}-v1.1.json", version_2=False)
    config = _small(finetune_squad.get_config("version=v1.1"), pretraining_workdir[0], tmp_path / "squad")
    config.data.featurize_options.update(doc_stride=16, max_query_length=16)  # several windows per question
    run = _run(config, tmp_path / "squad_run")
    with open(run["predictions"]["validation"]["predictions"], encoding="utf-8") as f:
        expected = json.load(f)
    examples = squad.read_squad_json(f"{tmp_path}/squad/dev-v1.1.json")
    records = predict.predict(run["workdir"], [{"id": e.qas_id, "question": e.question, "context": e.context}
                                               for e in examples], progress=False)
    assert {r["id"]: r["answer"] for r in records} == expected
    assert all(r["answer"] in e.context and 0 < r["probability"] <= 1 for r, e in zip(records, examples))


def test_ner_tags_per_word_match_the_runs_conll_file(pretraining_workdir, tmp_path):
    _write(f"{tmp_path}/conll/train.txt", CONLL_TRAIN)
    _write(f"{tmp_path}/conll/valid.txt", CONLL_TRAIN)
    config = _small(finetune_ner.get_config(), pretraining_workdir[0], tmp_path / "conll")
    config.data.eval_splits = "validation"
    run = _run(config, tmp_path / "ner")
    with open(run["predictions"]["validation"]["predictions"], encoding="utf-8") as f:
        expected = [[line.split()[2] for line in block.splitlines()] for block in f.read().strip().split("\n\n")]
    sentences = conll.read_conll_file(f"{tmp_path}/conll/valid.txt")
    inputs = tmp_path / "sentences.txt"
    inputs.write_text("".join(" ".join(s.words) + "\n" for s in sentences))
    records = predict.predict(run["workdir"], str(inputs), progress=False)
    assert [r["words"] for r in records] == [list(s.words) for s in sentences]
    assert [r["tags"] for r in records] == expected
    assert {t for r in records for t in r["tags"]} <= set(conll.NER_TAGS)


def test_multiple_choice_picks_match_the_runs_predictions(pretraining_workdir, tmp_path):
    rows = [[f"anetv_{i}", i, f"{c} {s}", c, s, "gold", *endings, label]
            for i, (c, s, endings, label) in enumerate(SWAG_ROWS)]
    os.makedirs(tmp_path / "swag", exist_ok=True)
    for name in ("train.csv", "val.csv"):
        with open(tmp_path / "swag" / name, "w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows([SWAG_HEADER, *rows, *rows])
    run = _run(_small(finetune_swag.get_config(), pretraining_workdir[0], tmp_path / "swag"), tmp_path / "swag_run")
    expected = [int(r[1]) for r in _read_tsv(run["predictions"]["validation"]["predictions"])[1:]]
    examples = multiple_choice.read_swag_split(str(tmp_path / "swag"), "validation")
    inputs = tmp_path / "choices.tsv"
    inputs.write_text("".join("\t".join([e.context, e.question, *e.endings]) + "\n" for e in examples))
    records = predict.predict(run["workdir"], str(inputs), progress=False)
    assert [r["choice"] for r in records] == expected
    assert all(len(r["probabilities"]) == 4 and sum(r["probabilities"]) == pytest.approx(1.0) for r in records)


def test_a_pretraining_run_is_refused_naming_what_it_lacks(pretraining_workdir):
    with pytest.raises(ValueError, match=r"task 'pretraining' is not a fine-tuning task; predict needs a fine-tuned"):
        predict.predict(pretraining_workdir[0], [{"text": "a"}], progress=False)
