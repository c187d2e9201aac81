"""Longformer (Beltagy et al., 2020): sliding-window attention per layer plus global attention on chosen tokens.

The encoder is RoBERTa's (learned positions offset past the padding id, post-LN layers, GELU, tanh
pooler) with each layer's self-attention replaced by Longformer's:

* every token attends to the keys within ``attention_window[layer] / 2`` positions either side and to
  every *global* token, with the layer's ``query``/``key``/``value`` projections (one softmax over both);
* a global token attends to every token of its sequence with separate ``query_global``/``key_global``/
  ``value_global`` projections, and that output replaces its local one.

Memory is linear in ``S``: the local part runs blocked (``bert_jax/models/sliding_window.py``) and the
global part is ``[B, N, G, S]`` with ``G = min(max_global_tokens, S)`` slots (a static bound; tokens past
it attend locally). Which tokens are global enters the encoder as ``global_attention_mask [B, S]``
(nonzero: global); the default is the first token of each sequence (``<s>`` / ``[CLS]``). The fine-tuning
models choose per task through ``bert_jax.attention.global_tokens`` (``Architecture.global_attention``).

Positions: ``position_ids`` (``0..`` per sequence, the batch contract) become rows
``pad_token_id + 1 + position``; padding tokens take row ``pad_token_id``, as Hugging Face's
``create_position_ids_from_input_ids`` does. ``type_vocab_size=1`` (RoBERTa's) embeds every token as
type 0 whatever ``segment_ids`` say.

Parameter tree of the encoder (under ``bert``): BERT's (``bert_jax/models/bert.py``, embeddings reused
from there) plus ``attention/{query_global, key_global, value_global}`` in every layer; the masked-LM head
is RoBERTa's (``transform``, ``layer_norm``, ``output_bias``; exact GELU). Hugging Face table:
``bert_jax/interop/hf_longformer.py``. Positions are RoBERTa's (``roberta.roberta_positions``).
"""

from __future__ import annotations

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from bert_jax import attention
from bert_jax.config import ModelConfig
from bert_jax.models import Architecture, bert, layers, roberta, sliding_window
from bert_jax.models.layers import EMBED, EMBED_OUT, HEAD_AXES, HEADS, KV

Array = jax.Array
_NEG_INF = -1e9


@flax.struct.dataclass
class GlobalMask:
    """Sequences and global tokens of a batch, computed once and shared by every layer.

    Attributes:
      sequence_ids: int32 ``[B, S]``, 0 on padding.
      is_global: bool ``[B, S]``: tokens with global attention (real tokens within the ``G`` slots).
      slot: int32 ``[B, S]``: each global token's slot in ``0..G-1`` (0 elsewhere).
      index: int32 ``[B, G]``: the position of the token in each slot (0 for an empty slot).
      valid: bool ``[B, G]``: whether the slot holds a token.
      slot_ids: int32 ``[B, G]``: the sequence id of each slot's token (0 for an empty slot).
    """

    sequence_ids: Array
    is_global: Array
    slot: Array
    index: Array
    valid: Array
    slot_ids: Array

    @classmethod
    def build(cls, sequence_ids: Array, requested: Array, max_global: int) -> "GlobalMask":
        """From ``requested [B, S]`` (nonzero: global) with at most ``max_global`` slots per row."""
        b, s = sequence_ids.shape
        g = max(1, min(int(max_global), s))
        wanted = (requested != 0) & (sequence_ids > 0)
        slot = jnp.cumsum(wanted, axis=1, dtype=jnp.int32) - 1
        is_global = wanted & (slot < g)
        target = jnp.where(is_global, slot, g)  # g: dropped
        positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
        index = jnp.zeros((b, g), jnp.int32).at[jnp.arange(b)[:, None], target].set(positions, mode="drop")
        valid = jnp.arange(g)[None, :] < jnp.sum(is_global, axis=1, dtype=jnp.int32)[:, None]
        slot_ids = jnp.where(valid, jnp.take_along_axis(sequence_ids, index, axis=1), 0)
        return cls(sequence_ids, is_global, jnp.where(is_global, slot, 0), index, valid, slot_ids)


def layer_windows(config: ModelConfig) -> list[int]:
    """Every layer's (two-sided) window, one per layer: Hugging Face's ``attention_window`` list."""
    windows = config.attention_window
    return list(windows) * config.num_layers if len(windows) == 1 else list(windows)


def layer_window(config: ModelConfig, layer_name: str) -> int:
    """The one-sided window of the layer named ``layer_i`` (a scanned stack has one window for all)."""
    windows = config.attention_window
    if len(set(windows)) == 1:
        return windows[0] // 2
    if not layer_name.startswith("layer_"):
        raise ValueError(f"model.attention_window={list(windows)} differs per layer; model.scan_layers=True needs "
                         "one window for every layer")
    return windows[int(layer_name.removeprefix("layer_"))] // 2


def _gather(x: Array, index: Array) -> Array:
    """``x [B, S, ...]`` at ``index [B, G]`` -> ``[B, G, ...]``."""
    return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)


class LongformerSelfAttention(nn.Module):
    """Local + global self-attention (the module docstring) with the post-LN residual block around it."""

    config: ModelConfig
    deterministic: bool
    window: int

    @nn.compact
    def __call__(self, x: Array, mask: GlobalMask) -> Array:
        cfg = self.config
        shape = (cfg.hidden_size, cfg.num_heads, cfg.head_dim)

        def projection(name, inputs):
            out = layers.einsum(cfg, shape, "bsh,hnd->bsnd", (EMBED, HEADS, KV), (HEADS, KV), name)(inputs)
            return nn.with_logical_constraint(out, HEAD_AXES)

        dropout = None
        if attention.needs_dropout(cfg, self.deterministic):
            drop = nn.Dropout(cfg.attention_dropout)
            dropout = lambda probs: drop(probs, deterministic=False)  # noqa: E731

        q, k, v = layers.qkv_projections(cfg, x)
        seq = mask.sequence_ids
        key_ids = jnp.where(mask.is_global | (seq == 0), -1, seq)
        extra_allowed = (seq[:, :, None] == mask.slot_ids[:, None, :]) & mask.valid[:, None, :]
        local = sliding_window.banded_attention(q, k, v, self.window, seq, key_ids, _gather(k, mask.index),
                                                _gather(v, mask.index), extra_allowed, dropout)

        # Global queries: every key of their sequence, through the global projections.
        qg = projection("query_global", _gather(x, mask.index))  # [B, G, N, D]
        kg, vg = projection("key_global", x), projection("value_global", x)
        scores = jnp.einsum("bgnd,bsnd->bngs", qg, kg).astype(jnp.float32) / jnp.sqrt(jnp.float32(cfg.head_dim))
        allowed = (mask.slot_ids[:, :, None] == seq[:, None, :]) & (seq[:, None, :] > 0)  # [B, G, S]
        probs = jax.nn.softmax(jnp.where(allowed[:, None], scores, _NEG_INF), axis=-1).astype(q.dtype)
        if dropout is not None:
            probs = dropout(probs)
        global_context = jnp.einsum("bngs,bsnd->bgnd", probs, vg)
        context = jnp.where(mask.is_global[:, :, None, None], _gather(global_context, mask.slot), local)
        context = nn.with_logical_constraint(context.astype(x.dtype), HEAD_AXES)

        return layers.residual_norm(cfg, self.deterministic, layers.output_projection(cfg)(context), x)


class LongformerLayer(nn.Module):
    """One post-LN layer: Longformer attention block (this layer's window), then the feed-forward block."""

    config: ModelConfig
    deterministic: bool

    @nn.compact
    def __call__(self, x: Array, mask: GlobalMask) -> Array:
        cfg = self.config
        window = layer_window(cfg, self.name or "")
        x = LongformerSelfAttention(cfg, self.deterministic, window, name="attention")(x, mask)
        return layers.residual_norm(cfg, self.deterministic, layers.feed_forward(cfg, x), x)


def first_tokens(sequence_ids: Array, position_ids: Array) -> Array:
    """The default global tokens: the first of each sequence (``<s>`` / ``[CLS]``), int32 ``[B, S]``."""
    return ((position_ids == 0) & (sequence_ids > 0)).astype(jnp.int32)


class LongformerModel(nn.Module):
    """The Longformer encoder: RoBERTa-style embeddings, Longformer layers, the tanh pooler on ``<s>``."""

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.embeddings = bert.Embeddings(cfg)
        self.encoder = layers.LayerStack(cfg, LongformerLayer)
        self.pooler = layers.dense(cfg, cfg.hidden_size, (EMBED, EMBED_OUT), (EMBED_OUT,), "pooler")

    def __call__(
        self,
        input_ids: Array,
        segment_ids: Array | None = None,
        sequence_ids: Array | None = None,
        position_ids: Array | None = None,
        deterministic: bool = True,
        global_attention_mask: Array | None = None,
    ) -> tuple[Array, Array]:
        """Encodes a batch.

        Args:
          input_ids: int32 ``[B, S]`` token ids.
          segment_ids: int32 ``[B, S]`` token types (default all 0; all 0 when ``type_vocab_size == 1``).
          sequence_ids: int32 ``[B, S]`` packed-sequence ids, 0 on padding (default: no padding).
          position_ids: int32 ``[B, S]`` positions ``0..`` within each sequence (default ``0..S-1``).
          deterministic: disables dropout when True.
          global_attention_mask: int ``[B, S]``, nonzero on tokens with global attention (default: the first
            token of each sequence).

        Returns:
          ``(sequence_output [B, S, H], pooled_output [B, H])`` in the compute dtype.
        """
        cfg = self.config
        if cfg.type_vocab_size == 1:
            segment_ids = None
        segment_ids, sequence_ids, position_ids = layers.encoder_inputs(input_ids, segment_ids, sequence_ids,
                                                                        position_ids)
        if global_attention_mask is None:
            global_attention_mask = first_tokens(sequence_ids, position_ids)
        positions = roberta.roberta_positions(position_ids, sequence_ids, cfg.pad_token_id)
        x = self.embeddings(input_ids, segment_ids, positions, deterministic)
        mask = GlobalMask.build(sequence_ids, global_attention_mask, cfg.max_global_tokens)
        x = self.encoder(x, mask, deterministic=deterministic)
        pooled = jnp.tanh(self.pooler(x[:, 0]))
        return x, pooled

    def attend(self, x: Array) -> Array:
        return self.embeddings.attend(x)


class LMHead(bert.MLMHead):
    """RoBERTa's masked-LM head: BERT's with exact GELU whatever ``hidden_act`` says."""

    activation: str | None = "gelu"


def layer_flops(config: ModelConfig, seq_len: int) -> float:
    """Forward matmul FLOPs per token of the stack: BERT's projections and feed-forward, the global key and
    value projections (every token; the global queries are few), and scores + values over each layer's
    ``attention_window + 1`` keys (at most ``seq_len``)."""
    h, i = config.hidden_size, config.intermediate_size
    keys = sum(min(seq_len, w + 1) for w in layer_windows(config))
    return config.num_layers * 2 * (6 * h * h + 2 * h * i) + 4 * keys * h


ARCHITECTURE = Architecture(
    name="longformer",
    encoder=LongformerModel,
    mlm_head=LMHead,
    nsp=False,
    hf_conversion="bert_jax.interop.hf_longformer",
    summary="Longformer (2020): RoBERTa with sliding-window attention per layer + global attention on chosen "
            "tokens (separate global q/k/v); memory linear in S; MLM only",
    global_attention=True,
    layer_flops=layer_flops,
    position_offset=lambda config: config.pad_token_id + 1,
)
