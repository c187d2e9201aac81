"""The Orbax checkpointer (bert_jax/checkpoint.py) on 8 simulated CPU devices and a tiny BERT state.

A state sharded over ``data x fsdp x tensor = 2 x 2 x 2`` restores bit for bit into the template's
shardings together with the Grain iterator position; old checkpoints are pruned to ``keep``; the restore
order's pieces (finding a checkpoint, params only with dropped heads, falling back past a damaged newest
checkpoint, which one of this run / ``init_from`` wins) behave as documented.
"""

from __future__ import annotations

import errno
import gc
import os
import re

import grain
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bert_jax import checkpoint, optim, sharding, steps
from bert_jax.config import ModelConfig
from bert_jax.tasks.pretraining import PretrainingTask

MESH = {"data": 2, "fsdp": 2, "tensor": 2}
MODEL = ModelConfig(vocab_size=128, hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64,
                    max_position_embeddings=16)
HEADS = ("mlm_head", "nsp_head")


def _optimizer(**overrides):
    config = optim.default_optimizer_config()
    config.update(dict(learning_rate=1e-3, warmup_steps=1, total_steps=10, **overrides))
    return optim.make_optimizer(config)


@pytest.fixture(scope="module")
def setup():
    """The task, mesh, an initialised sharded state and its abstract template."""
    task = PretrainingTask(MODEL, max_predictions=2)
    mesh = sharding.make_mesh(MESH)
    optimizer = _optimizer()
    state, shardings = steps.create_train_state(task, optimizer, mesh, sharding.DEFAULT_RULES, 0, 1, 8)
    abstract, _ = steps.abstract_train_state(task, optimizer, mesh, sharding.DEFAULT_RULES)
    return dict(task=task, mesh=mesh, state=state, shardings=shardings, abstract=abstract)


def _other(state):
    """Another state with the same structure and shardings (every float negated, step + 1)."""
    flipped = jax.tree.map(lambda x: -x if jnp.issubdtype(x.dtype, jnp.floating) else x, state)
    return flipped.replace(step=flipped.step + 1)


_OPEN: list[checkpoint.Checkpointer] = []


def _checkpointer(path, **kwargs) -> checkpoint.Checkpointer:
    _OPEN.append(checkpoint.Checkpointer(path, **{"save_every": 1, "keep": 10, "async_save": False, **kwargs}))
    return _OPEN[-1]


@pytest.fixture(autouse=True)
def _close_checkpointers():
    yield
    while _OPEN:
        _OPEN.pop().close()
    gc.collect()  # report Orbax's leftovers (see failed_restores_leave_pending_reads) in the test that made them


def _damage(step_dir) -> None:
    """Truncates every array data file of a saved state (as a disk error or a half-copied file would)."""
    for root, _, files in os.walk(os.path.join(step_dir, "state")):
        if os.path.basename(root) == "d":
            for name in files:
                path = os.path.join(root, name)
                os.truncate(path, os.path.getsize(path) // 2)


# A restore that fails inside Orbax leaves its pending reads to the garbage collector, which reports them.
failed_restores_leave_pending_reads = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def _shardings(tree):
    return jax.tree.map(lambda x: x.sharding, tree)


def test_sharded_state_and_iterator_position_restore_exactly(setup, tmp_path):
    state = setup["state"]
    spec = state.params["bert"]["embeddings"]["word_embeddings"].sharding.spec
    assert spec == jax.sharding.PartitionSpec("tensor", "fsdp")
    dataset = grain.MapDataset.range(1000).to_iter_dataset()
    iterator = iter(dataset)
    assert [next(iterator) for _ in range(3)] == [0, 1, 2]
    saver = _checkpointer(tmp_path, async_save=True)
    assert saver.save(5, state, iterator)
    saver.close()
    assert os.path.exists(tmp_path / "5" / "data" / "process_0-of-1.json")

    for template in (setup["abstract"], _other(state)):
        resumed = iter(dataset)
        restored = _checkpointer(tmp_path).restore(5, template, resumed)
        assert checkpoint.tree_equal(restored, state)
        assert _shardings(restored) == setup["shardings"]
        assert next(resumed) == 3


def test_keeps_the_newest_k_and_saves_on_the_interval_or_when_forced(setup, tmp_path):
    saver = _checkpointer(tmp_path, save_every=2, keep=2)
    saved = [step for step in range(1, 7) if saver.save(step, setup["state"])]
    assert saved == [1, 2, 4, 6], "Orbax always takes a directory's first save, then every save_every steps"
    assert saver.all_steps() == [4, 6] and saver.latest_step() == 6
    assert saver.save(7, setup["state"], force=True)
    assert saver.all_steps() == [6, 7]
    assert sorted(os.listdir(tmp_path)) == ["6", "7"]


def test_find_checkpoint_dir_accepts_a_workdir_its_checkpoints_or_one_step(setup, tmp_path):
    checkpoints = tmp_path / "run" / checkpoint.CHECKPOINT_SUBDIR
    saver = _checkpointer(checkpoints)
    for step in (3, 8):
        saver.save(step, setup["state"])
    (checkpoints / "10.orbax-checkpoint-tmp" / "state").mkdir(parents=True)  # an unfinished save
    assert checkpoint.find_checkpoint_dir(tmp_path / "run") == (checkpoints, 8)
    assert checkpoint.find_checkpoint_dir(checkpoints) == (checkpoints, 8)
    assert checkpoint.find_checkpoint_dir(checkpoints / "3") == (checkpoints, 3)
    (tmp_path / "empty").mkdir()
    assert checkpoint.find_checkpoint_dir(tmp_path / "empty") is None
    assert checkpoint.find_checkpoint_dir(tmp_path / "missing") is None


def test_relative_local_paths_work_everywhere(setup, tmp_path, monkeypatch):
    """``--workdir=workdirs/demo`` (the README's demo command) is relative; Orbax wants absolute paths."""
    monkeypatch.chdir(tmp_path)
    state = setup["state"]
    saver = _checkpointer(os.path.join("workdirs", "demo", checkpoint.CHECKPOINT_SUBDIR), async_save=True)
    assert saver.directory == tmp_path / "workdirs" / "demo" / checkpoint.CHECKPOINT_SUBDIR
    assert saver.save(2, state)
    saver.wait()
    assert checkpoint.find_checkpoint_dir("workdirs/demo") == (saver.directory, 2)
    assert checkpoint.tree_equal(_checkpointer("workdirs/demo/checkpoints").restore(2, setup["abstract"]), state)
    params, _ = checkpoint.restore_params_only("workdirs/demo/checkpoints", 2, _other(state).params)
    assert checkpoint.tree_equal(params, state.params)
    assert "params" in checkpoint.stored_tree("workdirs/demo/checkpoints/2/state")


def test_restore_params_only_keeps_dropped_and_absent_heads_fresh(setup, tmp_path):
    state = setup["state"]
    _checkpointer(tmp_path).save(4, state)
    fresh = _other(state).params
    template = {**fresh, "classifier": {"kernel": jnp.ones((32, 3))}}  # a fine-tuning head the checkpoint lacks

    params, fresh_names = checkpoint.restore_params_only(tmp_path, 4, template, drop_heads=HEADS)
    assert fresh_names == ["classifier", *HEADS]
    assert checkpoint.tree_equal(params["bert"], state.params["bert"])
    for name in (*HEADS, "classifier"):
        assert checkpoint.tree_equal(params[name], template[name])
    assert _shardings(params["bert"]) == _shardings(fresh["bert"])

    params, fresh_names = checkpoint.restore_params_only(tmp_path, 4, fresh)
    assert fresh_names == [] and checkpoint.tree_equal(params, state.params)


@failed_restores_leave_pending_reads
def test_damaged_newest_checkpoint_is_skipped_and_moved_aside(setup, tmp_path, caplog):
    state, newer = setup["state"], _other(setup["state"])
    saver = _checkpointer(tmp_path)
    saver.save(1, state)
    saver.save(2, newer)
    _damage(tmp_path / "2")

    restored, step = saver.restore_latest(setup["abstract"])
    assert step == 1 and checkpoint.tree_equal(restored, state)
    assert f"checkpoint {tmp_path}/2 could not be restored" in caplog.text
    assert saver.all_steps() == [1]
    (aside,) = [name for name in os.listdir(tmp_path) if checkpoint.UNRESTORABLE_SUFFIX in name]
    assert aside.startswith("2" + checkpoint.UNRESTORABLE_SUFFIX)
    assert saver.save(2, newer), "the step is saved again (Orbax would skip a step it believes it has)"
    assert checkpoint.tree_equal(saver.restore_latest(setup["abstract"])[0], newer)


@failed_restores_leave_pending_reads
def test_no_restorable_checkpoint_is_an_error_not_a_fresh_start(setup, tmp_path):
    saver = _checkpointer(tmp_path)
    saver.save(1, setup["state"])
    other_model = PretrainingTask(MODEL.replace(hidden_size=64), max_predictions=2)
    template, _ = steps.abstract_train_state(other_model, _optimizer(), setup["mesh"], sharding.DEFAULT_RULES)
    with pytest.raises(checkpoint.CheckpointRestoreError, match=r"none of the checkpoints .* restores.*\n  step 1: "):
        saver.restore_latest(template)
    assert saver.all_steps() == [1], "nothing is moved aside when nothing restores"
    assert _checkpointer(tmp_path / "none").restore_latest(template) is None


def test_restore_order_this_run_first_then_init_from(setup, tmp_path):
    state, other = setup["state"], _other(setup["state"])
    init_dir = tmp_path / "phase1"
    _checkpointer(init_dir / checkpoint.CHECKPOINT_SUBDIR).save(7, other)
    (init_dir / "config.json").write_text("{}")  # a workdir's own config: not a Hugging Face directory

    own = _checkpointer(tmp_path / "run" / checkpoint.CHECKPOINT_SUBDIR)
    restored, how = checkpoint.restore_or_initialize(own, state, init_from=str(init_dir), init_mode="full")
    assert how == f"full state from {init_dir}/checkpoints/7" and checkpoint.tree_equal(restored, other)

    own.save(3, state)
    restored, how = checkpoint.restore_or_initialize(own, other, init_from=str(init_dir))
    assert how == f"resumed this run from {own.directory}/3" and checkpoint.tree_equal(restored, state)

    fresh, how = checkpoint.restore_or_initialize(_checkpointer(tmp_path / "scratch"), state)
    assert how == "initialised from scratch" and fresh is state
    with pytest.raises(FileNotFoundError, match="no finalised checkpoint"):
        checkpoint.restore_or_initialize(_checkpointer(tmp_path / "x"), state, init_from=str(tmp_path / "nothing"))


@failed_restores_leave_pending_reads
def test_auto_mode_takes_params_only_when_the_optimizer_state_differs(setup, tmp_path):
    task, state = setup["task"], _other(setup["state"])
    _checkpointer(tmp_path / "init").save(7, state)
    lamb = _optimizer(name="lamb")  # another optimizer state (the non-finite wrapper converts: see below)
    template, _ = steps.create_train_state(task, lamb, setup["mesh"], sharding.DEFAULT_RULES, 1, 1, 8)
    own = _checkpointer(tmp_path / "run")
    restored, how = checkpoint.restore_or_initialize(own, template, init_from=str(tmp_path / "init"))
    assert how == f"params from {tmp_path}/init/7"
    assert checkpoint.tree_equal(restored.params, state.params)
    assert int(restored.step) == 0 and checkpoint.tree_equal(restored.opt_state, template.opt_state)
    with pytest.raises(ValueError, match="the full state does not match this run"):
        checkpoint.restore_or_initialize(own, template, init_from=str(tmp_path / "init"), init_mode="full")


def test_stop_and_skip_policies_restore_each_other_s_checkpoints(setup, tmp_path):
    """``train.on_nonfinite='skip'`` wraps the optimizer in ``optax.apply_if_finite``; a run that switches
    policy resumes the other one's checkpoint: params and moments exact, skip counters fresh or dropped."""
    import optax

    mesh, task = setup["mesh"], setup["task"]
    skipping = _optimizer(skip_nonfinite=True)
    wrapped, _ = steps.create_train_state(task, skipping, mesh, sharding.DEFAULT_RULES, 1, 1, 8)
    wrapped = _other(wrapped)
    wrapped = wrapped.replace(opt_state=wrapped.opt_state._replace(
        notfinite_count=wrapped.opt_state.notfinite_count + 2, total_notfinite=wrapped.opt_state.total_notfinite + 3))
    plain = _other(setup["state"])
    _checkpointer(tmp_path / "stop").save(1, plain)
    _checkpointer(tmp_path / "skip").save(1, wrapped)

    fresh_wrapped, _ = steps.create_train_state(task, skipping, mesh, sharding.DEFAULT_RULES, 0, 1, 8)
    into_skip = _checkpointer(tmp_path / "stop").restore(1, fresh_wrapped)
    assert isinstance(into_skip.opt_state, optax.ApplyIfFiniteState)
    assert checkpoint.tree_equal(into_skip.params, plain.params)
    assert checkpoint.tree_equal(into_skip.opt_state.inner_state, plain.opt_state)
    assert int(into_skip.opt_state.total_notfinite) == 0 and bool(into_skip.opt_state.last_finite)
    assert into_skip.opt_state.notfinite_count.sharding == fresh_wrapped.opt_state.notfinite_count.sharding

    into_stop = _checkpointer(tmp_path / "skip").restore(1, setup["state"])
    assert jax.tree.structure(into_stop) == jax.tree.structure(setup["state"])
    assert checkpoint.tree_equal(into_stop.opt_state, wrapped.opt_state.inner_state)
    assert checkpoint.tree_equal(into_stop.params, wrapped.params) and int(into_stop.step) == int(wrapped.step)


def test_too_little_free_space_is_one_line_naming_the_directory_and_the_space_needed(setup, tmp_path, monkeypatch):
    saver = _checkpointer(tmp_path, async_save=True)
    saver.save(1, setup["state"])
    needed = checkpoint.tree_bytes(setup["state"])
    real_usage = checkpoint.shutil.disk_usage
    monkeypatch.setattr(checkpoint.shutil, "disk_usage",
                        lambda path: real_usage(path)._replace(free=needed // 2))
    with pytest.raises(checkpoint.DiskFullError) as raised:
        saver.save(2, _other(setup["state"]))
    message = str(raised.value)
    assert "\n" not in message and raised.value.__suppress_context__
    assert re.search(rf"no space left in {re.escape(str(tmp_path))} for the checkpoint of step 2: it needs about "
                     rf"{(needed + 16 * 2**20) / 2**30:.3f} GiB, {needed // 2 / 2**30:.3f} GiB free; checkpoints 1 "
                     r"are intact\. Free some space", message), message
    saver.close()  # quietly, after the failure
    monkeypatch.undo()
    reopened = _checkpointer(tmp_path)
    assert reopened.all_steps() == [1]
    assert checkpoint.tree_equal(reopened.restore(1, setup["state"]), setup["state"])


def test_out_of_space_in_an_asynchronous_write_is_reported_for_its_step_when_awaited(setup, tmp_path, monkeypatch):
    saver = _checkpointer(tmp_path, async_save=True)
    saver.save(1, setup["state"])
    saver.wait()
    saver.save(2, _other(setup["state"]))

    def out_of_space():  # as Orbax's background commit reports a failed tensorstore write
        raise ExceptionGroup("async save failed", [RuntimeError("commit failed")]) from OSError(
            errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(saver._manager, "wait_until_finished", out_of_space)
    with pytest.raises(checkpoint.DiskFullError, match=r"for the checkpoint of step 2: it needs about [\d.]+ GiB, "
                       r"[\d.]+ GiB free; checkpoints 1(, 2)? are intact"):
        saver.save(4, setup["state"], force=True)
    monkeypatch.undo()
    saver.close()
    assert _checkpointer(tmp_path).all_steps()[0] == 1
