"""The BERT encoder, in Flax Linen (its heads, pretraining and fine-tuning, are in ``bert_jax/heads.py``).

Every parameter carries logical axis names (``nn.with_logical_partitioning``) and every large activation
a logical constraint (``nn.with_logical_constraint``); ``bert_jax/sharding.py`` maps the names to mesh
axes. No layer names a mesh axis and nothing here imports ``data_pipelines``.

Parameter tree of ``heads.BertForPreTraining`` (``N`` layers, each ``layer_i``, or one stacked ``layers``
when ``scan_layers``)::

    bert/embeddings/{word_embeddings, position_embeddings, token_type_embeddings, layer_norm}
    bert/encoder/layer_i/{attention/{query, key, value, output, layer_norm},
                          intermediate, output, layer_norm}
    bert/pooler
    mlm_head/{transform, layer_norm, output_bias}      (decoder tied to word_embeddings)
    nsp_head

Fine-tuning models keep ``bert`` and add their own head beside it, so "drop the pretraining heads"
means "keep ``params['bert']``".
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
# Logical axis names of activations (kept distinct so a rule can shard a weight and not its activation).
ACT_BATCH, ACT_LENGTH, ACT_EMBED, ACT_MLP, ACT_HEADS, ACT_KV, ACT_VOCAB = (
    "act_batch", "act_length", "act_embed", "act_mlp", "act_heads", "act_kv", "act_vocab")


def _init(config: ModelConfig, axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.truncated_normal(config.initializer_range), axes)


def _zeros(axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def _ones(axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.ones_init(), axes)


def activation_fn(name: str):
    """The activation named by ``ModelConfig.hidden_act``."""
    if name == "gelu":
        return functools.partial(jax.nn.gelu, approximate=False)
    if name == "gelu_tanh":
        return functools.partial(jax.nn.gelu, approximate=True)
    return jax.nn.relu


class LayerNorm(nn.Module):
    """LayerNorm over the hidden axis with logically named scale and bias (statistics in fp32)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        return nn.LayerNorm(
            epsilon=cfg.layer_norm_eps,
            dtype=cfg.compute_dtype,
            param_dtype=cfg.parameter_dtype,
            scale_init=_ones((EMBED,)),
            bias_init=_zeros((EMBED,)),
            name="norm",
        )(x)


def _dense(config: ModelConfig, features, kernel_axes, bias_axes, name, axis=-1) -> nn.DenseGeneral:
    return nn.DenseGeneral(
        features=features,
        axis=axis,
        dtype=config.compute_dtype,
        param_dtype=config.parameter_dtype,
        kernel_init=_init(config, kernel_axes),
        bias_init=_zeros(bias_axes),
        name=name,
    )


def _einsum(config: ModelConfig, shape, equation, kernel_axes, bias_axes, name) -> nn.Einsum:
    """A projection whose kernel is created at its full multi-axis ``shape``.

    ``nn.DenseGeneral`` initialises multi-axis kernels flat and reshapes them, which applies the
    logical constraint of the full shape to the flat array and fails under a mesh; ``nn.Einsum``
    initialises ``kernel`` (``shape``) and ``bias`` at their real shapes (same names and shapes).
    """
    return nn.Einsum(
        shape=shape,
        einsum_str=equation,
        dtype=config.compute_dtype,
        param_dtype=config.parameter_dtype,
        kernel_init=_init(config, kernel_axes),
        bias_init=_zeros(bias_axes),
        name=name,
    )


def attention_mask(sequence_ids: Array) -> Array:
    """Boolean attention mask ``[B, 1, S, S]`` from per-token sequence ids ``[B, S]`` (0 = padding).

    A real query attends to the keys of its own packed sequence; a padding query attends to every real
    key (so that padding positions match Hugging Face's key-only padding mask exactly).
    """
    q = sequence_ids[:, None, :, None]
    k = sequence_ids[:, None, None, :]
    return (k > 0) & ((q == k) | (q == 0))


class Embeddings(nn.Module):
    """Word + position + token type embeddings, then LayerNorm and dropout."""

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.word_embeddings = self.param(
            "word_embeddings", _init(cfg, (VOCAB, EMBED)), (cfg.vocab_size, cfg.hidden_size), cfg.parameter_dtype)
        self.position_embeddings = self.param(
            "position_embeddings", _init(cfg, (POSITION, EMBED)),
            (cfg.max_position_embeddings, cfg.hidden_size), cfg.parameter_dtype)
        self.token_type_embeddings = self.param(
            "token_type_embeddings", _init(cfg, (TYPE_VOCAB, EMBED)),
            (cfg.type_vocab_size, cfg.hidden_size), cfg.parameter_dtype)
        self.layer_norm = LayerNorm(cfg)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def __call__(self, input_ids: Array, segment_ids: Array, position_ids: Array, deterministic: bool) -> Array:
        """Returns embeddings ``[B, S, H]`` in the compute dtype."""
        dtype = self.config.compute_dtype
        x = (jnp.take(self.word_embeddings, input_ids, axis=0)
             + jnp.take(self.position_embeddings, position_ids, axis=0)
             + jnp.take(self.token_type_embeddings, segment_ids, axis=0))
        x = nn.with_logical_constraint(x.astype(dtype), (ACT_BATCH, ACT_LENGTH, ACT_EMBED))
        return self.dropout(self.layer_norm(x), deterministic=deterministic)

    def attend(self, x: Array) -> Array:
        """Projects ``[..., H]`` onto the vocabulary with the (tied) word embeddings: ``[..., V]``."""
        table = self.word_embeddings.astype(self.config.compute_dtype)
        return jnp.einsum("...h,vh->...v", x, table)


class SelfAttention(nn.Module):
    """Multi-head self-attention with the post-LN residual block around it.

    The attention itself is ``bert_jax.attention``'s implementation that ``attention.select`` picks
    for ``config.attention_impl`` and this call (training with attention dropout: ``"reference"``).
    """

    config: ModelConfig
    deterministic: bool

    @nn.compact
    def __call__(self, x: Array, mask: Array) -> Array:
        cfg = self.config
        heads, head_dim = cfg.num_heads, cfg.head_dim
        qkv_axes = (EMBED, HEADS, KV)
        q, k, v = (
            _einsum(cfg, (cfg.hidden_size, heads, head_dim), "bsh,hnd->bsnd", qkv_axes, (HEADS, KV), name)(x)
            for name in ("query", "key", "value"))
        q, k, v = (nn.with_logical_constraint(t, (ACT_BATCH, ACT_LENGTH, ACT_HEADS, ACT_KV)) for t in (q, k, v))
        implementation = attention.select(cfg, self.deterministic)
        dropout = None
        if attention.needs_dropout(cfg, self.deterministic):
            drop = nn.Dropout(cfg.attention_dropout)
            dropout = lambda probs: drop(probs, deterministic=False)  # noqa: E731
        context = attention.attend(implementation, q, k, v, mask, dropout)
        context = nn.with_logical_constraint(context, (ACT_BATCH, ACT_LENGTH, ACT_HEADS, ACT_KV))
        out = _einsum(cfg, (heads, head_dim, cfg.hidden_size), "bsnd,ndh->bsh", (HEADS, KV, EMBED), (EMBED,),
                      "output")(context)
        out = nn.Dropout(cfg.hidden_dropout)(out, deterministic=self.deterministic)
        out = LayerNorm(cfg, name="layer_norm")(out + x)
        return nn.with_logical_constraint(out, (ACT_BATCH, ACT_LENGTH, ACT_EMBED))


class TransformerLayer(nn.Module):
    """One post-LN Transformer layer: attention block, then feed-forward block."""

    config: ModelConfig
    deterministic: bool

    @nn.compact
    def __call__(self, x: Array, mask: Array) -> Array:
        cfg = self.config
        x = SelfAttention(cfg, self.deterministic, name="attention")(x, mask)
        h = _dense(cfg, cfg.intermediate_size, (EMBED, MLP), (MLP,), "intermediate")(x)
        h = nn.with_logical_constraint(activation_fn(cfg.hidden_act)(h), (ACT_BATCH, ACT_LENGTH, ACT_MLP))
        h = _dense(cfg, cfg.hidden_size, (MLP, EMBED), (EMBED,), "output")(h)
        h = nn.Dropout(cfg.hidden_dropout)(h, deterministic=self.deterministic)
        out = LayerNorm(cfg, name="layer_norm")(h + x)
        return nn.with_logical_constraint(out, (ACT_BATCH, ACT_LENGTH, ACT_EMBED))


class _ScanLayer(TransformerLayer):
    """``TransformerLayer`` with the ``(carry, x) -> (carry, y)`` signature ``nn.scan`` needs."""

    def __call__(self, x: Array, mask: Array):  # pytype: disable=signature-mismatch
        return super().__call__(x, mask), None


class Encoder(nn.Module):
    """The layer stack: a Python loop (``layer_i``) or one scanned, stacked ``layers`` module."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, mask: Array, deterministic: bool) -> Array:
        cfg = self.config
        if cfg.scan_layers:
            layer_cls = nn.remat(_ScanLayer, prevent_cse=False) if cfg.remat else _ScanLayer
            stack = nn.scan(
                layer_cls,
                variable_axes={"params": 0},
                split_rngs={"params": True, "dropout": True},
                in_axes=(nn.broadcast,),
                length=cfg.num_layers,
                metadata_params={nn.PARTITION_NAME: LAYERS},
            )
            x, _ = stack(cfg, deterministic, name="layers")(x, mask)
            return x
        layer_cls = nn.remat(TransformerLayer) if cfg.remat else TransformerLayer
        for i in range(cfg.num_layers):
            x = layer_cls(cfg, deterministic, name=f"layer_{i}")(x, mask)
        return x


class BertModel(nn.Module):
    """The BERT encoder: embeddings, Transformer layers and the tanh pooler on ``[CLS]``."""

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.pooler = _dense(cfg, cfg.hidden_size, (EMBED, "embed_out"), ("embed_out",), "pooler")

    def __call__(
        self,
        input_ids: Array,
        segment_ids: Array | None = None,
        sequence_ids: Array | None = None,
        position_ids: Array | None = None,
        deterministic: bool = True,
    ) -> tuple[Array, Array]:
        """Encodes a batch.

        Args:
          input_ids: int32 ``[B, S]`` token ids.
          segment_ids: int32 ``[B, S]`` token types (default all 0).
          sequence_ids: int32 ``[B, S]`` packed-sequence ids, 0 on padding (default: no padding).
          position_ids: int32 ``[B, S]`` (default ``0..S-1``).
          deterministic: disables dropout when True.

        Returns:
          ``(sequence_output [B, S, H], pooled_output [B, H])`` in the compute dtype.
        """
        if segment_ids is None:
            segment_ids = jnp.zeros_like(input_ids)
        if sequence_ids is None:
            sequence_ids = jnp.ones_like(input_ids)
        if position_ids is None:
            position_ids = jnp.broadcast_to(jnp.arange(input_ids.shape[1], dtype=jnp.int32), input_ids.shape)
        x = self.embeddings(input_ids, segment_ids, position_ids, deterministic)
        x = self.encoder(x, attention_mask(sequence_ids), deterministic)
        pooled = jnp.tanh(self.pooler(x[:, 0]))
        return x, pooled

    def attend(self, x: Array) -> Array:
        return self.embeddings.attend(x)


def encode_batch(bert: BertModel, batch: dict[str, Array], deterministic: bool) -> tuple[Array, Array]:
    """Runs ``bert`` on the encoder fields of a contract batch (``data_pipelines.batch``)."""
    return bert(batch["input_ids"], batch["segment_ids"], batch["sequence_ids"], batch["position_ids"],
                deterministic=deterministic)


def unbox(tree: Any) -> Any:
    """Strips ``nn.Partitioned`` boxes from a parameter tree (the arrays stay as they are)."""
    return nn.meta.unbox(tree)
