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

:func:`export_rtd_run` writes a RTD workdir's discriminator (and optionally its generator) in the layout of
its encoder architecture (:data:`RTD_LAYOUTS`): a BERT one as ``ElectraForPreTraining`` /
``ElectraForMaskedLM``; a DeBERTa-v2/v3 one (DeBERTa-v3's recipe) as ``DebertaV2Model``, which has no
replaced-token head, with the head beside it in ``discriminator_head.safetensors`` (ELECTRA's
``discriminator_predictions.*`` keys; :func:`discriminator_head_card` documents it in the model card),
and the generator as ``DebertaV2ForMaskedLM``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import safetensors.numpy

from bert_jax.config import ModelConfig
from bert_jax.interop import hf_bert, hf_convert, hf_deberta
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
    table = [e for e in map(_rename, hf_bert._conversion_table(cfg)) if e is not None]  # pylint: disable=protected-access
    return table + discriminator_head_table(cfg)


def discriminator_head_table(cfg: ModelConfig) -> list[Entry]:
    """ELECTRA's ``discriminator_predictions`` (``dense`` H -> H, ``dense_prediction`` H -> 1), ours beside it."""
    h = cfg.hidden_size
    return (linear(f"{DISCRIMINATOR_HEAD}.dense", (DISCRIMINATOR_HEAD, "dense"), (h,), (h,))
            + linear(f"{DISCRIMINATOR_HEAD}.dense_prediction", (DISCRIMINATOR_HEAD, "dense_prediction"), (h,), (1,)))


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


@dataclasses.dataclass(frozen=True)
class RtdLayout:
    """How a replaced-token-detection run of one encoder architecture is written for transformers.

    Attributes:
      conversion: the Hugging Face layout of the discriminator and the generator.
      discriminator: the transformers class of the discriminator.
      generator: the transformers class of the generator (MLM head included).
      head_file: None when ``discriminator`` holds the replaced-token head; else the file beside it
        that does (:func:`write_discriminator_head`).
      generator_needs_gelu: the generator class applies exact gelu whatever ``hidden_act`` says.
    """

    conversion: Conversion
    discriminator: str
    generator: str
    head_file: str | None = None
    generator_needs_gelu: bool = False


DISCRIMINATOR_HEAD_FILE = "discriminator_head.safetensors"
RTD_LAYOUTS = {
    "bert": RtdLayout(CONVERSION, "ElectraForPreTraining", "ElectraForMaskedLM", generator_needs_gelu=True),
    "deberta_v2": RtdLayout(hf_deberta.CONVERSION, "DebertaV2Model", "DebertaV2ForMaskedLM", DISCRIMINATOR_HEAD_FILE),
}


def rtd_layout(cfg: ModelConfig) -> RtdLayout:
    """The :class:`RtdLayout` of ``cfg``'s architecture.

    Raises:
      ValueError: for an architecture without one, naming those that have one.
    """
    if cfg.architecture not in RTD_LAYOUTS:
        raise ValueError(f"model.architecture={cfg.architecture!r}: a replaced-token-detection run exports for "
                         f"{sorted(RTD_LAYOUTS)} encoders only")
    return RTD_LAYOUTS[cfg.architecture]


def write_discriminator_head(head: Params, cfg: ModelConfig, path: str | Path) -> Path:
    """Writes the discriminator head (``{"dense", "dense_prediction"}`` of ours) as a safetensors file of
    ``torch.nn.Linear`` tensors under ELECTRA's keys, ``hidden_act`` in its metadata; returns the path.

    Keys (fp32): ``discriminator_predictions.dense.weight [H, H]``, ``.dense.bias [H]``,
    ``discriminator_predictions.dense_prediction.weight [1, H]``, ``.dense_prediction.bias [1]``.
    """
    tree = {DISCRIMINATOR_HEAD: head}
    state = {}
    for entry in discriminator_head_table(cfg):
        value = np.asarray(hf_convert.get_path(tree, entry.path), np.float32)
        if value.shape != entry.shape:
            raise ValueError(f"params {'/'.join(entry.path)} has shape {value.shape}; expected {entry.shape}")
        state[entry.hf_key] = np.ascontiguousarray(entry.to_hf(value))
    path = Path(path)
    safetensors.numpy.save_file(state, path, metadata={"format": "pt", "hidden_act": cfg.hidden_act})
    path.chmod(0o644)
    return path


def discriminator_head_card(cfg: ModelConfig, layout: RtdLayout) -> str:
    """The model-card section that documents the side file of ``layout`` (empty when it has none)."""
    if layout.head_file is None:
        return ""
    h, head = cfg.hidden_size, DISCRIMINATOR_HEAD
    return "\n".join([
        f"## Replaced-token detection head (`{layout.head_file}`)", "",
        f"`{layout.discriminator}` has no replaced-token head, so the discriminator's head is saved beside it in "
        f"ELECTRA's `ElectraDiscriminatorPredictions` layout (fp32 `torch.nn.Linear` tensors, `[out, in]`; "
        f"`hidden_act={cfg.hidden_act}` in the file's metadata):", "",
        "| key | shape |", "|---|---|",
        f"| `{head}.dense.weight` | [{h}, {h}] |", f"| `{head}.dense.bias` | [{h}] |",
        f"| `{head}.dense_prediction.weight` | [1, {h}] |", f"| `{head}.dense_prediction.bias` | [1] |", "",
        "Per-token logits (> 0: the token was replaced) from the model's `last_hidden_state`:", "",
        "```python", "import safetensors.torch, torch, transformers", "",
        f'model = transformers.{layout.discriminator}.from_pretrained("path/to/this/directory")',
        f'head = safetensors.torch.load_file("path/to/this/directory/{layout.head_file}")',
        "hidden = model(**inputs).last_hidden_state",
        f'x = torch.nn.functional.linear(hidden, head["{head}.dense.weight"], head["{head}.dense.bias"])',
        "x = transformers.activations.ACT2FN[model.config.hidden_act](x)",
        f'logits = torch.nn.functional.linear(x, head["{head}.dense_prediction.weight"], '
        f'head["{head}.dense_prediction.bias"])[..., 0]',
        "```", ""])


def export_rtd_run(run: Any, out_dir: str | Path, *, generator_dir: str | Path | None = None) -> RtdLayout:
    """Writes a RTD run's discriminator (and its generator to ``generator_dir`` when given), with the
    run's tokenizer, in the :class:`RtdLayout` of its architecture.

    Args:
      run: an ``export.SavedRun`` of a ``task.name='rtd'`` workdir.
      out_dir: the discriminator's directory (``layout.discriminator``; plus ``layout.head_file``).
      generator_dir: optional directory for the generator (``layout.generator``).

    Returns:
      The layout written.

    Raises:
      ValueError: for an encoder architecture without a layout (:func:`rtd_layout`).
    """
    from bert_jax.interop import export  # pylint: disable=import-outside-toplevel  (export imports this module)
    from bert_jax.step_builder import task_from_config  # pylint: disable=import-outside-toplevel

    import ml_collections  # pylint: disable=import-outside-toplevel

    layout = rtd_layout(run.model_config)
    task = task_from_config(ml_collections.ConfigDict(dict(run.run_config)))
    discriminator = task.discriminator_params(run.params)
    out_dir = Path(out_dir)
    if layout.head_file is not None:  # the class holds the encoder only; the head goes beside it
        out_dir.mkdir(parents=True, exist_ok=True)
        write_discriminator_head(discriminator.pop(DISCRIMINATOR_HEAD), run.model_config, out_dir / layout.head_file)
    export.export_hf(discriminator, run.model_config, out_dir, conversion=layout.conversion,
                     tokenizer_spec=run.tokenizer_spec, architecture=layout.discriminator)
    if generator_dir is not None:
        if layout.generator_needs_gelu and task.generator_config.hidden_act != "gelu":
            raise ValueError(f"model.hidden_act={task.generator_config.hidden_act!r}: transformers' {layout.generator} "
                             "applies exact gelu in generator_predictions, so the generator would predict differently")
        export.export_hf(task.generator_params(run.params), task.generator_config, generator_dir,
                         conversion=layout.conversion, tokenizer_spec=run.tokenizer_spec, architecture=layout.generator)
    return layout
