"""ModernBERT (Warner et al., 2024): RoPE, GeGLU, pre-LN, alternating global and sliding-window attention.

What changes against BERT (``bert.py``), following ``transformers.ModernBertModel``:

* no learned positions and no token types: rotary embeddings (``rotary.py``) rotate queries and keys,
  with base ``rope_theta`` on the global layers and ``local_rope_theta`` on the local ones, at the
  batch's ``position_ids`` (restarting per packed sequence);
* layer ``i`` attends globally when ``i % global_attn_every_n_layers == 0`` and otherwise within a
  sliding window of ``local_attention // 2`` keys on each side (``attention.Mask.with_window``, run by
  the banded kernel of ``bert_jax/banded_attention.py``: memory linear in the length, up to 8,192);
* pre-LN residual blocks (layer 0 has no attention norm: the embedding norm precedes it), a final norm,
  a gated feed-forward (``layers.gated_feed_forward``: GeGLU), and biases only where the config asks
  (``norm_bias``, ``attention_bias``, ``mlp_bias``; ModernBERT has none);
* the sentence vector (``pooled``) is Hugging Face's classification head input: the first token
  (``classifier_pooling="cls"``) or the mean over real tokens (``"mean"``), then ``pooler``: dense
  (``classifier_bias``), ``classifier_act`` and a norm (``ModernBertPredictionHead``), so our
  ``PooledClassifier``'s ``classifier`` on it is ``ModernBertForSequenceClassification``;
* the token-level heads (tagging, span) read the same prediction head on every token
  (``Architecture.token_head``: :meth:`ModernBertModel.prediction_head`), and the span projection is named
  ``classifier`` (``Architecture.span_head``), as in ``ModernBertForTokenClassification`` /
  ``ModernBertForQuestionAnswering``;
* masked LM only (no NSP); its head is dense + activation + norm, then the tied decoder with a bias.

Layers differ (global or local window, layer 0 without ``attn_norm``), so the stack is a Python loop
(``layer_i``; ``remat`` per layer): ``scan_layers=True`` is refused with a one-line error. Parameter
tree of the encoder, kept under ``bert``::

    embeddings/{word_embeddings, norm}
    encoder/layer_i/{attn_norm (i > 0), attention/{qkv [H, 3, N, D], output}, mlp_norm, wi [H, 2, I], wo}
    final_norm
    pooler/{dense, layer_norm}

and of the masked-LM head (``mlm_head``): ``transform, layer_norm, output_bias`` (decoder tied to
``word_embeddings``). The Hugging Face conversion table is ``bert_jax/interop/hf_modernbert.py``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax import attention
from bert_jax.config import ModelConfig
from bert_jax.models import Architecture, layers, rotary
from bert_jax.models.layers import (ACT_BATCH, ACT_LENGTH, ACT_VOCAB, EMBED, EMBED_OUT, HEAD_AXES, HEADS,
                                    HIDDEN_AXES, KV, VOCAB, LayerNorm)
from bert_jax.pooling import mean_pooling

Array = jax.Array


def is_global_layer(config: ModelConfig, index: int) -> bool:
    """Whether layer ``index`` attends globally (else within the sliding window)."""
    return index % config.global_attn_every_n_layers == 0


def local_window(config: ModelConfig) -> tuple[int, int]:
    """The ``(left, right)`` key offsets of the local layers: ``local_attention // 2`` each side."""
    half = config.local_attention // 2
    return (half, half)


class Embeddings(nn.Module):
    """Token embeddings, then the norm and dropout (no positions, no token types)."""

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.word_embeddings = self.param(
            "word_embeddings", layers.vocab_table_init(cfg, (VOCAB, EMBED)), (cfg.padded_vocab_size, cfg.hidden_size),
            cfg.parameter_dtype)
        self.norm = LayerNorm(cfg, use_bias=cfg.norm_bias)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def __call__(self, input_ids: Array, deterministic: bool) -> Array:
        """Returns embeddings ``[B, S, H]`` in the compute dtype."""
        x = jnp.take(self.word_embeddings, input_ids, axis=0).astype(self.config.compute_dtype)
        x = nn.with_logical_constraint(x, HIDDEN_AXES)
        return self.dropout(self.norm(x), deterministic=deterministic)

    def attend(self, x: Array) -> Array:
        """Projects ``[..., H]`` onto the vocabulary with the (tied) word embeddings: ``[..., V]``."""
        table = self.word_embeddings.astype(self.config.compute_dtype)
        return jnp.einsum("...h,vh->...v", x, table)


class SelfAttention(nn.Module):
    """Fused q/k/v projection, rotary embeddings, global or windowed attention, output projection.

    Attributes:
      window: ``(left, right)`` for a local layer, None for a global one.
    """

    config: ModelConfig
    deterministic: bool
    window: tuple[int, int] | None

    @nn.compact
    def __call__(self, x: Array, mask: attention.Mask, rope: tuple[Array, Array]) -> Array:
        """``x [B, S, H]`` (normed), ``rope`` the ``(cos, sin)`` ``[B, S, D]`` of this layer's base."""
        cfg = self.config
        shape = (cfg.hidden_size, 3, cfg.num_heads, cfg.head_dim)
        qkv = layers.einsum(cfg, shape, "bsh,hcnd->bscnd", (EMBED, None, HEADS, KV), (None, HEADS, KV), "qkv",
                            cfg.attention_bias)(x)
        q, k, v = (nn.with_logical_constraint(qkv[:, :, i], HEAD_AXES) for i in range(3))
        q, k = rotary.apply_rotary(q, *rope), rotary.apply_rotary(k, *rope)
        context = layers.DotProductAttention(cfg, self.deterministic, name="core")(
            q, k, v, mask.with_window(self.window))
        out = layers.output_projection(cfg, use_bias=cfg.attention_bias)(context)
        out = nn.Dropout(cfg.attention_dropout)(out, deterministic=self.deterministic)
        return nn.with_logical_constraint(out, HIDDEN_AXES)


class TransformerLayer(nn.Module):
    """One pre-LN layer: ``x + attention(norm(x))``, then ``x + geglu(norm(x))``.

    Attributes:
      is_global: global attention (else the local window).
      first: layer 0, whose attention input is the embedding norm's output (no ``attn_norm``).
    """

    config: ModelConfig
    deterministic: bool
    is_global: bool
    first: bool

    @nn.compact
    def __call__(self, x: Array, mask: attention.Mask, global_rope: tuple[Array, Array],
                 local_rope: tuple[Array, Array]) -> Array:
        cfg = self.config
        h = x if self.first else LayerNorm(cfg, use_bias=cfg.norm_bias, name="attn_norm")(x)
        window = None if self.is_global else local_window(cfg)
        rope = global_rope if self.is_global else local_rope
        x = x + SelfAttention(cfg, self.deterministic, window, name="attention")(h, mask, rope)
        h = LayerNorm(cfg, use_bias=cfg.norm_bias, name="mlp_norm")(x)
        h = layers.gated_feed_forward(cfg, h, cfg.mlp_bias, cfg.hidden_dropout, self.deterministic)
        return nn.with_logical_constraint(x + h, HIDDEN_AXES)


class Encoder(nn.Module):
    """The loop of ``num_layers`` layers (``layer_i``), each rematerialised when ``config.remat``."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, mask: attention.Mask, global_rope, local_rope, deterministic: bool) -> Array:
        cfg = self.config
        layer_cls = nn.remat(TransformerLayer) if cfg.remat else TransformerLayer
        for i in range(cfg.num_layers):
            x = layer_cls(cfg, deterministic, is_global_layer(cfg, i), i == 0, name=f"layer_{i}")(
                x, mask, global_rope, local_rope)
        return x


class PredictionHead(nn.Module):
    """Dense (``classifier_bias``), ``classifier_act``, norm: Hugging Face's ``ModernBertPredictionHead``."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cfg = self.config
        x = layers.dense(cfg, cfg.hidden_size, (EMBED, EMBED_OUT), (EMBED_OUT,), "dense", use_bias=cfg.classifier_bias)(x)
        return LayerNorm(cfg, use_bias=cfg.norm_bias, name="layer_norm")(layers.activation_fn(cfg.classifier_act)(x))


class ModernBertModel(nn.Module):
    """The ModernBERT encoder: embeddings, the layer loop, the final norm and the pooled head input."""

    config: ModelConfig

    def setup(self):
        cfg = self.config
        if cfg.scan_layers:
            raise ValueError("model.scan_layers=True: ModernBERT's layers differ (global or windowed attention, "
                             "layer 0 without attn_norm), so its stack is a loop; set model.scan_layers=False")
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)
        self.final_norm = LayerNorm(cfg, use_bias=cfg.norm_bias)
        self.pooler = PredictionHead(cfg)

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
          segment_ids: ignored (ModernBERT has no token types); part of the shared encoder call.
          sequence_ids: int32 ``[B, S]`` packed-sequence ids, 0 on padding (default: no padding).
          position_ids: int32 ``[B, S]`` rotary positions (default ``0..S-1``).
          deterministic: disables dropout when True.

        Returns:
          ``(sequence_output [B, S, H], pooled [B, H])`` in the compute dtype; ``pooled`` is the
          prediction head on the first token or on the mean of the real tokens (``classifier_pooling``).
        """
        del segment_ids
        cfg = self.config
        _, sequence_ids, position_ids = layers.encoder_inputs(input_ids, None, sequence_ids, position_ids)
        global_rope = rotary.rotary_tables(position_ids, cfg.head_dim, cfg.rope_theta)
        local_rope = rotary.rotary_tables(position_ids, cfg.head_dim, cfg.local_rope_theta)
        x = self.embeddings(input_ids, deterministic)
        x = self.encoder(x, attention.Mask(sequence_ids), global_rope, local_rope, deterministic)
        x = nn.with_logical_constraint(self.final_norm(x), HIDDEN_AXES)
        if cfg.classifier_pooling == "mean":
            first = mean_pooling(x, sequence_ids > 0).astype(x.dtype)
        else:
            first = x[:, 0]
        return x, self.pooler(first)

    def attend(self, x: Array) -> Array:
        return self.embeddings.attend(x)

    def prediction_head(self, sequence: Array) -> Array:
        """``pooler`` (the prediction head) on every token: ``[B, S, H] -> [B, S, H]``, what transformers'
        ``ModernBertForTokenClassification`` / ``ForQuestionAnswering`` feed their ``classifier``."""
        return nn.with_logical_constraint(self.pooler(sequence), HIDDEN_AXES)


class MLMHead(nn.Module):
    """Masked-LM head: the prediction head, then the tied decoder + bias (``decoder_bias``)."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, attend) -> Array:
        """Maps ``[B, P, H]`` hidden states to float32 logits ``[B, P, V]`` (``attend``: the tied decoder)."""
        cfg = self.config
        x = layers.dense(cfg, cfg.hidden_size, (EMBED, EMBED_OUT), (EMBED_OUT,), "transform",
                         use_bias=cfg.classifier_bias)(x)
        x = LayerNorm(cfg, use_bias=cfg.norm_bias, name="layer_norm")(layers.activation_fn(cfg.classifier_act)(x))
        logits = attend(x)
        if cfg.decoder_bias:
            bias = self.param("output_bias", layers.zeros_init((VOCAB,)), (cfg.padded_vocab_size,), cfg.parameter_dtype)
            logits = logits + bias.astype(cfg.compute_dtype)
        logits = layers.mask_padded_vocab(logits.astype(jnp.float32), cfg)
        return nn.with_logical_constraint(logits, (ACT_BATCH, ACT_LENGTH, ACT_VOCAB))


def layer_flops(config: ModelConfig, seq_len: int) -> float:
    """Forward matmul FLOPs per token of the stack: Wqkv + Wo, GeGLU (``Wi [H, 2I]``, ``Wo``), and scores +
    values over ``seq_len`` keys in the global layers and the window's ``local_attention + 1`` in the local ones."""
    h, i = config.hidden_size, config.intermediate_size
    keys = sum(seq_len if is_global_layer(config, n) else min(seq_len, config.local_attention + 1)
               for n in range(config.num_layers))
    return config.num_layers * 2 * (4 * h * h + 3 * h * i) + 4 * keys * h


ARCHITECTURE = Architecture(
    name="modernbert",
    encoder=ModernBertModel,
    mlm_head=MLMHead,
    nsp=False,
    hf_conversion="bert_jax.interop.hf_modernbert",
    summary="ModernBERT (2024): RoPE (global/local theta), GeGLU, pre-LN, no biases, global attention every "
            "N layers and sliding-window local attention elsewhere, 8,192 tokens; MLM only",
    layer_flops=layer_flops,
    token_head="prediction_head",
    span_head="classifier",
)
