"""The jitted pieces of training: the train state, its sharded creation, and train/accumulate/eval steps.

Steps are pure functions of ``(state, batch)`` with the task and optimizer bound as keyword arguments;
``jit_train_step`` / ``jit_eval_step`` jit them with explicit shardings (state donated). Every metric a
step returns is ADDITIVE (sums, denominators and step counts), so the run loop adds step metrics over
a logging window and calls ``task.summarize`` once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from bert_jax import sharding as sharding_lib
from bert_jax.models.layers import ACT_BATCH
from bert_jax.tasks.base import Metrics, Task

Array = jax.Array
Batch = Mapping[str, Array]


@flax.struct.dataclass
class TrainState:
    """Everything that changes during training, as a pure pytree of arrays (Orbax-friendly).

    Attributes:
      step: int32 scalar, number of optimizer updates applied (or skipped) so far.
      params: the unboxed parameter tree (``param_dtype``, float32).
      opt_state: the optax state of those parameters.
      rng: uint32 ``[2]`` base key; step ``t`` uses ``fold_in(rng, t)`` for dropout.
    """

    step: Array
    params: Any
    opt_state: Any
    rng: Array


def _raw_key(rng: int | Array) -> Array:
    """A legacy uint32 ``[2]`` key from a seed, a raw key or a typed key."""
    if isinstance(rng, int):
        return jax.random.PRNGKey(rng)
    if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key):
        return jax.random.key_data(rng)
    return rng


def _init_fn(task: Task, optimizer: optax.GradientTransformation, batch_size: int, seq_len: int):
    """``rng -> TrainState`` with BOXED params and moments (their logical axis names kept)."""

    def init(rng: Array) -> TrainState:
        params_rng, state_rng = jax.random.split(rng)
        params = task.init_params(params_rng, batch_size, seq_len)
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params),
                          rng=state_rng)

    return init


def abstract_train_state(
    task: Task,
    optimizer: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    rules: Any,
    batch_size: int = 1,
    seq_len: int = 8,
) -> tuple[TrainState, TrainState]:
    """Shapes and shardings of the train state, without allocating it (e.g. for an Orbax restore).

    Returns:
      ``(abstract_state, state_shardings)``: a ``TrainState`` of ``jax.ShapeDtypeStruct``s carrying
      their ``sharding``, and the same tree of ``NamedSharding``s.
    """
    init = _init_fn(task, optimizer, batch_size, seq_len)
    boxed = jax.eval_shape(init, jax.random.PRNGKey(0))
    shardings = sharding_lib.logical_shardings(boxed, mesh, rules)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                            nn.meta.unbox(boxed), shardings)
    return abstract, shardings


def create_train_state(
    task: Task,
    optimizer: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
    rules: Any,
    rng: int | Array,
    batch_size: int,
    seq_len: int,
) -> tuple[TrainState, TrainState]:
    """Initialises the train state directly in its sharded layout (no full copy on one device).

    ``jax.eval_shape`` of the initialiser gives the logical axis names of every parameter and moment,
    the rules map them onto ``mesh``, and the initialiser is jitted with those ``out_shardings``
    (activation constraints are off during initialisation, so any ``batch_size`` works).

    Args:
      task: the objective (its model is initialised on ``task.init_batch(batch_size, seq_len)``).
      optimizer: the optax transformation (e.g. ``optim.make_optimizer(config.optimizer)``).
      mesh: the device mesh (``sharding.make_mesh``).
      rules: logical-to-mesh rules (``config.sharding.rules``, default ``sharding.DEFAULT_RULES``).
      rng: seed or PRNG key; split into the parameter initialisation key and ``state.rng``.
      batch_size: batch size of the initialisation batch (shapes of activations only).
      seq_len: sequence length of the initialisation batch.

    Returns:
      ``(state, state_shardings)``: the unboxed ``TrainState`` on the mesh and its ``NamedSharding``s.
    """
    init = _init_fn(task, optimizer, batch_size, seq_len)
    _, shardings = abstract_train_state(task, optimizer, mesh, rules, batch_size, seq_len)
    state = jax.jit(lambda key: nn.meta.unbox(init(key)), out_shardings=shardings)(_raw_key(rng))
    return state, shardings


def _skipped(opt_state: Any) -> Array | None:
    """1.0 when an ``optax.apply_if_finite`` optimizer just skipped its update, else 0.0 (None if absent)."""
    if isinstance(opt_state, optax.ApplyIfFiniteState):
        return 1.0 - opt_state.last_finite.astype(jnp.float32)
    return None


def _apply_gradients(
    state: TrainState,
    grads: Any,
    metrics: Metrics,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule | None,
) -> tuple[TrainState, Metrics]:
    """One optimizer update; adds the step-level sums (``steps``, ``grad_norm_sum``, ...) to ``metrics``."""
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = dict(metrics, steps=jnp.ones((), jnp.float32), grad_norm_sum=optax.global_norm(grads))
    if schedule is not None:
        metrics["learning_rate_sum"] = jnp.asarray(schedule(state.step), jnp.float32)
    skipped = _skipped(opt_state)
    if skipped is not None:
        metrics["skipped"] = skipped
    new_state = state.replace(step=state.step + 1, params=params, opt_state=opt_state)
    return new_state, metrics


def train_step(
    state: TrainState,
    batch: Batch,
    *,
    task: Task,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule | None = None,
) -> tuple[TrainState, Metrics]:
    """One optimizer step on a whole batch.

    Args:
      state: the current train state.
      batch: a contract batch (``[B, ...]`` int32 arrays).
      task: the objective.
      optimizer: the optax transformation the state was created with.
      schedule: when given, ``learning_rate_sum`` = ``schedule(state.step)`` is reported (with
        ``skip_nonfinite``, the optimizer's own step count, hence its rate, lags after each skip).

    Returns:
      ``(new_state, metrics)``: the task's metric sums plus ``steps`` (1), ``grad_norm_sum`` (global
      norm of the unclipped gradient), ``learning_rate_sum`` and ``skipped`` (with
      ``optimizer.skip_nonfinite``) — all float32 scalars.
    """
    dropout_rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
        return task.loss_and_metrics(params, batch, dropout_rng, deterministic=False)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    return _apply_gradients(state, grads, metrics, optimizer, schedule)


def split_micro_batches(batch: Batch, num_micro_batches: int) -> dict[str, Array]:
    """Reshapes ``[B, ...]`` fields to ``[M, B / M, ...]``; micro-batch ``k`` holds rows ``k, k + M, ...``.

    Interleaving (rather than contiguous blocks) keeps every micro-batch spread over all batch shards,
    so a batch split over ``data``/``fsdp`` needs no communication to be cut into micro-batches.

    Raises:
      ValueError: when ``B`` is not divisible by ``num_micro_batches``, or (under ``sharding.axis_rules``)
        a micro-batch ``B / M`` does not split over the batch shards of the mesh.
    """
    first = next(iter(batch.values()))
    batch_size = first.shape[0]
    if num_micro_batches < 1 or batch_size % num_micro_batches:
        raise ValueError(f"batch size {batch_size} is not divisible by num_micro_batches={num_micro_batches}")
    shards = sharding_lib.current_axis_size(ACT_BATCH)
    if (batch_size // num_micro_batches) % shards:
        raise ValueError(
            f"micro-batches of {batch_size // num_micro_batches} rows (batch size {batch_size} / "
            f"num_micro_batches={num_micro_batches}) do not split over the mesh's {shards} batch shards; "
            f"use a batch size divisible by {num_micro_batches * shards}")

    def split(x: Array) -> Array:
        x = x.reshape((batch_size // num_micro_batches, num_micro_batches) + x.shape[1:])
        x = jnp.moveaxis(x, 1, 0)
        return nn.with_logical_constraint(x, (None, ACT_BATCH) + (None,) * (x.ndim - 2))

    return {name: split(jnp.asarray(x)) for name, x in batch.items()}


def accumulate_step(
    state: TrainState,
    batch: Batch,
    *,
    task: Task,
    optimizer: optax.GradientTransformation,
    num_micro_batches: int,
    schedule: optax.Schedule | None = None,
) -> tuple[TrainState, Metrics]:
    """One optimizer step on a batch processed as ``num_micro_batches`` sequential micro-batches.

    Each micro-batch's loss divides its sums by the WHOLE batch's denominators
    (``task.denominators(batch)``, e.g. the number of real masked positions of all rows), so the summed
    micro-batch gradients equal the full-batch gradient even when micro-batches hold different numbers
    of predictions. Dropout key of micro-batch ``k``: ``fold_in(fold_in(state.rng, step), k)``.

    Args and returns: as ``train_step``; ``num_micro_batches`` must divide the batch size.
    """
    micro_batches = split_micro_batches(batch, num_micro_batches)
    denominators = task.denominators(batch)
    step_rng = jax.random.fold_in(state.rng, state.step)

    def grads_and_metrics(params, micro_batch, index):
        def loss_fn(p):
            rng = jax.random.fold_in(step_rng, index)
            return task.loss_and_metrics(p, micro_batch, rng, deterministic=False, denominators=denominators)

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        return grads, metrics

    def body(carry, inputs):
        index, micro_batch = inputs
        grads, metrics = grads_and_metrics(state.params, micro_batch, index)
        return jax.tree.map(jnp.add, carry, (grads, metrics)), None

    first = jax.tree.map(lambda x: x[0], micro_batches)
    shapes = jax.eval_shape(grads_and_metrics, state.params, first, 0)
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
    (grads, metrics), _ = jax.lax.scan(body, zeros, (jnp.arange(num_micro_batches), micro_batches))
    return _apply_gradients(state, grads, metrics, optimizer, schedule)


def eval_step(params: Any, batch: Batch, *, task: Task, with_predictions: bool = False) -> Any:
    """The task's metric sums on ``batch`` with dropout off (float32 scalars); ``with_predictions``:
    ``(sums, task.predictions(outputs, batch))``, the per-row arrays of a fine-tuning task."""
    if not with_predictions:
        _, metrics = task.loss_and_metrics(params, batch, None, deterministic=True)
        return metrics
    outputs = task.apply(params, batch, None, deterministic=True)
    return task.metric_sums(outputs, batch), task.predictions(outputs, batch)


def jit_train_step(
    step_fn: Callable[..., tuple[TrainState, Metrics]],
    state_shardings: TrainState,
    mesh: jax.sharding.Mesh,
    rules: Any,
    **step_kwargs: Any,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """Jits ``step_fn`` (``train_step`` or ``accumulate_step``) for ``mesh``, donating the state.

    Args:
      step_fn: ``step_fn(state, batch, **step_kwargs) -> (state, metrics)``.
      state_shardings: from ``create_train_state``.
      mesh: the device mesh.
      rules: the logical-to-mesh rules (for the model's activation constraints).
      **step_kwargs: bound keyword arguments, e.g. ``task=..., optimizer=..., schedule=...``.

    Returns:
      A ``jax.jit`` function ``(state, batch) -> (state, metrics)``: batch split with
      ``sharding.batch_sharding(mesh)``, metrics replicated. The passed-in state is donated (its
      buffers are deleted), so always continue with the returned state.
    """
    bound = functools.partial(step_fn, **step_kwargs)

    def step(state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
        with sharding_lib.axis_rules(mesh, rules):
            return bound(state, batch)

    return jax.jit(
        step,
        in_shardings=(state_shardings, sharding_lib.batch_sharding(mesh)),
        out_shardings=(state_shardings, sharding_lib.replicated(mesh)),
        donate_argnums=0,
    )


def jit_configured_train_step(
    state_shardings: TrainState,
    mesh: jax.sharding.Mesh,
    rules: Any,
    *,
    task: Task,
    optimizer: optax.GradientTransformation,
    schedule: optax.Schedule | None = None,
    grad_accum_steps: int = 1,
) -> Callable[[TrainState, Batch], tuple[TrainState, Metrics]]:
    """The jitted step a run's ``train.grad_accum_steps`` asks for: ``train_step`` when 1, else
    ``accumulate_step`` over that many micro-batches (the trainer and the AOT check compile this one)."""
    kwargs = dict(task=task, optimizer=optimizer, schedule=schedule)
    if grad_accum_steps > 1:
        return jit_train_step(accumulate_step, state_shardings, mesh, rules, num_micro_batches=grad_accum_steps,
                              **kwargs)
    return jit_train_step(train_step, state_shardings, mesh, rules, **kwargs)


def jit_eval_step(
    params_shardings: Any, mesh: jax.sharding.Mesh, rules: Any, *, task: Task, with_predictions: bool = False
) -> Callable[[Any, Batch], Any]:
    """Jits ``eval_step`` for ``mesh``: ``(params, batch) -> metric sums`` (replicated), params kept;
    ``with_predictions``: ``-> (sums, per-row predictions)``, both replicated."""

    def step(params: Any, batch: Batch) -> Any:
        with sharding_lib.axis_rules(mesh, rules):
            return eval_step(params, batch, task=task, with_predictions=with_predictions)

    return jax.jit(
        step,
        in_shardings=(params_shardings, sharding_lib.batch_sharding(mesh)),
        out_shardings=sharding_lib.replicated(mesh),
    )
