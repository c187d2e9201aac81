"""Every head on top of the BERT encoder, pretraining and fine-tuning, and the models they form.

Every model keeps the encoder under ``bert`` (so pretraining checkpoints and Hugging Face weights load
into it unchanged) and adds its head beside it, named as Hugging Face names it:

==========================  =================================  ==========================================
model                       head parameters                    used by
==========================  =================================  ==========================================
``BertForPreTraining``      ``mlm_head``, ``nsp_head``         pretraining, fill-mask, HF conversion
``PooledClassifier``        ``classifier`` (``H -> C``)        classification, regression
``MultipleChoiceModel``     ``classifier`` (``H -> 1``)        multiple choice (SWAG)
``SpanModel``               ``qa_outputs`` (``H -> 2``)        extractive QA (SQuAD)
``TokenClassifier``         ``classifier`` (``H -> tags``)     token classification (CoNLL-2003)
==========================  =================================  ==========================================

The token-level heads read :func:`token_states`: the sequence output, through the architecture's
``token_head`` when it declares one (``models.Architecture``; ModernBERT's prediction head, as in
transformers' ``ModernBertForTokenClassification`` / ``ForQuestionAnswering``). An architecture whose
question-answering class names the span projection otherwise sets ``Architecture.span_head``
(ModernBERT: ``classifier``).

Fine-tuning heads start from BERT's truncated-normal initialisation and see dropout
(``hidden_dropout``) on their input, as in the original ``run_classifier.py``. "Drop the pretraining
heads" means "drop :data:`PRETRAINING_HEADS`, keep ``params['bert']``".
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax import attention, models
from bert_jax.config import ModelConfig
from bert_jax.models.layers import CLASSES, EMBED, dense
from bert_jax.pooling import mean_pooling as mean_over_tokens  # Sentence-BERT mean pooling, float32 [B, H]
from data_pipelines import batch as batch_lib

Array = jax.Array

# The top-level parameter collections of the pretraining heads (dropped when fine-tuning starts).
PRETRAINING_HEADS = ("mlm_head", "nsp_head")
POOLINGS = ("cls", "mean")


# ----------------------------------------------------------------------------------------------------
# Pretraining


def gather_positions(sequence: Array, positions: Array) -> Array:
    """Gathers ``sequence [B, S, H]`` at ``positions [B, P]`` -> ``[B, P, H]``."""
    return jnp.take_along_axis(sequence, positions[..., None].astype(jnp.int32), axis=1)


def encode_batch(encoder: nn.Module, batch: Mapping[str, Array], deterministic: bool,
                 global_tokens: str = "cls") -> tuple[Array, Array]:
    """Runs ``encoder`` on the encoder fields of a contract batch (``data_pipelines.batch``).

    For an architecture with global attention (``Architecture.global_attention``: Longformer) the global
    tokens are the batch's ``global_attention_mask`` when it has one, else ``global_tokens``
    (``attention.global_tokens``: ``"cls"``, ``"question"``, ``"none"``).
    """
    extra = {}
    if models.get(encoder.config.architecture).global_attention:
        extra["global_attention_mask"] = batch.get(batch_lib.GLOBAL_ATTENTION_FIELD)
        if extra["global_attention_mask"] is None:
            extra["global_attention_mask"] = attention.global_tokens(
                global_tokens, batch["segment_ids"], batch["sequence_ids"], batch["position_ids"])
    return encoder(batch["input_ids"], batch["segment_ids"], batch["sequence_ids"], batch["position_ids"],
                   deterministic=deterministic, **extra)


class PreTrainingModel(nn.Module):
    """The encoder with its architecture's MLM head (at the masked positions only) and, for the
    architectures that have one (BERT), the NSP head on the pooled vector."""

    config: ModelConfig

    def setup(self):
        architecture = models.get(self.config.architecture)
        self.bert = architecture.encoder(self.config)
        self.mlm_head = architecture.mlm_head(self.config)
        if architecture.nsp:
            self.nsp_head = dense(self.config, 2, (EMBED, CLASSES), (CLASSES,), "nsp_head")

    def __call__(self, batch: dict[str, Array], deterministic: bool = True) -> dict[str, Array]:
        """Runs the encoder and both heads on a contract batch.

        Args:
          batch: the pretraining fields of ``data_pipelines.batch.PRETRAINING_FIELDS``.
          deterministic: disables dropout when True.

        Returns:
          ``{"mlm_logits": float32 [B, P, V], "nsp_logits": float32 [B, 2]}`` (no ``nsp_logits`` for
          an architecture without NSP).
        """
        masked, _, pooled = self._masked_states(batch, batch["masked_lm_positions"], deterministic)
        outputs = {"mlm_logits": self.mlm_head(masked, self.bert.attend)}
        if models.get(self.config.architecture).nsp:
            outputs["nsp_logits"] = self.nsp_head(pooled).astype(jnp.float32)
        return outputs

    def all_position_logits(self, batch: dict[str, Array]) -> Array:
        """MLM logits ``[B, S, V]`` at every position (fill-mask and the HF parity tests)."""
        b, s = batch["input_ids"].shape
        positions = jnp.broadcast_to(jnp.arange(s, dtype=jnp.int32), (b, s))
        return self.mlm_head(self._masked_states(batch, positions, True)[0], self.bert.attend)

    def _masked_states(self, batch, positions: Array, deterministic: bool) -> tuple[Array, Array, Array]:
        """``(hidden states the MLM head reads at positions [B, P] -> [B, P, H], sequence, pooled)``."""
        method = models.get(self.config.architecture).masked_states
        if method is not None:  # e.g. DeBERTa's Enhanced Mask Decoder
            return getattr(self.bert, method)(batch["input_ids"], batch["segment_ids"], batch["sequence_ids"],
                                              batch["position_ids"], positions, deterministic=deterministic)
        sequence, pooled = encode_batch(self.bert, batch, deterministic)
        return gather_positions(sequence, positions), sequence, pooled


# ----------------------------------------------------------------------------------------------------
# Fine-tuning


def head_dense(config: ModelConfig, features: int, name: str) -> nn.Dense:
    """A task head's output projection ``[..., H] -> [..., features]`` (kernel axes ``embed, classes``)."""
    return nn.Dense(
        features,
        dtype=config.compute_dtype,
        param_dtype=config.parameter_dtype,
        kernel_init=nn.with_logical_partitioning(nn.initializers.truncated_normal(config.initializer_range),
                                                 (EMBED, CLASSES)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (CLASSES,)),
        name=name,
    )


class PooledClassifier(nn.Module):
    """BERT, then dropout and a dense layer on a sentence vector.

    Attributes:
      config: the encoder's hyperparameters.
      num_outputs: classes (1 for regression and for multiple-choice scores).
      pooling: ``"cls"``, BERT's pooled output (tanh dense layer on ``[CLS]``), or ``"mean"``, the mean
        of the last hidden states over the real tokens (for Sentence-BERT encoders such as
        all-MiniLM-L6-v2, trained with mean pooling and never with their ``[CLS]`` pooler).
    """

    config: ModelConfig
    num_outputs: int
    pooling: str = "cls"

    def setup(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r}; expected one of {POOLINGS}")
        self.bert = models.encoder(self.config)
        self.dropout = nn.Dropout(self.config.hidden_dropout)
        self.classifier = head_dense(self.config, self.num_outputs, "classifier")

    def __call__(self, batch: Mapping[str, Array], deterministic: bool = True) -> Array:
        """float32 ``[B, num_outputs]`` logits from the encoder fields of ``batch`` (``[B, S]`` each)."""
        sequence, pooled = encode_batch(self.bert, batch, deterministic)
        if self.pooling == "mean":
            pooled = mean_over_tokens(sequence, batch["input_mask"])
        return self.classifier(self.dropout(pooled, deterministic=deterministic)).astype(jnp.float32)


class MultipleChoiceModel(PooledClassifier):
    """``PooledClassifier`` with one output, applied to every candidate: float32 logits ``[B, C]``.

    A batch is ``[B, C, S]``; BERT runs on the ``B * C`` rows (the Hugging Face
    ``BertForMultipleChoice`` layout) and the scores are reshaped to ``[B, C]``.
    """

    def __call__(self, batch: Mapping[str, Array], deterministic: bool = True) -> Array:
        b, c, s = batch["input_ids"].shape
        rows = {name: batch[name].reshape(b * c, s) for name in batch_lib.ENCODER_FIELDS}
        return super().__call__(rows, deterministic).reshape(b, c)


def token_states(encoder: nn.Module, batch: Mapping[str, Array], deterministic: bool,
                 global_tokens: str = "cls") -> Array:
    """The hidden states ``[B, S, H]`` a token-level head projects: the encoder's sequence output, through
    the architecture's ``token_head`` when it has one (ModernBERT's prediction head on every token)."""
    sequence, _ = encode_batch(encoder, batch, deterministic, global_tokens)
    method = models.get(encoder.config.architecture).token_head
    return sequence if method is None else getattr(encoder, method)(sequence)


class SpanModel(nn.Module):
    """BERT with a ``H -> 2`` projection on every token (``qa_outputs``, or the architecture's
    ``span_head`` name): ``{"start_logits", "end_logits"}``, float32 ``[B, S]`` each."""

    config: ModelConfig

    def setup(self):
        self.bert = models.encoder(self.config)
        self.qa_outputs = head_dense(self.config, 2, models.get(self.config.architecture).span_head)

    def __call__(self, batch: Mapping[str, Array], deterministic: bool = True) -> dict[str, Array]:
        sequence = token_states(self.bert, batch, deterministic, global_tokens="question")
        logits = self.qa_outputs(sequence).astype(jnp.float32)
        return {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}


class TokenClassifier(nn.Module):
    """BERT, then dropout and ``classifier`` at every position: float32 logits ``[B, S, num_labels]``.

    The architecture's ``token_head`` (if any) runs on every token before the dropout."""

    config: ModelConfig
    num_labels: int

    def setup(self):
        self.bert = models.encoder(self.config)
        self.dropout = nn.Dropout(self.config.hidden_dropout)
        self.classifier = head_dense(self.config, self.num_labels, "classifier")

    def __call__(self, batch: Mapping[str, Array], deterministic: bool = True) -> Array:
        sequence = token_states(self.bert, batch, deterministic)
        return self.classifier(self.dropout(sequence, deterministic=deterministic)).astype(jnp.float32)
