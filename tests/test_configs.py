"""The config files (configs/) and the run-config validation (bert_jax/run_config.py).

Every config file loads; every pretraining config (each size x phase x ablation variant of
``configs/pretrain.py``, the demo, and each run of the sweeps) passes ``run_config.validate`` on 8
devices with a tokenizer of its own vocabulary size; and each kind of broken config is refused before
anything compiles, with a message naming the field to change.
"""

from __future__ import annotations

import glob
import importlib.util
import itertools
import os

import ml_collections
import pytest

from bert_jax import run_config, sweep
from bert_jax.config import MODEL_SIZES
from configs import pretrain

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG_FILES = sorted(os.path.relpath(path, ROOT) for path in glob.glob(os.path.join(ROOT, "configs", "**", "*.py"),
                                                                         recursive=True)
                      if not path.endswith(("__init__.py", "common.py")))  # common.py: shared sections
DEVICES = 8


def load_module(path: str):
    """Imports a config file by path, as ``ml_collections.config_flags`` does."""
    spec = importlib.util.spec_from_file_location(os.path.basename(path).removesuffix(".py"), os.path.join(ROOT, path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_config(config_arg: str) -> ml_collections.ConfigDict:
    """``path[:variant]`` -> ``get_config(variant)``, the ``--config`` flag's syntax."""
    path, _, variant = config_arg.partition(":")
    module = load_module(path)
    return module.get_config(variant) if variant else module.get_config()


def validate(config: ml_collections.ConfigDict, num_devices: int = DEVICES, **kwargs) -> None:
    """``run_config.validate`` with a tokenizer whose vocabulary matches the model's unless given."""
    kwargs.setdefault("tokenizer_vocab_size", config.model.vocab_size)
    run_config.validate(config, num_devices=num_devices, **kwargs)


def test_the_config_directory_has_the_pretraining_configs():
    assert {"configs/pretrain.py", "configs/demo.py"} <= set(CONFIG_FILES)


@pytest.mark.parametrize("path", CONFIG_FILES)
def test_every_config_file_loads(path):
    module = load_module(path)
    if hasattr(module, "get_sweep"):
        runs = sweep.expand(module.get_sweep(), root="/tmp/sweep")
        assert runs, path
        for run in runs:
            assert os.path.isfile(os.path.join(ROOT, run.config.partition(":")[0])), run.config
        return
    config = module.get_config()
    assert isinstance(config, ml_collections.ConfigDict)
    for section in ("model", "optimizer", "train"):
        assert section in config, f"{path} has no {section} section"


VARIANTS = list(itertools.product(sorted(MODEL_SIZES), ("1", "2"), pretrain.ABLATIONS))


@pytest.mark.parametrize("size,phase,ablation", VARIANTS, ids=["-".join(v) for v in VARIANTS])
def test_pretraining_variant_validates(size, phase, ablation):
    config = pretrain.get_config(f"size={size},phase={phase},ablation={ablation}")
    validate(config)
    assert run_config.model_config_from(config).hidden_size == MODEL_SIZES[size][1]
    assert config.data.max_seq_length == (128 if phase == "1" else 512)
    assert config.train.init_mode == ("auto" if phase == "1" else "full")
    assert (config.task.nsp_weight > 0) == config.data.nsp == (ablation != "roberta")


@pytest.mark.parametrize("num_devices", [1, 2, 8])
def test_demo_config_validates(num_devices):
    config = load_config("configs/demo.py")
    validate(config, num_devices)
    assert config.tokenizer.vocab_size == config.model.vocab_size
    assert config.tokenizer.build_if_missing


SWEEP_FILES = [path for path in CONFIG_FILES if "get_sweep" in open(os.path.join(ROOT, path)).read()]


@pytest.mark.parametrize("path", SWEEP_FILES)
def test_every_pretraining_run_of_a_sweep_validates(path):
    for run in sweep.expand(load_module(path).get_sweep(), root="/tmp/sweep"):
        config = load_config(run.config)
        if config.task.name == "pretraining":  # fine-tuning configs have their own validation
            config.update_from_flattened_dict(run.overrides)
            validate(config)


def test_the_ablation_sweep_covers_every_ablation():
    runs = sweep.expand(load_module("configs/sweeps/ablations.py").get_sweep(), root="/tmp/sweep")
    assert sorted(load_config(run.config).variant.ablation for run in runs) == sorted(pretrain.ABLATIONS)


@pytest.mark.parametrize("arg, message", [
    ("size=huge", "unknown model size 'huge'"),
    ("phase=3", "phase=3: expected 1 or 2"),
    ("ablation=dropout", "ablation='dropout'"),
    ("colour=red", "config variant 'colour=red'"),
])
def test_bad_variants_are_named(arg, message):
    with pytest.raises(ValueError, match=message):
        pretrain.get_config(arg)


def _demo(**overrides) -> ml_collections.ConfigDict:
    config = load_config("configs/demo.py")
    config.update_from_flattened_dict(overrides)
    return config


@pytest.mark.parametrize("overrides, kwargs, message", [
    ({"model.hidden_size": 129}, {}, r"model.hidden_size=129 is not divisible by model.num_heads=2"),
    ({"data.max_seq_length": 256}, {}, r"data.max_seq_length=256 exceeds model.max_position_embeddings=128"),
    ({"data.max_predictions_per_seq": 0}, {}, r"data.max_predictions_per_seq=0 must be in \[1"),
    ({"train.batch_size": 12}, {}, r"train.batch_size=12 / grad_accum_steps=1 is not divisible by the 8 "
                                   r"data-parallel devices"),
    ({"train.batch_size": 32, "train.grad_accum_steps": 8}, {},
     r"train.batch_size=32 / grad_accum_steps=8 is not divisible by the 8"),
    ({"train.batch_size": 32, "train.grad_accum_steps": 3}, {},
     r"train.batch_size=32 is not divisible by train.grad_accum_steps=3"),
    ({"sharding.mesh.data": 4}, {}, r"sharding.mesh does not fit the 8 devices"),
    ({"sharding.mesh.fsdp": 3}, {}, r"sharding.mesh does not fit the 8 devices"),
    ({}, {"tokenizer_vocab_size": 30522}, r"model.vocab_size=8000 does not match the tokenizer's 30522 "
                                          r"\(data/demo/vocab/vocab.txt\); set --config.model.vocab_size=30522"),
    ({"data.packing": True}, {}, r"data.nsp and data.packing are exclusive"),
    ({"data.nsp": False}, {}, r"task.nsp_weight=1.0 but data.nsp=False.*--config.task.nsp_weight=0"),
    ({"train.batch_size": 8}, {"num_devices": 8, "process_count": 3},
     r"train.batch_size=8 is not divisible by the 3 processes"),
    ({"train.num_steps": 0}, {}, r"train.num_steps=0 must be >= 1"),
    ({"train.on_nonfinite": "ignore"}, {}, r"train.on_nonfinite='ignore'; expected one of \('stop', 'skip'\)"),
    ({"train.host_heap": "pinned"}, {}, r"train.host_heap='pinned'; expected one of \('auto', 'resident', 'default'\)"),
    ({"train.init_mode": "weights"}, {}, r"train.init_mode='weights'"),
    ({"train.log_every": 0}, {}, r"train.log_every=0 must be >= 1"),
    ({"train.eval_batches": 0}, {}, r"train.eval_batches=0 must be >= 1"),
    ({"train.eval_every": -1}, {}, r"train.eval_every=-1 must be >= 0"),
    ({"train.checkpoint_every": 75}, {}, r"train.checkpoint_every=75 must be a multiple of train.log_every=50"),
    ({"model.hidden_act": "swish"}, {}, r"config.model: model.hidden_act='swish'"),
])
def test_broken_config_is_refused_naming_the_field(overrides, kwargs, message):
    config = _demo(**overrides)
    with pytest.raises(run_config.ConfigError, match=message):
        validate(config, **kwargs)


def test_every_problem_is_listed_at_once():
    config = _demo(**{"data.max_seq_length": 256, "train.batch_size": 12, "data.packing": True})
    with pytest.raises(run_config.ConfigError) as error:
        validate(config, tokenizer_vocab_size=100)
    lines = str(error.value).splitlines()
    assert lines[0] == "invalid run config:"
    assert len(lines) == 5, lines
    for field in ("data.max_seq_length", "model.vocab_size", "train.batch_size", "data.nsp and data.packing"):
        assert any(field in line for line in lines[1:]), field


def test_unknown_model_field_is_refused():
    config = _demo()
    config.model.hidden_layers = 3  # a typo of num_layers
    with pytest.raises(run_config.ConfigError, match=r"config.model has unknown field\(s\) \['hidden_layers'\]"):
        validate(config)


def test_saved_config_reads_back(tmp_path):
    config = _demo(**{"train.num_steps": 7})
    path = run_config.save_config(config, str(tmp_path))
    assert path == str(tmp_path / "config.json")
    saved = run_config.load_saved_config(str(tmp_path))
    assert saved["train"]["num_steps"] == 7 and saved["model"] == dict(config.model)


@pytest.mark.parametrize("overrides, message", [
    ({"train.batch_size": 0}, r"train.batch_size=0 must be >= 1"),
    ({"train.batch_size": -8}, r"train.batch_size=-8 must be >= 1"),
    ({"train.grad_accum_steps": 0}, r"train.grad_accum_steps=0 must be >= 1"),
    ({"train.keep_checkpoints": 0}, r"train.keep_checkpoints=0 must be >= 1"),
    ({"optimizer.learning_rate": 0.0}, r"optimizer.learning_rate=0.0 must be > 0.0"),
    ({"optimizer.learning_rate": -1e-4}, r"optimizer.learning_rate=-0.0001 must be > 0.0"),
    ({"optimizer.warmup_steps": -1}, r"optimizer.warmup_steps=-1 must be >= 0"),
    ({"optimizer.warmup_steps": 2000}, r"optimizer.warmup_steps=2000 must be < optimizer.total_steps=1500"),
    ({"optimizer.total_steps": 0}, r"optimizer.total_steps=0 must be >= 1"),
    ({"optimizer.b2": 1.0}, r"optimizer.b2=1.0 must be in \[0.0, 1.0\)"),
    ({"optimizer.end_lr_fraction": 1.5}, r"optimizer.end_lr_fraction=1.5 must be in \[0.0, 1.0\]"),
    ({"data.max_seq_length": 0}, r"data.max_seq_length=0 must be >= 1"),
    ({"data.masked_lm_prob": 0.0}, r"data.masked_lm_prob=0.0 must be in \(0.0, 1.0\]"),
    ({"data.masked_lm_prob": 1.5}, r"data.masked_lm_prob=1.5 must be in \(0.0, 1.0\]"),
    ({"data.short_seq_prob": -0.1}, r"data.short_seq_prob=-0.1 must be in \[0.0, 1.0\]"),
    ({"data.dupe_factor": 0}, r"data.dupe_factor=0 must be >= 1"),
    ({"model.hidden_dropout": 1.0}, r"model.hidden_dropout=1.0 must be in \[0.0, 1.0\)"),
    ({"model.attention_dropout": -0.1}, r"model.attention_dropout=-0.1 must be in \[0.0, 1.0\)"),
    ({"model.num_heads": 0}, r"model.num_heads=0 must be >= 1"),  # ModelConfig would divide by it
    ({"model.layer_norm_eps": 0.0}, r"model.layer_norm_eps=0.0 must be > 0.0"),
])
def test_out_of_range_values_are_refused_naming_the_field_and_the_range(overrides, message):
    with pytest.raises(run_config.ConfigError, match=message):
        validate(_demo(**overrides))
    with pytest.raises(run_config.ConfigError, match=message):  # and first thing in a run
        run_config.precheck(_demo(**overrides), "/tmp")


def test_source_ranges_name_the_source():
    config = _demo()
    config.data.sources = [dict(config.data.sources[0], eval_fraction=1.0), dict(config.data.sources[0], weight=0)]
    with pytest.raises(run_config.ConfigError) as error:
        validate(config)
    assert "data.sources[0].eval_fraction=1.0 must be in [0.0, 1.0)" in str(error.value)
    assert "data.sources[1].weight=0 must be > 0.0" in str(error.value)


def test_unwritable_workdir_and_missing_source_are_refused_before_anything_is_built(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    config = _demo()
    config.data.sources = [dict(config.data.sources[0], dump_path=str(tmp_path / "missing.xml.bz2"), prepare=True)]
    with pytest.raises(run_config.ConfigError) as error:
        run_config.precheck(config, str(blocker / "run"))
    lines = str(error.value).splitlines()[1:]
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"  - --workdir={blocker / 'run'} is not a writable directory: ")
    assert lines[1] == f"  - data.sources[0].dump_path={tmp_path / 'missing.xml.bz2'}: no such file or directory"
    run_config.precheck(_demo(), str(tmp_path / "fine"))  # a good config passes and its workdir exists
    assert (tmp_path / "fine").is_dir()


def test_a_run_with_batch_size_zero_stops_before_its_tokenizer_and_model(tmp_path):
    from bert_jax import train

    config = _demo(**{"train.batch_size": 0, "tokenizer.vocab_file": str(tmp_path / "absent_vocab.txt"),
                      "tokenizer.build_if_missing": False})
    with pytest.raises(run_config.ConfigError, match=r"train.batch_size=0 must be >= 1"):
        train.run(config, str(tmp_path / "run"))


def test_finetune_validation_shares_the_pretraining_checks():
    from bert_jax import finetune
    from bert_jax.config import ModelConfig

    config = load_config("configs/finetune_glue.py")
    config.update_from_flattened_dict({"data.max_seq_length": 512, "train.checkpoint_every": 75,
                                       "train.batch_size": 12})
    model = ModelConfig.from_size("tiny", max_position_embeddings=128)
    with pytest.raises(run_config.ConfigError) as error:
        finetune.validate(config, model, tokenizer_vocab_size=100, num_devices=8)
    shared = run_config.shared_problems(config, model, 8)
    assert len(shared) == 3 and all(problem in str(error.value) for problem in shared)
    config.optimizer.learning_rate = 0.0
    with pytest.raises(run_config.ConfigError, match=r"optimizer.learning_rate=0.0 must be > 0.0"):
        finetune.validate(config, model, tokenizer_vocab_size=100, num_devices=8)
FINETUNE_CONFIGS = [p for p in CONFIG_FILES if os.path.basename(p).startswith("finetune_")]


@pytest.mark.parametrize("path", FINETUNE_CONFIGS)
def test_fine_tuning_configs_share_the_pretraining_sections_and_say_where_to_start_in_train(path):
    config = load_module(path).get_config()
    pretraining = pretrain.get_config("size=base")
    assert set(config.train) >= set(pretraining.train)  # the same loop section, fine-tuning adds epochs etc.
    assert set(config.tokenizer) == set(pretraining.tokenizer) and set(config.model) == set(pretraining.model)
    assert "init_from" in config.train and config.init_from is None  # one place for both: train.init_from


def test_the_old_top_level_init_from_is_refused_naming_train_init_from(tmp_path):
    from bert_jax import finetune
    from configs import common

    config = load_config("configs/finetune_glue.py:task=mrpc")
    common.check_moved_fields(config)  # unset: fine
    config.init_from = "workdirs/bert-base"
    with pytest.raises(ValueError) as error:
        common.check_moved_fields(config)
    assert str(error.value) == ("init_from='workdirs/bert-base': the field init_from moved to train.init_from; "
                                "set --config.train.init_from=workdirs/bert-base instead")
    with pytest.raises(finetune.InputError, match=r"moved to train.init_from; set --config.train.init_from="):
        finetune.run(config, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run")
