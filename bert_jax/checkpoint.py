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
4. **A Hugging Face directory** (``config.json`` beside the weights): imported by ``bert_jax.interop.hf_files``.
5. **Scratch**: the freshly initialised state.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
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
NONFINITE_SUFFIX = ".nonfinite"  # a checkpoint whose next loss was not finite: <step>.nonfinite-<unix time>
# The fields of ``optax.ApplyIfFiniteState``: ``train.on_nonfinite='skip'`` wraps the optimizer state in it.
_NONFINITE_COUNTERS = ("notfinite_count", "last_finite", "total_notfinite")
_NONFINITE_WRAPPER = frozenset((*_NONFINITE_COUNTERS, "inner_state"))


class CheckpointRestoreError(RuntimeError):
    """Checkpoints exist in the run's directory but none of them restores into this run's state."""


class DiskFullError(OSError):
    """No room for a checkpoint: one line naming the directory, the space needed and what is intact."""


GIB = 1024**3
# Beyond the arrays, a checkpoint holds Orbax metadata and the data iterators' positions (a few KiB).
_CHECKPOINT_OVERHEAD_BYTES = 16 * 1024**2


def tree_bytes(tree: PyTree) -> int:
    """Bytes of every array of ``tree`` (global arrays counted whole: what one checkpoint writes)."""
    return sum(int(getattr(leaf, "nbytes", 0)) for leaf in jax.tree.leaves(tree))


def _is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` or anything it wraps (causes, contexts, exception groups) is ENOSPC."""
    seen, todo = set(), [error]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno == errno.ENOSPC:
            return True
        if "No space left on device" in str(current):
            return True
        todo += [current.__cause__, current.__context__, *getattr(current, "exceptions", ())]
    return False


def _as_tree(state: PyTree) -> PyTree:
    """A checkpointable nested-dict view of ``state`` (dataclasses and optax namedtuples flattened)."""
    return flax.serialization.to_state_dict(state)


def _is_nonfinite_wrapper(opt_tree: Any) -> bool:
    """Whether a (state-dict or metadata) optimizer tree is an ``optax.apply_if_finite`` state."""
    return hasattr(opt_tree, "keys") and set(opt_tree.keys()) == _NONFINITE_WRAPPER


def _fresh_counters(wrapper: PyTree) -> dict[str, Any]:
    """``apply_if_finite``'s counters as a fresh optimizer has them (nothing skipped), laid out as in
    ``wrapper`` (a state-dict ``ApplyIfFiniteState`` of arrays or ``ShapeDtypeStruct``s)."""

    def fresh(name: str) -> Any:
        leaf = wrapper[name]
        value = (np.ones if name == "last_finite" else np.zeros)(leaf.shape, leaf.dtype)
        sharding = getattr(leaf, "sharding", None)
        return jax.device_put(value, sharding) if sharding is not None else jax.numpy.asarray(value)

    return {name: fresh(name) for name in _NONFINITE_COUNTERS}


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
        self._in_flight: tuple[int, int] | None = None  # (step, bytes) of the save being written
        self._failed = False  # a save failed for want of space (reported once, then close quietly)

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: PyTree, data_iterator: Any = None, *, force: bool = False) -> bool:
        """Saves ``state`` (and the iterator's position) at ``step`` when due or when ``force``.

        Raises:
          DiskFullError: the local checkpoint directory has less free space than the state needs (checked
            before writing), or a write ran out of space (this save, or an asynchronous one before it).
        """
        if not (force or self._manager.should_save(int(step))):
            return False
        self.wait()  # the previous save first (Orbax waits for it too): its errors are its own
        needed = tree_bytes(state) + _CHECKPOINT_OVERHEAD_BYTES
        self._check_free_space(step, needed)
        items = {"state": ocp.args.PyTreeSave(_as_tree(state))}
        if data_iterator is not None:
            import grain.checkpoint as grain_checkpoint  # pylint: disable=g-import-not-at-top

            items["data"] = grain_checkpoint.CheckpointSave(data_iterator)
        with self._reporting_disk_full(step, needed):
            saved = self._manager.save(int(step), args=ocp.args.Composite(**items), force=force)
        self._in_flight = (int(step), needed)
        return saved

    def _check_free_space(self, step: int, needed: int) -> None:
        if fileio.is_remote(self.directory):
            return
        free = shutil.disk_usage(self.directory).free
        if free < needed:
            self._disk_full(step, needed, free)

    def _disk_full(self, step: int, needed: int, free: int | None = None) -> None:
        """Raises the one-line ``DiskFullError`` (Orbax's traceback is dropped: it adds nothing)."""
        self._failed = True
        if free is None and not fileio.is_remote(self.directory):
            free = shutil.disk_usage(self.directory).free
        try:
            self._manager.reload()
            intact = self.all_steps()
        except Exception:  # pylint: disable=broad-except
            intact = []
        kept = f"checkpoints {', '.join(map(str, intact))} are intact" if intact else "no earlier checkpoint exists"
        free_text = "" if free is None else f", {free / GIB:.3f} GiB free"
        raise DiskFullError(
            errno.ENOSPC, f"no space left in {self.directory} for the checkpoint of step {step}: it needs about "
            f"{needed / GIB:.3f} GiB{free_text}; {kept}. Free some space (or move the workdir to a bigger disk) and "
            "rerun the same command to resume") from None

    @contextlib.contextmanager
    def _reporting_disk_full(self, step: int, needed: int):
        """Turns an out-of-space error of Orbax while writing ``step`` into ``DiskFullError``."""
        try:
            yield
        except DiskFullError:
            raise
        except Exception as error:  # pylint: disable=broad-except
            if _is_disk_full(error):
                self._disk_full(step, needed)
            raise

    def restore(self, step: int, state_template: PyTree, data_iterator: Any = None) -> PyTree:
        """Restores the full state at ``step`` into the structure and shardings of ``state_template``.

        The two non-finite policies restore each other's checkpoints: a state saved without
        ``optax.apply_if_finite`` (``train.on_nonfinite='stop'``) restores into a wrapped template
        (``'skip'``) with fresh skip counters, and a wrapped state into a plain template without them.
        """
        template = _as_tree(state_template)
        target, convert = template, None
        stored_opt = self._stored_opt_state(step)
        if isinstance(template, dict) and "opt_state" in template and stored_opt is not None:
            ours, theirs = _is_nonfinite_wrapper(template["opt_state"]), _is_nonfinite_wrapper(stored_opt)
            if ours and not theirs:
                target, convert = {**template, "opt_state": template["opt_state"]["inner_state"]}, "wrap"
            elif theirs and not ours:
                target, convert = {**template, "opt_state": {"inner_state": template["opt_state"]}}, "unwrap"
        target = _abstract(target)
        items = {"state": ocp.args.PyTreeRestore(
            target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
            partial_restore=convert == "unwrap")}
        if data_iterator is not None:
            import grain.checkpoint as grain_checkpoint  # pylint: disable=g-import-not-at-top

            items["data"] = grain_checkpoint.CheckpointRestore(data_iterator)
        restored = dict(self._manager.restore(int(step), args=ocp.args.Composite(**items))["state"])
        if convert == "wrap":
            restored["opt_state"] = {**_fresh_counters(template["opt_state"]), "inner_state": restored["opt_state"]}
            logging.info("step %d was saved without the non-finite skip wrapper: its skip counters start at 0", step)
        elif convert == "unwrap":
            restored["opt_state"] = restored["opt_state"]["inner_state"]
            logging.info("step %d was saved with the non-finite skip wrapper: its skip counters are dropped", step)
        return flax.serialization.from_state_dict(state_template, restored)

    def _stored_opt_state(self, step: int) -> Any:
        """The saved optimizer-state metadata tree of ``step``, or None when it cannot be read."""
        try:
            return stored_tree(self.directory / str(step) / "state").get("opt_state")
        except Exception:  # pylint: disable=broad-except  (a damaged checkpoint: the restore itself reports it)
            return None

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
                self.move_aside([bad for bad, _ in failed], UNRESTORABLE_SUFFIX)
            return restored, step
        if failed:
            raise CheckpointRestoreError(
                f"none of the checkpoints in {self.directory} restores into this run's state (did the model, "
                "optimizer or data config change? use a new workdir for a different run):\n  "
                + "\n  ".join(f"step {step}: {error[:500]}" for step, error in failed))
        return None

    def move_aside(self, steps: Sequence[int], label: str = UNRESTORABLE_SUFFIX) -> str:
        """Renames the step directories to ``<step><label>-<time>`` (ignored by Orbax, kept for inspection)
        and reloads; every process must call it. Returns the suffix used."""
        self.wait()
        suffix = f"{label}-{int(time.time())}"
        if jax.process_index() == 0:
            for step in steps:
                target = self.directory / f"{step}{suffix}"
                (self.directory / str(step)).rename(target)
                logging.warning("moved the checkpoint %s/%d aside to %s", self.directory, step, target)
        ocp.multihost.sync_global_processes("bert_jax_checkpoint_move_aside")
        self._manager.reload()
        return suffix

    def wait(self) -> None:
        """Blocks until an asynchronous save has finished.

        Raises:
          DiskFullError: that save ran out of space.
        """
        if self._failed:
            return
        if self._in_flight is None:
            return
        with self._reporting_disk_full(*self._in_flight):
            self._manager.wait_until_finished()
        self._in_flight = None

    def close(self) -> None:
        """Finishes the pending save and closes; after a ``DiskFullError`` it closes without raising again."""
        try:
            self.wait()
            self._manager.close()
        except Exception:  # pylint: disable=broad-except
            if not self._failed:
                raise
            logging.debug("closing after a failed save", exc_info=True)


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
