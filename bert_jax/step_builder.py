"""The one place a run's train step is built: config + devices -> task, optimizer, mesh, state, steps.

``from_config(config, devices)`` (or ``build(task, optimizer_config, ...)`` for callers without a run
config, e.g. the step benchmark) returns a ``StepBuilder`` holding the task, the optimizer and its
learning-rate schedule, the device mesh and rules, the ABSTRACT train state (shapes and shardings from
``jax.eval_shape``, nothing allocated) with its shardings, and the jitted train and eval steps.
``Trainer`` trains with ``builder.train_step``, ``aot.check`` lowers and compiles that same function
for a target's devices, and ``bench/step_runners.py`` times it, so the three agree by construction
(``train.on_nonfinite``, ``train.grad_accum_steps`` and the optimizer all enter here and nowhere else).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import ml_collections
import optax

from bert_jax import optim, run_config, sharding, steps
from bert_jax.tasks import get_task
from bert_jax.tasks.base import Metrics, Task

Batch = Mapping[str, jax.Array]


def optimizer_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The run's ``optimizer`` section with ``skip_nonfinite`` on when ``train.on_nonfinite == 'skip'``."""
    cfg = ml_collections.ConfigDict(config.optimizer)
    cfg.skip_nonfinite = bool(cfg.get("skip_nonfinite")) or config.train.get("on_nonfinite", "stop") == "skip"
    return cfg


def task_from_config(config: ml_collections.ConfigDict) -> Task:
    """The pretraining-style task a run config names (``task.name``, ``model``, ``data`` sections); every
    other field of ``task`` (``nsp_weight``, ``rtd_weight``, ...) is a keyword argument of that task."""
    options = {name: value for name, value in config.task.items() if name != "name"}
    return get_task(config.task.name, run_config.model_config_from(config),
                    max_predictions=config.data.max_predictions_per_seq, **options)


@dataclasses.dataclass
class StepBuilder:
    """A task, optimizer and mesh with the train state's layout and the jitted steps built from them.

    Attributes:
      task: the objective.
      optimizer, schedule: the optax transformation (``optim.make_optimizer``) and its schedule.
      mesh, rules: the device mesh and the logical-to-mesh rules.
      abstract_state: a ``steps.TrainState`` of ``jax.ShapeDtypeStruct`` (with shardings).
      state_shardings: the same tree of ``NamedSharding``s.
      seq_len: tokens per row of the initialisation / abstract batch.
      grad_accum_steps: micro-batches per optimizer step (1: ``steps.train_step``).
      train_step: jitted ``(state, batch) -> (state, metrics)`` (state donated).
      eval_step: jitted ``(params, batch) -> metric sums``.
    """

    task: Task
    optimizer: optax.GradientTransformation
    schedule: optax.Schedule
    mesh: jax.sharding.Mesh
    rules: Any
    abstract_state: steps.TrainState
    state_shardings: steps.TrainState
    seq_len: int
    grad_accum_steps: int
    train_step: Callable[[steps.TrainState, Batch], tuple[steps.TrainState, Metrics]]
    eval_step: Callable[[Any, Batch], Metrics]

    def init_state(self, seed: int | jax.Array) -> steps.TrainState:
        """A freshly initialised train state, created directly in its sharded layout."""
        state, _ = steps.create_train_state(self.task, self.optimizer, self.mesh, self.rules, seed,
                                            batch_size=1, seq_len=self.seq_len)
        return state

    def abstract_batch(self, batch_size: int) -> dict[str, jax.ShapeDtypeStruct]:
        """The task's batch of ``batch_size`` rows as ``ShapeDtypeStruct``s split over the batch axes."""
        batch_sharding = sharding.batch_sharding(self.mesh)
        return {name: jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=batch_sharding)
                for name, value in self.task.init_batch(batch_size, self.seq_len).items()}


def build(
    task: Task,
    optimizer_cfg: Any,
    *,
    mesh: Mapping[str, int] | jax.sharding.Mesh,
    rules: Any = None,
    seq_len: int,
    grad_accum_steps: int = 1,
    devices: Sequence[Any] | None = None,
) -> StepBuilder:
    """Builds the optimizer, mesh, abstract state and jitted steps of ``task``.

    Args:
      task: the objective.
      optimizer_cfg: an ``optimizer`` section (``optim.default_optimizer_config`` fields; with
        ``skip_nonfinite`` the optimizer is wrapped in ``optax.apply_if_finite``).
      mesh: mesh axis sizes (``sharding.make_mesh``) or a ready ``Mesh``.
      rules: logical-to-mesh rules (default ``sharding.DEFAULT_RULES``).
      seq_len: tokens per row of the initialisation batch.
      grad_accum_steps: micro-batches per step (``steps.jit_configured_train_step``).
      devices: the devices of the mesh (default: all), e.g. an AOT target's compile-only devices.
    """
    rules = sharding.DEFAULT_RULES if rules is None else rules
    optimizer, schedule = optim.make_optimizer(optimizer_cfg), optim.make_schedule(optimizer_cfg)
    if not isinstance(mesh, jax.sharding.Mesh):
        mesh = sharding.make_mesh(mesh, devices)
    abstract_state, state_shardings = steps.abstract_train_state(task, optimizer, mesh, rules, batch_size=1,
                                                                 seq_len=seq_len)
    train_step = steps.jit_configured_train_step(state_shardings, mesh, rules, task=task, optimizer=optimizer,
                                                 schedule=schedule, grad_accum_steps=grad_accum_steps)
    eval_step = steps.jit_eval_step(state_shardings.params, mesh, rules, task=task)
    return StepBuilder(task=task, optimizer=optimizer, schedule=schedule, mesh=mesh, rules=rules,
                       abstract_state=abstract_state, state_shardings=state_shardings, seq_len=seq_len,
                       grad_accum_steps=grad_accum_steps, train_step=train_step, eval_step=eval_step)


def from_config(config: ml_collections.ConfigDict, task: Task | None = None, *, seq_len: int | None = None,
                devices: Sequence[Any] | None = None) -> StepBuilder:
    """``build`` from a run config's ``optimizer``, ``train`` and ``sharding`` sections.

    Args:
      config: the run config.
      task: the objective (default: ``task_from_config(config)``, the pretraining task it names).
      seq_len: tokens per row (default ``config.data.max_seq_length``).
      devices: the devices of the mesh (default: all).
    """
    return build(task if task is not None else task_from_config(config), optimizer_config(config),
                 mesh=config.sharding.mesh, rules=config.sharding.rules,
                 seq_len=config.data.max_seq_length if seq_len is None else seq_len,
                 grad_accum_steps=config.train.grad_accum_steps, devices=devices)
