"""The ``Task`` contract: an objective kept apart from the network, so one trainer serves every task.

A task builds its ``nn.Module`` from a ``ModelConfig`` and turns (parameters, batch) into additive
metric SUMS plus their DENOMINATORS, e.g. ``mlm_loss_sum`` / ``mlm_weight``. Sums add up across
micro-batches, steps, devices and hosts; ``summarize`` divides them at the end. The training loss is
a function of those sums (``loss_from_sums``), which lets gradient accumulation use the denominators of
the WHOLE batch and so reproduce the full-batch gradient exactly.
"""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from bert_jax.config import ModelConfig
from data_pipelines import batch as batch_lib

Array = jax.Array
Metrics = dict[str, Array]

# Step-level sums the trainer adds to a task's metrics: name -> (numerator, denominator).
STEP_RATIOS: dict[str, tuple[str, str]] = {
    "grad_norm": ("grad_norm_sum", "steps"),
    "learning_rate": ("learning_rate_sum", "steps"),
}


def classification_sums(logits: Array, labels: Array, weights: Array) -> tuple[Array, Array, Array]:
    """Weighted cross-entropy and accuracy sums of integer-labelled logits.

    Args:
      logits: float ``[..., C]`` unnormalised scores.
      labels: int ``[...]`` class ids in ``[0, C)`` where the weight is non-zero (anything elsewhere).
      weights: ``[...]`` 1 for real examples/predictions, 0 for padding (any numeric dtype).

    Returns:
      float32 scalars ``(loss_sum, correct_sum, weight_sum)``: the weighted sum of the per-example
      cross-entropy, the weighted count of argmax hits, and the sum of the weights.
    """
    weights = jnp.asarray(weights).astype(jnp.float32)
    labels = jnp.where(weights > 0, labels, 0)  # padding labels (e.g. -1 on unlabelled rows) never index
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    return jnp.sum(losses * weights), jnp.sum(correct * weights), jnp.sum(weights)


def real_examples(batch: Mapping[str, Array]) -> Array:
    """float32 ``[B]``: 1 for rows with at least one real token (``input_mask``), 0 for padding rows."""
    return (jnp.max(batch["input_mask"], axis=-1) > 0).astype(jnp.float32)


def safe_divide(numerator: Array, denominator: Array) -> Array:
    """``numerator / denominator`` with an empty denominator (0) giving 0 rather than nan (for losses)."""
    return numerator / jnp.maximum(denominator, 1e-8)


def summarize(metric_sums: Mapping[str, Any], ratios: Mapping[str, tuple[str, str]]) -> dict[str, float]:
    """Turns accumulated metric sums into means on the host.

    Args:
      metric_sums: name -> summed value (array or number), e.g. from adding step metrics.
      ratios: mean name -> ``(numerator, denominator)``; entries whose numerator is absent are skipped.

    Returns:
      mean name -> float (nan where the denominator is 0), plus every sum that is neither a numerator
      nor a denominator of a ratio (counts such as ``skipped``), passed through as floats.
    """
    sums = {name: float(np.asarray(value)) for name, value in metric_sums.items()}
    means: dict[str, float] = {}
    used = set()
    for name, (numerator, denominator) in ratios.items():
        if numerator not in sums:
            continue
        if denominator not in sums:
            raise ValueError(f"metric {name!r}: numerator {numerator!r} is present but not denominator {denominator!r}")
        used.update((numerator, denominator))
        means[name] = sums[numerator] / sums[denominator] if sums[denominator] else math.nan
    means.update({name: value for name, value in sums.items() if name not in used and name not in means})
    return means


class Task(abc.ABC):
    """An objective on top of a BERT encoder: its model, batch fields, loss and metric sums.

    Subclasses set ``name``, ``batch_fields`` and ``metric_ratios`` and implement ``build_model``,
    ``batch_dims``, ``metric_sums``, ``denominators`` and ``loss_from_sums``. Their model's ``__call__``
    takes ``(batch, deterministic=...)`` (override ``apply`` otherwise).

    Attributes:
      model_config: the encoder's hyperparameters.
      model: the ``nn.Module`` built once by ``build_model``.
    """

    name: ClassVar[str]
    # Field name -> symbolic shape, from data_pipelines.batch.
    batch_fields: ClassVar[Mapping[str, tuple[str, ...]]]
    # Mean name -> (numerator sum, denominator sum).
    metric_ratios: ClassVar[Mapping[str, tuple[str, str]]]

    def __init__(self, model_config: ModelConfig):
        self.model_config = model_config
        self.model = self.build_model()

    @abc.abstractmethod
    def build_model(self) -> nn.Module:
        """Builds the network (encoder + this task's head)."""

    @abc.abstractmethod
    def batch_dims(self, batch_size: int, seq_len: int) -> dict[str, int]:
        """The symbolic dimensions of this task's batches, e.g. ``{"B": 8, "S": 128, "P": 20}``."""

    @abc.abstractmethod
    def metric_sums(self, outputs: Any, batch: Mapping[str, Array]) -> Metrics:
        """Metric sums and denominators (float32 scalars) from the model's outputs on ``batch``."""

    @abc.abstractmethod
    def denominators(self, batch: Mapping[str, Array]) -> Metrics:
        """The denominators of ``metric_sums`` (float32 scalars), from the batch alone."""

    @abc.abstractmethod
    def loss_from_sums(self, sums: Mapping[str, Array]) -> Array:
        """The training loss (float32 scalar) from metric sums and denominators."""

    def init_batch(self, batch_size: int, seq_len: int) -> dict[str, np.ndarray]:
        """An all-zero int32 batch of this task's fields, for initialisation and compilation."""
        return batch_lib.zeros_batch(self.batch_fields, **self.batch_dims(batch_size, seq_len))

    def init_params(self, rng: Array, batch_size: int = 1, seq_len: int = 8) -> Any:
        """Initialises the parameters (boxed with their logical axis names) on a zero batch."""
        batch = self.init_batch(batch_size, seq_len)
        return self.model.init({"params": rng}, batch, deterministic=True)["params"]

    @functools.cached_property
    def head_names(self) -> tuple[str, ...]:
        """Top-level parameter collections besides the shared encoder ``bert`` (the task's heads)."""
        abstract = jax.eval_shape(self.init_params, jax.random.PRNGKey(0))
        return tuple(sorted(name for name in abstract if name != "bert"))

    def apply(self, params: Any, batch: Mapping[str, Array], rng: Array | None, deterministic: bool) -> Any:
        """Runs the model; ``rng`` feeds dropout and may be None when ``deterministic``."""
        rngs = None if deterministic or rng is None else {"dropout": rng}
        return self.model.apply({"params": params}, batch, deterministic=deterministic, rngs=rngs)

    def loss_and_metrics(
        self,
        params: Any,
        batch: Mapping[str, Array],
        rng: Array | None,
        deterministic: bool,
        denominators: Mapping[str, Array] | None = None,
    ) -> tuple[Array, Metrics]:
        """The loss to differentiate and the batch's metric sums.

        Args:
          params: the (unboxed) parameter tree.
          batch: a contract batch of ``batch_fields``.
          rng: dropout key (unused when ``deterministic``).
          deterministic: disables dropout.
          denominators: when given (a micro-batch of a larger batch), the loss divides this batch's
            sums by these WHOLE-batch denominators, so that the micro-batch losses add up to the
            full-batch loss; the returned metrics keep this batch's own denominators.

        Returns:
          ``(loss, metrics)``: float32 scalar loss and a dict of float32 scalar sums/denominators.
        """
        sums = self.metric_sums(self.apply(params, batch, rng, deterministic), batch)
        loss = self.loss_from_sums({**sums, **(denominators or {})})
        return loss, sums

    def summarize(self, metric_sums: Mapping[str, Any]) -> dict[str, float]:
        """Means from accumulated sums (see ``summarize``) plus ``loss``, the objective of those sums."""
        means = summarize(metric_sums, {**self.metric_ratios, **STEP_RATIOS})
        sums = {name: jnp.asarray(value, jnp.float32) for name, value in metric_sums.items()}
        means["loss"] = float(self.loss_from_sums(sums))
        return means
