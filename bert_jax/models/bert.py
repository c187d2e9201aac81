"""BERT (Devlin et al., 2018): learned absolute positions, token types, post-LN layers, the tanh pooler.

Parameter tree of the encoder (``N`` layers, each ``layer_i``, or one stacked ``layers`` when
``scan_layers``), kept under ``bert`` by every model of ``bert_jax/heads.py``::

    embeddings/{word_embeddings, position_embeddings, token_type_embeddings, layer_norm}
    encoder/layer_i/{attention/{query, key, value, output, layer_norm}, intermediate, output, layer_norm}
    pooler

and of its masked-LM head (``mlm_head``): ``transform, layer_norm, output_bias`` (decoder tied to
``word_embeddings``). The Hugging Face conversion table is ``bert_jax/interop/hf_bert.py``.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax import attention
from bert_jax.config import ModelConfig
from bert_jax.models import Architecture, layers
from bert_jax.models.layers import (ACT_BATCH, ACT_LENGTH, ACT_VOCAB, EMBED, EMBED_OUT, HIDDEN_AXES, POSITION,
                                    TYPE_VOCAB, VOCAB, LayerNorm)

Array = jax.Array


class Embeddings(nn.Module):
    """Word + position + token type embeddings, then LayerNorm and dropout."""

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.word_embeddings = self.param(
            "word_embeddings", layers.vocab_table_init(cfg, (VOCAB, EMBED)), (cfg.padded_vocab_size, cfg.hidden_size),
            cfg.parameter_dtype)
        self.position_embeddings = self.param(
            "position_embeddings", layers.normal_init(cfg, (POSITION, EMBED)),
            (cfg.max_position_embeddings, cfg.hidden_size), cfg.parameter_dtype)
        self.token_type_embeddings = self.param(
            "token_type_embeddings", layers.normal_init(cfg, (TYPE_VOCAB, EMBED)),
            (cfg.type_vocab_size, cfg.hidden_size), cfg.parameter_dtype)
        self.layer_norm = LayerNorm(cfg)
        self.dropout = nn.Dropout(cfg.hidden_dropout)

    def __call__(self, input_ids: Array, segment_ids: Array, position_ids: Array, deterministic: bool) -> Array:
        """Returns embeddings ``[B, S, H]`` in the compute dtype."""
        dtype = self.config.compute_dtype
        x = (jnp.take(self.word_embeddings, input_ids, axis=0)
             + jnp.take(self.position_embeddings, position_ids, axis=0)
             + jnp.take(self.token_type_embeddings, segment_ids, axis=0))
        x = nn.with_logical_constraint(x.astype(dtype), HIDDEN_AXES)
        return self.dropout(self.layer_norm(x), deterministic=deterministic)

    def attend(self, x: Array) -> Array:
        """Projects ``[..., H]`` onto the vocabulary with the (tied) word embeddings: ``[..., V]``."""
        table = self.word_embeddings.astype(self.config.compute_dtype)
        return jnp.einsum("...h,vh->...v", x, table)


class SelfAttention(nn.Module):
    """Multi-head self-attention with the post-LN residual block around it."""

    config: ModelConfig
    deterministic: bool

    @nn.compact
    def __call__(self, x: Array, mask: attention.Mask) -> Array:
        cfg = self.config
        q, k, v = layers.qkv_projections(cfg, x)
        context = layers.DotProductAttention(cfg, self.deterministic, name="core")(q, k, v, mask)
        return layers.residual_norm(cfg, self.deterministic, layers.output_projection(cfg)(context), x)


class TransformerLayer(nn.Module):
    """One post-LN Transformer layer: attention block, then feed-forward block."""

    config: ModelConfig
    deterministic: bool

    @nn.compact
    def __call__(self, x: Array, mask: attention.Mask) -> Array:
        cfg = self.config
        x = SelfAttention(cfg, self.deterministic, name="attention")(x, mask)
        return layers.residual_norm(cfg, self.deterministic, layers.feed_forward(cfg, x), x)


class BertModel(nn.Module):
    """The BERT encoder: embeddings, Transformer layers and the tanh pooler on ``[CLS]``."""

    config: ModelConfig

    def setup(self):
        cfg = self.config
        self.embeddings = Embeddings(cfg)
        self.encoder = layers.LayerStack(cfg, TransformerLayer)
        self.pooler = layers.dense(cfg, cfg.hidden_size, (EMBED, EMBED_OUT), (EMBED_OUT,), "pooler")

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
        segment_ids, sequence_ids, position_ids = layers.encoder_inputs(input_ids, segment_ids, sequence_ids,
                                                                        position_ids)
        x = self.embeddings(input_ids, segment_ids, position_ids, deterministic)
        x = self.encoder(x, attention.Mask(sequence_ids), deterministic=deterministic)
        pooled = jnp.tanh(self.pooler(x[:, 0]))
        return x, pooled

    def attend(self, x: Array) -> Array:
        return self.embeddings.attend(x)


class MLMHead(nn.Module):
    """Masked-LM head: dense + activation + LayerNorm, then the tied vocabulary projection + bias.

    Attributes:
      config: the model hyperparameters.
      activation: the transform's activation; None: ``config.hidden_act`` (BERT's head; RoBERTa's is GELU).
    """

    config: ModelConfig
    activation: str | None = None

    @nn.compact
    def __call__(self, x: Array, attend) -> Array:
        """Maps ``[B, P, H]`` hidden states to float32 logits ``[B, P, V]`` (``attend``: the tied decoder).

        ``V`` is ``config.padded_vocab_size``; the padding ids' logits are masked (``layers.mask_padded_vocab``).
        """
        cfg = self.config
        x = layers.dense(cfg, cfg.hidden_size, (EMBED, EMBED_OUT), (EMBED_OUT,), "transform")(x)
        x = LayerNorm(cfg, name="layer_norm")(layers.activation_fn(self.activation or cfg.hidden_act)(x))
        bias = self.param("output_bias", layers.zeros_init((VOCAB,)), (cfg.padded_vocab_size,), cfg.parameter_dtype)
        logits = layers.mask_padded_vocab((attend(x) + bias.astype(cfg.compute_dtype)).astype(jnp.float32), cfg)
        return nn.with_logical_constraint(logits, (ACT_BATCH, ACT_LENGTH, ACT_VOCAB))



ARCHITECTURE = Architecture(
    name="bert",
    encoder=BertModel,
    mlm_head=MLMHead,
    nsp=True,
    hf_conversion="bert_jax.interop.hf_bert",
    summary="BERT (2018): learned absolute positions, token types, post-LN, GELU, tanh pooler; MLM + NSP",
)
