"""RoBERTa (Liu et al., 2019): BERT's encoder with positions counted past the padding id, no NSP.

What changes against ``bert_jax/models/bert.py`` (whose attention, layers and MLM head are reused):

* Positions: Hugging Face's ``RobertaEmbeddings`` numbers a real token ``padding_idx + 1 + index`` and
  gives padding the position ``padding_idx`` (``ModelConfig.pad_token_id``, 1 for ``roberta-base``),
  so the table has ``max_position_embeddings = max_seq_length + pad_token_id + 1`` rows (514). Our
  batches carry per-packed-sequence ``position_ids`` starting at 0 and ``sequence_ids`` (0 on padding);
  the embedding position is ``position_ids + pad_token_id + 1`` on real tokens and ``pad_token_id`` on
  padding, which equals Hugging Face's numbering for every unpacked row and restarts at every packed
  sequence.
* Token types: RoBERTa has one (``type_vocab_size=1``); with a single type every token takes it, so
  pair rows (whose second segment has id 1) need no special casing.
* Pretraining: MLM only (``Architecture.nsp=False``); the LM head (dense, GELU, LayerNorm, tied
  decoder + bias) is BERT's ``MLMHead`` under the same names.
* ``pooled`` is ``tanh(pooler(h[<s>]))`` as in BERT: the ``RobertaModel`` pooler, and also the first
  half of ``RobertaForSequenceClassification``'s head (``classifier.dense`` + tanh; our ``classifier``
  is its ``classifier.out_proj``), mapped in ``bert_jax/interop/hf_roberta.py``.

The parameter tree is BERT's (``embeddings/{word_embeddings, position_embeddings,
token_type_embeddings, layer_norm}``, ``encoder/layer_i/...``, ``pooler``; ``mlm_head/{transform,
layer_norm, output_bias}``).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from bert_jax.models import Architecture, layers
from bert_jax.models.bert import BertModel, Embeddings, MLMHead, TransformerLayer
from bert_jax.models.layers import EMBED, EMBED_OUT

Array = jax.Array


def roberta_positions(position_ids: Array, sequence_ids: Array, pad_token_id: int) -> Array:
    """Hugging Face RoBERTa's position numbers from ours.

    Args:
      position_ids: int32 ``[B, S]``, 0-based within each packed sequence.
      sequence_ids: int32 ``[B, S]``, 0 on padding.
      pad_token_id: the padding id (``padding_idx``).

    Returns:
      int32 ``[B, S]``: ``position_ids + pad_token_id + 1`` on real tokens, ``pad_token_id`` on padding.
    """
    return jnp.where(sequence_ids > 0, position_ids + pad_token_id + 1, pad_token_id).astype(jnp.int32)


class RobertaEmbeddings(Embeddings):
    """BERT's embeddings (same parameters) reading RoBERTa positions and a single token type."""

    def __call__(self, input_ids: Array, segment_ids: Array, position_ids: Array, deterministic: bool) -> Array:
        """Returns embeddings ``[B, S, H]``; ``position_ids`` are already RoBERTa's (see ``RobertaModel``)."""
        if self.config.type_vocab_size == 1:
            segment_ids = jnp.zeros_like(segment_ids)
        return super().__call__(input_ids, segment_ids, position_ids, deterministic)


class RobertaModel(BertModel):
    """The RoBERTa encoder: BERT's layers and pooler over :class:`RobertaEmbeddings`."""

    def setup(self):
        cfg = self.config
        self.embeddings = RobertaEmbeddings(cfg)
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
        """Encodes a batch (arguments as ``BertModel``; positions are offset past ``pad_token_id``).

        Returns:
          ``(sequence_output [B, S, H], pooled_output [B, H])`` in the compute dtype.
        """
        _, sequence_ids, position_ids = layers.encoder_inputs(input_ids, None, sequence_ids, position_ids)
        positions = roberta_positions(position_ids, sequence_ids, self.config.pad_token_id)
        return super().__call__(input_ids, segment_ids, sequence_ids, positions, deterministic)


ARCHITECTURE = Architecture(
    name="roberta",
    encoder=RobertaModel,
    mlm_head=MLMHead,
    nsp=False,
    hf_conversion="bert_jax.interop.hf_roberta",
    summary="RoBERTa (2019): BERT's encoder, positions offset past the padding id, one token type, "
            "byte-level BPE; MLM only (dynamic masking, full-sentence packing)",
    position_offset=lambda config: config.pad_token_id + 1,
)
