"""Longformer vs BERT (full attention): forward + backward time and compiled peak temporary memory vs S.

The same model size, batch and MLM objective (the loss over ``--predictions`` masked positions) for both;
dropout off (so BERT runs its fused attention, which still forms ``[B, N, S, S]`` on CPU). Memory is
XLA's ``compiled.memory_analysis().temp_size_in_bytes`` of the jitted gradient (what the step needs beside
parameters and inputs); time is the median of ``--steps`` timed gradient steps after one warm-up.

    python -m bench.bench_longformer --size=mini --seq_lens=1024,2048,4096 --window=512 --steps=3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from bert_jax.config import ModelConfig
from bert_jax.heads import PreTrainingModel


def measure(arch: str, size: str, seq_len: int, window: int, batch: int, predictions: int, steps: int) -> dict:
    extra = dict(attention_window=(window,), max_position_embeddings=seq_len + 1) if arch == "longformer" else dict(
        max_position_embeddings=seq_len)
    cfg = ModelConfig.from_size(size, architecture=arch, vocab_size=30522, hidden_dropout=0.0, attention_dropout=0.0,
                                **extra)
    model = PreTrainingModel(cfg)
    rng = np.random.default_rng(0)
    data = {"input_ids": rng.integers(5, cfg.vocab_size, (batch, seq_len)), "segment_ids": np.zeros((batch, seq_len)),
            "sequence_ids": np.ones((batch, seq_len)), "input_mask": np.ones((batch, seq_len)),
            "position_ids": np.broadcast_to(np.arange(seq_len), (batch, seq_len)),
            "masked_lm_positions": rng.integers(0, seq_len, (batch, predictions))}
    data = {k: jnp.asarray(v, jnp.int32) for k, v in data.items()}
    targets = jnp.asarray(rng.integers(5, cfg.vocab_size, (batch, predictions)), jnp.int32)
    params = jax.jit(model.init)(jax.random.key(0), data)

    def loss(p):
        logits = model.apply(p, data)["mlm_logits"]
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), targets[..., None], axis=-1))

    step = jax.jit(jax.value_and_grad(loss))
    compiled = step.lower(params).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    jax.block_until_ready(compiled(params))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params))
        times.append(time.perf_counter() - start)
    return {"arch": arch, "size": size, "seq_len": seq_len, "window": window if arch == "longformer" else None,
            "batch": batch, "temp_mib": round(temp / 2**20, 1), "step_s": round(statistics.median(times), 3),
            "backend": jax.default_backend(), "load": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="mini")
    parser.add_argument("--seq_lens", default="1024,2048,4096")
    parser.add_argument("--window", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--predictions", type=int, default=20)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--archs", default="bert,longformer")
    args = parser.parse_args()
    for seq_len in map(int, args.seq_lens.split(",")):
        for arch in args.archs.split(","):
            print(json.dumps(measure(arch, args.size, seq_len, args.window, args.batch, args.predictions,
                                     args.steps)), flush=True)


if __name__ == "__main__":
    main()
