"""The two train steps ``bench/bench_tpu_aot.py`` compiles for a compile-only TPU target, and what it reads
from a compiled step. Each function here runs inside one worker process (``bench_tpu_aot --worker``).

* ``ours``: the run's train step exactly as the trainer builds it (``aot.lower_train_step`` on
  ``configs/pretrain.py``), bf16 compute, fp32 params and AdamW moments.
* ``peer``: transformers 4.57's ``FlaxBertForPreTraining`` (its public ``__call__`` with ``train=True``,
  ``dtype=bfloat16``: fp32 params, bf16 compute), the loss of Hugging Face's ``run_mlm_flax`` example
  restricted to the same objective as ours: MLM cross-entropy at the masked positions (gathered from its
  ``[B, S, V]`` logits, weighted by ``masked_lm_weights``) + NSP cross-entropy, and optax AdamW with the
  same hyperparameters and weight-decay mask (no decay on LayerNorm and biases), clipping at global norm
  1.0. Data-parallel: parameters and moments replicated, the batch split over every device, as in the
  Hugging Face Flax examples. transformers 4.57 is imported from ``PYTHONPATH`` (the parent sets it).

Both are lowered from ``jax.ShapeDtypeStruct``s (nothing allocated) and compiled for the same devices.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

GIB = 1024**3


def compiled_stats(compiled: Any) -> dict[str, float]:
    """FLOPs, bytes accessed and per-device memory of a compiled step (the TPU compiler's own figures)."""
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    memory = compiled.memory_analysis()
    peak = (memory.argument_size_in_bytes + memory.output_size_in_bytes - memory.alias_size_in_bytes
            + memory.temp_size_in_bytes + memory.generated_code_size_in_bytes)
    return {"flops": float(cost.get("flops", 0.0)), "bytes_accessed": float(cost.get("bytes accessed", 0.0)),
            "transcendentals": float(cost.get("transcendentals", 0.0)),
            "argument_bytes": int(memory.argument_size_in_bytes), "output_bytes": int(memory.output_size_in_bytes),
            "alias_bytes": int(memory.alias_size_in_bytes), "temp_bytes": int(memory.temp_size_in_bytes),
            "code_bytes": int(memory.generated_code_size_in_bytes), "peak_bytes": int(peak)}


def _phase(seq_len: int) -> int:
    return 1 if seq_len <= 128 else 2


def ours_config(size: str, seq_len: int, batch_size: int, num_layers: int | None, scan_layers: bool,
                attention_dropout: float | None, attention_impl: str | None):
    """``configs/pretrain.py`` for ``size`` at ``seq_len`` with the batch and layout overrides."""
    from configs import pretrain

    config = pretrain.get_config(f"size={size},phase={_phase(seq_len)}")
    config.data.max_seq_length = seq_len
    config.data.max_predictions_per_seq = 20 if seq_len <= 128 else 80
    config.train.batch_size = batch_size
    config.model.scan_layers = scan_layers
    if num_layers is not None:
        config.model.num_layers = num_layers
    if attention_dropout is not None:
        config.model.attention_dropout = attention_dropout
    if attention_impl is not None:
        config.model.attention_impl = attention_impl
    return config


def lower_ours(devices, *, size, seq_len, batch_size, num_layers=None, scan_layers=False, attention_dropout=None,
               attention_impl=None, **_):
    """Our train step lowered for ``devices``: ``(lowered, extra info)``."""
    from bert_jax import aot, run_config

    config = ours_config(size, seq_len, batch_size, num_layers, scan_layers, attention_dropout, attention_impl)
    _, lowered = aot.lower_train_step(config, devices)
    model = run_config.model_config_from(config)
    info = {"num_layers": model.num_layers, "attention_dropout": model.attention_dropout}
    try:
        from bert_jax import attention

        info["attention"] = attention.describe(model, platform=devices[0].platform)
    except Exception:  # noqa: BLE001 - informational only
        pass
    return lowered, info


def _peer_hf_config(size: str, num_layers: int | None, seq_len: int):
    """A ``transformers.BertConfig`` with our ``ModelConfig`` sizes (dropout 0.1 as BERT's)."""
    import transformers

    from bert_jax.config import ModelConfig

    model = ModelConfig.from_size(size)
    return transformers.BertConfig(
        vocab_size=model.vocab_size, hidden_size=model.hidden_size,
        num_hidden_layers=num_layers or model.num_layers, num_attention_heads=model.num_heads,
        intermediate_size=model.intermediate_size, hidden_act="gelu",
        hidden_dropout_prob=model.hidden_dropout, attention_probs_dropout_prob=model.attention_dropout,
        max_position_embeddings=max(model.max_position_embeddings, seq_len), type_vocab_size=model.type_vocab_size,
        layer_norm_eps=model.layer_norm_eps, initializer_range=model.initializer_range)


def lower_peer(devices, *, size, seq_len, batch_size, num_layers=None, **_):
    """transformers' ``FlaxBertForPreTraining`` train step (module docstring) lowered for ``devices``."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax
    import transformers
    from jax.sharding import Mesh, NamedSharding, PartitionSpec

    from bert_jax import optim

    hf_config = _peer_hf_config(size, num_layers, seq_len)
    model = transformers.FlaxBertForPreTraining(hf_config, dtype=jnp.bfloat16, _do_init=False)
    cfg = optim.default_optimizer_config()
    schedule = optim.make_schedule(cfg)

    def decay_mask(params):
        flat = {path: not (path[-1] == "bias" or any("LayerNorm" in str(p) for p in path))
                for path in _flatten(params)}
        return _unflatten(flat)

    optimizer = optax.chain(optax.clip_by_global_norm(cfg.clip_norm),
                            optax.adamw(schedule, b1=cfg.b1, b2=cfg.b2, eps=cfg.eps, weight_decay=cfg.weight_decay,
                                        mask=decay_mask))
    max_predictions = 20 if seq_len <= 128 else 80
    mesh = Mesh(np.array(devices), ("data",))
    replicated, split = NamedSharding(mesh, PartitionSpec()), NamedSharding(mesh, PartitionSpec("data"))

    def init_state(rng):
        params = model.init_weights(rng, (1, seq_len))
        return {"step": jnp.zeros((), jnp.int32), "params": params, "opt_state": optimizer.init(params), "rng": rng}

    abstract_state = jax.eval_shape(init_state, jax.random.PRNGKey(0))
    abstract_state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                                  abstract_state)

    def train_step(state, batch):
        dropout_rng, new_rng = jax.random.split(state["rng"])

        def loss_fn(params):
            out = model(batch["input_ids"], attention_mask=batch["input_mask"], token_type_ids=batch["segment_ids"],
                        position_ids=batch["position_ids"], params=params, dropout_rng=dropout_rng, train=True)
            logits = jnp.take_along_axis(out.prediction_logits, batch["masked_lm_positions"][..., None], axis=1)
            log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
            token_loss = -jnp.take_along_axis(log_probs, batch["masked_lm_ids"][..., None], axis=-1)[..., 0]
            weights = batch["masked_lm_weights"].astype(jnp.float32)
            mlm = (token_loss * weights).sum() / jnp.maximum(weights.sum(), 1e-8)
            nsp_log_probs = jax.nn.log_softmax(out.seq_relationship_logits.astype(jnp.float32), axis=-1)
            nsp = -jnp.take_along_axis(nsp_log_probs, batch["next_sentence_label"][:, None], axis=-1).mean()
            return mlm + nsp

        loss, grads = jax.value_and_grad(loss_fn)(state["params"])
        updates, opt_state = optimizer.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        return {"step": state["step"] + 1, "params": params, "opt_state": opt_state, "rng": new_rng}, {"loss": loss}

    shapes = {"input_ids": (batch_size, seq_len), "input_mask": (batch_size, seq_len),
              "segment_ids": (batch_size, seq_len), "position_ids": (batch_size, seq_len),
              "masked_lm_positions": (batch_size, max_predictions), "masked_lm_ids": (batch_size, max_predictions),
              "masked_lm_weights": (batch_size, max_predictions), "next_sentence_label": (batch_size,)}
    batch = {name: jax.ShapeDtypeStruct(shape, jnp.int32, sharding=split) for name, shape in shapes.items()}
    state_shardings = jax.tree.map(lambda x: x.sharding, abstract_state)
    jitted = jax.jit(train_step, in_shardings=(state_shardings, split), out_shardings=(state_shardings, replicated),
                     donate_argnums=(0,))
    return jitted.lower(abstract_state, batch), {"num_layers": hf_config.num_hidden_layers,
                                                 "transformers_version": transformers.__version__}


def _flatten(tree, prefix=()):
    if isinstance(tree, dict) or hasattr(tree, "items"):
        for key, value in tree.items():
            yield from _flatten(value, (*prefix, key))
    else:
        yield prefix


def _unflatten(flat):
    root: dict = {}
    for path, value in flat.items():
        node = root
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return root


LOWER = {"ours": lower_ours, "peer": lower_peer}


def run_worker(request: dict[str, Any]) -> dict[str, Any]:
    """Lowers and compiles one step for the request's target; returns its stats and timings.

    ``request``: ``framework``, ``target`` and ``LOWER`` keyword arguments; ``cache_dir`` (optional)
    turns on JAX's persistent compilation cache there (cold: empty; warm: filled by a previous worker).
    """
    import jax

    if request.get("cache_dir"):
        jax.config.update("jax_compilation_cache_dir", request["cache_dir"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    from bert_jax import aot

    target = aot.parse_target(request["target"])
    devices = aot.target_devices(target)
    kwargs = {k: v for k, v in request.items() if k not in ("framework", "target", "cache_dir")}
    start = time.perf_counter()
    lowered, info = LOWER[request["framework"]](devices, **kwargs)
    lowered_at = time.perf_counter()
    compiled = lowered.compile()
    done = time.perf_counter()
    stats = compiled_stats(compiled)
    result = {**request, **info, **stats, "lower_s": lowered_at - start, "compile_s": done - lowered_at,
              "device_kind": devices[0].device_kind, "num_devices": len(devices), "hbm_bytes": target.hbm_bytes,
              "load_average": list(os.getloadavg())}
    if request.get("hlo_out"):
        with open(request["hlo_out"], "w", encoding="utf-8") as f:
            f.write(compiled.as_text())
    return result


def tokens_per_device(result: dict[str, Any]) -> float:
    return result["batch_size"] * result["seq_len"] / result["num_devices"]


def roofline(flops_per_device: float, bytes_per_device: float, model_flops_per_device: float, peak_flops: float,
             hbm_bandwidth: float) -> float:
    """Model FLOPs over ``max(FLOPs / peak, bytes / bandwidth)`` seconds, as a fraction of the peak."""
    seconds = max(flops_per_device / peak_flops, bytes_per_device / hbm_bandwidth)
    return model_flops_per_device / seconds / peak_flops if seconds > 0 else math.nan
