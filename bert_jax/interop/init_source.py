"""Where a run starts from (``init_from``): what it names, the model and tokenizer it implies, and the
importer that maps a Hugging Face directory onto a run's parameters.

Pretraining (``bert_jax.train``), fine-tuning (``bert_jax.finetune``) and inference
(``bert_jax.inference``) all resolve ``init_from`` here.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import jax
import ml_collections
import numpy as np
from absl import logging
from etils import epath

from bert_jax import checkpoint as checkpoint_lib
from bert_jax import run_config
from bert_jax.config import RUNTIME_MODEL_FIELDS, ModelConfig
from bert_jax.interop import hf_convert, hf_files
from data_pipelines import hf_tokenizer_files
from data_pipelines import tokenizer as tokenizer_lib

RUN_CONFIG_FILE = "config.json"  # a workdir's saved run config (run_config.save_config)


@dataclasses.dataclass(frozen=True)
class InitSource:
    """What ``init_from`` names.

    Attributes:
      kind: ``'checkpoint'`` (our Orbax checkpoint), ``'hf'`` (Hugging Face / exported directory) or
        ``'scratch'``.
      path: for the trainer's restore: the ``checkpoints/<step>`` directory, the Hugging Face directory,
        or ``''``.
      model_fields: ``ModelConfig`` fields the source fixes (its architecture), or None when unknown.
      tokenizer_spec: the source's tokenizer (``load_tokenizer`` spec), or None.
      run_config: for a checkpoint, the saved run config of its workdir (a dict), else None.
    """

    kind: str
    path: str
    model_fields: dict[str, Any] | None = None
    tokenizer_spec: dict[str, Any] | None = None
    run_config: dict[str, Any] | None = None


def tokenizer_spec(section: Any) -> dict[str, Any]:
    """A loadable spec from a config ``tokenizer`` section (empty values and build flags dropped)."""
    return {k: v for k, v in dict(section).items() if k != "build_if_missing" and v not in ("", None)}


def resolve_init_source(init_from: str) -> InitSource:
    """Classifies ``init_from`` and reads the model config and tokenizer it carries.

    A workdir of ours (``checkpoints/<step>``, with the run's ``config.json`` beside them) gives its
    ``model`` and ``tokenizer`` sections; a Hugging Face directory (``config.json`` with BERT fields
    plus weights) gives its architecture and its ``vocab.txt`` (or, as transformers 5 saves it, its
    ``tokenizer.json``).

    Raises:
      FileNotFoundError: naming what was looked for when ``init_from`` is neither.
    """
    if not init_from:
        return InitSource("scratch", "")
    path = epath.Path(init_from)
    found = checkpoint_lib.find_checkpoint_dir(path)
    if found is not None:
        directory, step = found
        workdir = directory.parent if directory.name == checkpoint_lib.CHECKPOINT_SUBDIR else directory
        config_path = workdir / RUN_CONFIG_FILE
        saved = json.loads(config_path.read_text()) if config_path.exists() else {}
        return InitSource("checkpoint", str(directory / str(step)), saved.get("model"),
                          tokenizer_spec(saved["tokenizer"]) if "tokenizer" in saved else None, saved or None)
    has_weights = any((path / name).exists() for name in hf_files.WEIGHT_FILES)
    if (path / hf_files.CONFIG_FILE).exists() and has_weights:
        hf_config = hf_files.read_hf_config(path)
        model_fields = hf_convert.for_model_type(hf_config).config_from_hf(hf_config).to_dict()
        return InitSource("hf", str(path), model_fields, hf_tokenizer_files.find_hf_tokenizer_spec(path))
    raise FileNotFoundError(
        f"init_from={init_from}: neither a checkpoint (<workdir>/checkpoints/<step>/state) nor a Hugging Face "
        f"directory (config.json plus one of {', '.join(hf_files.WEIGHT_FILES)})")


def model_config_for(config: ml_collections.ConfigDict, source: InitSource) -> ModelConfig:
    """``config.model`` with the architecture fields of ``source`` (checkpoints also fix the layer layout)."""
    fields = dict(config.model)
    if source.model_fields:
        keep = [f for f in RUNTIME_MODEL_FIELDS if source.kind == "hf" or f != "scan_layers"]
        fields = {**source.model_fields, **{name: fields[name] for name in keep}}
    return ModelConfig(**fields)


def tokenizer_for(config: ml_collections.ConfigDict, source: InitSource) -> tokenizer_lib.Tokenizer:
    """The configured tokenizer, else the one ``init_from`` carries."""
    spec = tokenizer_spec(config.tokenizer)
    if not spec.get("vocab_file") and not spec.get("model_file"):
        if source.tokenizer_spec is None:
            raise run_config.ConfigError(f"no tokenizer: init_from={config.train.init_from or '(none)'} carries none; "
                                         "set --config.tokenizer.vocab_file")
        spec = source.tokenizer_spec
    return tokenizer_lib.load_tokenizer(spec)


def _task_heads_to_take(hf_dir: str, template: Any, imported: Any, task_kind: str | None,
                        label_names: tuple[str, ...] | None) -> set[str]:
    """The fine-tuning heads of ``imported`` that this run keeps; logs the decision in one line."""
    theirs = sorted(name for name in imported if name in hf_convert.TASK_HEADS)
    if not theirs:
        return set()
    ours = sorted(name for name in template if name in hf_convert.TASK_HEADS)
    hf_config = hf_files.read_hf_config(hf_dir)
    architecture = (hf_config.get("architectures") or ["?"])[0]
    if task_kind is None or not ours:
        reason = "this run has no fine-tuning head"
    elif theirs != ours:
        reason = f"its head {theirs} is not this run's {ours}"
    else:
        reason = hf_convert.head_mismatch(hf_convert.for_model_type(hf_config), hf_config, task_kind, label_names)
    if reason is None:
        logging.info("init_from=%s: keeping its %s head %s (same task %s%s)", hf_dir, architecture,
                     ", ".join(theirs), task_kind, f", labels {list(label_names)}" if label_names else "")
        return set(theirs)
    logging.warning("init_from=%s: dropped its %s head %s (%s); this run's head starts fresh", hf_dir,
                    architecture, ", ".join(theirs), reason)
    return set()


def hf_importer(scan_layers: bool, task_kind: str | None = None, label_names=None):
    """``(hf_dir, params_template) -> params``: Hugging Face weights, fresh heads where HF has none.

    Args:
      scan_layers: the layer layout of the template.
      task_kind: the fine-tuning task (``classification``, ``regression``, ``span``, ``tagging``,
        ``multiple_choice``), or None (pretraining).
      label_names: the task's class names in id order, when it has classes.

    A fine-tuning head of the source (``classifier``, ``qa_outputs``) is kept when the task matches
    (``hf_convert.head_mismatch``: same transformers class and label set), else dropped with a one-line
    warning naming why; the encoder is always taken.
    """

    def import_hf(hf_dir: str, template: Any) -> Any:
        _, params, report = hf_files.load_hf_checkpoint(hf_dir, scan_layers=scan_layers)
        task_heads = _task_heads_to_take(hf_dir, template, params, task_kind,
                                         None if label_names is None else tuple(label_names))
        fresh = set(report.missing_heads)
        merged = {name: template[name]
                  if name in fresh or name not in params or (name in hf_convert.TASK_HEADS and name not in task_heads)
                  else params[name] for name in template}

        ours = dict(jax.tree_util.tree_flatten_with_path(template)[0])
        theirs = dict(jax.tree_util.tree_flatten_with_path(merged)[0])
        problems = [f"{jax.tree_util.keystr(p)}: shape {np.shape(theirs[p])} there, {ours[p].shape} here"
                    for p in ours if p in theirs and np.shape(theirs[p]) != ours[p].shape]
        problems += [f"{jax.tree_util.keystr(p)}: absent there" for p in ours if p not in theirs]
        problems += [f"{jax.tree_util.keystr(p)}: not in this model" for p in theirs if p not in ours]
        if problems:
            raise ValueError(
                f"init_from={hf_dir} does not fit this run's model (set config.model to its config.json): "
                + "; ".join(problems[:8]) + (f"; and {len(problems) - 8} more" if len(problems) > 8 else ""))
        return jax.tree.map(lambda x, t: jax.device_put(np.asarray(x, t.dtype), t.sharding), merged, template)

    return import_hf
