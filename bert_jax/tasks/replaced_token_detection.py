"""Replaced-token detection (ELECTRA, Clark et al. 2020; DeBERTa-v3, He et al. 2021): task ``"rtd"``.

A small generator (the same encoder architecture, fewer layers) is trained with masked-LM at the masked
positions of a pretraining batch; its samples (``jax.random.categorical`` on its logits, no gradient
through the sampling) replace the masked tokens of the original sequence, and the discriminator learns
to tell, at every real token, whether it is the original or a replacement. Both train together in one
step: ``loss = mlm_loss + rtd_weight * rtd_loss`` (``rtd_weight`` = ELECTRA's lambda = 50).

Embedding sharing (``embedding_sharing``):

* ``"ees"`` (ELECTRA): the generator uses the discriminator's token-embedding table ``E`` (both losses
  train it).
* ``"gdes"`` (DeBERTa-v3's gradient-disentangled sharing): the generator uses ``E``; the discriminator
  uses ``stop_gradient(E) + E_delta``, with ``E_delta`` initialised to zero, so the discriminator's loss
  trains only ``E_delta`` and the generator's only ``E``.
* ``"none"``: separate tables (the generator may then be narrower, ``generator_hidden_size``).

Parameter tree (what the optimizer and the checkpoints hold)::

    bert/...                         the discriminator's encoder (E at the architecture's word_embeddings)
    discriminator_predictions/{dense, dense_prediction}   ELECTRA's discriminator head
    generator/bert/...               the generator's encoder (without word_embeddings when shared)
    generator/mlm_head/...           the architecture's MLM head (decoder tied to the generator's table)
    bert_delta/<word_embeddings>     E_delta ("gdes" only; ``models.fold_encoder_delta`` merges it)

So ``init_from`` a RTD workdir gives a fine-tuning model the discriminator's encoder (``bert``, with
``bert_delta`` folded in by the checkpoint restore); the generator and the heads are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bert_jax import models
from bert_jax.config import ModelConfig
from bert_jax.heads import encode_batch, gather_positions
from bert_jax.models.layers import ACT_BATCH, ACT_LENGTH, CLASSES, EMBED, EMBED_OUT, activation_fn, dense
from bert_jax.tasks.base import Metrics, Task, classification_sums, safe_divide
from data_pipelines import batch as batch_lib

Array = jax.Array
SHARINGS = ("ees", "gdes", "none")
GENERATOR = "generator"  # the top-level collection of the generator (encoder + MLM head)
DISCRIMINATOR_HEAD = "discriminator_predictions"


# ----------------------------------------------------------------------------------------------------
# Mechanics (pure functions, tested on their own)


def scatter_at(ids: Array, positions: Array, values: Array, weights: Array) -> Array:
    """``ids [B, S]`` with ``values [B, P]`` written at ``positions [B, P]`` where ``weights > 0``.

    Padding predictions (weight 0, position 0 by convention) leave ``ids`` unchanged; written as an
    add of the difference, so duplicate padding positions never race.
    """
    positions = positions.astype(jnp.int32)
    current = jnp.take_along_axis(ids, positions, axis=1)
    delta = jnp.where(weights > 0, values.astype(ids.dtype) - current, 0)
    rows = jnp.arange(ids.shape[0])[:, None]
    return ids.at[rows, positions].add(delta)


def original_ids(batch: Mapping[str, Array]) -> Array:
    """int32 ``[B, S]``: the uncorrupted tokens (``masked_lm_ids`` put back at the masked positions)."""
    return scatter_at(jnp.asarray(batch["input_ids"], jnp.int32), batch["masked_lm_positions"],
                      batch["masked_lm_ids"], batch["masked_lm_weights"])


def replace_with_samples(batch: Mapping[str, Array], generator_logits: Array, rng: Array) -> tuple[Array, Array]:
    """The discriminator's input: the original tokens with the masked ones replaced by generator samples.

    Args:
      batch: a pretraining batch (``input_ids``, ``masked_lm_*``, ``input_mask``; ``[B, S]`` / ``[B, P]``).
      generator_logits: float ``[B, P, V]`` at ``masked_lm_positions``.
      rng: the sampling key.

    Returns:
      ``(corrupted_ids int32 [B, S], is_replaced int32 [B, S])``: a token counts as replaced only where
      the sample differs from the original (ELECTRA's labels) and the token is real (``input_mask``).
    """
    samples = jax.random.categorical(rng, jax.lax.stop_gradient(generator_logits).astype(jnp.float32), axis=-1)
    original = original_ids(batch)
    corrupted = scatter_at(original, batch["masked_lm_positions"], samples, batch["masked_lm_weights"])
    is_replaced = (corrupted != original) & (jnp.asarray(batch["input_mask"]) > 0)
    return corrupted, is_replaced.astype(jnp.int32)


def auc_sums(scores: Array, labels: Array, weights: Array) -> tuple[Array, Array]:
    """The ROC AUC of ``scores`` for ``labels`` over the entries with ``weights > 0``, as a ratio of sums.

    Mann-Whitney with mid-ranks (ties count one half): AUC = ``concordant / pairs``, where ``pairs`` =
    positives x negatives. Both add up across micro-batches, steps and hosts, so a run's ``rtd_auc`` is
    the pair-weighted mean of its batches' exact AUCs.

    Args:
      scores: float ``[...]`` (any shape; flattened), higher = more positive.
      labels: ``[...]`` 1 for positive (replaced), 0 for negative.
      weights: ``[...]`` 1 for real entries, 0 for padding.

    Returns:
      float32 scalars ``(concordant, pairs)``.
    """
    valid = jnp.asarray(weights).reshape(-1) > 0
    positive = (jnp.asarray(labels).reshape(-1) > 0) & valid
    s = jnp.where(valid, scores.reshape(-1).astype(jnp.float32), jnp.inf)  # padding sorts after every score
    ordered = jnp.sort(s)
    below = jnp.searchsorted(ordered, s, side="left").astype(jnp.float32)
    at_or_below = jnp.searchsorted(ordered, s, side="right").astype(jnp.float32)
    mid_rank = (below + at_or_below + 1.0) / 2.0  # 1-based rank among the valid entries
    n_pos = jnp.sum(positive.astype(jnp.float32))
    n_neg = jnp.sum((valid & ~positive).astype(jnp.float32))
    concordant = jnp.sum(jnp.where(positive, mid_rank, 0.0)) - n_pos * (n_pos + 1.0) / 2.0
    return concordant, n_pos * n_neg


# ----------------------------------------------------------------------------------------------------
# Model


class DiscriminatorHead(nn.Module):
    """ELECTRA's ``discriminator_predictions``: dense ``H -> H``, activation, ``dense_prediction H -> 1``."""

    config: ModelConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """float32 ``[B, S]`` replaced-token logits from hidden states ``[B, S, H]``."""
        cfg = self.config
        h = dense(cfg, cfg.hidden_size, (EMBED, EMBED_OUT), (EMBED_OUT,), "dense")(x)
        h = activation_fn(cfg.hidden_act)(h)
        logits = dense(cfg, 1, (EMBED_OUT, CLASSES), (CLASSES,), "dense_prediction")(h)[..., 0]
        return nn.with_logical_constraint(logits.astype(jnp.float32), (ACT_BATCH, ACT_LENGTH))


class Generator(nn.Module):
    """The generator: an encoder of its architecture and its MLM head (no NSP)."""

    config: ModelConfig

    def setup(self):
        self.bert = models.encoder(self.config)
        self.mlm_head = models.get(self.config.architecture).mlm_head(self.config)

    def __call__(self, batch: Mapping[str, Array], deterministic: bool = True) -> Array:
        """float32 ``[B, P, V]`` MLM logits at ``masked_lm_positions`` of the (masked) batch."""
        sequence, _ = encode_batch(self.bert, batch, deterministic)
        return self.mlm_head(gather_positions(sequence, batch["masked_lm_positions"]), self.bert.attend)

    def all_position_logits(self, batch: Mapping[str, Array]) -> Array:
        """MLM logits ``[B, S, V]`` at every position (the ``ElectraForMaskedLM`` parity test)."""
        sequence, _ = encode_batch(self.bert, batch, deterministic=True)
        return self.mlm_head(sequence, self.bert.attend)


class ReplacedTokenDetectionModel(nn.Module):
    """Generator and discriminator in one module (as the task's ``apply`` hands it the shared tables).

    Attributes:
      config: the discriminator's encoder.
      generator_config: the generator's encoder (same architecture and vocabulary).
    """

    config: ModelConfig
    generator_config: ModelConfig

    def setup(self):
        self.bert = models.encoder(self.config)
        self.discriminator_predictions = DiscriminatorHead(self.config)
        self.generator = Generator(self.generator_config)

    def __call__(self, batch: Mapping[str, Array], deterministic: bool = True) -> dict[str, Array]:
        """Generator MLM, sampling (rng stream ``"sample"``), then the discriminator on the result.

        Returns:
          ``{"mlm_logits": float32 [B, P, V], "rtd_logits": float32 [B, S], "is_replaced": int32 [B, S],
          "corrupted_ids": int32 [B, S]}``.
        """
        mlm_logits = self.generator(batch, deterministic)
        corrupted, is_replaced = replace_with_samples(batch, mlm_logits, self.make_rng("sample"))
        sequence, _ = encode_batch(self.bert, {**batch, "input_ids": corrupted}, deterministic)
        return {"mlm_logits": mlm_logits, "rtd_logits": self.discriminator_predictions(sequence),
                "is_replaced": is_replaced, "corrupted_ids": corrupted}

    def discriminator_logits(self, batch: Mapping[str, Array]) -> Array:
        """float32 ``[B, S]`` discriminator logits on ``batch["input_ids"]`` as given (HF parity)."""
        sequence, _ = encode_batch(self.bert, batch, deterministic=True)
        return self.discriminator_predictions(sequence)


# ----------------------------------------------------------------------------------------------------
# Parameter-tree surgery: stored params (shared table once) <-> the trees the module reads


def _get(tree: Mapping, path: tuple[str, ...]) -> Any:
    for name in path:
        tree = tree[name]
    return tree


def _with(tree: Mapping, path: tuple[str, ...], value: Any) -> dict:
    """A copy of ``tree`` with ``path`` set to ``value``."""
    out = dict(tree)
    out[path[0]] = value if len(path) == 1 else _with(tree.get(path[0], {}), path[1:], value)
    return out


def _without(tree: Mapping, path: tuple[str, ...]) -> dict:
    """A copy of ``tree`` with the leaf at ``path`` removed."""
    out = dict(tree)
    if len(path) == 1:
        del out[path[0]]
    else:
        out[path[0]] = _without(tree[path[0]], path[1:])
    return out


def generator_config_of(model_config: ModelConfig, generator_layers: int, generator_hidden_size: int) -> ModelConfig:
    """The generator's ``ModelConfig``: the discriminator's with fewer layers (and optionally narrower).

    ``generator_layers`` 0 = half the discriminator's (DeBERTa-v3; at least 1); ``generator_hidden_size``
    0 = the discriminator's width; a narrower one keeps the head size and scales the feed-forward width.
    """
    layers = generator_layers or max(1, model_config.num_layers // 2)
    hidden = generator_hidden_size or model_config.hidden_size
    heads = max(1, hidden // model_config.head_dim)
    intermediate = model_config.intermediate_size * hidden // model_config.hidden_size
    return model_config.replace(num_layers=layers, hidden_size=hidden, num_heads=heads,
                                intermediate_size=intermediate)


class ReplacedTokenDetectionTask(Task):
    """ELECTRA / DeBERTa-v3 pretraining: generator MLM + ``rtd_weight`` x discriminator RTD, one step.

    Loss = generator MLM cross-entropy / real predictions (``masked_lm_weights``) + ``rtd_weight`` x
    discriminator binary cross-entropy / real tokens (``input_mask``).

    Metric sums: ``mlm_loss_sum, mlm_correct, mlm_weight`` (the generator), ``rtd_loss_sum,
    rtd_correct, rtd_tokens, replaced_count, replaced_detected`` and ``auc_concordant, auc_pairs``
    (the discriminator; :func:`auc_sums`).
    """

    name = "rtd"
    batch_fields = batch_lib.PRETRAINING_FIELDS
    metric_ratios = {
        "mlm_loss": ("mlm_loss_sum", "mlm_weight"),
        "mlm_accuracy": ("mlm_correct", "mlm_weight"),
        "rtd_loss": ("rtd_loss_sum", "rtd_tokens"),
        "rtd_accuracy": ("rtd_correct", "rtd_tokens"),
        "replaced_fraction": ("replaced_count", "rtd_tokens"),
        "replaced_recall": ("replaced_detected", "replaced_count"),
        "rtd_auc": ("auc_concordant", "auc_pairs"),
    }

    def __init__(self, model_config: ModelConfig, max_predictions: int = 20, nsp_weight: float = 0.0,
                 rtd_weight: float = 50.0, embedding_sharing: str = "ees", generator_layers: int = 0,
                 generator_hidden_size: int = 0):
        """Args:
          model_config: the discriminator's encoder.
          max_predictions: ``P``, masked positions per sequence (for ``init_batch``).
          nsp_weight: must be 0 (replaced-token detection has no next-sentence head).
          rtd_weight: lambda, the weight of the discriminator loss (ELECTRA: 50).
          embedding_sharing: ``"ees"``, ``"gdes"`` or ``"none"`` (module docstring).
          generator_layers: generator depth; 0 = half the discriminator's.
          generator_hidden_size: generator width; 0 = the discriminator's (needed to share embeddings).
        """
        if max_predictions < 1:
            raise ValueError(f"max_predictions={max_predictions} must be >= 1")
        if nsp_weight:
            raise ValueError(f"task.nsp_weight={nsp_weight}: task.name='rtd' has no NSP head; set task.nsp_weight=0")
        if rtd_weight <= 0:
            raise ValueError(f"task.rtd_weight={rtd_weight} must be > 0")
        if embedding_sharing not in SHARINGS:
            raise ValueError(f"task.embedding_sharing={embedding_sharing!r}; expected one of {SHARINGS}")
        if generator_layers < 0 or generator_hidden_size < 0:
            raise ValueError(f"task.generator_layers={generator_layers} and task.generator_hidden_size="
                             f"{generator_hidden_size} must be >= 0")
        self.generator_config = generator_config_of(model_config, generator_layers, generator_hidden_size)
        if embedding_sharing != "none" and self.generator_config.hidden_size != model_config.hidden_size:
            raise ValueError(f"task.generator_hidden_size={generator_hidden_size} differs from model.hidden_size="
                             f"{model_config.hidden_size}: task.embedding_sharing={embedding_sharing!r} needs the "
                             "same width; use 'none' for a narrower generator")
        if self.generator_config.hidden_size % self.generator_config.num_heads:
            raise ValueError(f"task.generator_hidden_size={generator_hidden_size} is not a multiple of the head "
                             f"size {model_config.head_dim}")
        self.max_predictions = max_predictions
        self.rtd_weight = float(rtd_weight)
        self.embedding_sharing = embedding_sharing
        self.word_embeddings = models.get(model_config.architecture).word_embeddings
        super().__init__(model_config)

    def build_model(self) -> nn.Module:
        return ReplacedTokenDetectionModel(self.model_config, self.generator_config)

    def batch_dims(self, batch_size: int, seq_len: int) -> dict[str, int]:
        return {"B": batch_size, "S": seq_len, "P": self.max_predictions}

    # -- parameters ------------------------------------------------------------------------------------

    def init_params(self, rng: Array, batch_size: int = 1, seq_len: int = 8) -> Any:
        """Initialises the stored tree (module docstring): the shared table once, ``E_delta`` = 0."""
        batch = self.init_batch(batch_size, seq_len)
        params = dict(self.model.init({"params": rng, "sample": rng}, batch, deterministic=True)["params"])
        if self.embedding_sharing == "none":
            return params
        path = self.word_embeddings
        try:
            table = _get(params[models.ENCODER], path)
        except KeyError as error:
            raise ValueError(f"task.embedding_sharing={self.embedding_sharing!r}: the "
                             f"{self.model_config.architecture!r} encoder has no parameter {'/'.join(path)} "
                             "(its Architecture.word_embeddings)") from error
        params[GENERATOR] = _without(params[GENERATOR], (models.ENCODER, *path))
        if self.embedding_sharing == "gdes":
            params[models.ENCODER_DELTA] = _with({}, path, jax.tree.map(jnp.zeros_like, table))
        return params

    def module_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The tree the module reads: the generator gets ``E``; with GDES the discriminator
        ``stop_gradient(E) + E_delta``."""
        if self.embedding_sharing == "none":
            return dict(params)
        path = self.word_embeddings
        table = _get(params[models.ENCODER], path)
        out = {name: value for name, value in params.items() if name != models.ENCODER_DELTA}
        out[GENERATOR] = _with(params[GENERATOR], (models.ENCODER, *path), table)
        if self.embedding_sharing == "gdes":
            delta = _get(params[models.ENCODER_DELTA], path)
            out[models.ENCODER] = _with(params[models.ENCODER], path, jax.lax.stop_gradient(table) + delta)
        return out

    def apply(self, params: Any, batch: Mapping[str, Array], rng: Array | None, deterministic: bool) -> Any:
        """Runs generator and discriminator; ``rng`` feeds dropout and the sampling (None: a fixed
        sampling key, e.g. for evaluation, so evaluations are repeatable)."""
        sample_rng = jax.random.PRNGKey(0) if rng is None else jax.random.fold_in(rng, 1)
        rngs = {"sample": sample_rng}
        if not deterministic and rng is not None:
            rngs["dropout"] = rng
        return self.model.apply({"params": self.module_params(params)}, batch, deterministic=deterministic, rngs=rngs)

    # -- objective -------------------------------------------------------------------------------------

    def metric_sums(self, outputs: Mapping[str, Array], batch: Mapping[str, Array]) -> Metrics:
        sums = dict(zip(
            ("mlm_loss_sum", "mlm_correct", "mlm_weight"),
            classification_sums(outputs["mlm_logits"], batch["masked_lm_ids"], batch["masked_lm_weights"])))
        tokens = (jnp.asarray(batch["input_mask"]) > 0).astype(jnp.float32)
        logits = outputs["rtd_logits"]
        labels = outputs["is_replaced"].astype(jnp.float32)
        predicted = (logits > 0).astype(jnp.float32)
        concordant, pairs = auc_sums(logits, labels, tokens)
        sums.update(
            rtd_loss_sum=jnp.sum(optax.sigmoid_binary_cross_entropy(logits, labels) * tokens),
            rtd_correct=jnp.sum((predicted == labels).astype(jnp.float32) * tokens),
            rtd_tokens=jnp.sum(tokens),
            replaced_count=jnp.sum(labels * tokens),
            replaced_detected=jnp.sum(predicted * labels * tokens),
            auc_concordant=concordant,
            auc_pairs=pairs,
        )
        return sums

    def denominators(self, batch: Mapping[str, Array]) -> Metrics:
        return {"mlm_weight": jnp.sum(jnp.asarray(batch["masked_lm_weights"], jnp.float32)),
                "rtd_tokens": jnp.sum((jnp.asarray(batch["input_mask"]) > 0).astype(jnp.float32))}

    def loss_from_sums(self, sums: Mapping[str, Any]) -> Array:
        return (safe_divide(sums["mlm_loss_sum"], sums["mlm_weight"])
                + self.rtd_weight * safe_divide(sums["rtd_loss_sum"], sums["rtd_tokens"]))

    # -- the two networks on their own (export, parity tests) ------------------------------------------

    def discriminator_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``{"bert", "discriminator_predictions"}``: the discriminator with ``E_delta`` folded in."""
        folded = models.fold_encoder_delta(dict(nn.meta.unbox(params)))
        return {models.ENCODER: folded[models.ENCODER], DISCRIMINATOR_HEAD: folded[DISCRIMINATOR_HEAD]}

    def generator_params(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """``{"bert", "mlm_head"}``: the generator with the shared table put in (a ``Generator`` tree)."""
        return dict(self.module_params(nn.meta.unbox(params))[GENERATOR])
