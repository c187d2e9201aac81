"""ELECTRA's Hugging Face layout (``transformers.Electra*``) for a replaced-token-detection run on BERT.

An ELECTRA discriminator (or generator) with ``embedding_size == hidden_size`` (no
``embeddings_project``) is a BERT encoder without the pooler: ``electra.embeddings...`` and
``electra.encoder.layer.<i>...`` are BERT's keys under another prefix. ``CONVERSION`` maps

==========================================  =====================================================
Hugging Face key                            ours
==========================================  =====================================================
``electra.embeddings / encoder ...``        ``bert/...`` (BERT's table, ``bert.`` -> ``electra.``)
``discriminator_predictions.dense``         ``discriminator_predictions/dense``
``discriminator_predictions.dense_prediction``  ``discriminator_predictions/dense_prediction``
``generator_predictions.dense / LayerNorm``  ``mlm_head/transform``, ``mlm_head/layer_norm``
``generator_lm_head.bias`` (weight tied)    ``mlm_head/output_bias`` (decoder tied to the table)
==========================================  =====================================================

``ElectraForPreTraining`` holds the discriminator (``{"bert", "discriminator_predictions"}``, what
``ReplacedTokenDetectionTask.discriminator_params`` returns), ``ElectraForMaskedLM`` the generator
(``{"bert", "mlm_head"}``, ``generator_params``). Importing either gives a ``ModelConfig`` of
architecture ``"bert"`` (the pooler, which ELECTRA lacks, starts fresh), so ``train.init_from`` an
ELECTRA discriminator directory fine-tunes it as a BERT-architecture encoder.

:func:`export_rtd_run` writes a RTD workdir's discriminator (and optionally its generator).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bert_jax.config import ModelConfig
from bert_jax.interop import hf_bert
from bert_jax.interop.hf_convert import Conversion, Entry, Params, linear
from bert_jax.models import ENCODER

PREFIX = "electra"
DISCRIMINATOR_HEAD = "discriminator_predictions"
IGNORED_BUFFERS = ("electra.embeddings.position_ids", "electra.embeddings.token_type_ids")
TIED_KEYS = {"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"}
ARCHITECTURE_PARTS = {
    "ElectraModel": (),
    "ElectraForPreTraining": (DISCRIMINATOR_HEAD,),
    "ElectraForMaskedLM": ("mlm_head",),
}
# BERT's MLM-head keys -> ELECTRA's generator keys.
_GENERATOR_KEYS = {
    "cls.predictions.transform.dense": "generator_predictions.dense",
    "cls.predictions.transform.LayerNorm": "generator_predictions.LayerNorm",
    "cls.predictions.bias": "generator_lm_head.bias",
}
# ELECTRA has no pooler; this key never exists, so an import initialises ``bert/pooler`` fresh.
_POOLER_KEY = "electra.pooler.dense"


def _rename(entry: Entry) -> Entry | None:
    """BERT's entry under ELECTRA's key, or None when ELECTRA has no such tensor (NSP, task heads)."""
    key = entry.hf_key
    if entry.part == "pooler":
        return dataclasses.replace(entry, hf_key=key.replace("bert.pooler.dense", _POOLER_KEY))
    if entry.path[0] == ENCODER:
        return dataclasses.replace(entry, hf_key=PREFIX + key.removeprefix("bert"))
    for theirs, ours in _GENERATOR_KEYS.items():
        if key.startswith(theirs):
            return dataclasses.replace(entry, hf_key=ours + key.removeprefix(theirs))
    return None


def _conversion_table(cfg: ModelConfig, classifier_outputs: int | None = None) -> list[Entry]:
    """Every tensor of the discriminator and generator classes (looped layout), ELECTRA's keys."""
    del classifier_outputs  # ELECTRA's task heads (classifier.dense / out_proj) have no counterpart here
    h = cfg.hidden_size
    table = [e for e in map(_rename, hf_bert._conversion_table(cfg)) if e is not None]  # pylint: disable=protected-access
    table += linear("discriminator_predictions.dense", (DISCRIMINATOR_HEAD, "dense"), (h,), (h,))
    table += linear("discriminator_predictions.dense_prediction", (DISCRIMINATOR_HEAD, "dense_prediction"), (h,), (1,))
    return table


def hf_config_to_model_config(hf_config: Mapping[str, Any], **overrides: Any) -> ModelConfig:
    """Our (BERT-architecture) ``ModelConfig`` from an ELECTRA ``config.json``.

    Raises:
      ValueError: naming the field, for another ``model_type`` or ``embedding_size != hidden_size``
        (an ``embeddings_project`` layer, which a BERT encoder does not have).
    """
    model_type = hf_config.get("model_type")
    if model_type != "electra":
        raise ValueError(f"config.json model_type={model_type!r}; this is the 'electra' conversion")
    embedding_size = hf_config.get("embedding_size", 128)  # ElectraConfig's default
    if embedding_size != hf_config.get("hidden_size"):
        raise ValueError(f"config.json embedding_size={embedding_size} != hidden_size={hf_config.get('hidden_size')}: "
                         "the embeddings_project layer has no counterpart in a BERT encoder")
    return hf_bert.hf_config_to_model_config({**hf_config, "model_type": "bert"}, **overrides)


def model_config_to_hf_config(cfg: ModelConfig, *, pad_token_id: int = 0, architecture: str = "ElectraForPreTraining",
                              extras: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``config.json`` of a ``transformers.ElectraConfig`` for ``cfg`` (``embedding_size = hidden_size``)."""
    if cfg.architecture != "bert":
        raise ValueError(f"model.architecture={cfg.architecture!r}: the ELECTRA layout holds a BERT encoder")
    fields = hf_bert.model_config_to_hf_config(cfg, pad_token_id=pad_token_id, architecture=architecture,
                                               extras=extras)
    for name in ("is_decoder", "add_cross_attention", "use_cache"):
        fields.pop(name, None)
    return {**fields, "model_type": "electra", "embedding_size": cfg.hidden_size, "summary_type": "first",
            "summary_use_proj": True, "summary_activation": "gelu", "summary_last_dropout": 0.1}


def default_architecture(params: Params) -> str:
    """``ElectraForPreTraining`` for a discriminator tree, ``ElectraForMaskedLM`` for a generator's."""
    if DISCRIMINATOR_HEAD in params:
        return "ElectraForPreTraining"
    return "ElectraForMaskedLM" if "mlm_head" in params else "ElectraModel"


CONVERSION = Conversion(
    model_type="electra",
    prefix=PREFIX,
    table=_conversion_table,
    architecture_parts=ARCHITECTURE_PARTS,
    base_architecture="ElectraModel",
    task_architectures={},
    mlm_architecture="ElectraForMaskedLM",
    pretraining_architecture="ElectraForPreTraining",
    choose_architecture=default_architecture,
    config_from_hf=hf_config_to_model_config,
    config_to_hf=model_config_to_hf_config,
    ignored_buffers=IGNORED_BUFFERS,
    tied_keys=TIED_KEYS,
    optional_parts=((ENCODER, "pooler"), ("mlm_head",), (DISCRIMINATOR_HEAD,)),
    head_prefixes=("discriminator_predictions.", "generator_predictions.", "generator_lm_head.", "classifier.",
                   "qa_outputs."),
)


# ----------------------------------------------------------------------------------------------------
# A replaced-token-detection workdir -> ElectraForPreTraining (+ ElectraForMaskedLM)


def export_rtd_run(run: Any, out_dir: str | Path, *, generator_dir: str | Path | None = None) -> Path:
    """Writes a RTD run's discriminator as ``ElectraForPreTraining`` (and its generator as
    ``ElectraForMaskedLM`` to ``generator_dir`` when given), with the run's tokenizer.

    Args:
      run: an ``export.SavedRun`` of a ``task.name='rtd'`` workdir.
      out_dir: the discriminator's directory.
      generator_dir: optional directory for the generator.

    Raises:
      ValueError: for an encoder architecture ELECTRA's layout cannot hold (only ``"bert"`` here).
    """
    from bert_jax.interop import export  # pylint: disable=import-outside-toplevel  (export imports this module)
    from bert_jax.step_builder import task_from_config  # pylint: disable=import-outside-toplevel

    import ml_collections  # pylint: disable=import-outside-toplevel

    if run.model_config.architecture != "bert":
        raise ValueError(f"model.architecture={run.model_config.architecture!r}: only a BERT discriminator exports "
                         "as transformers' ElectraForPreTraining")
    task = task_from_config(ml_collections.ConfigDict(dict(run.run_config)))
    export.export_hf(task.discriminator_params(run.params), run.model_config, out_dir, conversion=CONVERSION,
                     tokenizer_spec=run.tokenizer_spec, architecture="ElectraForPreTraining")
    if generator_dir is not None:
        if task.generator_config.hidden_act != "gelu":
            raise ValueError(f"model.hidden_act={task.generator_config.hidden_act!r}: transformers' ElectraForMaskedLM "
                             "applies exact gelu in generator_predictions, so the generator would predict differently")
        export.export_hf(task.generator_params(run.params), task.generator_config, generator_dir,
                         conversion=CONVERSION, tokenizer_spec=run.tokenizer_spec, architecture="ElectraForMaskedLM")
    return Path(out_dir)
