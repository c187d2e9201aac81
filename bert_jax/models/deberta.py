"""DeBERTa-v2/v3 (He et al., 2021): disentangled attention over log-bucketed relative positions.

What changes against BERT (``bert.py``):

* No absolute positions in the input (``position_biased_input=False``, v2/v3); no token types when
  ``type_vocab_size=0`` (v3). The embeddings are word embeddings, LayerNorm, dropout.
* Every layer's attention adds to the content scores ``Q Kᵀ`` the *content-to-position* term
  ``Q · Pk[δ(i, j)]`` (``c2p``) and the *position-to-content* term ``K · Pq[δ(i, j)]`` (``p2c``), all
  over ``sqrt(head_dim * (1 + terms))``. ``δ(i, j)`` is the offset ``i - j`` bucketed logarithmically
  beyond ``position_buckets / 2`` (``log_bucket_table``) and clipped to ``[0, 2 * span)``; ``Pk`` and
  ``Pq`` project the shared relative embeddings (``2 * span`` rows, LayerNorm'd when
  ``norm_rel_ebd="layer_norm"``) through the content key/query kernels (``share_att_key``, v2/v3) or
  through their own ``pos_key``/``pos_query`` kernels.
* The pooled vector is Hugging Face's ``ContextPooler``: ``gelu(dense([CLS]))`` (no tanh).
* The MLM head is BERT's (``transformers``' ``LegacyDebertaV2OnlyMLMHead``, DebertaV2ForMaskedLM's
  default ``legacy=True``): dense, activation, LayerNorm, tied decoder plus bias.
* ``enhanced_mask_decoder=True`` (EMD, the paper's MLM decoder; **not** Hugging Face parity, which
  has no EMD): the MLM head reads, instead of the last layer's output, the last layer applied twice
  more (its own weights) with keys/values the second-to-last hidden states ``H`` and queries
  ``H + P`` (absolute position embeddings, only here), at the masked positions only.

The position terms are an additive score bias ``[B, N, Q, K]``, so attention materialises dense
scores: ``"reference"`` (einsums, float32 softmax; any training with attention dropout) or, for the
fused requests, ``jax.nn.dot_product_attention`` with ``bias=`` (XLA, or cuDNN where it accepts a
bias). Neither is a flash kernel without the ``[B, N, S, S]`` bias.

Parameter tree of the encoder (kept under ``bert``)::

    embeddings/{word_embeddings, [position_embeddings], [token_type_embeddings], layer_norm}
    rel_embeddings, rel_layer_norm
    encoder/layer_i/{attention/{query, key, value, [pos_key, pos_query], output, layer_norm},
                     intermediate, output, layer_norm}
    pooler

The Hugging Face conversion table is ``bert_jax/interop/hf_deberta.py``.
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from bert_jax import attention
from bert_jax.config import ModelConfig
from bert_jax.models import Architecture, bert, bert_stack_flops, layers
from bert_jax.models.layers import (ACT_HEADS, ACT_KV, EMBED, EMBED_OUT, HEADS, HIDDEN_AXES, KV, POSITION, TYPE_VOCAB,
                                    VOCAB, LayerNorm)

Array = jax.Array
_NEG_INF = -1e9  # finite: a fully masked row stays finite


def attention_types(config: ModelConfig) -> tuple[str, ...]:
    """The position terms of ``config.pos_att_type`` (``("c2p", "p2c")``, one of them, or none)."""
    parts = {t.strip() for t in config.pos_att_type.lower().split("|") if t.strip()}
    return tuple(t for t in ("c2p", "p2c") if t in parts)


def max_relative_positions(config: ModelConfig) -> int:
    """``max_relative_positions``, or ``max_position_embeddings`` when it is < 1 (Hugging Face's rule)."""
    return config.max_relative_positions if config.max_relative_positions >= 1 else config.max_position_embeddings


def attention_span(config: ModelConfig) -> int:
    """Relative embedding rows each side: ``position_buckets`` if > 0, else ``max_relative_positions``."""
    return config.position_buckets if config.position_buckets > 0 else max_relative_positions(config)


@functools.cache
def log_bucket_table(length: int, buckets: int, max_position: int) -> np.ndarray:
    """Bucketed offsets int32 ``[2 * length - 1]`` for offsets ``-(length - 1) .. length - 1`` (index +length-1).

    Offsets within ``buckets // 2`` stay exact; farther ones are bucketed logarithmically up to
    ``max_position`` (``transformers``' ``make_log_bucket_position``, computed in float32 as there).
    ``buckets <= 0`` leaves every offset exact.
    """
    rel = np.arange(-(length - 1), length, dtype=np.int64)
    if buckets <= 0 or max_position <= 0:
        return rel.astype(np.int32)
    mid = buckets // 2
    abs_pos = np.where((rel < mid) & (rel > -mid), mid - 1, np.abs(rel))
    ratio = np.log(abs_pos.astype(np.float32) / np.float32(mid)) / np.log(np.float32((max_position - 1) / mid))
    log_pos = np.ceil(ratio.astype(np.float32) * np.float32(mid - 1)) + mid
    return np.where(abs_pos <= mid, rel, log_pos * np.sign(rel)).astype(np.int32)


def relative_index(config: ModelConfig, query_positions: Array | np.ndarray, key_length: int) -> Array:
    """Rows of the relative embeddings each (query, key) pair reads: int32 ``[B, Q, K]``.

    Args:
      config: the model hyperparameters.
      query_positions: int ``[B, Q]`` sequence indices of the queries (keys are ``0 .. K-1``); a numpy
        array gives a constant.
      key_length: ``K``.
    """
    span = attention_span(config)
    table = log_bucket_table(key_length, config.position_buckets, max_relative_positions(config))
    xp = np if isinstance(query_positions, np.ndarray) else jnp
    offset = query_positions[..., None] - xp.arange(key_length)[None, None, :] + key_length - 1
    return xp.clip(xp.asarray(table)[offset] + span, 0, 2 * span - 1).astype(xp.int32)


def query_key_mask(query_ids: Array, key_ids: Array) -> Array:
    """Boolean ``[B, 1, Q, K]`` (``attention.Mask`` semantics with queries of their own ids)."""
    q, k = query_ids[:, None, :, None], key_ids[:, None, None, :]
    return (k > 0) & ((q == k) | (q == 0))


def _gather_rows(index: Array, scores: Array) -> Array:
    """``scores [B, N, X, R]`` read at ``index [B, X, Y]`` along R: ``[B, N, X, Y]``."""
    return jnp.take_along_axis(scores, jnp.broadcast_to(index[:, None], scores.shape[:2] + index.shape[1:]), axis=-1)


def disentangled_bias(q: Array, k: Array, pos_q: Array | None, pos_k: Array | None, index: Array,
                      scale: float) -> Array:
    """The c2p + p2c score bias, float32 ``[B, N, Q, K]`` (already scaled).

    Args:
      q, k: ``[B, Q, N, D]``, ``[B, K, N, D]`` content queries and keys.
      pos_q, pos_k: ``[R, N, D]`` projected relative embeddings (None: that term is off).
      index: int32 ``[B, Q, K]`` relative-embedding row of each pair (``relative_index``).
      scale: ``1 / sqrt(head_dim * (1 + terms))``.
    """
    batch = q.shape[0]
    index = jnp.broadcast_to(index, (batch,) + index.shape[1:])
    bias = jnp.zeros((), jnp.float32)
    if pos_k is not None:  # content -> position: Q_i · Pk[δ(i, j)]
        c2p = jnp.einsum("bqnd,rnd->bnqr", q, pos_k).astype(jnp.float32)
        bias = bias + _gather_rows(index, c2p)
    if pos_q is not None:  # position -> content: K_j · Pq[δ(i, j)]
        p2c = jnp.einsum("bknd,rnd->bnkr", k, pos_q).astype(jnp.float32)
        bias = bias + jnp.swapaxes(_gather_rows(jnp.swapaxes(index, 1, 2), p2c), -1, -2)
    return bias * scale


def biased_attention(name: str, q: Array, k: Array, v: Array, bias: Array, allowed: Array, scale: float,
                     dropout=None) -> Array:
    """Softmax attention with an additive score bias: ``[B, Q, N, D]`` context in the dtype of ``q``.

    Args:
      name: ``attention.select``'s answer: ``"reference"`` (einsums, float32 softmax, ``dropout`` on
        the probabilities) or a fused one (``jax.nn.dot_product_attention(bias=...)``).
      q, k, v: ``[B, Q, N, D]``, ``[B, K, N, D]``, ``[B, K, N, D]``.
      bias: float32 ``[B, N, Q, K]``; allowed: boolean ``[B, 1, Q, K]``; scale: of ``Q Kᵀ``.
    """
    if name != "reference":
        implementation = {"fused": None, "xla": "xla", "cudnn": "cudnn"}[name]
        return jax.nn.dot_product_attention(q, k, v, bias=bias.astype(q.dtype), mask=allowed, scale=scale,
                                            implementation=implementation)
    scores = jnp.einsum("bqnd,bknd->bnqk", q, k).astype(jnp.float32) * scale + bias
    probs = jax.nn.softmax(jnp.where(allowed, scores, _NEG_INF), axis=-1).astype(q.dtype)
    if dropout is not None:
        probs = dropout(probs)
    return jnp.einsum("bnqk,bknd->bqnd", probs, v)


class DisentangledSelfAttention(nn.Module):
    """Disentangled self-attention with the post-LN residual block around it."""

    config: ModelConfig
    deterministic: bool

    @nn.compact
    def __call__(self, x: Array, allowed: Array, rel_embeddings: Array, index: Array,
                 query_states: Array | None = None) -> Array:
        """Attends from ``query_states [B, Q, H]`` (default ``x``) to ``x [B, K, H]``; ``[B, Q, H]`` out.

        ``allowed``: boolean ``[B, 1, Q, K]``; ``rel_embeddings``: ``[2 * span, H]`` (normalised);
        ``index``: int32 ``[B or 1, Q, K]`` (``relative_index``).
        """
        cfg = self.config
        query_states = x if query_states is None else query_states
        shape = (cfg.hidden_size, cfg.num_heads, cfg.head_dim)
        project = {name: layers.einsum(cfg, shape, "bsh,hnd->bsnd", (EMBED, HEADS, KV), (HEADS, KV), name)
                   for name in ("query", "key", "value")}
        types = attention_types(cfg)
        if not cfg.share_att_key:
            for term, name in (("c2p", "pos_key"), ("p2c", "pos_query")):
                if term in types:
                    project[name] = layers.einsum(cfg, shape, "bsh,hnd->bsnd", (EMBED, HEADS, KV), (HEADS, KV), name)
        constrain = lambda t: nn.with_logical_constraint(t, layers.HEAD_AXES)  # noqa: E731
        q = constrain(project["query"](query_states))
        k, v = constrain(project["key"](x)), constrain(project["value"](x))
        rel = nn.Dropout(cfg.hidden_dropout)(rel_embeddings, deterministic=self.deterministic)[None]
        rel_axes = (None, ACT_HEADS, ACT_KV)
        pos_k = pos_q = None
        if "c2p" in types:
            pos_k = nn.with_logical_constraint(project["key" if cfg.share_att_key else "pos_key"](rel)[0], rel_axes)
        if "p2c" in types:
            pos_q = nn.with_logical_constraint(project["query" if cfg.share_att_key else "pos_query"](rel)[0], rel_axes)
        scale = 1.0 / math.sqrt(cfg.head_dim * (1 + len(types)))
        bias = disentangled_bias(q, k, pos_q, pos_k, index, scale)
        dropout = None
        if attention.needs_dropout(cfg, self.deterministic):
            drop = nn.Dropout(cfg.attention_dropout)
            dropout = lambda probs: drop(probs, deterministic=False)  # noqa: E731
        context = biased_attention(attention.select(cfg, self.deterministic), q, k, v, bias, allowed, scale, dropout)
        return layers.residual_norm(cfg, self.deterministic, layers.output_projection(cfg)(constrain(context)),
                                    query_states)


class DebertaLayer(nn.Module):
    """One post-LN DeBERTa layer: disentangled attention block, then the feed-forward block."""

    config: ModelConfig
    deterministic: bool

    @nn.compact
    def __call__(self, x: Array, allowed: Array, rel_embeddings: Array, index: Array,
                 query_states: Array | None = None) -> Array:
        """``x [B, K, H]`` keys/values (and queries unless ``query_states [B, Q, H]``); ``[B, Q, H]`` out."""
        cfg = self.config
        x = DisentangledSelfAttention(cfg, self.deterministic, name="attention")(
            x, allowed, rel_embeddings, index, query_states)
        return layers.residual_norm(cfg, self.deterministic, layers.feed_forward(cfg, x), x)


class CarryingDebertaLayer(DebertaLayer):
    """``DebertaLayer`` on a ``(hidden, previous)`` carry, so the stack also returns its last layer's input."""

    def __call__(self, carry, *args):  # noqa: D102 - same parameters as DebertaLayer
        hidden, _ = carry
        return DebertaLayer.__call__(self, hidden, *args), hidden


class Embeddings(nn.Module):
    """Word (+ absolute position if ``position_biased_input``) (+ token type) embeddings, LayerNorm, dropout.

    The absolute position table exists when ``position_biased_input`` or ``enhanced_mask_decoder``
    (the EMD reads it with :meth:`positions`).
    """

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.word_embeddings = self.param(
            "word_embeddings", layers.vocab_table_init(cfg, (VOCAB, EMBED)), (cfg.padded_vocab_size, cfg.hidden_size),
            cfg.parameter_dtype)
        if cfg.position_biased_input or cfg.enhanced_mask_decoder:
            self.position_embeddings = self.param(
                "position_embeddings", layers.normal_init(cfg, (POSITION, EMBED)),
                (cfg.max_position_embeddings, cfg.hidden_size), cfg.parameter_dtype)
        if cfg.type_vocab_size > 0:
            self.token_type_embeddings = self.param(
                "token_type_embeddings", layers.normal_init(cfg, (TYPE_VOCAB, EMBED)),
                (cfg.type_vocab_size, cfg.hidden_size), cfg.parameter_dtype)
        self.layer_norm = LayerNorm(cfg)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def __call__(self, input_ids: Array, segment_ids: Array, position_ids: Array, deterministic: bool) -> Array:
        """Returns embeddings ``[B, S, H]`` in the compute dtype."""
        cfg = self.config
        x = jnp.take(self.word_embeddings, input_ids, axis=0)
        if cfg.position_biased_input:
            x = x + jnp.take(self.position_embeddings, position_ids, axis=0)
        if cfg.type_vocab_size > 0:
            x = x + jnp.take(self.token_type_embeddings, segment_ids, axis=0)
        x = nn.with_logical_constraint(x.astype(cfg.compute_dtype), HIDDEN_AXES)
        return self.dropout(self.layer_norm(x), deterministic=deterministic)

    def positions(self, position_ids: Array) -> Array:
        """Absolute position embeddings ``[..., H]`` of ``position_ids`` (compute dtype, no norm)."""
        return jnp.take(self.position_embeddings, position_ids, axis=0).astype(self.config.compute_dtype)

    def attend(self, x: Array) -> Array:
        """Projects ``[..., H]`` onto the vocabulary with the (tied) word embeddings: ``[..., V]``."""
        return jnp.einsum("...h,vh->...v", x, self.word_embeddings.astype(self.config.compute_dtype))


class DebertaV2Model(nn.Module):
    """The DeBERTa-v2/v3 encoder: embeddings, disentangled-attention layers, the ContextPooler."""

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.embeddings = Embeddings(cfg)
        self.rel_embeddings = self.param(
            "rel_embeddings", layers.normal_init(cfg, (POSITION, EMBED)), (2 * attention_span(cfg), cfg.hidden_size),
            cfg.parameter_dtype)
        if cfg.norm_rel_ebd == "layer_norm":
            self.rel_layer_norm = LayerNorm(cfg)
        self.encoder = layers.LayerStack(cfg, CarryingDebertaLayer if cfg.enhanced_mask_decoder else DebertaLayer)
        self.pooler = layers.dense(cfg, cfg.hidden_size, (EMBED, EMBED_OUT), (EMBED_OUT,), "pooler")

    def _relative_embeddings(self) -> Array:
        rel = self.rel_embeddings.astype(self.config.compute_dtype)
        return self.rel_layer_norm(rel) if self.config.norm_rel_ebd == "layer_norm" else rel

    def _run(self, input_ids, segment_ids, sequence_ids, position_ids, deterministic):
        """``(last hidden [B, S, H], second-to-last hidden or None, pooled [B, H], layer args)``."""
        segment_ids, sequence_ids, position_ids = layers.encoder_inputs(input_ids, segment_ids, sequence_ids,
                                                                        position_ids)
        length = input_ids.shape[1]
        x = self.embeddings(input_ids, segment_ids, position_ids, deterministic)
        rel = self._relative_embeddings()
        index = jnp.asarray(relative_index(self.config, np.arange(length)[None], length))
        allowed = attention.Mask(sequence_ids).dense()
        out = self.encoder((x, x) if self.config.enhanced_mask_decoder else x, allowed, rel, index,
                           deterministic=deterministic)
        hidden, previous = out if self.config.enhanced_mask_decoder else (out, None)
        pooled = layers.activation_fn("gelu")(self.pooler(hidden[:, 0]))
        return hidden, previous, pooled, rel

    def __call__(self, input_ids: Array, segment_ids: Array | None = None, sequence_ids: Array | None = None,
                 position_ids: Array | None = None, deterministic: bool = True) -> tuple[Array, Array]:
        """Encodes a batch.

        Args:
          input_ids: int32 ``[B, S]`` token ids.
          segment_ids: int32 ``[B, S]`` token types (read only when ``type_vocab_size > 0``).
          sequence_ids: int32 ``[B, S]`` packed-sequence ids, 0 on padding (default: no padding).
          position_ids: int32 ``[B, S]`` (read only by ``position_biased_input`` and the EMD).
          deterministic: disables dropout when True.

        Returns:
          ``(sequence_output [B, S, H], pooled_output [B, H])`` in the compute dtype; ``pooled`` is
          ``gelu(dense(sequence_output[:, 0]))`` (transformers' ``ContextPooler``).
        """
        hidden, _, pooled, _ = self._run(input_ids, segment_ids, sequence_ids, position_ids, deterministic)
        return hidden, pooled

    def masked_states(self, input_ids: Array, segment_ids: Array, sequence_ids: Array, position_ids: Array,
                      masked_positions: Array, deterministic: bool = True) -> tuple[Array, Array, Array]:
        """What the MLM head reads at ``masked_positions`` int32 ``[B, P]``: ``(masked [B, P, H], sequence, pooled)``.

        Without the EMD, ``masked`` is the last layer's output there; with ``enhanced_mask_decoder``
        it is the EMD's (module docstring), computed for those queries only.
        """
        hidden, previous, pooled, rel = self._run(input_ids, segment_ids, sequence_ids, position_ids, deterministic)
        gather = lambda t: jnp.take_along_axis(t, masked_positions[..., None].astype(jnp.int32), axis=1)  # noqa: E731
        if not self.config.enhanced_mask_decoder or self.config.num_layers == 0:  # no last layer: no EMD
            return gather(hidden), hidden, pooled
        cfg = self.config
        _, sequence_ids, position_ids = layers.encoder_inputs(input_ids, None, sequence_ids, position_ids)
        query = gather(previous) + self.embeddings.positions(
            jnp.take_along_axis(position_ids, masked_positions.astype(jnp.int32), axis=1))
        allowed = query_key_mask(jnp.take_along_axis(sequence_ids, masked_positions.astype(jnp.int32), axis=1),
                                 sequence_ids)
        index = relative_index(cfg, masked_positions.astype(jnp.int32), input_ids.shape[1])
        stack = nn.meta.unbox(self.encoder.variables["params"])
        last = (jax.tree.map(lambda t: t[-1], stack["layers"]) if cfg.scan_layers
                else stack[f"layer_{cfg.num_layers - 1}"])
        decoder = DebertaLayer(cfg, deterministic, parent=None)
        for _ in range(2):  # two passes of the last layer, its weights shared (the paper's n = 2)
            rngs = {} if deterministic else {"dropout": self.make_rng("dropout")}
            query = decoder.apply({"params": last}, previous, allowed, rel, index, query, rngs=rngs)
        return query, hidden, pooled

    def attend(self, x: Array) -> Array:
        return self.embeddings.attend(x)


def layer_flops(config: ModelConfig, seq_len: int) -> float:
    """Forward matmul FLOPs per token of the stack: BERT's layer, plus each position term's (c2p, p2c) scores
    against the ``2 x attention_span`` relative rows (at most ``2 x seq_len``)."""
    rows = min(2 * attention_span(config), 2 * seq_len)
    return bert_stack_flops(config, seq_len) + config.num_layers * len(attention_types(config)) * 2 * rows * config.hidden_size


ARCHITECTURE = Architecture(
    name="deberta_v2",
    encoder=DebertaV2Model,
    mlm_head=bert.MLMHead,
    nsp=False,
    hf_conversion="bert_jax.interop.hf_deberta",
    summary="DeBERTa-v2/v3 (2021): disentangled c2p/p2c attention over log-bucketed relative positions, no "
            "absolute input positions, gelu ContextPooler; MLM (optionally the Enhanced Mask Decoder)",
    masked_states="masked_states",
    layer_flops=layer_flops,
)
