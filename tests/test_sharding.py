"""Mesh construction, the rules table and batch sharding (bert_jax/sharding.py) on 8 CPU devices."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from bert_jax.models import layers as model_lib
from bert_jax import sharding
from bert_jax.config import ModelConfig
from bert_jax.heads import PreTrainingModel
from data_pipelines.batch import zeros_batch


def test_eight_simulated_devices():
    assert jax.device_count() == 8, "tests/conftest.py should simulate 8 CPU devices"


@pytest.mark.parametrize(
    "mesh_cfg, shape",
    [
        ({"data": -1}, (8, 1, 1)),
        ({"data": 2, "fsdp": -1, "tensor": 2}, (2, 2, 2)),
        ({"fsdp": 8}, (1, 8, 1)),
        ({"data": 4, "tensor": 2}, (4, 1, 2)),
    ],
)
def test_make_mesh_resolves_sizes(mesh_cfg, shape):
    mesh = sharding.make_mesh(mesh_cfg)
    assert mesh.axis_names == ("data", "fsdp", "tensor")
    assert tuple(mesh.shape.values()) == shape
    assert sorted(d.id for d in mesh.devices.flat) == list(range(8))


def test_make_mesh_on_a_device_subset_and_from_the_default_config():
    assert tuple(sharding.make_mesh({"data": 1}, devices=jax.devices()[:1]).shape.values()) == (1, 1, 1)
    cfg = sharding.default_sharding_config()
    assert tuple(sharding.make_mesh(cfg.mesh).shape.values()) == (8, 1, 1)
    assert sharding.normalize_rules(cfg.rules) == sharding.DEFAULT_RULES


@pytest.mark.parametrize(
    "mesh_cfg, message",
    [
        ({"data": 3}, "has 3 devices but 8 are available"),
        ({"data": 3, "fsdp": -1}, "not divisible by the fixed axes' product 3"),
        ({"data": -1, "fsdp": -1}, "only one axis may be -1"),
        ({"data": 0, "fsdp": -1}, "data=0"),
        ({"model": 8}, "unknown axes \\['model'\\]"),
    ],
)
def test_make_mesh_rejects_bad_sizes(mesh_cfg, message):
    with pytest.raises(ValueError, match=message):
        sharding.make_mesh(mesh_cfg)


def test_normalize_rules_accepts_config_lists_and_rejects_unknown_axes():
    assert sharding.normalize_rules([["act_batch", ["data", "fsdp"]], ["embed", None]]) == (
        ("act_batch", ("data", "fsdp")), ("embed", None))
    with pytest.raises(ValueError, match=r"rules\[1\] \('mlp'\) names unknown mesh axes \['model'\]"):
        sharding.normalize_rules([("embed", "fsdp"), ("mlp", "model")])
    with pytest.raises(ValueError, match=r"rules\[0\]"):
        sharding.normalize_rules([("embed",)])


def _abstract_params(scan_layers: bool):
    bert = PreTrainingModel(ModelConfig.from_size("tiny", vocab_size=64, scan_layers=scan_layers))
    return jax.eval_shape(lambda key: bert.init(key, zeros_batch(B=1, S=8, P=2))["params"], jax.random.PRNGKey(0))


def test_rules_cover_every_logical_name_of_the_model():
    ruled = {name for name, _ in sharding.DEFAULT_RULES}
    activation_names = {value for name, value in vars(model_lib).items() if name.startswith("ACT_")}
    parameter_names = set()
    for scan_layers in (False, True):
        specs = jax.tree.leaves(jax.tree.map(lambda x: x.names, _abstract_params(scan_layers),
                                             is_leaf=lambda x: hasattr(x, "names")),
                                is_leaf=lambda x: isinstance(x, tuple))
        parameter_names.update(name for names in specs for name in names)
    assert len(activation_names) == 7 and "layers" in parameter_names
    assert activation_names | parameter_names <= ruled, (activation_names | parameter_names) - ruled


def test_logical_shardings_follow_the_rules():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    specs = jax.tree.map(lambda s: s.spec, sharding.logical_shardings(_abstract_params(False), mesh,
                                                                      sharding.DEFAULT_RULES))
    layer = specs["bert"]["encoder"]["layer_0"]
    assert layer["attention"]["query"]["kernel"] == P("fsdp", "tensor", None)
    assert layer["attention"]["output"]["kernel"] == P("tensor", None, "fsdp")
    assert layer["intermediate"]["kernel"] == P("fsdp", "tensor")
    assert layer["output"]["kernel"] == P("tensor", "fsdp")
    assert layer["layer_norm"]["norm"]["scale"] == P("fsdp")
    assert specs["bert"]["embeddings"]["word_embeddings"] == P("tensor", "fsdp")
    assert specs["bert"]["embeddings"]["position_embeddings"] == P(None, "fsdp")
    assert specs["mlm_head"]["output_bias"] == P("tensor")
    stacked = jax.tree.map(lambda s: s.spec, sharding.logical_shardings(_abstract_params(True), mesh,
                                                                        sharding.DEFAULT_RULES))
    assert stacked["bert"]["encoder"]["layers"]["attention"]["query"]["kernel"] == P(None, "fsdp", "tensor", None)


def test_shard_batch_splits_rows_over_data_and_fsdp():
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    host = zeros_batch(B=8, S=6, P=2)
    host["input_ids"] = np.arange(48, dtype=np.int32).reshape(8, 6)
    host["next_sentence_label"] = np.arange(8, dtype=np.int32) % 2
    batch = sharding.shard_batch(host, mesh)
    ids = batch["input_ids"]
    assert ids.shape == (8, 6) and ids.sharding.spec == P(("data", "fsdp"))
    np.testing.assert_array_equal(np.asarray(ids), host["input_ids"])
    # 4 batch shards of 2 rows; each held by the 2 devices of a tensor group.
    assert {shard.data.shape for shard in ids.addressable_shards} == {(2, 6)}
    assert len({shard.index[0].start for shard in ids.addressable_shards}) == 4
    assert batch["next_sentence_label"].sharding.spec == P(("data", "fsdp"))
    with pytest.raises(ValueError, match="batch field 'input_ids' has shape \\(6, 6\\)"):
        sharding.shard_batch({"input_ids": np.zeros((6, 6), np.int32)}, mesh)
