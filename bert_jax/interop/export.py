"""Export to a Hugging Face directory that ``transformers`` loads offline with no code of ours.

:func:`export_run` takes whatever ``init_from`` names (a workdir of ours, one of its
``checkpoints/<step>`` dirs, or a Hugging Face directory) and writes the ``transformers`` class that
matches the run:

=====================================  =====================================
run                                    ``config.json`` architecture
=====================================  =====================================
pretraining, MLM + NSP                 ``BertForPreTraining``
pretraining, MLM only (nsp_weight=0)   ``BertForMaskedLM``
classification (GLUE, local text)      ``BertForSequenceClassification`` (``id2label``/``label2id``)
regression (STS-B)                     ``BertForSequenceClassification`` (``problem_type="regression"``)
span (SQuAD)                           ``BertForQuestionAnswering``
tagging (CoNLL-2003)                   ``BertForTokenClassification`` (the tag set as ``id2label``)
multiple choice (SWAG)                 ``BertForMultipleChoice``
replaced-token detection (task rtd)    ``ElectraForPreTraining`` (generator: ``ElectraForMaskedLM``); a
                                       DeBERTa encoder: ``DebertaV2Model`` + ``discriminator_head.safetensors``
                                       (generator: ``DebertaV2ForMaskedLM``)
=====================================  =====================================

plus ``model.safetensors`` (fp32), the tokenizer files (``tokenizer.json``, ``tokenizer_config.json``,
``special_tokens_map.json``, ``vocab.txt``) and a model card ``README.md``.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
from absl import logging

from bert_jax import checkpoint as checkpoint_lib
from bert_jax import models
from bert_jax.config import ModelConfig
from bert_jax.interop import hf_convert, hf_files, init_source, model_card
from data_pipelines import hf_tokenizer_files
from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines.finetune import get_finetune_reader

SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
PRETRAINING_SUMMARY_FILE = "final_metrics.json"  # bert_jax.train.FINAL_SUMMARY_FILE
FINETUNE_SUMMARY_FILE = "finetune_summary.json"  # bert_jax.finetune.SUMMARY_FILE


def _write_tokenizer_files(spec: Mapping[str, Any], out_dir: str | Path, model_max_length: int) -> list[str]:
    """Writes the tokenizer of ``spec`` as transformers 5 reads it; returns the paths written.

    WordPiece: ``vocab.txt``, ``tokenizer_config.json`` (``BertTokenizer``, casing, accents, Chinese
    characters, ``model_max_length``), ``special_tokens_map.json`` and ``tokenizer.json`` (the
    ``tokenizers`` BERT WordPiece pipeline, ``[CLS] ... [SEP]`` post-processor included).

    SentencePiece: the model file and its ``tokenizer_config.json``
    (``data_pipelines.hf_tokenizer_files``).
    """
    return [os.path.join(str(out_dir), name) for name in
            hf_tokenizer_files.write_hf_tokenizer_files(dict(spec), str(out_dir), model_max_length=model_max_length)]


def export_hf(params: Any, model_config: ModelConfig, out_dir: str | Path, *,
              vocab_file: str | Path | None = None, lowercase: bool | None = None,
              tokenizer_spec: Mapping[str, Any] | None = None, architecture: str | None = None,
              config_extras: Mapping[str, Any] | None = None,
              conversion: hf_convert.Conversion | None = None) -> Path:
    """Writes ``config.json``, ``model.safetensors`` (fp32) and the tokenizer files to ``out_dir``.

    Args:
      params: our parameters, either layer layout, boxed or unboxed, with or without the outer
        ``{"params": ...}`` level.
      model_config: the configuration the parameters belong to.
      out_dir: created if needed; existing files of the same names are overwritten.
      vocab_file: a WordPiece ``vocab.txt`` / ``tokenizer.json`` or a directory holding one.
      lowercase: ``do_lower_case`` for ``vocab_file``; None: what its files record, else True.
      tokenizer_spec: a ``load_tokenizer`` spec instead of ``vocab_file``; neither writes no tokenizer.
      architecture: the ``transformers`` class (the keys of ``architecture_parts`` of the model's
        conversion, ``hf_convert.for_architecture``); None: from the parts ``params`` hold.
      config_extras: task fields for ``config.json`` (``id2label``, ``label2id``, ``problem_type``).
      conversion: the Hugging Face layout (default: the architecture's own, ``hf_convert.for_architecture``;
        e.g. ``hf_electra.CONVERSION`` for a replaced-token-detection discriminator).

    Returns:
      ``out_dir`` as a ``Path``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    conversion = conversion or hf_convert.for_architecture(model_config)
    params = hf_convert.inner_params(params)
    architecture = architecture or conversion.default_architecture(params)
    state = hf_convert.params_to_state_dict(conversion, params, model_config, architecture)
    if vocab_file is not None:
        vocab = Path(vocab_file)
        vocab = Path(tokenizer_lib.find_wordpiece_file(vocab) or vocab / "vocab.txt") if vocab.is_dir() else vocab
        tokenizer_spec = {"kind": "wordpiece", "vocab_file": str(vocab),
                          **({} if lowercase is None else {"lowercase": lowercase})}
    pad_token_id = 0
    if tokenizer_spec is not None:
        tokenizer = tokenizer_lib.load_tokenizer(tokenizer_spec)
        if tokenizer.vocab_size > model_config.vocab_size:
            raise ValueError(f"the tokenizer has {tokenizer.vocab_size} tokens, more than the model's vocab_size="
                             f"{model_config.vocab_size}")
        if tokenizer.vocab_size < model_config.vocab_size:
            logging.warning("the tokenizer has %d tokens; the model's last %d embedding rows have no token",
                            tokenizer.vocab_size, model_config.vocab_size - tokenizer.vocab_size)
        _write_tokenizer_files(tokenizer_spec, out_dir, models.max_length(model_config))
        pad_token_id = tokenizer.pad_id
    else:
        logging.warning("no tokenizer given: %s will have no tokenizer files", out_dir)
    hf_files.write_json(out_dir / hf_files.CONFIG_FILE, conversion.config_to_hf(
        model_config, pad_token_id=pad_token_id, architecture=architecture, extras=config_extras))
    hf_files.write_hf_weights(state, out_dir)
    logging.info("exported %s (%d tensors) to %s", architecture, len(state), out_dir)
    return out_dir


TASK_CONFIG_FIELDS = ("id2label", "label2id", "problem_type")


def convert_hf_directory(source: str | Path, out_dir: str | Path, *, vocab_file: str | Path | None = None,
                         lowercase: bool | None = None) -> hf_convert.ImportReport:
    """Imports a Hugging Face BERT directory and exports it again (e.g. ``pytorch_model.bin`` ->
    ``model.safetensors``), through our parameter tree.

    The architecture is the source's (its fine-tuning head and label names kept). Pretraining heads
    absent from the source are not invented: such a source is written as a ``BertModel`` (a missing
    pooler is written freshly initialised, as the report says). The vocab defaults to ``source``'s
    own ``vocab.txt`` or ``tokenizer.json``.

    Returns:
      The import report.
    """
    hf_config = hf_files.read_hf_config(source)
    cfg, params, report = hf_files.load_hf_checkpoint(source)
    params = {name: value for name, value in params.items() if name not in report.missing_heads}
    architecture = (hf_config.get("architectures") or [None])[0]
    parts = hf_convert.for_architecture(cfg).architecture_parts
    if architecture not in parts or any(part != "pooler" and part not in params for part in parts[architecture]):
        architecture = None  # e.g. a BertForMaskedLM saved without its head: from the parts present
    spec = None if vocab_file is not None else hf_tokenizer_files.find_hf_tokenizer_spec(source)
    if spec is not None and spec["kind"] == "wordpiece" and lowercase is not None:
        spec["lowercase"] = lowercase
    export_hf(params, cfg, out_dir, vocab_file=vocab_file, lowercase=lowercase, tokenizer_spec=spec,
              architecture=architecture, config_extras={k: hf_config[k] for k in TASK_CONFIG_FIELDS if k in hf_config})
    return report


# ----------------------------------------------------------------------------------------------------
# Our runs


def _run_summary(workdir: Path, name: str) -> dict[str, Any] | None:
    """The final summary of the run in ``workdir``: its own, or its entry in a fine-tuning summary of all
    runs (a single-run workdir's ``finetune_summary.json`` lists it under ``runs``); None if absent."""
    path = workdir / name
    if not path.is_file():
        return None
    summary = json.loads(path.read_text(encoding="utf-8"))
    if "runs" not in summary:
        return summary
    mine = [r for r in summary["runs"] if Path(r.get("workdir", "")).resolve() == workdir.resolve()]
    return mine[0] if mine else None


def _finetune_labels(saved: Mapping[str, Any], label_names: Sequence[str] | None,
                     ) -> tuple[str, tuple[str, ...] | None]:
    """The fine-tuning run's task kind and class names (id order; None for regression/span/choice)."""
    from bert_jax import finetune_inputs as finetune  # pylint: disable=import-outside-toplevel  (finetune imports interop)

    config = ml_collections.ConfigDict(dict(saved))
    reader = get_finetune_reader(config.task.name, **finetune.reader_options(config))
    if reader.kind not in ("classification", "tagging"):
        return reader.kind, None
    if label_names:
        return reader.kind, tuple(label_names)
    try:
        return reader.kind, tuple(finetune.label_names_of(config, reader))
    except (OSError, ValueError) as error:
        raise ValueError(f"the label names of this {config.task.name} run come from its training data, which "
                         f"cannot be read now ({error}); pass them in id order: --label_names=a,b,...") from error


def _run_export_plan(saved: Mapping[str, Any], params: Mapping[str, Any], label_names: Sequence[str] | None,
                     ) -> tuple[str, str, dict[str, Any], tuple[str, ...] | None]:
    """``(run kind, transformers class, config.json task fields, label names)`` of a saved run."""
    task = dict(saved.get("task") or {})
    conversion = hf_convert.for_architecture(saved["model"].get("architecture", "bert"))
    if task.get("name") == "pretraining":
        mlm_only = float(task.get("nsp_weight", 1.0)) == 0.0
        architecture = conversion.mlm_architecture if mlm_only else conversion.pretraining_architecture
        return "pretraining", architecture, {}, None
    kind, names = _finetune_labels(saved, label_names)
    architecture = conversion.task_architectures[kind]
    if "pooler" in conversion.architecture_parts[architecture] and task.get("pooling", "cls") != "cls":
        raise ValueError(f"this run's head reads task.pooling={task['pooling']!r}; transformers' {architecture} "
                         "reads the [CLS] pooler output, so the export would predict differently")
    outputs = params["classifier"]["kernel"].shape[-1] if "classifier" in params else None
    if names is not None and outputs != len(names):
        raise ValueError(f"{len(names)} label names {list(names)} for a classifier with {outputs} outputs")
    extras: dict[str, Any] = {}
    if kind == "regression":
        extras = {"problem_type": "regression", "id2label": {"0": "score"}, "label2id": {"score": 0}}
    elif names is not None:
        extras = {"id2label": {str(i): name for i, name in enumerate(names)},
                  "label2id": {name: i for i, name in enumerate(names)}}
        if kind == "classification":
            extras["problem_type"] = "single_label_classification"
    return kind, architecture, extras, names


@dataclasses.dataclass(frozen=True)
class SavedRun:
    """One run of ours read back from its workdir.

    Attributes:
      run_config: its saved ``config.json`` (a dict).
      model_config: the model it trained.
      params: every top-level part of its params (``bert`` and its heads), unboxed host arrays in the
        saved layout and dtype.
      step: the checkpoint step read.
      workdir: the run's directory (beside ``checkpoints/``).
      tokenizer_spec: its tokenizer (``load_tokenizer`` spec), or None.
    """

    run_config: dict[str, Any]
    model_config: ModelConfig
    params: dict[str, Any]
    step: int
    workdir: Path
    tokenizer_spec: dict[str, Any] | None


def load_run(init_from: str) -> SavedRun:
    """Reads the params (all parts, as saved) and run config of a workdir or ``checkpoints/<step>`` dir.

    Raises:
      FileNotFoundError: without a checkpoint, or without a run ``config.json`` beside it.
      ValueError: when the checkpoint holds no encoder.
    """
    found = checkpoint_lib.find_checkpoint_dir(init_from)
    if found is None:
        raise FileNotFoundError(f"{init_from}: no checkpoint (expected <workdir>/checkpoints/<step>/state)")
    source = init_source.resolve_init_source(str(init_from))
    saved = source.run_config
    if not saved or "model" not in saved:
        raise FileNotFoundError(f"{init_from}: no run config.json (with a 'model' section) beside the checkpoints, "
                                "so the model is unknown")
    directory, step = found
    stored = checkpoint_lib.stored_tree(directory / str(step) / "state").get("params")
    if not stored or "bert" not in stored:
        raise ValueError(f"{directory / str(step)} holds no encoder parameters ('bert')")
    template = jax.tree.map(lambda m: jnp.zeros(m.shape, m.dtype), stored)
    params, _ = checkpoint_lib.restore_params_only(directory, step, template)
    workdir = directory.parent if directory.name == checkpoint_lib.CHECKPOINT_SUBDIR else directory
    return SavedRun(saved, ModelConfig(**saved["model"]), jax.device_get(params), step, Path(workdir),
                    source.tokenizer_spec)


def _runs_below(path: Path) -> list[str]:
    """Run directories (holding ``checkpoints/``) under ``path``, relative to it."""
    return sorted(str(p.parent.relative_to(path)) for p in path.glob(f"**/{checkpoint_lib.CHECKPOINT_SUBDIR}"))


def export_run(init_from: str, out_dir: str | Path, *, label_names: Sequence[str] | None = None,
               generator_dir: str | Path | None = None) -> Path:
    """Exports what ``init_from`` names as the ``transformers`` class of its run (module docstring).

    Args:
      init_from: a pretraining or fine-tuning workdir of ours (one run), one of its
        ``checkpoints/<step>`` dirs, or a Hugging Face directory (re-exported through our tree).
      out_dir: the directory to write (created if needed).
      label_names: class names in id order, for a classification/tagging run whose training file is
        gone (default: read from the run's data as fine-tuning did).
      generator_dir: for a replaced-token-detection run (``task.name='rtd'``, written as
        ``ElectraForPreTraining``, or for a DeBERTa encoder ``DebertaV2Model`` with its head in
        ``discriminator_head.safetensors``), where to write its generator as ``ElectraForMaskedLM`` /
        ``DebertaV2ForMaskedLM`` (optional; ``hf_electra.RTD_LAYOUTS``).

    Returns:
      ``out_dir`` as a ``Path``.

    Raises:
      FileNotFoundError / ValueError: naming what is missing or does not fit (no checkpoint, no run
        config, several runs in one workdir, an unexportable head).
    """
    path, out_dir = Path(init_from), Path(out_dir)
    if hf_files.is_hf_directory(path) and checkpoint_lib.find_checkpoint_dir(path) is None:
        convert_hf_directory(path, out_dir)
        return out_dir
    names_a_run = path.name == checkpoint_lib.CHECKPOINT_SUBDIR or any(
        (path / name).exists() for name in (checkpoint_lib.CHECKPOINT_SUBDIR, "state"))
    runs = [] if names_a_run or not path.is_dir() else _runs_below(path)
    if runs:  # checked first: Orbax would read seed_1/ or fold_1/ as a checkpoint of step 1
        raise ValueError(f"{init_from} holds {len(runs)} runs ({', '.join(runs)}); export one of them, e.g. "
                         f"--init_from={path / runs[0]}")
    if checkpoint_lib.find_checkpoint_dir(path) is None:
        raise FileNotFoundError(f"{init_from}: no checkpoint (<workdir>/checkpoints/<step>/state) and no Hugging "
                                f"Face directory (config.json plus one of {', '.join(hf_files.WEIGHT_FILES)})")
    run = load_run(init_from)
    if (run.run_config.get("task") or {}).get("name") == "rtd":
        from bert_jax.interop import hf_electra  # pylint: disable=import-outside-toplevel

        layout = hf_electra.export_rtd_run(run, out_dir, generator_dir=generator_dir)
        card = model_card.write_model_card(out_dir, model_card.RunInfo(
            source=os.fspath(init_from), kind="pretraining", architecture=layout.discriminator,
            model_config=run.model_config, run_config=run.run_config, step=run.step,
            summary=_run_summary(run.workdir, PRETRAINING_SUMMARY_FILE), label_names=None))
        head = hf_electra.discriminator_head_card(run.model_config, layout)
        if head:
            card.write_text(card.read_text(encoding="utf-8") + "\n" + head, encoding="utf-8")
        return out_dir
    kind, architecture, extras, names = _run_export_plan(run.run_config, run.params, label_names)
    export_hf(run.params, run.model_config, out_dir, tokenizer_spec=run.tokenizer_spec, architecture=architecture,
              config_extras=extras)
    summary_file = PRETRAINING_SUMMARY_FILE if kind == "pretraining" else FINETUNE_SUMMARY_FILE
    model_card.write_model_card(out_dir, model_card.RunInfo(
        source=os.fspath(init_from), kind=kind, architecture=architecture, model_config=run.model_config,
        run_config=run.run_config, step=run.step, summary=_run_summary(run.workdir, summary_file), label_names=names))
    return out_dir
