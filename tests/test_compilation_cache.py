"""The persistent compilation cache (``train.compilation_cache_dir``): a second process running the same
steps loads them from the cache instead of compiling them (``launch.pretrain``, two processes in a row)."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from bert_jax import perf
from configs import common
from tests.helpers import ROOT, VOCAB

RUN_CONFIG = f"""
from configs import pretrain


def get_config(arg=None):
    del arg
    c = pretrain.get_config("size=tiny,phase=1")
    c.model.dtype, c.model.num_layers, c.model.max_position_embeddings, c.model.vocab_size = "float32", 1, 32, 30522
    c.tokenizer.vocab_file = {VOCAB!r}
    c.data.sources = [{{"name": "synthetic", "num_documents": 32, "seed": 3, "eval_fraction": 0.25}}]
    c.data.max_seq_length, c.data.max_predictions_per_seq = 32, 4
    c.data.shuffle_buffer_size, c.data.documents_per_group = 8, 4
    c.sharding.mesh.data = 1
    c.train.batch_size, c.train.num_steps, c.train.log_every, c.train.eval_every, c.train.eval_batches = 4, 1, 1, 0, 1
    c.train.progress_bar, c.train.tensorboard, c.train.plot, c.train.async_checkpoint = False, False, False, False
    c.train.compilation_cache_min_compile_secs = 0.0
    return c
"""


def _pretrain(config_file, workdir, cache_dir) -> str:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
    args = [sys.executable, "-m", "launch.pretrain", f"--config={config_file}", f"--workdir={workdir}",
            f"--config.train.compilation_cache_dir={cache_dir}"]
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout + result.stderr


def _hits(log: str) -> tuple[int, int]:
    found = re.findall(r"compilation cache \S+: (\d+) hits, (\d+) misses", log)
    assert found, log[-3000:]
    return tuple(map(int, found[-1]))


def test_a_second_process_loads_the_compiled_steps_from_the_cache(tmp_path):
    config_file = tmp_path / "run.py"
    config_file.write_text(RUN_CONFIG)
    cache_dir = tmp_path / "cache"
    first = _hits(_pretrain(config_file, tmp_path / "first", cache_dir))
    stored = os.listdir(cache_dir)
    assert first[0] == 0 and first[1] >= 2 and len(stored) >= 2, (first, stored)  # train and eval steps stored
    hits, misses = _hits(_pretrain(config_file, tmp_path / "second", cache_dir))  # e.g. the next seed
    assert hits >= 2 and hits >= misses, (hits, misses)


def test_cache_directory_defaults_to_the_workdir_and_can_be_turned_off(tmp_path):
    train = common.train_section()
    assert train.compilation_cache_dir == "auto"
    assert perf.compilation_cache_dir(train, str(tmp_path)) == str(tmp_path / perf.COMPILATION_CACHE_SUBDIR)
    assert perf.compilation_cache_dir(train, "gs://bucket/run") == ""  # remote: name a directory explicitly
    train.compilation_cache_dir = ""
    assert perf.compilation_cache_dir(train, str(tmp_path)) == "" == perf.configure_compilation_cache(train, "x")
