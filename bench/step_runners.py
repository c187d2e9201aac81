"""The pieces of the step benchmark (``bench/bench_step.py``) that run in each framework's worker: the
shared random contract batch and optimizer, ``StepRunner`` and its timing, the JAX step, and the table of
the PyTorch side per architecture (its step: ``bench/torch_runner.py``).

Both frameworks train the same ``ModelConfig`` (``bench_model_config``: a named size of any architecture in
``TORCH_ARCHS``, with its recipe's fields) on the same random contract batch (``data_pipelines.batch``,
optionally packed) with the architecture's pretraining objective (BERT: MLM + NSP; the others: MLM),
dropout as configured, and the AdamW of ``bert_jax.optim.default_optimizer_config``. The PyTorch side is
one code path for every architecture: ``TORCH_ARCHS`` says which ``transformers`` class, where its base
model and heads are, whether it takes token types and how packed rows reach it.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from bert_jax.config import ModelConfig
from data_pipelines import batch as batch_contract
from data_pipelines.masking import TokenMasker

FRAMEWORKS = ("jax", "torch")
TORCH_MLM_MODES = ("gather", "full")
# Ids of the BERT uncased vocab.txt: [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103; real
# word pieces start at 999 (1..998 are [unusedN] placeholders).
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 100, 101, 102, 103
FIRST_REAL_ID = 999
# Fraction of rows shorter than the sequence length (padded), e.g. documents' last instances.
PADDED_ROW_FRACTION = 0.25


# ---------------------------------------------------------------------------------------------
# Inputs shared by both frameworks


def _row_layout(rng: np.random.Generator, length: int, packed: bool) -> list[int]:
    """The lengths of the sequences of one row of ``length`` real tokens: one, or 1-4 packed ones (each >= 8)."""
    if not packed or length < 16:
        return [length]
    count = int(rng.integers(1, min(4, length // 8) + 1))
    cuts = np.sort(rng.choice(np.arange(8, length - 7), count - 1, replace=False)) if count > 1 else np.array([], int)
    lengths = np.diff(np.concatenate([[0], cuts, [length]])).astype(int)
    return [int(n) for n in lengths] if lengths.min() >= 8 else [length]


def random_pretraining_batch(
    *, batch_size: int, seq_len: int, max_predictions: int, vocab_size: int, seed: int = 0,
    packed: bool = False, token_types: bool = True,
) -> dict[str, np.ndarray]:
    """A realistic random pretraining batch following ``data_pipelines.batch.PRETRAINING_FIELDS``.

    Rows are ``[CLS] A [SEP] B [SEP]`` with word-piece ids drawn from the real range ``[999, V)`` of
    the BERT uncased vocabulary; a quarter of the rows (``PADDED_ROW_FRACTION``) are shorter than ``S``
    and padded. ``packed=True``: each row holds 1-4 whole sequences ``[CLS] text [SEP]`` (``sequence_ids``
    1, 2, ... and ``position_ids`` restarting at 0 in each; segment ids 0), as the packing pipeline
    writes them. ``token_types=False`` (an architecture with fewer than two token types): segment ids 0.
    ``data_pipelines.masking.TokenMasker`` picks 15% of each row's real tokens (at most ``P``) and
    applies 80% [MASK] / 10% random / 10% kept.

    Returns:
      field -> int32 array: ``[B, S]`` encoder fields, ``[B, P]`` masked-LM fields, ``[B]`` NSP labels.

    Raises:
      ValueError: when ``vocab_size <= 999`` (no real word pieces) or ``seq_len < 8``.
    """
    if vocab_size <= FIRST_REAL_ID:
        raise ValueError(f"vocab_size={vocab_size}: the benchmark draws BERT uncased ids, so it must exceed "
                         f"{FIRST_REAL_ID}")
    if seq_len < 8:
        raise ValueError(f"seq_len={seq_len} must be at least 8")
    rng = np.random.default_rng(seed)
    padded = rng.random(batch_size) < PADDED_ROW_FRACTION
    lengths = np.where(padded, rng.integers(seq_len // 4, seq_len, batch_size), seq_len)
    input_ids = np.full((batch_size, seq_len), PAD_ID, np.int32)
    segment_ids = np.zeros((batch_size, seq_len), np.int32)
    sequence_ids = np.zeros((batch_size, seq_len), np.int32)
    position_ids = np.broadcast_to(np.arange(seq_len, dtype=np.int32), (batch_size, seq_len)).copy()
    for row, length in enumerate(lengths):
        input_ids[row, :length] = rng.integers(FIRST_REAL_ID, vocab_size, length)
        start = 0
        for number, size in enumerate(_row_layout(rng, int(length), packed), start=1):
            end = start + size
            input_ids[row, [start, end - 1]] = (CLS_ID, SEP_ID)
            sequence_ids[row, start:end] = number
            position_ids[row, start:end] = np.arange(size)
            if not packed:  # [CLS] A [SEP] B [SEP]
                first_sep = start + 1 + int(rng.integers(1, size - 3))
                input_ids[row, first_sep] = SEP_ID
                segment_ids[row, first_sep + 1:end] = 1 if token_types else 0
            start = end
    masker = TokenMasker(
        vocab_size=vocab_size,
        special_ids=np.array([PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID]),
        mask_id=MASK_ID,
        replacement_ids=np.arange(FIRST_REAL_ID, vocab_size),
        max_predictions_per_seq=max_predictions,
    )
    batch = {
        **masker(input_ids, rng),
        "segment_ids": segment_ids,
        "input_mask": (sequence_ids > 0).astype(np.int32),
        "sequence_ids": sequence_ids,
        "position_ids": position_ids,
        "next_sentence_label": rng.integers(0, 2, batch_size).astype(np.int32),
    }
    batch_contract.validate_batch(batch, dims={"B": batch_size, "S": seq_len, "P": max_predictions})
    return batch


def bench_model_config(architecture: str, size: str, *, seq_len: int, attention_window: int | None = None,
                       **overrides: Any) -> ModelConfig:
    """The ``ModelConfig`` both frameworks train: the named ``size`` of ``architecture`` with its recipe's fields.

    The recipe's fields are those ``configs.pretrain.get_config("arch=...")`` sets differently from the BERT
    recipe (RoBERTa's positions and vocabulary, DeBERTa-v3's, Longformer's, ModernBERT's norms and dropout),
    except the size (layers, width, heads, feed-forward), ``dtype`` and ``vocab_pad_multiple`` (the
    benchmark's own flags, in ``overrides``). Positions are extended to hold ``seq_len`` tokens.

    Args:
      architecture: a ``bert_jax.models`` registry name with a ``TORCH_ARCHS`` entry.
      size: ``ModelConfig.from_size`` name.
      seq_len: the benchmark's row length.
      attention_window: the local window (``TorchArch.window_field``: Longformer's ``attention_window``,
        ModernBERT's ``local_attention``); None keeps the recipe's.
      overrides: further ``ModelConfig`` fields (laid over everything else).

    Raises:
      ValueError: for an architecture without a ``TORCH_ARCHS`` entry, or a window for one without windows.
    """
    from bert_jax import models
    from configs import pretrain

    if architecture not in TORCH_ARCHS:
        raise ValueError(f"--arch={architecture!r}; expected one of {sorted(TORCH_ARCHS)}")
    spec = TORCH_ARCHS[architecture]
    bert = pretrain.get_config("size=base").model.to_dict()
    recipe = pretrain.get_config(f"size=base,arch={architecture}").model.to_dict()
    fields = {k: v for k, v in recipe.items() if bert.get(k) != v and k not in _NOT_RECIPE_FIELDS}
    if attention_window is not None:
        if spec.window_field is None:
            raise ValueError(f"--attention_window: {architecture} has no local attention window")
        fields[spec.window_field] = (attention_window,) if spec.window_field == "attention_window" else attention_window
    if "attention_window" in fields:
        fields["attention_window"] = tuple(fields["attention_window"])
    config = ModelConfig.from_size(size, **fields).replace(**overrides)
    needed = seq_len + models.get(architecture).position_offset(config)
    return config.replace(max_position_embeddings=max(config.max_position_embeddings, needed))


def bench_optimizer_config():
    """The optimizer both frameworks use: BERT's AdamW recipe (``optim.default_optimizer_config``)."""
    from bert_jax import optim

    return optim.default_optimizer_config()


# ---------------------------------------------------------------------------------------------
# Timing


@dataclasses.dataclass
class StepRunner:
    """One framework's ready-to-run training step on a fixed batch.

    ``run_step`` runs one step and waits for it; ``last_loss`` is that step's loss; ``compile_s`` the
    seconds before the first step could run (JAX: lower + compile; PyTorch: the first eager step);
    ``peak_memory`` returns ``(bytes, how it was measured)``; ``num_devices`` and ``peak_flops`` (of one
    device, None where unknown) give MFU; ``info`` is copied into the result record. ``timed_step``
    runs one step and returns its ``sample_step`` measurement (by default in this process).
    """

    framework: str
    run_step: Callable[[], None]
    last_loss: Callable[[], float]
    compile_s: float
    peak_memory: Callable[[], tuple[int, str]]
    num_devices: int
    peak_flops: float | None
    info: dict[str, Any]
    timed_step: Callable[[], tuple[float, float, float, int]] | None = None

    def __post_init__(self):
        if self.timed_step is None:
            self.timed_step = lambda: sample_step(self.run_step)

    def description(self) -> dict[str, Any]:
        """The plain (picklable) fields."""
        return {name: getattr(self, name) for name in ("framework", "compile_s", "num_devices", "peak_flops", "info")}


def sample_step(run_step: Callable[[], None]) -> tuple[float, float, float, int]:
    """Runs one step; returns its wall seconds and this process's CPU seconds, system seconds, page faults."""
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    run_step()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    system = after.ru_stime - before.ru_stime
    return wall, after.ru_utime - before.ru_utime + system, system, after.ru_minflt - before.ru_minflt


def available_cpus() -> int:
    """The CPUs this process may run on (``taskset`` respected)."""
    return len(os.sched_getaffinity(0))


def _host_peak_memory() -> tuple[int, str]:
    """Peak resident set size of this process so far (``getrusage``; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host peak RSS (getrusage)"


def time_runners(
    runners: Sequence[StepRunner],
    *,
    config: ModelConfig,
    batch_size: int,
    seq_len: int,
    max_predictions: int,
    steps: int,
    warmup: int,
) -> dict[str, dict[str, Any]]:
    """Times ``steps`` steps of each runner after ``warmup`` untimed ones.

    With several runners the timed steps alternate (one step of each in turn), so that a machine
    shared with other jobs loads all of them alike. Each step is measured by ``sample_step``.

    Returns:
      framework -> result record: step times (median/mean/min/max), ``tokens_per_s`` (``B x S`` over
      the median step), ``compile_s``, peak memory, FLOPs/token (``ModelConfig.train_flops_per_token``),
      achieved TFLOP/s, MFU (None where the device peak is unknown), the last loss, CPU and system
      seconds and page faults per step, CPU cores used, the load average around the timing, and the
      runner's ``info``.
    """
    if steps < 1 or warmup < 0:
        raise ValueError(f"steps={steps} must be >= 1 and warmup={warmup} >= 0")
    for runner in runners:
        for _ in range(warmup):
            runner.run_step()
    load_before = os.getloadavg()
    samples = {runner.framework: [] for runner in runners}
    for _ in range(steps):
        for runner in runners:
            samples[runner.framework].append(runner.timed_step())
    load_after = os.getloadavg()
    flops_per_token = config.train_flops_per_token(seq_len, max_predictions)
    records = {}
    for runner in runners:
        times, cpu, system, faults = (np.array(column) for column in zip(*samples[runner.framework]))
        median = float(np.median(times))
        tokens_per_s = batch_size * seq_len / median
        peak_memory = runner.peak_memory()
        achieved = tokens_per_s * flops_per_token
        records[runner.framework] = {
            "framework": runner.framework,
            "step_time_median_s": median,
            "step_time_mean_s": float(times.mean()),
            "step_time_min_s": float(times.min()),
            "step_time_max_s": float(times.max()),
            "tokens_per_s": tokens_per_s,
            "sequences_per_s": batch_size / median,
            "compile_s": runner.compile_s,
            "peak_memory_bytes": peak_memory[0],
            "peak_memory_source": peak_memory[1],
            "flops_per_token": flops_per_token,
            "achieved_tflops": achieved / 1e12,
            "mfu": achieved / (runner.peak_flops * runner.num_devices) if runner.peak_flops else None,
            "loss": runner.last_loss(),
            "timed_steps": steps,
            "alternated_with": [r.framework for r in runners if r is not runner],
            "cpu_s_per_step": float(cpu.mean()),
            "cpu_cores_used": float(cpu.sum() / times.sum()),
            "system_s_per_step": float(system.mean()),
            "page_faults_per_step": float(faults.mean()),
            "load_average_before": list(load_before),
            "load_average_after": list(load_after),
            **runner.info,
        }
    return records


# ---------------------------------------------------------------------------------------------
# JAX


def make_jax_runner(
    config: ModelConfig,
    *,
    batch_size: int,
    seq_len: int,
    max_predictions: int,
    mesh: Mapping[str, int] | None = None,
    devices: Sequence[Any] | None = None,
    compiler_options: Mapping[str, Any] | None = None,
    packed: bool = False,
    seed: int = 0,
) -> StepRunner:
    """The train step of ``bert_jax.step_builder.build`` (the one the trainer runs), compiled for the batch.

    The task is ``pretraining`` with NSP where the architecture has the head (``Architecture.nsp``: BERT),
    else MLM only. ``runner.initial_params()`` (in this process only) returns the parameters before the
    first step (host arrays), for ``make_torch_runner(params=...)``.

    Args:
      config: the model (``architecture``, ``dtype``, ``scan_layers``, ``remat``, ``attention_impl`` as set).
      batch_size, seq_len, max_predictions: the batch shape ``B, S, P``; ``seed`` seeds params and batch.
      mesh: ``sharding.make_mesh`` axis sizes (default ``{"data": -1}``) over ``devices`` (default all).
      compiler_options: XLA options of this compilation only (``jax.stages.Lowered.compile``).
      packed: rows of several sequences (``random_pretraining_batch(packed=True)``), kept apart in
        attention by their ``sequence_ids``.
    """
    import jax

    from bert_jax import models, perf, sharding, step_builder
    from bert_jax.tasks import get_task

    task = get_task("pretraining", config, max_predictions=max_predictions,
                    nsp_weight=1.0 if models.get(config.architecture).nsp else 0.0)
    builder = step_builder.build(task, bench_optimizer_config(), mesh=mesh or {"data": -1}, seq_len=seq_len,
                                 devices=devices)
    device_mesh, jitted = builder.mesh, builder.train_step
    state = builder.init_state(seed)
    initial_params = jax.device_get(state.params)
    host_batch = bench_batch(config, batch_size=batch_size, seq_len=seq_len, max_predictions=max_predictions,
                             seed=seed, packed=packed)
    batch = sharding.shard_batch(host_batch, device_mesh)
    start = time.perf_counter()
    lowered = jitted.lower(state, batch)
    lower_seconds = time.perf_counter() - start
    compiled = lowered.compile(dict(compiler_options) if compiler_options else None)
    compile_seconds = time.perf_counter() - start

    metrics = None

    def run_step() -> None:
        nonlocal state, metrics
        state, metrics = compiled(state, batch)
        jax.block_until_ready((state, metrics))

    used_devices = list(device_mesh.devices.flat)

    def peak_memory() -> tuple[int, str]:
        stats = [device.memory_stats() for device in used_devices]
        if all(s and "peak_bytes_in_use" in s for s in stats):
            return max(s["peak_bytes_in_use"] for s in stats), "device peak_bytes_in_use (max over devices)"
        return _host_peak_memory()

    runner = StepRunner(
        framework="jax", run_step=run_step, last_loss=lambda: task.summarize(jax.device_get(metrics))["loss"],
        compile_s=compile_seconds, peak_memory=peak_memory,
        num_devices=len(used_devices), peak_flops=perf.device_peak_flops(used_devices[0]),
        info={
            "lower_s": lower_seconds,
            "device": used_devices[0].device_kind,
            "num_devices": len(used_devices),
            "mesh": dict(device_mesh.shape),
            "xla_temp_bytes": getattr(compiled.memory_analysis(), "temp_size_in_bytes", None),
            "xla_flags": os.environ.get("XLA_FLAGS", ""),
            "compiler_options": dict(compiler_options or {}),
            "prng_impl": str(jax.config.jax_default_prng_impl),
            "architecture": config.architecture,
            "packed": packed,
        },
    )
    runner.initial_params = lambda: initial_params
    return runner


def bench_batch(config: ModelConfig, *, batch_size: int, seq_len: int, max_predictions: int, seed: int = 0,
                packed: bool = False) -> dict[str, np.ndarray]:
    """``random_pretraining_batch`` for ``config``: its vocabulary, segment ids only where it has two types."""
    return random_pretraining_batch(batch_size=batch_size, seq_len=seq_len, max_predictions=max_predictions,
                                    vocab_size=config.vocab_size, seed=seed, packed=packed,
                                    token_types=config.type_vocab_size > 1)


# ---------------------------------------------------------------------------------------------
# The PyTorch side, per architecture (its runner: bench/torch_runner.py)


@dataclasses.dataclass(frozen=True)
class TorchArch:
    """How the PyTorch side trains one architecture: its ``transformers`` class and where its parts are.

    Attributes:
      hf_class: the ``transformers`` class (a key of the architecture's ``Conversion.architecture_parts``).
      base: the attribute holding the base model (``model.bert``), called on the encoder inputs.
      mlm_head: ``fn(model, hidden [B, P, H]) -> logits [B, P, V]``: the MLM head on gathered positions.
      nsp_head: ``fn(model, pooled [B, H]) -> [B, 2]`` where the class has NSP (BERT), else None.
      token_types: whether the class takes ``token_type_ids``.
      packed: how packed rows reach the class: ``"mask"`` (one 4D mask, ``attention_mask=``), ``"layer_types"``
        (ModernBERT: a 4D mask per layer type, full and sliding), None (the class cannot keep packed
        sequences apart: Longformer's banded attention reads only a 2D padding mask).
      window_field: the ``ModelConfig`` field ``--attention_window`` sets (None: no local window).
    """

    hf_class: str
    base: str
    mlm_head: Callable[[Any, Any], Any]
    nsp_head: Callable[[Any, Any], Any] | None = None
    token_types: bool = True
    packed: str | None = "mask"
    window_field: str | None = None


#: Architecture (``ModelConfig.architecture``) -> its PyTorch side.
TORCH_ARCHS: dict[str, TorchArch] = {
    "bert": TorchArch("BertForPreTraining", "bert", lambda m, h: m.cls.predictions(h),
                      nsp_head=lambda m, pooled: m.cls.seq_relationship(pooled)),
    "roberta": TorchArch("RobertaForMaskedLM", "roberta", lambda m, h: m.lm_head(h)),
    "deberta_v2": TorchArch("DebertaV2ForMaskedLM", "deberta", lambda m, h: m.cls(h)),
    "longformer": TorchArch("LongformerForMaskedLM", "longformer", lambda m, h: m.lm_head(h), packed=None,
                            window_field="attention_window"),
    "modernbert": TorchArch("ModernBertForMaskedLM", "model", lambda m, h: m.decoder(m.head(h)), token_types=False,
                            packed="layer_types", window_field="local_attention"),
}
# Recipe fields the benchmark does not take from configs/pretrain.py (its own flags and the named size).
_NOT_RECIPE_FIELDS = ("num_layers", "hidden_size", "num_heads", "intermediate_size", "dtype", "vocab_pad_multiple")
