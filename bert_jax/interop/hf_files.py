"""Hugging Face directories on disk: ``config.json`` and weight files, read and written.

Reading accepts ``model.safetensors``, a sharded ``model.safetensors.index.json``, or a PyTorch
``pytorch_model.bin`` (and its index); writing produces one fp32 ``model.safetensors``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import safetensors.numpy
from absl import logging

from bert_jax.config import ModelConfig
from bert_jax.interop import hf_convert
from bert_jax.interop.hf_convert import ImportReport, Params

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX_FILE = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"
TORCH_INDEX_FILE = "pytorch_model.bin.index.json"
# Weight files in the order they are looked for.
WEIGHT_FILES = (SAFETENSORS_FILE, SAFETENSORS_INDEX_FILE, TORCH_FILE, TORCH_INDEX_FILE)


def is_hf_directory(directory: str | Path) -> bool:
    """Whether ``directory`` holds a ``config.json`` and one of ``WEIGHT_FILES``."""
    directory = Path(directory)
    return (directory / CONFIG_FILE).is_file() and any((directory / name).is_file() for name in WEIGHT_FILES)


def read_hf_config(directory: str | Path) -> dict[str, Any]:
    """Parses ``directory/config.json``; raises ``FileNotFoundError`` naming the path when absent."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no Hugging Face config at {path} (expected a BERT config.json)")
    with path.open(encoding="utf-8") as f:
        return json.load(f)


def _read_torch_file(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch  # pylint: disable=import-outside-toplevel
    except ImportError as err:
        raise ImportError(
            f"{path} is a PyTorch state dict and reading it needs torch, which is not installed; "
            f"`pip install torch` or convert the checkpoint to {SAFETENSORS_FILE}") from err
    state = torch.load(path, map_location="cpu", weights_only=True)
    arrays = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{path}: entry {key!r} is a {type(value).__name__}, not a tensor")
        value = value.detach()
        arrays[key] = (value.to(torch.float32) if value.is_floating_point() else value).numpy()
    return arrays


def _read_weight_file(path: Path) -> dict[str, np.ndarray]:
    if path.suffix == ".safetensors":
        return safetensors.numpy.load_file(path)
    return _read_torch_file(path)


def read_hf_weights(directory: str | Path) -> tuple[dict[str, np.ndarray], list[Path]]:
    """Reads the state dict of a Hugging Face directory (single file or sharded, safetensors or torch).

    Args:
      directory: holds one of ``WEIGHT_FILES`` (looked for in that order).

    Returns:
      ``(state dict: key -> numpy array in the stored dtype (torch bf16 comes back as fp32), files read)``.

    Raises:
      FileNotFoundError: naming the directory and the file names looked for, or a missing shard.
    """
    directory = Path(directory)
    for name in WEIGHT_FILES:
        path = directory / name
        if path.is_file():
            break
    else:
        raise FileNotFoundError(f"no weights in {directory}: expected one of {', '.join(WEIGHT_FILES)}")
    if not name.endswith(".index.json"):
        return _read_weight_file(path), [path]
    with path.open(encoding="utf-8") as f:
        weight_map = json.load(f)["weight_map"]
    state, files = {}, [directory / shard for shard in sorted(set(weight_map.values()))]
    for shard in files:
        if not shard.is_file():
            raise FileNotFoundError(f"{path} names the shard {shard.name}, which is missing from {directory}")
        state.update(_read_weight_file(shard))
    return state, files


def load_hf_checkpoint(path: str | Path, *, model_config_overrides: Mapping[str, Any] | None = None,
                       rng: jax.Array | None = None, scan_layers: bool | None = None,
                       ) -> tuple[ModelConfig, Params, ImportReport]:
    """Imports a Hugging Face directory of any registered architecture (by its ``model_type``).

    Args:
      path: directory with ``config.json`` and one of ``WEIGHT_FILES``.
      model_config_overrides: ``ModelConfig`` fields to set over those of ``config.json``; size fields
        that disagree with the weights raise a shape-mismatch error.
      rng: key for the parts absent from the source (e.g. MiniLM has no MLM/NSP head).
      scan_layers: if given, sets ``ModelConfig.scan_layers`` (the layout of the returned params).

    Returns:
      ``(model_config, params, report)``; ``params`` is the unboxed inner ``params`` tree (``bert``,
      the pretraining heads, and the source's fine-tuning head if any) as numpy arrays; the report is
      also logged.
    """
    overrides = dict(model_config_overrides or {})
    if scan_layers is not None:
        overrides["scan_layers"] = scan_layers
    hf_config = read_hf_config(path)
    conversion = hf_convert.for_model_type(hf_config)
    cfg = conversion.config_from_hf(hf_config, **overrides)
    state_dict, files = read_hf_weights(path)
    params, report = hf_convert.state_dict_to_params(conversion, state_dict, cfg, rng=rng,
                                                     source=tuple(map(str, files)))
    logging.info("%s", report.summary())
    for warning in report.warnings:
        logging.warning("%s", warning)
    return cfg, params, report


def write_json(path: Path, content: Mapping[str, Any]) -> None:
    """``content`` as indented, key-sorted JSON (a trailing newline)."""
    with Path(path).open("w", encoding="utf-8") as f:
        json.dump(content, f, indent=2, sort_keys=True)
        f.write("\n")


def write_hf_weights(state: Mapping[str, np.ndarray], out_dir: Path) -> Path:
    """Writes ``out_dir/model.safetensors`` (PyTorch metadata, mode 0644); returns its path."""
    path = Path(out_dir) / SAFETENSORS_FILE
    safetensors.numpy.save_file(dict(state), path, metadata={"format": "pt"})
    path.chmod(0o644)  # safetensors writes 0600; match the other files
    return path
