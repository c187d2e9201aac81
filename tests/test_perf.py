"""bert_jax/perf.py: peak FLOP/s lookup, MFU, and the resident host heap (measured in fresh processes)."""

import json
import subprocess
import sys
import textwrap

import jax
import pytest

from bert_jax import perf
from bert_jax.config import ModelConfig

# Allocates, touches and frees a 64 MiB buffer 20 times, the way XLA:CPU treats a step's large
# temporaries, and reports the minor page faults of the last 10 rounds.
FAULTS_PER_ROUND = textwrap.dedent("""
    import ctypes, json, resource, sys
    sys.path.insert(0, {root!r})
    from bert_jax import perf
    accepted = perf.keep_host_heap_resident() if sys.argv[1] == "resident" else None
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    size = 64 << 20
    def round_trip():
        pointer = libc.malloc(size)
        ctypes.memset(pointer, 1, size)  # touch every page
        libc.free(ctypes.c_void_p(pointer))
    for _ in range(10):
        round_trip()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(10):
        round_trip()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(json.dumps({{"accepted": accepted, "faults_per_round": faults / 10}}))
""")


def _faults(mode: str) -> dict:
    import os

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", FAULTS_PER_ROUND.format(root=root), mode],
                         capture_output=True, text=True, check=True, timeout=120).stdout
    return json.loads(out.splitlines()[-1])


def test_resident_heap_stops_per_round_page_faults():
    default, resident = _faults("default"), _faults("resident")
    pages = (64 << 20) // 4096
    assert default["faults_per_round"] > pages / 2, default  # glibc mmaps and unmaps the buffer each round
    assert resident["accepted"] is True
    assert resident["faults_per_round"] < pages / 100, resident  # the pages stay mapped


def test_peak_flops_by_device_kind_and_mfu():
    class Device:
        def __init__(self, kind):
            self.device_kind = kind

    assert perf.device_peak_flops(Device("NVIDIA H100 80GB HBM3")) == 989e12
    assert perf.device_peak_flops(Device("TPU v5 lite")) == 197e12
    assert perf.device_peak_flops(Device("cpu")) is None
    assert perf.mfu(1e6, ModelConfig.from_size("tiny"), 128, 20) is None  # CPU here: no known peak
    assert jax.default_backend() == "cpu"


def test_auto_mode_keeps_the_heap_resident_only_where_jax_runs_on_cpu(monkeypatch, tmp_path):
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    assert perf.accelerator_expected() is False
    for platforms in ("cuda", "tpu", "cuda,cpu"):
        monkeypatch.setenv("JAX_PLATFORMS", platforms)
        assert perf.accelerator_expected() is True
        assert perf.apply_host_heap("auto") is False  # an accelerator host: glibc left alone
    monkeypatch.delenv("JAX_PLATFORMS")
    monkeypatch.setattr(perf, "_ACCELERATOR_GLOBS", (str(tmp_path / "nvidia[0-9]*"),))
    assert perf.accelerator_expected() is False
    (tmp_path / "nvidia0").touch()
    assert perf.accelerator_expected() is True
    assert perf.apply_host_heap("default") is False
    with pytest.raises(ValueError, match=r"train.host_heap='pinned'; expected one of \('auto', 'resident', 'default'\)"):
        perf.apply_host_heap("pinned")
