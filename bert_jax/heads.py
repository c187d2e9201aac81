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

Fine-tuning heads start from BERT's truncated-normal initialisation and see dropout
(``hidden_dropout``) on their input, as in the original ``run_classifier.py``. "Drop the pretraining
heads" means "drop :data:`PRETRAINING_HEADS`, keep ``params['bert']``".
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from bert_jax.config import ModelConfig
from bert_jax.model import (ACT_BATCH, ACT_LENGTH, ACT_VOCAB, CLASSES, EMBED, VOCAB, BertModel, LayerNorm,
                            _dense, _zeros, activation_fn, encode_batch)
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


class MLMHead(nn.Module):
    """Masked-LM head: dense + activation + LayerNorm, then the tied vocabulary projection + bias."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array, attend) -> Array:
        """Maps ``[B, P, H]`` hidden states to float32 logits ``[B, P, V]``."""
        cfg = self.config
        x = _dense(cfg, cfg.hidden_size, (EMBED, "embed_out"), ("embed_out",), "transform")(x)
        x = LayerNorm(cfg, name="layer_norm")(activation_fn(cfg.hidden_act)(x))
        bias = self.param("output_bias", _zeros((VOCAB,)), (cfg.vocab_size,), cfg.parameter_dtype)
        logits = attend(x) + bias.astype(cfg.compute_dtype)
        return nn.with_logical_constraint(logits.astype(jnp.float32), (ACT_BATCH, ACT_LENGTH, ACT_VOCAB))


class BertForPreTraining(nn.Module):
    """BERT with the MLM head (at the masked positions only) and the NSP head."""

    config: ModelConfig

    def setup(self):
        self.bert = BertModel(self.config)
        self.mlm_head = MLMHead(self.config)
        self.nsp_head = _dense(self.config, 2, (EMBED, CLASSES), (CLASSES,), "nsp_head")

    def __call__(self, batch: dict[str, Array], deterministic: bool = True) -> dict[str, Array]:
        """Runs the encoder and both heads on a contract batch.

        Args:
          batch: the pretraining fields of ``data_pipelines.batch.PRETRAINING_FIELDS``.
          deterministic: disables dropout when True.

        Returns:
          ``{"mlm_logits": float32 [B, P, V], "nsp_logits": float32 [B, 2]}``.
        """
        sequence, pooled = encode_batch(self.bert, batch, deterministic)
        masked = gather_positions(sequence, batch["masked_lm_positions"])
        return {
            "mlm_logits": self.mlm_head(masked, self.bert.attend),
            "nsp_logits": self.nsp_head(pooled).astype(jnp.float32),
        }

    def all_position_logits(self, batch: dict[str, Array]) -> Array:
        """MLM logits ``[B, S, V]`` at every position (fill-mask and the HF parity tests)."""
        sequence, _ = encode_batch(self.bert, batch, deterministic=True)
        return self.mlm_head(sequence, self.bert.attend)


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
        self.bert = BertModel(self.config)
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


class SpanModel(nn.Module):
    """BERT with ``qa_outputs``: ``{"start_logits", "end_logits"}``, float32 ``[B, S]`` each."""

    config: ModelConfig

    def setup(self):
        self.bert = BertModel(self.config)
        self.qa_outputs = head_dense(self.config, 2, "qa_outputs")

    def __call__(self, batch: Mapping[str, Array], deterministic: bool = True) -> dict[str, Array]:
        sequence, _ = encode_batch(self.bert, batch, deterministic)
        logits = self.qa_outputs(sequence).astype(jnp.float32)
        return {"start_logits": logits[..., 0], "end_logits": logits[..., 1]}


class TokenClassifier(nn.Module):
    """BERT, then dropout and ``classifier`` at every position: float32 logits ``[B, S, num_labels]``."""

    config: ModelConfig
    num_labels: int

    def setup(self):
        self.bert = BertModel(self.config)
        self.dropout = nn.Dropout(self.config.hidden_dropout)
        self.classifier = head_dense(self.config, self.num_labels, "classifier")

    def __call__(self, batch: Mapping[str, Array], deterministic: bool = True) -> Array:
        sequence, _ = encode_batch(self.bert, batch, deterministic)
        return self.classifier(self.dropout(sequence, deterministic=deterministic)).astype(jnp.float32)
