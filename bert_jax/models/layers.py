"""Layers every encoder architecture composes: projections, norms, attention, feed-forward, the layer stack.

Nothing here knows which architecture it is part of: an architecture file (``bert_jax/models/bert.py``,
...) composes these pieces and the registry (``bert_jax/models/__init__.py``) picks the file from
``ModelConfig.architecture``.

Every parameter carries logical axis names (``nn.with_logical_partitioning``) and every large activation
a logical constraint (``nn.with_logical_constraint``); ``bert_jax/sharding.py`` maps the names to mesh
axes. No layer names a mesh axis and nothing here imports ``data_pipelines``.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax import attention
from bert_jax.config import ModelConfig

Array = jax.Array

# Logical axis names of parameters.
VOCAB, EMBED, MLP, HEADS, KV, POSITION, TYPE_VOCAB, LAYERS, CLASSES = (
    "vocab", "embed", "mlp", "heads", "kv", "position", "type_vocab", "layers", "classes")
EMBED_OUT = "embed_out"  # the output side of an ``[embed, embed]`` kernel (pooler, MLM transform)
# Logical axis names of activations (kept distinct so a rule can shard a weight and not its activation).
ACT_BATCH, ACT_LENGTH, ACT_EMBED, ACT_MLP, ACT_HEADS, ACT_KV, ACT_VOCAB = (
    "act_batch", "act_length", "act_embed", "act_mlp", "act_heads", "act_kv", "act_vocab")
HIDDEN_AXES = (ACT_BATCH, ACT_LENGTH, ACT_EMBED)  # a ``[B, S, H]`` activation
HEAD_AXES = (ACT_BATCH, ACT_LENGTH, ACT_HEADS, ACT_KV)  # a ``[B, S, N, D]`` activation


def normal_init(config: ModelConfig, axes: tuple[str, ...]):
    """Truncated-normal initialiser (std ``config.initializer_range``) with logical ``axes``."""
    return nn.with_logical_partitioning(nn.initializers.truncated_normal(config.initializer_range), axes)


def vocab_table_init(config: ModelConfig, axes: tuple[str, ...]):
    """``normal_init`` for a ``[padded_vocab, ...]`` table with the padding rows (ids >= ``vocab_size``) zero.

    Nothing looks them up and their logits are masked, so they get no gradient and stay zero in training:
    a Hugging Face export (which slices them off) and re-import (which zero-pads) give the same tree.
    """

    def init(key, shape, dtype=jnp.float32):
        table = nn.initializers.truncated_normal(config.initializer_range)(key, shape, dtype)
        real = jnp.arange(shape[0]) < config.vocab_size
        return jnp.where(real.reshape((-1,) + (1,) * (len(shape) - 1)), table, 0).astype(dtype)

    return nn.with_logical_partitioning(init, axes)


def zeros_init(axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def ones_init(axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.ones_init(), axes)


def activation_fn(name: str):
    """The activation named by ``ModelConfig.hidden_act``."""
    if name == "gelu":
        return functools.partial(jax.nn.gelu, approximate=False)
    if name == "gelu_tanh":
        return functools.partial(jax.nn.gelu, approximate=True)
    return jax.nn.relu


class LayerNorm(nn.Module):
    """LayerNorm over the hidden axis with logically named scale (and bias), statistics in fp32.

    Attributes:
      config: the model hyperparameters (``layer_norm_eps``, dtypes).
      use_bias: whether the norm has a learned bias (BERT's does; ModernBERT's does not).
    """

    config: ModelConfig
    use_bias: bool = True

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        return nn.LayerNorm(
            epsilon=cfg.layer_norm_eps,
            dtype=cfg.compute_dtype,
            param_dtype=cfg.parameter_dtype,
            use_bias=self.use_bias,
            scale_init=ones_init((EMBED,)),
            bias_init=zeros_init((EMBED,)),
            name="norm",
        )(x)


def _projection_fields(config: ModelConfig, kernel_axes, bias_axes, use_bias: bool) -> dict[str, Any]:
    """The dtype, initialiser and bias fields every projection module shares."""
    return dict(use_bias=use_bias, dtype=config.compute_dtype, param_dtype=config.parameter_dtype,
                kernel_init=normal_init(config, kernel_axes), bias_init=zeros_init(bias_axes))


def dense(config: ModelConfig, features, kernel_axes, bias_axes, name, axis=-1, use_bias: bool = True,
          ) -> nn.DenseGeneral:
    """A projection ``[..., in] -> [..., features]`` with logically named kernel and bias."""
    return nn.DenseGeneral(features=features, axis=axis, name=name,
                           **_projection_fields(config, kernel_axes, bias_axes, use_bias))


def einsum(config: ModelConfig, shape, equation, kernel_axes, bias_axes, name, use_bias: bool = True,
           ) -> nn.Einsum:
    """A projection whose kernel is created at its full multi-axis ``shape``.

    ``nn.DenseGeneral`` initialises multi-axis kernels flat and reshapes them, which applies the
    logical constraint of the full shape to the flat array and fails under a mesh; ``nn.Einsum``
    initialises ``kernel`` (``shape``) and ``bias`` at their real shapes (same names and shapes).
    """
    return nn.Einsum(shape=shape, einsum_str=equation, name=name,
                     **_projection_fields(config, kernel_axes, bias_axes, use_bias))


def qkv_projections(config: ModelConfig, x: Array, use_bias: bool = True,
                    names: tuple[str, str, str] = ("query", "key", "value")) -> tuple[Array, Array, Array]:
    """Query, key and value ``[B, S, N, D]`` from hidden states ``[B, S, H]`` (call inside ``nn.compact``)."""
    shape = (config.hidden_size, config.num_heads, config.head_dim)
    projections = (einsum(config, shape, "bsh,hnd->bsnd", (EMBED, HEADS, KV), (HEADS, KV), name, use_bias)(x)
                   for name in names)
    return tuple(nn.with_logical_constraint(t, HEAD_AXES) for t in projections)


def output_projection(config: ModelConfig, use_bias: bool = True, name: str = "output") -> nn.Einsum:
    """The attention output projection ``[B, S, N, D] -> [B, S, H]``."""
    return einsum(config, (config.num_heads, config.head_dim, config.hidden_size), "bsnd,ndh->bsh",
                  (HEADS, KV, EMBED), (EMBED,), name, use_bias)


class DotProductAttention(nn.Module):
    """Softmax attention of ``[B, S, N, D]`` queries, keys and values, by ``bert_jax.attention``.

    The implementation is the one ``attention.select`` picks for ``config.attention_impl`` and this
    call; with attention dropout in training it is ``"reference"`` and drops the probabilities.
    """

    config: ModelConfig
    deterministic: bool

    @nn.compact
    def __call__(self, q: Array, k: Array, v: Array, mask: attention.Mask) -> Array:
        """Returns the context ``[B, S, N, D]`` in the dtype of ``q``."""
        cfg = self.config
        implementation = attention.select(cfg, self.deterministic, seq_len=q.shape[1])
        dropout = None
        if attention.needs_dropout(cfg, self.deterministic):
            drop = nn.Dropout(cfg.attention_dropout)
            dropout = lambda probs: drop(probs, deterministic=False)  # noqa: E731
        context = attention.attend(implementation, q, k, v, mask, dropout)
        return nn.with_logical_constraint(context, HEAD_AXES)


# The logit of a padding vocabulary id: exp() of it underflows to exactly 0 in float32, and it stays finite
# (0 x it is 0, unlike -inf), so softmax, argmax and cross-entropy never pick a padding id.
PADDED_VOCAB_LOGIT = -1e9


def mask_padded_vocab(logits: Array, config: ModelConfig) -> Array:
    """Sets the logits of the padding ids (``config.vocab_size`` up to ``padded_vocab_size``) to a huge negative.

    Args:
      logits: ``[..., V]`` with ``V`` the padded vocabulary (float32).
      config: the model hyperparameters.

    Returns:
      ``logits`` with ``[..., vocab_size:]`` replaced by ``PADDED_VOCAB_LOGIT`` (unchanged when unpadded).
    """
    if logits.shape[-1] <= config.vocab_size:
        return logits
    real = jax.lax.broadcasted_iota(jnp.int32, (logits.shape[-1],), 0) < config.vocab_size
    return jnp.where(real, logits, jnp.asarray(PADDED_VOCAB_LOGIT, logits.dtype))


def feed_forward(config: ModelConfig, x: Array, use_bias: bool = True) -> Array:
    """Dense, activation, dense: ``[B, S, H] -> [B, S, H]``, kernels ``intermediate`` and ``output``.

    Call inside the caller's ``nn.compact`` method: the two projections are the caller's parameters.
    """
    cfg = config
    h = dense(cfg, cfg.intermediate_size, (EMBED, MLP), (MLP,), "intermediate", use_bias=use_bias)(x)
    h = nn.with_logical_constraint(activation_fn(cfg.hidden_act)(h), (ACT_BATCH, ACT_LENGTH, ACT_MLP))
    return dense(cfg, cfg.hidden_size, (MLP, EMBED), (EMBED,), "output", use_bias=use_bias)(h)


def residual_norm(config: ModelConfig, deterministic: bool, out: Array, residual: Array) -> Array:
    """The post-LN residual step: ``LayerNorm(dropout(out) + residual)``, ``[B, S, H]`` (or ``[B, Q, H]``).

    Call inside the caller's ``nn.compact`` method: the norm is the caller's ``layer_norm``.
    """
    out = nn.Dropout(config.hidden_dropout)(out, deterministic=deterministic)
    out = LayerNorm(config, name="layer_norm")(out + residual)
    return nn.with_logical_constraint(out, HIDDEN_AXES)


def encoder_inputs(input_ids: Array, segment_ids: Array | None = None, sequence_ids: Array | None = None,
                   position_ids: Array | None = None) -> tuple[Array, Array, Array]:
    """The encoders' defaults for absent inputs: token type 0, one unpadded sequence a row, positions ``0..S-1``.

    Returns:
      ``(segment_ids, sequence_ids, position_ids)``, each ``[B, S]`` like ``input_ids`` (given ones unchanged).
    """
    if segment_ids is None:
        segment_ids = jnp.zeros_like(input_ids)
    if sequence_ids is None:
        sequence_ids = jnp.ones_like(input_ids)
    if position_ids is None:
        position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)
    return segment_ids, sequence_ids, position_ids


# ``ModelConfig.remat_policy`` -> what a rematerialised layer saves for the backward pass (None: nothing
# but its inputs, i.e. everything is recomputed). "none" is absent: the layer is not rematerialised at all.
REMAT_POLICIES = {
    "full": None,
    "dots_saveable": jax.checkpoint_policies.dots_saveable,  # every matmul output kept
    "dots_with_no_batch_dims_saveable": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # weight
    # matmuls (Q/K/V, output, FFN) kept; the batched attention einsums (scores, context) recomputed
}


def rematerialise(layer_cls: type[nn.Module], config: ModelConfig, **kwargs: Any) -> type[nn.Module]:
    """``layer_cls`` wrapped in ``nn.remat`` with ``config.effective_remat_policy`` (as is for ``"none"``)."""
    name = config.effective_remat_policy
    if name == "none":
        return layer_cls
    return nn.remat(layer_cls, policy=REMAT_POLICIES[name], **kwargs)
def gated_feed_forward(config: ModelConfig, x: Array, use_bias: bool = True, dropout_rate: float = 0.0,
                       deterministic: bool = True) -> Array:
    """Gated-linear-unit feed-forward (GeGLU with ``hidden_act="gelu"``): ``[B, S, H] -> [B, S, H]``.

    ``wi`` (kernel ``[H, 2, I]``: index 0 the activated input, 1 the gate) gives ``act(x W0) * (x W1)``,
    then dropout (``dropout_rate``) and ``wo`` (``[I, H]``). ``I`` is ``config.intermediate_size``.
    Call inside the caller's ``nn.compact`` method: the projections are the caller's parameters.
    """
    cfg = config
    shape = (cfg.hidden_size, 2, cfg.intermediate_size)
    h = einsum(cfg, shape, "bsh,hgi->bsgi", (EMBED, None, MLP), (None, MLP), "wi", use_bias)(x)
    h = activation_fn(cfg.hidden_act)(h[..., 0, :]) * h[..., 1, :]
    h = nn.with_logical_constraint(h, (ACT_BATCH, ACT_LENGTH, ACT_MLP))
    h = nn.Dropout(dropout_rate)(h, deterministic=deterministic or dropout_rate == 0.0)
    return dense(cfg, cfg.hidden_size, (MLP, EMBED), (EMBED,), "wo", use_bias=use_bias)(h)


@functools.cache
def _scannable(layer_cls: type[nn.Module]) -> type[nn.Module]:
    """``layer_cls`` with the ``(carry, *broadcast) -> (carry, None)`` signature ``nn.scan`` needs."""

    def __call__(self, x, *args):  # noqa: N807
        return layer_cls.__call__(self, x, *args), None

    return type(f"Scanned{layer_cls.__name__}", (layer_cls,), {"__call__": __call__})


class LayerStack(nn.Module):
    """``config.num_layers`` layers: a Python loop (``layer_i``) or one scanned, stacked ``layers`` module.

    Attributes:
      config: the model hyperparameters (``num_layers``, ``scan_layers``, ``remat`` / ``remat_policy``).
      layer: the layer class, built as ``layer(config, deterministic)`` and called as
        ``layer(x, *args) -> x``; ``args`` (masks, rotary tables, ...) are the same for every layer.
    """

    config: ModelConfig
    layer: Any

    @nn.compact
    def __call__(self, x: Array, *args: Any, deterministic: bool = True) -> Array:
        """Runs the layers on ``x [B, S, H]`` (``deterministic`` disables dropout); ``[B, S, H]`` out."""
        cfg = self.config
        if cfg.scan_layers:
            layer_cls = _scannable(self.layer)
            layer_cls = rematerialise(layer_cls, cfg, prevent_cse=False)
            stack = nn.scan(
                layer_cls,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast,) * len(args),
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: LAYERS},
            )
            x, _ = stack(cfg, deterministic, name="layers")(x, *args)
            return x
        layer_cls = rematerialise(self.layer, cfg)
        for i in range(cfg.num_layers):
            x = layer_cls(cfg, deterministic, name=f"layer_{i}")(x, *args)
        return x


def unbox(tree: Any) -> Any:
    """Strips ``nn.Partitioned`` boxes from a parameter tree (the arrays stay as they are)."""
    return nn.meta.unbox(tree)
