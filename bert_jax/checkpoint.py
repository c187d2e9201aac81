"""Orbax checkpoints: periodic asynchronous saves, exact resume, and the restore order.

Layout of a workdir::

    <workdir>/checkpoints/<step>/state/...                      the train state (params, opt state, step, rng)
    <workdir>/checkpoints/<step>/data/process_<i>-of-<n>.json   each process's data-iterator state (Grain)

The restore order (``restore_or_initialize``), first match wins:

1. **Resume this run**: the newest finalised checkpoint in ``<workdir>/checkpoints``. Orbax never lists a
   save that did not finish (it writes to a temporary directory and renames). A newest checkpoint that
   fails to restore (corrupt files) is skipped with a warning in favour of the one before it, and moved
   aside to ``<step>.unrestorable-<time>`` so the run saves that step again; when checkpoints exist but
   none restores (e.g. the model config changed), ``CheckpointRestoreError`` says so rather than
   silently starting over.
2. **A full-state init checkpoint** (``init_from`` is a workdir or a ``checkpoints/<step>`` directory whose
   state tree matches ours): params, optimizer state, step and rng, e.g. phase 2 continuing phase 1 with the
   step counter kept (``init_mode='full'``). A checkpoint wins over a Hugging Face directory, since a
   workdir holds our own ``config.json`` too.
3. **Parameters only** from such a checkpoint (``init_mode='params'``, or automatically when the optimizer
   state does not match): ``params['bert']`` and any head whose name and shapes match; heads named in
   ``drop_heads`` (the pretraining heads, when fine-tuning) are dropped and initialised fresh.
4. **A Hugging Face directory** (``config.json`` beside the weights): imported by ``bert_jax.hf``.
5. **Scratch**: the freshly initialised state.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.serialization
import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from bert_jax import fileio

PyTree = Any
CHECKPOINT_SUBDIR = "checkpoints"
UNRESTORABLE_SUFFIX = ".unrestorable"  # a checkpoint that failed to restore: <step>.unrestorable-<unix time>


class CheckpointRestoreError(RuntimeError):
    """Checkpoints exist in the run's directory but none of them restores into this run's state."""


def _as_tree(state: PyTree) -> PyTree:
    """A checkpointable nested-dict view of ``state`` (dataclasses and optax namedtuples flattened)."""
    return flax.serialization.to_state_dict(state)


def _abstract(tree: PyTree) -> PyTree:
    """``jax.ShapeDtypeStruct`` leaves carrying each array's sharding (the restore target)."""

    def leaf(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))

    return jax.tree.map(leaf, tree)


class Checkpointer:
    """A thin wrapper over ``ocp.CheckpointManager`` for the train state plus the data-iterator state."""

    def __init__(self, directory: str | os.PathLike, *, save_every: int, keep: int, async_save: bool = True):
        """Opens (creating if needed) the checkpoint directory.

        Args:
          directory: usually ``<workdir>/checkpoints``; local or ``gs://``.
          save_every: periodic save interval in steps (``save(..., force=True)`` saves at any step).
          keep: how many checkpoints to keep (older ones are deleted).
          async_save: write in a background thread while training continues.
        """
        self.directory = fileio.absolute(directory)
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=max(1, int(save_every)),
            max_to_keep=max(1, int(keep)),
            enable_async_checkpointing=async_save,
            create=True,
        )
        handlers = {"state": ocp.PyTreeCheckpointHandler()}
        try:
            import grain.checkpoint as grain_checkpoint  # pylint: disable=g-import-not-at-top

            handlers["data"] = grain_checkpoint.CheckpointHandler()
        except ImportError:  # pragma: no cover - grain is a hard dependency; kept for clarity
            pass
        self._manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: PyTree, data_iterator: Any = None, *, force: bool = False) -> bool:
        """Saves ``state`` (and the iterator's position) at ``step`` when due or when ``force``."""
        items = {"state": ocp.args.PyTreeSave(_as_tree(state))}
        if data_iterator is not None:
            import grain.checkpoint as grain_checkpoint  # pylint: disable=g-import-not-at-top

            items["data"] = grain_checkpoint.CheckpointSave(data_iterator)
        return self._manager.save(int(step), args=ocp.args.Composite(**items), force=force)

    def restore(self, step: int, state_template: PyTree, data_iterator: Any = None) -> PyTree:
        """Restores the full state at ``step`` into the structure and shardings of ``state_template``."""
        target = _abstract(_as_tree(state_template))
        items = {"state": ocp.args.PyTreeRestore(
            target, restore_args=ocp.checkpoint_utils.construct_restore_args(target))}
        if data_iterator is not None:
            import grain.checkpoint as grain_checkpoint  # pylint: disable=g-import-not-at-top

            items["data"] = grain_checkpoint.CheckpointRestore(data_iterator)
        restored = self._manager.restore(int(step), args=ocp.args.Composite(**items))
        return flax.serialization.from_state_dict(state_template, restored["state"])

    def restore_latest(self, state_template: PyTree, data_iterator: Any = None) -> tuple[PyTree, int] | None:
        """Restores the newest checkpoint that restores cleanly, newest first; None when there is none.

        Newer checkpoints that failed are moved aside (``<step>.unrestorable-<time>``, kept for inspection)
        so that this run saves those steps again instead of Orbax skipping steps it believes it has.

        Raises:
          CheckpointRestoreError: when there are checkpoints and none restores, listing each one's error.
        """
        failed: list[tuple[int, str]] = []
        for step in reversed(self.all_steps()):
            try:
                restored = self.restore(step, state_template, data_iterator)
            except Exception as error:  # pylint: disable=broad-except
                failed.append((step, f"{type(error).__name__}: {error}"))
                logging.warning("checkpoint %s/%d could not be restored (%s); trying the previous one",
                                self.directory, step, failed[-1][1])
                continue
            if failed:
                self._move_aside([bad for bad, _ in failed])
            return restored, step
        if failed:
            raise CheckpointRestoreError(
                f"none of the checkpoints in {self.directory} restores into this run's state (did the model, "
                "optimizer or data config change? use a new workdir for a different run):\n  "
                + "\n  ".join(f"step {step}: {error[:500]}" for step, error in failed))
        return None

    def _move_aside(self, steps: Sequence[int]) -> None:
        """Renames the step directories to ``<step>.unrestorable-<time>`` (ignored by Orbax) and reloads."""
        self.wait()
        suffix = f"{UNRESTORABLE_SUFFIX}-{int(time.time())}"
        if jax.process_index() == 0:
            for step in steps:
                target = self.directory / f"{step}{suffix}"
                (self.directory / str(step)).rename(target)
                logging.warning("moved the unrestorable checkpoint %s/%d aside to %s", self.directory, step, target)
        ocp.multihost.sync_global_processes("bert_jax_checkpoint_move_aside")
        self._manager.reload()

    def wait(self) -> None:
        """Blocks until an asynchronous save has finished."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def find_checkpoint_dir(path: str | os.PathLike) -> tuple[epath.Path, int] | None:
    """Resolves ``path`` (a workdir, its ``checkpoints`` dir, or one ``checkpoints/<step>`` dir) to
    ``(checkpoints_dir, step)`` of the newest finalised checkpoint, or None when it holds none."""
    path = fileio.absolute(path)
    if (path / "state").exists() and path.name.isdigit():
        return path.parent, int(path.name)
    for candidate in (path / CHECKPOINT_SUBDIR, path):
        if candidate.exists():
            steps = ocp.utils.checkpoint_steps(candidate)
            if steps:
                return candidate, max(steps)
    return None


def stored_tree(state_dir: str | os.PathLike) -> dict[str, Any]:
    """The saved tree of a ``checkpoints/<step>/state`` directory: nested dicts of Orbax array metadata
    (``.shape``, ``.dtype``), read without restoring any array."""
    metadata = ocp.PyTreeCheckpointer().metadata(fileio.absolute(state_dir))
    metadata = getattr(metadata, "item_metadata", metadata)  # a StepMetadata wraps the TreeMetadata
    return dict(getattr(metadata, "tree", metadata))


def restore_params_only(
    checkpoint_dir: str | os.PathLike, step: int, params_template: PyTree, drop_heads: Sequence[str] = ()
) -> tuple[PyTree, list[str]]:
    """Restores ``params`` from a full-state checkpoint, keeping the template's value for dropped heads.

    Args:
      checkpoint_dir: a ``checkpoints`` directory.
      step: the step to read.
      params_template: our (initialised, possibly sharded) params; gives structure, shapes and shardings.
      drop_heads: top-level param names not to take from the checkpoint (e.g. ``mlm_head``, ``nsp_head``).

    Returns:
      ``(params, fresh)``: the merged params, and the top-level names that kept their fresh initialisation
      (dropped, or absent from the checkpoint).
    """
    checkpoint_dir = fileio.absolute(checkpoint_dir)
    stored_params = stored_tree(checkpoint_dir / str(step) / "state").get("params", {})
    take = {name: sub for name, sub in params_template.items()
            if name not in drop_heads and name in stored_params}
    fresh = sorted(set(params_template) - set(take))
    target = _abstract({"params": _as_tree(take)})
    restored = ocp.PyTreeCheckpointer().restore(
        checkpoint_dir / str(step) / "state",
        args=ocp.args.PyTreeRestore(
            target, restore_args=ocp.checkpoint_utils.construct_restore_args(target), partial_restore=True),
    )
    merged = dict(params_template)
    for name in take:
        merged[name] = flax.serialization.from_state_dict(params_template[name], restored["params"][name])
    return merged, fresh


def restore_or_initialize(
    checkpointer: Checkpointer,
    fresh_state: PyTree,
    *,
    data_iterator: Any = None,
    init_from: str | None = None,
    init_mode: str = "auto",
    drop_heads: Sequence[str] = (),
    import_hf: Callable[[str, PyTree], PyTree] | None = None,
) -> tuple[PyTree, str]:
    """Applies the restore order in the module docstring.

    Args:
      checkpointer: this run's checkpointer (``<workdir>/checkpoints``).
      fresh_state: the freshly initialised, sharded state; the template for every restore.
      data_iterator: restored together with the state when resuming this run.
      init_from: optional workdir, checkpoint dir or Hugging Face directory to start from.
      init_mode: ``'full'``, ``'params'`` or ``'auto'`` (full state if it matches, else params only).
      drop_heads: top-level param names never taken from ``init_from``.
      import_hf: ``(hf_dir, params_template) -> params`` used for a Hugging Face directory.

    Returns:
      ``(state, description)``, the description saying which rule applied.
    """
    resumed = checkpointer.restore_latest(fresh_state, data_iterator)
    if resumed is not None:
        state, step = resumed
        return state, f"resumed this run from {checkpointer.directory}/{step}"
    if not init_from:
        return fresh_state, "initialised from scratch"
    found = find_checkpoint_dir(init_from)
    if found is None:
        if (epath.Path(init_from) / "config.json").exists():
            if import_hf is None:
                raise ValueError(f"init_from={init_from} is a Hugging Face directory but no importer was given")
            return fresh_state.replace(params=import_hf(init_from, fresh_state.params)), (
                f"params imported from the Hugging Face directory {init_from}")
        raise FileNotFoundError(
            f"init_from={init_from}: no finalised checkpoint (expected <workdir>/checkpoints/<step>/state) and no "
            "Hugging Face config.json there")
    directory, step = found
    if init_mode in ("full", "auto") and not drop_heads:
        source = Checkpointer(directory, save_every=1, keep=1_000_000, async_save=False)
        try:
            state = source.restore(step, fresh_state)
            return state, f"full state from {directory}/{step}"
        except Exception as error:  # pylint: disable=broad-except
            if init_mode == "full":
                raise ValueError(f"init_from={init_from}: the full state does not match this run: {error}") from error
            logging.info("full-state restore from %s/%d did not match (%s); taking params only", directory, step, error)
        finally:
            source.close()
    params, fresh = restore_params_only(directory, step, fresh_state.params, drop_heads)
    note = f"params from {directory}/{step}" + (f"; freshly initialised: {', '.join(fresh)}" if fresh else "")
    return fresh_state.replace(params=params), note


def tree_equal(a: PyTree, b: PyTree) -> bool:
    """Bitwise equality of two pytrees of arrays (used by the exact-resume checks)."""
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(leaves_a) == len(leaves_b) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(leaves_a, leaves_b))
