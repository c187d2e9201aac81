"""The PyTorch side of the step benchmark (``bench/bench_step.py``): an eager training step of the
architecture's ``transformers`` class (``step_runners.TORCH_ARCHS``) on the contract batch the JAX side
trains on, with ``torch.optim.AdamW`` matching ``bert_jax.optim``.
"""

from __future__ import annotations

import time
import types
from collections.abc import Mapping
from typing import Any

import numpy as np

from bert_jax.config import ModelConfig

from bench.step_runners import (TORCH_ARCHS, TORCH_MLM_MODES, StepRunner, TorchArch, _host_peak_memory,
                                available_cpus, bench_batch, bench_optimizer_config)


def _torch_optimizer(model, cfg):
    """``torch.optim.AdamW`` + ``LambdaLR`` matching ``optim.make_optimizer(cfg)`` (AdamW only).

    Weight decay skips the 1-D parameters (biases, norm scales and shifts of every class), which are the
    ones ``optim.is_decayed`` skips (norms and biases; our kernels and tables are >= 2-D); the learning
    rate follows ``optim.make_schedule(cfg)`` itself.
    """
    import torch

    from bert_jax import optim

    if cfg.name != "adamw":
        raise ValueError(f"the PyTorch side mirrors AdamW only; got optimizer.name={cfg.name!r}")
    decayed, not_decayed = [], []
    for param in model.parameters():
        (not_decayed if param.ndim < 2 else decayed).append(param)
    optimizer = torch.optim.AdamW(
        [{"params": decayed, "weight_decay": cfg.weight_decay}, {"params": not_decayed, "weight_decay": 0.0}],
        lr=cfg.learning_rate, betas=(cfg.b1, cfg.b2), eps=cfg.eps)
    schedule = optim.make_schedule(cfg)
    factor = lambda step: float(schedule(step)) / cfg.learning_rate  # noqa: E731
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _packed_attention_mask(spec: TorchArch, model, sequence_ids, dtype):
    """The attention mask of packed rows for ``spec``'s class: a token sees the tokens of its own sequence
    (padding sees padding, so no row is empty), built by ``transformers.masking_utils`` for the model's
    attention implementation; ModernBERT's sliding layers also get their window from there."""
    import torch
    from transformers import masking_utils

    def same_sequence(batch_idx, head_idx, q_idx, kv_idx):
        return sequence_ids[batch_idx, q_idx] == sequence_ids[batch_idx, kv_idx]

    embeds = torch.empty(*sequence_ids.shape, 1, dtype=dtype, device=sequence_ids.device)  # shapes only
    kwargs = dict(config=model.config, inputs_embeds=embeds, attention_mask=None, and_mask_function=same_sequence)
    full = masking_utils.create_bidirectional_mask(**kwargs)
    if spec.packed == "layer_types":
        return {"full_attention": full,
                "sliding_attention": masking_utils.create_bidirectional_sliding_window_mask(**kwargs)}
    return full


def make_torch_runner(
    config: ModelConfig,
    *,
    batch_size: int,
    seq_len: int,
    max_predictions: int,
    mlm: str = "gather",
    packed: bool = False,
    params: Mapping[str, Any] | None = None,
    num_threads: int | None = None,
    device: str = "auto",
    seed: int = 0,
) -> StepRunner:
    """An eager training step of the architecture's ``transformers`` class (``TORCH_ARCHS``) on the same batch.

    The class is built from our exporter's ``config.json`` mapping (``Conversion.config_to_hf``) with
    ``attn_implementation="sdpa"`` where the class supports it (BERT, RoBERTa, ModernBERT), else its own
    attention (DeBERTa-v2's disentangled, Longformer's banded). The loss is BERT's (MLM + NSP) for
    ``BertForPreTraining``, MLM only for the ``...ForMaskedLM`` classes. Positions are ours plus the
    architecture's offset (RoBERTa, Longformer: ``pad_token_id + 1``); Longformer's global tokens are the
    ones our pretraining model picks (``attention.global_tokens("cls")``).

    Args:
      config: the model; ``dtype="bfloat16"`` runs forward and loss under ``torch.autocast``.
      batch_size, seq_len, max_predictions, seed: as ``make_jax_runner``.
      mlm: ``"gather"`` (the MLM head on the gathered masked positions, as ours; every class allows it) or
        ``"full"`` (Hugging Face's ``labels`` path: the head on every position, -100 off the masked ones;
        ModernBERT's ``sparse_prediction`` stays off, its default).
      packed: packed rows (``random_pretraining_batch(packed=True)``), kept apart by a 4D mask
        (``_packed_attention_mask``): the padded computation with a block-diagonal mask, not Hugging Face's
        unpadded ModernBERT path (that needs ``flash_attention_2``).
      params: our parameters (``make_jax_runner(...).initial_params()``) to start from, exported by
        ``hf_convert.params_to_state_dict``; None: the class's own initialisation (seeded).
      num_threads: ``torch.set_num_threads`` (default: the CPUs this process may run on).
      device: torch device, e.g. ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).

    Raises:
      ValueError: for an unknown ``mlm``, an architecture without a ``TORCH_ARCHS`` entry, or ``packed`` for
        a class that cannot keep packed sequences apart.
    """
    import torch
    import torch.nn.functional as F
    import transformers

    from bert_jax import attention, models, perf
    from bert_jax.interop import hf_convert

    if mlm not in TORCH_MLM_MODES:
        raise ValueError(f"mlm={mlm!r}; expected one of {TORCH_MLM_MODES}")
    if config.architecture not in TORCH_ARCHS:
        raise ValueError(f"model.architecture={config.architecture!r}: no PyTorch side; expected one of "
                         f"{sorted(TORCH_ARCHS)}")
    spec, arch = TORCH_ARCHS[config.architecture], models.get(config.architecture)
    if packed and spec.packed is None:
        raise ValueError(f"--packed: {spec.hf_class} cannot keep packed sequences apart (2D padding mask only)")
    torch.set_num_threads(num_threads or available_cpus())
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    torch.manual_seed(seed)
    conversion = hf_convert.for_architecture(config)
    model_class = getattr(transformers, spec.hf_class)
    fields = conversion.config_to_hf(config, pad_token_id=config.pad_token_id, architecture=spec.hf_class,
                                     extras=None)
    hf_config = model_class.config_class(
        **fields, attn_implementation="sdpa" if getattr(model_class, "_supports_sdpa", False) else "eager")
    model = model_class(hf_config)
    if params is not None:
        state = hf_convert.params_to_state_dict(conversion, params, config, spec.hf_class)
        result = model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, strict=False)
        named = dict(model.named_parameters())
        missing = [key for key in result.missing_keys if key in named]
        if missing or result.unexpected_keys:
            raise ValueError(f"exported state dict does not fit {spec.hf_class}: missing {missing}, "
                             f"unexpected {result.unexpected_keys}")
    model = model.to(device).train()
    optimizer_cfg = bench_optimizer_config()
    optimizer, scheduler = _torch_optimizer(model, optimizer_cfg)
    host_batch = bench_batch(config, batch_size=batch_size, seq_len=seq_len, max_predictions=max_predictions,
                             seed=seed, packed=packed)
    batch = {name: torch.from_numpy(array).long().to(device) for name, array in host_batch.items()}
    weights = batch["masked_lm_weights"].float()
    labels = torch.full_like(batch["input_ids"], -100).scatter(
        1, batch["masked_lm_positions"], torch.where(weights > 0, batch["masked_lm_ids"], -100))
    encoder_inputs = dict(input_ids=batch["input_ids"],
                          position_ids=batch["position_ids"] + arch.position_offset(config))
    compute_dtype = torch.bfloat16 if config.dtype == "bfloat16" else torch.float32
    if packed:
        encoder_inputs["attention_mask"] = _packed_attention_mask(spec, model, batch["sequence_ids"], compute_dtype)
    else:
        encoder_inputs["attention_mask"] = batch["input_mask"]
    if spec.token_types:
        encoder_inputs["token_type_ids"] = batch["segment_ids"]
    if arch.global_attention:
        encoder_inputs["global_attention_mask"] = torch.from_numpy(np.asarray(attention.global_tokens(
            "cls", host_batch["segment_ids"], host_batch["sequence_ids"], host_batch["position_ids"]))).long().to(device)
    nsp_labels = {"next_sentence_label": batch["next_sentence_label"]} if spec.nsp_head else {}
    autocast = torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16,
                              enabled=config.dtype == "bfloat16")

    def loss_fn() -> torch.Tensor:
        if mlm == "full":
            return model(**encoder_inputs, labels=labels, **nsp_labels).loss
        outputs = getattr(model, spec.base)(**encoder_inputs)
        sequence = outputs[0]
        positions = batch["masked_lm_positions"][..., None].expand(-1, -1, sequence.shape[-1])
        logits = spec.mlm_head(model, torch.gather(sequence, 1, positions)).float()
        losses = F.cross_entropy(logits.flatten(0, 1), batch["masked_lm_ids"].flatten(), reduction="none")
        loss = (losses * weights.flatten()).sum() / weights.sum().clamp_min(1e-8)
        if spec.nsp_head:
            loss = loss + F.cross_entropy(spec.nsp_head(model, outputs[1]).float(), batch["next_sentence_label"])
        return loss

    on_cuda = torch.device(device).type == "cuda"
    loss = None

    def run_step() -> None:
        nonlocal loss
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            loss = loss_fn()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), optimizer_cfg.clip_norm)
        optimizer.step()
        scheduler.step()
        if on_cuda:
            torch.cuda.synchronize()

    start = time.perf_counter()
    run_step()
    first_step_seconds = time.perf_counter() - start
    kind = torch.cuda.get_device_name() if on_cuda else "cpu"

    def peak_memory() -> tuple[int, str]:
        if on_cuda:
            return torch.cuda.max_memory_allocated(), "torch.cuda.max_memory_allocated"
        return _host_peak_memory()

    return StepRunner(
        framework="torch", run_step=run_step, last_loss=lambda: loss.item(), compile_s=first_step_seconds,
        peak_memory=peak_memory, num_devices=1,
        peak_flops=perf.device_peak_flops(types.SimpleNamespace(device_kind=kind)) if on_cuda else None,
        info={
            "device": kind,
            "num_threads": torch.get_num_threads(),
            "mlm": mlm,
            "hf_class": spec.hf_class,
            "packed": packed,
            "packed_mask": spec.packed if packed else None,
            "attn_implementation": model.config._attn_implementation,
            "torch_version": torch.__version__,
            "transformers_version": transformers.__version__,
        },
    )
