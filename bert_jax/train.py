"""Pretraining: ``run(config, workdir)``.

Order of work: tokenizer (trained first when the config asks and the file is missing) -> validate the
config (before anything compiles) -> task and ``Trainer`` (mesh, optimizer, sharded state) -> data
loaders -> restore (``bert_jax.checkpoint`` documents the order) -> ``Trainer.fit`` -> summary, curves.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import jax
import ml_collections
import numpy as np

from bert_jax import distributed, fileio, logs, perf, run_config, step_builder
from bert_jax.interop.init_source import hf_importer, tokenizer_spec  # noqa: F401
from bert_jax.trainer import NonFiniteLossError, Trainer  # noqa: F401  (re-exported for callers)
from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines import vocab_training
from data_pipelines.loader import make_pretraining_loader

FINAL_SUMMARY_FILE = "final_metrics.json"


def prepare_tokenizer(config: ml_collections.ConfigDict) -> tokenizer_lib.Tokenizer:
    """Loads the configured tokenizer; trains it on the first training source first when the file is
    missing and ``tokenizer.build_if_missing`` is set."""
    spec = tokenizer_spec(config.tokenizer)
    path = spec.get("model_file") if spec["kind"] == "sentencepiece" else spec.get("vocab_file")
    if path and fileio.is_remote(path):
        raise ValueError(f"tokenizer file {path}: tokenizers read local files; copy it to the host first "
                         f"(e.g. gsutil cp) and point config.tokenizer at the copy")
    if config.tokenizer.build_if_missing and path and not os.path.exists(path):
        logging.info("tokenizer file %s is missing: training one on the first training source", path)
        training_spec = {k: v for k, v in spec.items() if k not in ("vocab_file", "model_file")}
        vocab_training.build_vocab_from_source(dict(config.data.sources[0]), training_spec, os.path.dirname(path))
    return tokenizer_lib.load_tokenizer(spec)


def unigram_baseline(batches) -> float:
    """MLM accuracy of always predicting the most frequent target token of ``batches``.

    With several processes, each holds its rows of the global batches: the targets of all are gathered
    first (every process must call this), so the baseline is that of the global eval batches.
    """
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

        batches = [{name: np.asarray(multihost_utils.process_allgather(b[name], tiled=True))
                    for name in ("masked_lm_ids", "masked_lm_weights")} for b in batches]
    ids = np.concatenate([b["masked_lm_ids"][b["masked_lm_weights"] > 0] for b in batches])
    return float(np.bincount(ids).max() / len(ids)) if len(ids) else math.nan


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Pretrains (or resumes pretraining) as ``config`` says, writing everything under ``workdir``.

    Returns:
      The final summary (also written to ``<workdir>/final_metrics.json``): step, final eval metrics,
      the unigram baseline, whether SIGTERM stopped the run, and where checkpoints, logs and plot are.
    """
    train_cfg, data_cfg = config.train, config.data
    run_config.precheck(config, workdir)  # ranges, workdir and sources: before anything is built
    perf.configure_compilation_cache(train_cfg, workdir)  # before anything compiles
    tokenizer = distributed.primary_first(lambda: prepare_tokenizer(config), "preparing the tokenizer")
    run_config.validate(config, num_devices=jax.device_count(), process_count=jax.process_count(),
                        tokenizer_vocab_size=tokenizer.vocab_size, tokenizer_pad_id=tokenizer.pad_id)
    model_config = run_config.model_config_from(config)
    task = step_builder.task_from_config(config)
    trainer = Trainer(config, task, workdir, seq_len=data_cfg.max_seq_length,
                      flops_per_token=model_config.train_flops_per_token(
                          data_cfg.max_seq_length, data_cfg.max_predictions_per_seq))
    if trainer.primary:
        run_config.save_config(config, workdir)

    loader_args = dict(batch_size=train_cfg.batch_size, process_index=jax.process_index(),
                       process_count=jax.process_count(), seed=train_cfg.seed)
    train_loader = distributed.primary_first(  # opening the sources prepares those with 'prepare': True
        lambda: make_pretraining_loader(data_cfg, tokenizer, split="train", worker_count=train_cfg.worker_count,
                                        **loader_args), "preparing the data sources")
    train_iter = iter(train_loader)
    try:
        restored = trainer.restore(train_iter, import_hf=hf_importer(model_config.scan_layers,
                                                                   vocab_pad_multiple=model_config.vocab_pad_multiple))
        eval_iter = iter(make_pretraining_loader(data_cfg, tokenizer, split="eval", **loader_args))
        eval_batches = [next(eval_iter) for _ in range(train_cfg.eval_batches)]
        result = trainer.fit(train_iter, lambda params: trainer.evaluate_batches(params, eval_batches))
    finally:  # also on errors (e.g. NonFiniteLossError): finish pending saves, stop loader workers
        trainer.close()
        if hasattr(train_iter, "close"):
            train_iter.close()
    summary = {
        "step": result.step,
        "preempted": result.preempted,
        "restored": restored,
        "eval": result.eval_metrics,
        "unigram_baseline_mlm_accuracy": unigram_baseline(eval_batches),
        "skipped_documents": train_loader.skipped_documents(),
        "checkpoints": str(trainer.checkpointer.directory),  # every path absolute, like Orbax's
        "metrics": str(fileio.absolute(workdir) / logs.METRICS_FILE),
        "tensorboard": str(fileio.absolute(workdir) / "tensorboard") if train_cfg.tensorboard else None,
        "curves": logs.plot_curves(str(fileio.absolute(workdir))) if (trainer.primary and train_cfg.plot) else None,
    }
    if trainer.primary:
        fileio.write_json(os.path.join(workdir, FINAL_SUMMARY_FILE), summary)
    return summary
