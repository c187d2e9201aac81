"""The shell launchers in launch/: the exact commands they issue, printed (dry run) and executed
against fake ``gcloud`` / ``srun`` / ``scontrol`` / ``python`` executables that log their argv.

The fake gcloud keeps a tiny model of a TPU VM (a state file) so the spot/preemptible loop of
``tpu_vm.sh train`` meets a real sequence: the VM is created, the run is preempted, the VM is deleted
and recreated, the run finishes and the VM is deleted.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tarfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU_VM, MULTI_GPU, SLURM = (os.path.join(ROOT, "launch", name) for name in ("tpu_vm.sh", "multi_gpu.sh", "slurm.sbatch"))
TPU = ["gcloud", "compute", "tpus", "tpu-vm"]
ZONE = "--zone=us-central2-b"
TRAIN_ARGS = ["--config=configs/pretrain.py:size=base,phase=1", "--config.train.init_from=gs://b/with space"]
REMOTE_TRAIN = ("--command=cd bert-jax && python3 -m launch.pretrain --workdir=gs://bucket/run "
                "--config=configs/pretrain.py:size=base,phase=1 '--config.train.init_from=gs://b/with space'")
REMOTE_INSTALL = ("--command=mkdir -p bert-jax && tar -xzf bert-jax.tgz -C bert-jax && cd bert-jax && "
                  "python3 -m pip install -q -r requirements.txt 'jax[tpu]==0.10.2' gcsfs==2026.10.1")

# A fake executable: logs {"prog", "argv", "env"} as one JSON line to $FAKE_LOG, then acts out a scenario.
FAKE = r'''#!{python}
import json, os, sys, time
prog, argv = os.path.basename(sys.argv[0]), sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps({{"prog": prog, "argv": argv, "env": {{k: os.environ.get(k) for k in
        ("BERT_JAX_COORDINATOR", "XLA_FLAGS")}}}}) + "\n")
state_dir = os.environ.get("FAKE_STATE", "")
def path(name):
    return os.path.join(state_dir, name)
def read(name, default=""):
    return open(path(name)).read() if os.path.exists(path(name)) else default
if prog == "gcloud" and argv[:3] == ["compute", "tpus", "tpu-vm"]:
    verb = argv[3]
    if verb == "describe":
        if not read("vm"):
            sys.exit("ERROR: NOT_FOUND")
        print(read("vm"))
    elif verb == "create":
        open(path("vm"), "w").write("READY")
    elif verb == "delete":
        os.remove(path("vm"))
    elif verb == "ssh" and "launch.pretrain" in argv[-1]:
        outcome = read("outcomes").split()
        open(path("outcomes"), "w").write(" ".join(outcome[1:]))
        if outcome and outcome[0] == "preempt":
            open(path("vm"), "w").write("PREEMPTED")
            sys.exit(255)
        if outcome and outcome[0] == "crash":
            sys.exit(1)
        open(path("final_metrics.json"), "w").write('{{"step": 10, "preempted": false}}')
elif prog == "gcloud" and argv[:2] == ["storage", "cat"]:
    if not read("final_metrics.json"):
        sys.exit(1)
    print(read("final_metrics.json"))
elif prog == "scontrol":
    print("gpu007\ngpu008")
elif prog == "fakepython":
    if "--process_id=1" in argv and os.environ.get("FAKE_FAIL_PROCESS_1"):
        print("process 1 fails"); sys.exit(3)
    if "--process_id=0" in argv and os.environ.get("FAKE_FAIL_PROCESS_1"):
        time.sleep(60)  # would hang in a collective; the launcher must stop it
    print("trained", *argv)
'''


@pytest.fixture()
def fakes(tmp_path):
    """A PATH with fake gcloud, srun, scontrol and fakepython; returns (env, read_calls, state_dir)."""
    bin_dir, state = tmp_path / "bin", tmp_path / "state"
    bin_dir.mkdir()
    state.mkdir()
    for name in ("gcloud", "srun", "scontrol", "fakepython"):
        script = bin_dir / name
        script.write_text(FAKE.format(python=sys.executable))
        script.chmod(0o755)
    log = tmp_path / "calls.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "XLA_", "BERT_JAX_", "CUDA_"))}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env['PATH']}", FAKE_LOG=str(log), FAKE_STATE=str(state),
               TMPDIR=str(tmp_path))

    def calls(prog: str | None = None) -> list[list[str]]:
        if not log.exists():
            return []
        records = [json.loads(line) for line in log.read_text().splitlines()]
        return [[r["prog"], *r["argv"]] for r in records if prog is None or r["prog"] == prog]

    return env, calls, state


def _printed(stdout: str) -> list[list[str]]:
    """The commands a dry run printed, as the shell would split them."""
    return [shlex.split(line) for line in stdout.splitlines()]


def _run(argv, env, check=True, **kwargs):
    result = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, **kwargs)
    if check and result.returncode:
        raise AssertionError(f"{argv} exited {result.returncode}:\n{result.stdout}\n{result.stderr}")
    return result


# --- tpu_vm.sh ------------------------------------------------------------------------------------

def _tpu_train(env, *extra):
    return [TPU_VM, "train", "--name=bert", ZONE, "--accelerator_type=v4-32", "--spot", "--workdir=gs://bucket/run",
            "--retry_wait_s=0", *extra, "--", *TRAIN_ARGS]


def _one_attempt(tarball):
    return [
        [*TPU, "create", "bert", ZONE, "--accelerator-type=v4-32", "--version=tpu-ubuntu2204-base", "--spot"],
        [*TPU, "scp", tarball, "bert:bert-jax.tgz", ZONE, "--worker=all"],
        [*TPU, "ssh", "bert", ZONE, "--worker=all", REMOTE_INSTALL],
        [*TPU, "ssh", "bert", ZONE, "--worker=all", REMOTE_TRAIN],
    ]


def test_tpu_vm_dry_run_prints_one_attempt_of_the_spot_loop(fakes, tmp_path):
    env, calls, _ = fakes
    result = _run(_tpu_train(env, "--dry_run"), env)
    tarball = str(tmp_path / "bert-jax-bert.tgz")
    create, scp, install, train = _one_attempt(tarball)
    package = ["bash", "-c", f"cd {ROOT} && git ls-files -z -co --exclude-standard | tar --null -czf {tarball} -T -"]
    assert _printed(result.stdout) == [
        create, package, scp, install, train, ["gcloud", "storage", "cat", "gs://bucket/run/final_metrics.json"],
        [*TPU, "delete", "bert", ZONE, "--quiet"]]
    assert calls() == [] and not os.path.exists(tarball)  # nothing ran


def test_tpu_vm_spot_loop_recreates_a_preempted_vm_and_resumes(fakes, tmp_path):
    env, calls, state = fakes
    (state / "outcomes").write_text("preempt ok")
    result = _run(_tpu_train(env), env)
    tarball = str(tmp_path / "bert-jax-bert.tgz")
    describe = [*TPU, "describe", "bert", ZONE, "--format=value(state)"]
    delete = [*TPU, "delete", "bert", ZONE, "--quiet"]
    final = ["gcloud", "storage", "cat", "gs://bucket/run/final_metrics.json"]
    assert calls() == [
        describe, *_one_attempt(tarball), final, describe, delete,  # preempted: delete, then a new VM
        describe, *_one_attempt(tarball), final, delete]  # finished: delete
    assert "VM state PREEMPTED: preempted" in result.stderr and "attempt 2 of 20" in result.stderr
    with tarfile.open(tarball) as archive:  # the checkout's files, without the virtualenv
        names = archive.getnames()
    assert "launch/tpu_vm.sh" in names and "bert_jax/distributed.py" in names
    assert not any(name.startswith(".venv") for name in names)


def test_tpu_vm_spot_loop_stops_when_the_run_fails_on_a_healthy_vm(fakes):
    env, calls, state = fakes
    (state / "outcomes").write_text("crash")
    result = _run(_tpu_train(env), env, check=False)
    assert result.returncode == 1 and "not a preemption" in result.stderr
    assert [call[4] for call in calls("gcloud") if call[1] == "compute"][-1] == "describe"  # VM kept
    assert (state / "vm").read_text() == "READY"


def test_tpu_vm_gives_up_after_max_attempts(fakes):
    env, calls, state = fakes
    (state / "outcomes").write_text("preempt preempt preempt")
    result = _run(_tpu_train(env, "--max_attempts=2"), env, check=False)
    assert result.returncode == 1 and "gave up after 2 attempts" in result.stderr
    assert sum(call[4] == "create" for call in calls("gcloud") if call[1] == "compute") == 2


def test_tpu_vm_single_commands(fakes):
    env, calls, _ = fakes
    location = [ZONE, "--project=proj"]
    for command in ("create", "stop", "delete", "logs", "start"):
        _run([TPU_VM, command, "--name=bert", *location, "--preemptible", "--accelerator_type=v5litepod-16",
              "--runtime_version=v2-alpha-tpuv5-lite", "--", "--config=configs/demo.py"], env)
    assert calls() == [
        [*TPU, "create", "bert", *location, "--accelerator-type=v5litepod-16", "--version=v2-alpha-tpuv5-lite",
         "--preemptible"],
        [*TPU, "stop", "bert", *location],
        [*TPU, "delete", "bert", *location, "--quiet"],
        [*TPU, "ssh", "bert", *location, "--worker=0", "--command=tail -n 200 -F $HOME/train.log"],
        [*TPU, "ssh", "bert", *location, "--worker=all", "--command=cd bert-jax && nohup python3 -m launch.pretrain "
         "--config=configs/demo.py > $HOME/train.log 2>&1 < /dev/null &"],
    ]
    _run([TPU_VM, "run", "--name=bert", ZONE, "--module=launch.sweep", "--workdir=gs://b/ignored", "--",
          "--sweep=configs/sweeps/ablations.py", "--root=gs://b/ablations"], env)
    assert calls()[-1] == [*TPU, "ssh", "bert", ZONE, "--worker=all", "--command=cd bert-jax && python3 -m launch.sweep "
                           "--sweep=configs/sweeps/ablations.py --root=gs://b/ablations"]


def test_tpu_vm_rejects_bad_usage(fakes):
    env, calls, _ = fakes
    local = _run([TPU_VM, "train", ZONE, "--workdir=/tmp/run"], env, check=False)
    assert local.returncode == 2 and "must be a gs:// path" in local.stderr
    no_zone = _run([TPU_VM, "create"], {**env, "ZONE": ""}, check=False)
    assert no_zone.returncode == 2 and "--zone" in no_zone.stderr
    unknown = _run([TPU_VM, "create", ZONE, "--acelerator_type=v4-8"], env, check=False)
    assert unknown.returncode == 2 and "unknown option --acelerator_type=v4-8" in unknown.stderr
    assert calls() == []


# --- multi_gpu.sh ---------------------------------------------------------------------------------

GPU_XLA_FLAGS = "--xla_gpu_enable_latency_hiding_scheduler=true --xla_gpu_enable_triton_gemm=false"
EXPORT_XLA = ["export", f"XLA_FLAGS={GPU_XLA_FLAGS}"]

def _per_process(num_processes, process_id, gpus=None):
    args = ["-m", "launch.pretrain", "--coordinator_address=localhost:9911", f"--num_processes={num_processes}",
            f"--process_id={process_id}"]
    return args + ([f"--local_device_ids={gpus}"] if gpus else []) + ["--config=configs/demo.py", "--workdir=w"]


def test_multi_gpu_one_process_and_one_per_gpu_pair(fakes, tmp_path):
    env = {**fakes[0], "PYTHON": "fakepython"}
    args = ["--port=9911", f"--log_dir={tmp_path / 'logs'}"]
    single = _run([MULTI_GPU, "--dry_run", "--", "--config=configs/demo.py", "--workdir=w"], env)
    assert _printed(single.stdout) == [EXPORT_XLA, ["fakepython", "-m", "launch.pretrain", "--config=configs/demo.py",
                                                    "--workdir=w"]]
    dry = _run([MULTI_GPU, "--processes=2", "--gpus=0,1,2,3", "--dry_run", *args, "--",
                "--config=configs/demo.py", "--workdir=w"], env)
    assert _printed(dry.stdout) == [EXPORT_XLA] + [
        ["fakepython", *_per_process(2, i, gpus)] for i, gpus in ((0, "0,1"), (1, "2,3"))]
    ran = _run([MULTI_GPU, "--processes=2", *args, "--", "--config=configs/demo.py", "--workdir=w"],
               {**env, "CUDA_VISIBLE_DEVICES": "4,5"})
    assert sorted(fakes[1]("fakepython")) == [["fakepython", *_per_process(2, i, str(i))] for i in (0, 1)]
    assert shlex.split(ran.stderr.splitlines()[0]) == ["+", *EXPORT_XLA]  # the environment it set...
    assert {r["env"]["XLA_FLAGS"] for r in map(json.loads, open(env["FAKE_LOG"]))} == {GPU_XLA_FLAGS}  # ...and used
    assert {r for r in os.listdir(tmp_path / "logs")} == {"process_0.log", "process_1.log"}
    assert "trained" in (tmp_path / "logs" / "process_1.log").read_text()
    uneven = _run([MULTI_GPU, "--processes=2", "--gpus=0,1,2", "--", "x"], env, check=False)
    assert uneven.returncode == 2 and "do not split evenly over 2 processes" in uneven.stderr


def test_multi_gpu_stops_every_process_when_one_fails(fakes, tmp_path):
    env = {**fakes[0], "PYTHON": "fakepython", "FAKE_FAIL_PROCESS_1": "1", "XLA_FLAGS": "--xla_mine"}
    start = time.monotonic()
    result = _run([MULTI_GPU, "--processes=2", f"--log_dir={tmp_path}", "--", "--config=x"], env, check=False)
    assert result.returncode == 1 and "failed; stopping the others" in result.stderr
    assert time.monotonic() - start < 30  # process 0 (sleeping 60 s) was stopped
    assert {r["env"]["XLA_FLAGS"] for r in map(json.loads, open(env["FAKE_LOG"]))} == {"--xla_mine"}


# --- slurm.sbatch ---------------------------------------------------------------------------------

def _slurm_env(env):
    return {**env, "SLURM_JOB_ID": "123456", "SLURM_JOB_NODELIST": "gpu[007-008]", "SLURM_SUBMIT_DIR": "/shared/bert-jax"}


def test_slurm_runs_srun_with_the_first_node_as_coordinator(fakes):
    env, calls, _ = fakes
    args = ["--config=configs/pretrain.py:size=large,phase=1", "--workdir=/shared/runs/large"]
    srun = ["srun", "--kill-on-bad-exit=1", "--export=ALL", "--chdir=/shared/bert-jax", "python3", "-m",
            "launch.pretrain", *args]
    dry = _run(["bash", SLURM, *args], {**_slurm_env(env), "DRY_RUN": "1"})
    assert _printed(dry.stdout) == [["export", "BERT_JAX_COORDINATOR=gpu007:23456"], EXPORT_XLA, srun]
    assert "coordinator gpu007:23456" in dry.stderr  # 20000 + job id % 20000
    assert calls("srun") == []
    _run(["bash", SLURM, *args], {**_slurm_env(env), "COORDINATOR_PORT": "7000"})
    records = [json.loads(line) for line in open(env["FAKE_LOG"])]
    assert [[r["prog"], *r["argv"]] for r in records] == [
        ["scontrol", "show", "hostnames", "gpu[007-008]"], ["scontrol", "show", "hostnames", "gpu[007-008]"], srun]
    assert records[-1]["env"] == {"BERT_JAX_COORDINATOR": "gpu007:7000", "XLA_FLAGS": GPU_XLA_FLAGS}


def test_slurm_dry_run_outside_an_allocation_prints_what_the_job_runs(fakes):
    """The printed lines, run by a shell inside an allocation, make the same srun call with the same
    environment as the script itself there."""
    env, calls, _ = fakes
    args = ["--config=configs/pretrain.py:size=large,phase=1", "--workdir=/shared/runs/with space"]
    dry = _run(["bash", SLURM, *args], {**env, "DRY_RUN": "1"})
    assert "not in a SLURM allocation" in dry.stderr and calls() == []
    lines = dry.stdout.splitlines()
    assert len(lines) == 3 and lines[0].startswith("export BERT_JAX_COORDINATOR=") and lines[2].startswith("srun ")
    _run(["bash", "-c", dry.stdout], _slurm_env(env))
    _run(["bash", SLURM, *args], _slurm_env(env))
    records = [json.loads(line) for line in open(env["FAKE_LOG"])]
    srun_calls = [r for r in records if r["prog"] == "srun"]
    assert len(srun_calls) == 2 and srun_calls[0] == srun_calls[1]
    assert srun_calls[0]["argv"][:4] == ["--kill-on-bad-exit=1", "--export=ALL", "--chdir=/shared/bert-jax", "python3"]
    assert srun_calls[0]["argv"][-1] == "--workdir=/shared/runs/with space"
    assert srun_calls[0]["env"] == {"BERT_JAX_COORDINATOR": "gpu007:23456", "XLA_FLAGS": GPU_XLA_FLAGS}


def test_slurm_script_outside_an_allocation_says_how_to_submit(fakes):
    env, calls, _ = fakes
    result = _run(["bash", SLURM, "--config=x"], env, check=False)
    assert result.returncode != 0 and "sbatch launch/slurm.sbatch" in result.stderr and "DRY_RUN=1" in result.stderr
    with open(SLURM) as f:
        directives = [line.split()[1] for line in f if line.startswith("#SBATCH")]
    assert {"--ntasks-per-node=8", "--gpus-per-node=8", "--signal=TERM@300", "--requeue"} <= set(directives)
