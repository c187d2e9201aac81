"""Ahead-of-time checks (bert_jax/aot.py, launch/aot_check.py) of BERT-base on the 8-device CPU mesh.

Only abstract shapes are used (``jax.eval_shape``): the 110M-parameter model is never allocated.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import jax
import optax
import pytest

from bert_jax import aot, optim, run_config, sharding, step_builder, steps
from bert_jax.config import ModelConfig
from bert_jax.tasks.pretraining import PretrainingTask
from bert_jax.trainer import Trainer
from configs import pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GIB = 1024**3


@pytest.mark.parametrize("name, platform, devices, topology, hbm_gib", [
    ("cpu:8", "cpu", 8, None, None),
    ("v4-32", "tpu", 16, "v4:2x2x4", 32),
    ("v4-8", "tpu", 4, "v4:2x2x1", 32),
    ("v5e-16", "tpu", 16, "v5e:4x4", 16),
    ("v5litepod-256", "tpu", 256, "v5e:16x16", 16),
    ("v5p-64", "tpu", 32, "v5p:2x4x4", 95),
    ("v6e-8", "tpu", 8, "v6e:2x4", 32),
    ("tpu:v4:2x2x2", "tpu", 8, "v4:2x2x2", 32),
])
def test_parse_target(name, platform, devices, topology, hbm_gib):
    target = aot.parse_target(name)
    assert (target.platform, target.num_devices, target.topology) == (platform, devices, topology)
    assert target.hbm_bytes == (None if hbm_gib is None else hbm_gib * GIB)
    assert aot.parse_target(name, hbm_gib=80).hbm_bytes == 80 * GIB


@pytest.mark.parametrize("name, message", [
    ("v4-6", "3 chips is not a v4 slice size"),
    ("h100:8", "expected cpu:N, a TPU accelerator type"),
    ("tpu:v9:2x2", "unknown TPU generation 'v9'"),
])
def test_parse_target_rejects_unknown_targets(name, message):
    with pytest.raises(aot.AotError, match=message):
        aot.parse_target(name)


def _base_config(**mesh):
    config = pretrain.get_config("size=base,phase=1")
    config.model.scan_layers = True  # one compiled layer: the same shapes, a fraction of the compile time
    config.train.batch_size = 64
    config.sharding.mesh.data = mesh.get("data", 1)
    config.sharding.mesh.fsdp = mesh.get("fsdp", 1)
    config.sharding.mesh.tensor = mesh.get("tensor", 1)
    return config


def _state_bytes_per_device(**mesh) -> tuple[int, int]:
    """(bytes of the AdamW train state on one device, parameter count) for BERT-base on ``mesh``."""
    config = _base_config(**mesh)
    task = PretrainingTask(run_config.model_config_from(config), max_predictions=20)
    optimizer = optim.make_optimizer(config.optimizer)
    abstract, _ = steps.abstract_train_state(task, optimizer, sharding.make_mesh(config.sharding.mesh),
                                             config.sharding.rules, 1, 128)
    num_params = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(abstract.params))
    return aot.bytes_per_device(abstract), num_params


def test_state_memory_per_device_by_layout():
    replicated, num_params = _state_bytes_per_device(data=8)
    assert 109e6 < num_params < 112e6  # BERT-base with its pretraining heads (~110M)
    # float32 params + AdamW's two float32 moments, a full copy on every device of the data axis.
    assert replicated == pytest.approx(12 * num_params, rel=1e-3)
    fsdp, _ = _state_bytes_per_device(fsdp=8)
    tensor, _ = _state_bytes_per_device(data=4, tensor=2)
    assert replicated / 8 <= fsdp < replicated / 7.5  # all but the small vectors split 8 ways
    assert replicated / 2 <= tensor < replicated / 1.5  # heads, MLP and vocabulary split 2 ways


def test_compiles_base_on_a_mixed_mesh_and_reports_memory():
    report = aot.check(_base_config(data=2, fsdp=2, tensor=2), "cpu:8", hbm_gib=16)
    memory = report.memory
    assert report.mesh == {"data": 2, "fsdp": 2, "tensor": 2} and report.device_kind == "cpu"
    assert memory.state == _state_bytes_per_device(data=2, fsdp=2, tensor=2)[0]
    assert memory.state <= memory.arguments < memory.state + 2**20  # + this device's batch shard
    assert memory.aliased >= 0.99 * memory.state  # the donated state is updated in place
    assert memory.temporaries > 0 and memory.peak < 16 * GIB and report.fits is True
    tokens_per_device = 64 * 128 / 8
    assert report.model_flops_per_device == pytest.approx(
        ModelConfig.from_size("base").train_flops_per_token(128, 20) * tokens_per_device)
    assert "FITS" in aot.format_report(report) and "mesh {'data': 2, 'fsdp': 2, 'tensor': 2}" in aot.format_report(report)


@pytest.mark.parametrize("on_nonfinite, grad_accum_steps", [("skip", 1), ("stop", 2)])
def test_aot_lowers_exactly_the_step_the_trainer_trains(tmp_path, on_nonfinite, grad_accum_steps):
    config = pretrain.get_config("size=tiny,phase=1")
    config.train.batch_size, config.data.max_seq_length, config.data.max_predictions_per_seq = 16, 32, 5
    config.train.on_nonfinite, config.train.grad_accum_steps = on_nonfinite, grad_accum_steps
    config.sharding.mesh.data, config.sharding.mesh.fsdp = 2, -1
    trainer = Trainer(config, step_builder.task_from_config(config), str(tmp_path), seq_len=32)
    try:
        batch = trainer.builder.abstract_batch(16)
        trained = trainer.train_fn.lower(trainer.state, batch).as_text()
        builder, lowered = aot.lower_train_step(config, jax.devices())
    finally:
        trainer.close()
    assert jax.tree.structure(builder.abstract_state) == jax.tree.structure(trainer.state)
    wrapped = isinstance(trainer.state.opt_state, optax.ApplyIfFiniteState)
    assert wrapped == (on_nonfinite == "skip")
    assert lowered.as_text() == trained


@pytest.mark.parametrize("mesh, message, vocab_pad_multiple", [
    ({"data": 2, "tensor": 4}, "dimension size is 30522", 1),  # unpadded, the vocabulary does not split 4 ways
    ({"data": 16}, "has 16 devices but 8 are available", 128),
])
def test_layouts_that_cannot_compile_are_reported(mesh, message, vocab_pad_multiple):
    config = _base_config()
    config.model.vocab_pad_multiple = vocab_pad_multiple
    [result] = aot.check_layouts(config, "cpu:8", [mesh])
    assert isinstance(result, aot.AotError) and message in str(result)


def test_padded_vocabulary_splits_over_tensor_4_and_8():
    """pretrain.py pads 30,522 to 30,592 rows (model.vocab_pad_multiple=128): tensor=4 and 8 now compile.

    BERT-large (16 heads: BERT-base's 12 do not split 8 ways), one layer: the vocabulary is what matters here.
    """
    config = _base_config()
    config.model = pretrain.get_config("size=large").model
    config.model.scan_layers, config.model.num_layers = True, 1
    config.train.batch_size, config.data.max_seq_length, config.data.max_predictions_per_seq = 16, 32, 5
    assert config.model.vocab_pad_multiple == 128
    results = aot.check_layouts(config, "cpu:8", [{"data": 2, "tensor": 4}, {"tensor": 8}])
    for result, tensor in zip(results, (4, 8)):
        assert isinstance(result, aot.AotReport), result
        assert result.mesh["tensor"] == tensor and result.memory.peak > 0


def test_batch_that_the_batch_axes_do_not_divide_is_reported():
    config = _base_config(data=8)
    config.train.batch_size = 12
    with pytest.raises(aot.AotError, match="batch_size=12 / grad_accum_steps=1 is not divisible by the 8"):
        aot.check(config, "cpu:8")


def test_tpu_topology_compiles_without_a_tpu():
    pytest.importorskip("libtpu", reason="TPU targets need libtpu (pip install libtpu==0.0.42)")
    config = pretrain.get_config("size=tiny,phase=1")
    config.train.batch_size, config.sharding.mesh.data, config.sharding.mesh.fsdp = 32, 1, -1
    report = aot.check(config, "v4-8")
    assert report.device_kind == "TPU v4" and report.mesh["fsdp"] == 4 and report.fits is True


def test_command_line_exit_status_says_whether_it_fits(tmp_path):
    env = {**os.environ, "XLA_FLAGS": "", "JAX_PLATFORMS": "cpu"}  # the tool asks for its own devices
    out = tmp_path / "report.json"
    args = [sys.executable, "-m", "launch.aot_check", "--config=configs/pretrain.py:size=tiny", "--target=cpu:4",
            "--config.train.batch_size=8", "--config.sharding.mesh.data=2", "--config.sharding.mesh.fsdp=2",
            "--hbm_gib=0.01", f"--out={out}"]
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "DOES NOT FIT" in result.stdout and "target cpu:4: 4 x cpu" in result.stdout
    saved = json.loads(out.read_text())
    assert saved["fits"] is False and saved["peak_bytes"] > 0.01 * GIB and saved["mesh"]["fsdp"] == 2
    bad = subprocess.run([*args[:-2], "--config.sharding.mesh.tensor=4"], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "AOT check failed" in bad.stderr
