"""Fine-tuning: ``run(config, workdir)`` for GLUE, SQuAD, CoNLL-2003, SWAG and local text files.

Order of work: where to start from (``init_from``: a pretraining workdir or checkpoint, a Hugging Face
or exported directory, or nothing) -> the model config and tokenizer it implies -> the task's reader
reads and featurises every split (bad rows, labels and answers fail here, before anything compiles)
-> per seed (and per cross-validation fold): ``Trainer`` with the task's head -> restore (the encoder
from ``init_from``, the pretraining heads dropped, the task head fresh) -> ``Trainer.fit`` for
``num_epochs`` worth of steps, evaluating with the benchmark's own metrics -> prediction files ->
``finetune_summary.json``; over several seeds/folds the summary adds mean and std.

Layout of a workdir (one run; several seeds/folds each get ``seed_<s>/`` and ``fold_<k>/``)::

    <run>/checkpoints/...                 the trainer's (final checkpoint, resumable)
    <run>/metrics.jsonl, tensorboard/     train and eval records
    <run>/predictions/<split>/            predictions.tsv | predictions.conll | SQuAD JSON files,
                                          GLUE submission files (MRPC.tsv, ...) for test splits
    <run>/finetune_summary.json           this run; <workdir>/finetune_summary.json: all runs + mean/std
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import io
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import grain
import jax
import ml_collections
import numpy as np

from bert_jax import checkpoint as checkpoint_lib
from bert_jax import distributed, fileio, logs, metrics, run_config, sharding, squad_decoding
from bert_jax.config import ModelConfig
from bert_jax.interop.hf_bert import PRETRAINING_HEADS
from bert_jax.interop.init_source import (RUNTIME_MODEL_FIELDS, InitSource, hf_importer,  # noqa: F401
                                          model_config_for, resolve_init_source, tokenizer_for)
from bert_jax.tasks import FinetuneTask, get_task
from bert_jax.trainer import Trainer
from data_pipelines.finetune import FinetuneReader, conll, features, get_finetune_reader, glue, local_text, squad

SUMMARY_FILE = "finetune_summary.json"


class InputError(ValueError):
    """Bad input found before training (a config problem, a missing file, a malformed row, label or
    answer); the message names the field, file and line. Entry points print it without a traceback."""


# ----------------------------------------------------------------------------------------------------
# Config


def _split_list(value: str) -> list[str]:
    return [item.strip() for item in str(value).split(",") if item.strip()]


def _int_list(value: str, field: str) -> list[int]:
    try:
        return [int(item) for item in _split_list(value)]
    except ValueError:
        raise run_config.ConfigError(f"{field}={value!r}: expected comma-separated integers") from None


def reader_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``task.reader_options`` as keyword arguments (a comma-separated ``label_names`` becomes a tuple)."""
    options = dict(config.task.reader_options)
    if isinstance(options.get("label_names"), str):
        options["label_names"] = tuple(_split_list(options["label_names"])) or None
    return {k: v for k, v in options.items() if v is not None}


def validate(config: ml_collections.ConfigDict, model_config: ModelConfig, tokenizer_vocab_size: int,
             num_devices: int) -> None:
    """Checks a fine-tuning config before anything compiles; raises ``ConfigError`` listing every problem."""
    problems = []
    train, data = config.train, config.data
    if data.max_seq_length > model_config.max_position_embeddings:
        problems.append(f"data.max_seq_length={data.max_seq_length} exceeds the model's max_position_embeddings="
                        f"{model_config.max_position_embeddings}")
    if tokenizer_vocab_size > model_config.vocab_size:
        problems.append(f"the tokenizer has {tokenizer_vocab_size} tokens but the model only {model_config.vocab_size}")
    try:
        ways = run_config.data_parallel_size(config, num_devices)
    except ValueError as error:
        problems.append(f"sharding.mesh does not fit the {num_devices} devices: {error}")
        ways = 1
    accum = max(1, int(train.grad_accum_steps))
    for name, size in (("train.batch_size", train.batch_size // accum),
                       ("train.eval_batch_size", train.eval_batch_size)):
        if size < 1 or size % ways:
            problems.append(f"{name}={size} (per micro-batch) must be a positive multiple of the {ways} "
                            "data-parallel devices (sharding.mesh data x fsdp)")
    if train.batch_size % accum:
        problems.append(f"train.batch_size={train.batch_size} is not divisible by grad_accum_steps={accum}")
    if train.num_steps < 0 or (train.num_steps == 0 and train.num_epochs <= 0):
        problems.append("set train.num_epochs > 0 or train.num_steps > 0")
    if not 0 <= train.warmup_fraction < 1:
        problems.append(f"train.warmup_fraction={train.warmup_fraction} must be in [0, 1)")
    if train.checkpoint_every % train.log_every:
        problems.append(f"train.checkpoint_every={train.checkpoint_every} must be a multiple of train.log_every")
    if data.kfold == 1 or data.kfold < 0:
        problems.append(f"data.kfold={data.kfold}: use 0 (no cross-validation) or >= 2 folds")
    if split_file(config, data.train_split) and not config.task.name.startswith("local_text"):
        problems.append("data.files (explicit split files) is only for task.name='local_text'; use data.data_dir")
    if not split_file(config, data.train_split) and not data.data_dir and data.source == "files":
        problems.append("data.data_dir is empty: set it to the folder of the task's files (or use data.source=tfds)")
    if problems:
        raise run_config.ConfigError("invalid fine-tuning config:\n  - " + "\n  - ".join(problems))


# ----------------------------------------------------------------------------------------------------
# Data


@dataclasses.dataclass
class SplitData:
    """One split, read and featurised: ``examples`` and their rows (``features``; windows for SQuAD/CoNLL)."""

    name: str
    examples: list
    features: features.FeatureSet
    is_test: bool = False


def split_file(config: ml_collections.ConfigDict, split: str) -> str | None:
    """The explicit file of ``split`` (``data.files.<split>``), or None."""
    return config.data.files.get(split) or None


def read_examples(config: ml_collections.ConfigDict, reader: FinetuneReader, split: str) -> list:
    """The examples of ``split`` from ``data.files`` (local_text), the data dir or TFDS."""
    data = config.data
    if split_file(config, split):
        options = reader_options(config)
        records = local_text.read_labelled_texts(split_file(config, split), encoding=options.get("encoding", "utf-8"),
                                                 require_labels=split == data.train_split)
        return local_text.to_examples(records, label_names_of(config, reader),
                                      on_unknown_label=options.get("on_unknown_label", "error"))
    return reader.read(split, data_dir=data.data_dir or None, source=data.source)


def label_names_of(config: ml_collections.ConfigDict, reader: FinetuneReader) -> tuple[str, ...] | None:
    """The class names (index order): the reader's, or those of the train file for local text."""
    if split_file(config, config.data.train_split):
        options = reader_options(config)
        if options.get("label_names"):
            return tuple(options["label_names"])
        records = local_text.read_labelled_texts(split_file(config, config.data.train_split),
                                                 encoding=options.get("encoding", "utf-8"))
        return local_text.infer_label_names(records)
    return reader.label_names(config.data.data_dir or None)


def featurize(config: ml_collections.ConfigDict, reader: FinetuneReader, tokenizer, name: str, examples: list,
              *, training: bool, is_test: bool = False) -> SplitData:
    """Featurises ``examples`` (SQuAD: ``is_training`` skips unfindable training answers)."""
    unlabelled = next((e for e in examples if getattr(e, "label", 0) is None), None)
    if unlabelled is not None and not is_test:
        raise ValueError(f"split {name!r} has unlabelled examples (e.g. {unlabelled.guid}); list it in "
                         "data.test_splits to predict it")
    options = dict(config.data.featurize_options)
    if reader.kind == "span":
        options["is_training"] = training
    feature_set = reader.featurize(examples, tokenizer, config.data.max_seq_length, **options)
    if not len(feature_set):
        raise ValueError(f"{reader.task_name} split {name!r}: no rows after featurisation ({dict(feature_set.stats)})")
    return SplitData(name, examples, feature_set, is_test)


def train_iterator(feature_set: features.FeatureSet, batch_size: int, seed: int):
    """Endless shuffled batches of this process's share; reshuffled every epoch; checkpointable (Grain)."""
    local_batch = batch_size // jax.process_count()
    dataset = grain.MapDataset.source(feature_set)[jax.process_index()::jax.process_count()]
    dataset = dataset.shuffle(seed=seed).repeat().batch(local_batch, drop_remainder=True)
    return iter(dataset.to_iter_dataset())


def eval_batches(feature_set: features.FeatureSet, batch_size: int):
    """This process's part of fixed-size global batches over every row, zero rows padding the last one."""
    count = len(feature_set)
    local = batch_size // jax.process_count()
    for start in range(0, count, batch_size):
        rows = feature_set.rows(np.arange(start, min(start + batch_size, count)))
        pad = batch_size - len(next(iter(rows.values())))
        rows = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for k, v in rows.items()}
        offset = jax.process_index() * local
        yield {k: v[offset:offset + local] for k, v in rows.items()}


def num_train_steps(config: ml_collections.ConfigDict, num_examples: int) -> int:
    """``train.num_steps``, or ``ceil(examples x num_epochs / batch_size)`` when it is 0."""
    if config.train.num_steps:
        return int(config.train.num_steps)
    return max(1, math.ceil(num_examples * config.train.num_epochs / config.train.batch_size))


# ----------------------------------------------------------------------------------------------------
# Scoring and prediction files


def _write_tsv(path: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(header)
    writer.writerows(rows)
    return fileio.write_text(path, text.getvalue())


def _name(label_names, value) -> str:
    if value is None:
        return ""
    return label_names[int(value)] if label_names else f"{float(value):.9g}"  # float32 exactly


def score_split(kind: str, task_name: str, split: SplitData, outputs: dict[str, np.ndarray],
                label_names: Sequence[str] | None, out_dir: str,
                decode: Any) -> tuple[dict[str, float], dict[str, str]]:
    """Turns a split's per-row outputs into the benchmark's metrics and its prediction files.

    Args:
      kind: the reader kind (``classification``, ``regression``, ``span``, ``tagging``, ``multiple_choice``).
      task_name: the reader's task name (``glue/mrpc``, ``squad/v2.0``, ...).
      split: the split's examples and features.
      outputs: ``FinetuneTask.predictions`` of every row, in row order (host arrays).
      label_names: class names in index order (None for regression and spans).
      out_dir: where this split's files go.
      decode: the ``decode`` config section (SQuAD).

    Returns:
      ``(metrics, files)``: metric name -> value (none for test splits), file kind -> path.
    """
    examples, files, scored = split.examples, {}, not split.is_test
    if kind in ("classification", "regression", "multiple_choice"):
        predicted = outputs["score"] if kind == "regression" else np.argmax(outputs["logits"], axis=-1)
        names = None if kind == "regression" else (label_names or [str(i) for i in range(outputs["logits"].shape[-1])])
        ids = [getattr(e, "index", None) if kind != "multiple_choice" else e.guid for e in examples]
        files["predictions"] = _write_tsv(
            os.path.join(out_dir, "predictions.tsv"), ("index", "prediction", "label"),
            [(i, _name(names, p), _name(names, e.label)) for i, p, e in zip(ids, predicted, examples)])
        if split.is_test and task_name.startswith("glue/"):
            files["submission"] = glue.write_glue_submission(task_name, split.name, ids, predicted, out_dir)
        if not scored:
            return {}, files
        labels = np.asarray([e.label for e in examples])
        if task_name.startswith("glue/"):
            return metrics.glue_metrics(task_name, predicted, labels), files
        return {"accuracy": metrics.accuracy(predicted, labels)}, files
    if kind == "span":
        version_2 = task_name.endswith("v2.0")
        decoded = squad_decoding.decode_squad(
            examples, split.features.metadata, outputs["start_logits"], outputs["end_logits"],
            n_best_size=decode.n_best_size, max_answer_length=decode.max_answer_length,
            version_2_with_negative=version_2, null_score_diff_threshold=decode.null_score_diff_threshold)
        files.update(squad_decoding.write_squad_predictions(out_dir, decoded))
        if not scored:
            return {}, files
        gold = squad.gold_answers(examples)
        if version_2:
            return metrics.squad_v2_scores(gold, decoded.predictions, decoded.null_odds), files
        return metrics.squad_v1_scores(gold, decoded.predictions), files
    if kind == "tagging":
        predicted_tags = conll.word_predictions(examples, split.features, outputs["predicted_ids"], label_names)
        lines = []  # conlleval's input: word gold predicted, a blank line after each sentence
        for sentence, tags in zip(examples, predicted_tags):
            lines.extend(f"{w} {g} {p}\n" for w, g, p in zip(sentence.words, sentence.tags, tags))
            lines.append("\n")
        files["predictions"] = fileio.write_text(os.path.join(out_dir, "predictions.conll"), "".join(lines))
        if not scored:
            return {}, files
        scores = metrics.entity_scores([s.tags for s in examples], predicted_tags)
        result = {k: float(scores[k]) for k in ("precision", "recall", "f1", "accuracy")}
        result.update({f"f1_{t}": v["f1"] for t, v in scores["per_type"].items()})
        return result, files
    raise ValueError(f"no scoring for task kind {kind!r}")


# ----------------------------------------------------------------------------------------------------
# One run


class Evaluator:
    """Scores splits with a jitted forward pass: the task's loss sums plus per-row predictions.

    Calling it (``params -> metrics``) is the ``evaluate`` of ``Trainer.fit``: each eval split gets the
    task's means (loss, accuracy, ...) and the benchmark's metrics from ``score``, which also writes the
    split's prediction files; ``results`` keeps the last ``(metrics, files)`` of each split.
    """

    def __init__(self, trainer: Trainer, splits: Sequence[SplitData], batch_size: int, score):
        self.trainer, self.splits, self.batch_size, self.score = trainer, list(splits), batch_size, score
        self.results: dict[str, tuple[dict[str, float], dict[str, str]]] = {}
        mesh, rules, task = trainer.mesh, trainer.rules, trainer.task

        def forward(params, batch):
            with sharding.axis_rules(mesh, rules):
                outputs = task.apply(params, batch, None, deterministic=True)
                return task.metric_sums(outputs, batch), task.predictions(outputs, batch)

        self._forward = jax.jit(forward, in_shardings=(trainer.state_shardings.params, sharding.batch_sharding(mesh)),
                                out_shardings=sharding.replicated(mesh))

    def outputs(self, params: Any, split: SplitData) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """The task's mean metrics (loss, accuracy, ...) and every row's predictions for ``split``."""
        totals, pieces = {}, []
        for batch in eval_batches(split.features, self.batch_size):
            sums, predictions = self._forward(params, sharding.shard_batch(batch, self.trainer.mesh))
            totals = sums if not totals else jax.tree.map(lambda a, b: a + b, totals, sums)
            pieces.append(jax.device_get(predictions))
        rows = {k: np.concatenate([p[k] for p in pieces])[:len(split.features)] for k in pieces[0]}
        return self.trainer.task.summarize(jax.device_get(totals)), rows

    def predict(self, params: Any, split: SplitData) -> tuple[dict[str, float], dict[str, str]]:
        """Scores ``split`` (no metrics for test splits) and writes its prediction files."""
        return self.score(split, self.outputs(params, split)[1])

    def __call__(self, params: Any) -> dict[str, float]:
        flat = {}
        for split in self.splits:
            means, outputs = self.outputs(params, split)
            self.results[split.name] = self.score(split, outputs)
            flat.update({f"{split.name}/{k}": v for k, v in {**means, **self.results[split.name][0]}.items()})
        return flat


def build_task(config: ml_collections.ConfigDict, kind: str, label_names, train: SplitData) -> FinetuneTask:
    """The head for a reader kind (classes from ``label_names``, choices from the train rows)."""
    model_config = ModelConfig(**config.model)
    if kind == "tagging":
        return get_task(kind, model_config, num_labels=len(label_names))
    if kind == "span":
        return get_task(kind, model_config)
    pooling = {"pooling": config.task.pooling}
    if kind == "classification":
        return get_task(kind, model_config, num_labels=len(label_names), **pooling)
    if kind == "multiple_choice":
        return get_task(kind, model_config, num_choices=train.features.arrays["input_ids"].shape[1], **pooling)
    return get_task(kind, model_config, **pooling)


def init_trainer(config: ml_collections.ConfigDict, task: FinetuneTask, workdir: str, source: InitSource,
                 data_iterator: Any = None, label_names=None) -> tuple[Trainer, str, list[str]]:
    """A ``Trainer`` for ``task`` restored per the restore order, with the encoder from ``source``.

    Args:
      config: the run config of this run (``train.seed``/``num_steps`` set; ``init_from`` top level).
      task: the fine-tuning task.
      workdir: this run's directory (resumes its own checkpoint first).
      source: ``resolve_init_source(config.init_from)``.
      data_iterator: restored with the state when resuming this run.
      label_names: the task's class names; a Hugging Face source's head is kept when they match.

    Returns:
      ``(trainer, how it was restored, the top-level params left at their fresh initialisation)``: the
      task head, plus ``bert`` when nothing was restored.
    """
    run_cfg = copy.deepcopy(config)
    with run_cfg.unlocked():
        run_cfg.train.init_from = source.path
    trainer = Trainer(run_cfg, task, workdir, seq_len=config.data.max_seq_length)
    fresh = jax.device_get(trainer.state.params)
    import_hf = hf_importer(task.model_config.scan_layers, task.name, label_names) if source.kind == "hf" else None
    # From init_from only the encoder: the pretraining heads and any earlier task head (e.g. of an
    # intermediate fine-tuning) are dropped by name; a Hugging Face source's head is kept when its task and
    # labels match (interop.init_source.hf_importer). Resuming this run's own checkpoint restores all.
    how = trainer.restore(data_iterator, drop_heads=(*PRETRAINING_HEADS, *task.head_names), import_hf=import_hf)
    restored = jax.device_get(trainer.state.params)
    unchanged = [name for name in sorted(fresh) if checkpoint_lib.tree_equal(fresh[name], restored[name])]
    logging.info("restore: %s; at their fresh initialisation: %s", how, ", ".join(unchanged) or "nothing")
    return trainer, how, unchanged


def run_one(config: ml_collections.ConfigDict, workdir: str, *, source: InitSource, reader: FinetuneReader,
            label_names, train: SplitData, evals: Sequence[SplitData], tests: Sequence[SplitData],
            fold: str | None = None) -> dict[str, Any]:
    """Fine-tunes one seed on one train set; evaluates ``evals`` and predicts ``tests``; returns its summary."""
    steps = num_train_steps(config, len(train.features))
    config = copy.deepcopy(config)
    with config.unlocked():
        config.train.num_steps = steps
        config.optimizer.total_steps = steps
        config.optimizer.warmup_steps = int(config.train.warmup_fraction * steps)
    task = build_task(config, reader.kind, label_names, train)
    train_iter = train_iterator(train.features, config.train.batch_size, config.train.seed)
    trainer, how, fresh = init_trainer(config, task, workdir, source, train_iter, label_names)
    if trainer.primary:
        run_config.save_config(config, workdir)

    def score(split: SplitData, outputs: dict[str, np.ndarray]):
        return score_split(reader.kind, reader.task_name, split, outputs, label_names,
                           os.path.join(workdir, "predictions", split.name), config.decode)

    evaluator = Evaluator(trainer, evals, config.train.eval_batch_size, score)
    result = trainer.fit(train_iter, evaluator)
    if not result.preempted:  # the final evaluation ran; the test splits are predicted with the same params
        evaluator.results.update({split.name: evaluator.predict(trainer.state.params, split) for split in tests})
    trainer.close()
    summary = {
        "seed": config.train.seed,
        "fold": fold,
        "workdir": workdir,
        "step": result.step,
        "preempted": result.preempted,
        "restored": how,
        "initialised_fresh": fresh,
        "train_examples": len(train.examples),
        "train_rows": len(train.features),
        "num_steps": steps,
        "eval": result.eval_metrics,
        "metrics": {name: m for name, (m, _) in evaluator.results.items() if m},
        "predictions": {name: files for name, (_, files) in evaluator.results.items()},
        "featurization": {s.name: dict(s.features.stats) for s in [train, *evals, *tests]},
        "curves": logs.plot_curves(workdir) if (trainer.primary and config.train.plot) else None,
    }
    if trainer.primary:
        fileio.write_json(os.path.join(workdir, SUMMARY_FILE), summary)
    return summary


# ----------------------------------------------------------------------------------------------------
# The whole command


def prepare(config: ml_collections.ConfigDict) -> tuple[ml_collections.ConfigDict, InitSource, Any]:
    """Resolves ``init_from``, the model config and the tokenizer, and validates the config.

    Returns:
      ``(config with the full model section, the init source, the tokenizer)``.
    """
    source = resolve_init_source(config.init_from)
    model_config = model_config_for(config, source)
    tokenizer = tokenizer_for(config, source)
    config = copy.deepcopy(config)
    with config.unlocked():  # what was resolved, so that the saved config.json loads this run again
        config.model = ml_collections.ConfigDict(model_config.to_dict())
        config.tokenizer = ml_collections.ConfigDict(dict(tokenizer.spec))
    validate(config, model_config, tokenizer.vocab_size, jax.device_count())
    return config, source, tokenizer


@dataclasses.dataclass
class RunInputs:
    """Everything ``run`` needs before compiling: resolved config, source, reader and featurised splits.

    Attributes:
      plans: ``(fold name or None, train split, eval splits)`` per fold (one entry without k-fold).
    """

    config: ml_collections.ConfigDict
    source: InitSource
    reader: FinetuneReader
    label_names: tuple[str, ...] | None
    seeds: list[int]
    plans: list[tuple[str | None, SplitData, list[SplitData]]]
    tests: list[SplitData]


def read_inputs(config: ml_collections.ConfigDict) -> RunInputs:
    """Resolves the config and reads and featurises every split (no compilation; bad input fails here)."""
    seeds = _int_list(config.seeds, "seeds")
    if not seeds:
        raise run_config.ConfigError("seeds is empty; give at least one, e.g. --config.seeds=0")
    config, source, tokenizer = prepare(config)
    logging.info("fine-tuning %s from %s (%s): %s", config.task.name, config.init_from or "scratch", source.kind,
                 config.model)

    reader = get_finetune_reader(config.task.name, **reader_options(config))
    label_names = label_names_of(config, reader)
    data = config.data
    train_examples = read_examples(config, reader, data.train_split)
    tests = [featurize(config, reader, tokenizer, name, read_examples(config, reader, name), training=False,
                       is_test=True) for name in _split_list(data.test_splits)]
    if data.kfold:
        labels = [e.label for e in train_examples] if reader.kind == "classification" else None
        folds = local_text.kfold_indices(len(train_examples), data.kfold, data.kfold_seed, labels)
        chosen = _int_list(data.folds, "data.folds") or list(range(data.kfold))
        bad = [f for f in chosen if not 0 <= f < data.kfold]
        if bad:
            raise run_config.ConfigError(f"data.folds {bad} outside [0, {data.kfold})")
        def pick(indices):
            return [train_examples[i] for i in indices]

        plans = [(f"fold_{f}", pick(folds[f][0]), [("heldout", pick(folds[f][1]))]) for f in chosen]
    else:
        evals = [(name, read_examples(config, reader, name)) for name in _split_list(data.eval_splits)]
        plans = [(None, train_examples, evals)]
    featurized = []
    for plan_name, train_part, eval_parts in plans:
        train = featurize(config, reader, tokenizer, data.train_split, train_part, training=True)
        evals = [featurize(config, reader, tokenizer, name, part, training=False) for name, part in eval_parts]
        featurized.append((plan_name, train, evals))

    return RunInputs(config, source, reader, label_names, seeds, featurized, tests)


def run(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    """Fine-tunes as ``config`` says (every seed, every fold), writing everything under ``workdir``.

    Returns:
      The summary (also ``<workdir>/finetune_summary.json``): the task, how the encoder was initialised,
      each run's metrics and files, and ``mean_std``: metric -> mean/std/min/max/n over the runs.

    Raises:
      InputError: before any training, for a config problem (listing them), a missing file, or bad data
        (naming the file, line, field or question).
    """
    try:
        inputs = distributed.primary_first(lambda: read_inputs(config), "reading the fine-tuning data")
    except (ValueError, FileNotFoundError) as error:
        raise InputError(f"{type(error).__name__}: {error}") from error
    runs = []
    for seed in inputs.seeds:
        for fold, train, evals in inputs.plans:
            parts = [f"seed_{seed}" if len(inputs.seeds) > 1 else "", fold or ""]
            run_cfg = copy.deepcopy(inputs.config)
            with run_cfg.unlocked():
                run_cfg.train.seed = seed
            runs.append(run_one(run_cfg, os.path.join(workdir, *filter(None, parts)), source=inputs.source,
                                reader=inputs.reader, label_names=inputs.label_names, train=train, evals=evals,
                                tests=inputs.tests, fold=fold))
    flat_runs = [{f"{split}/{k}": v for split, m in r["metrics"].items() for k, v in m.items()} for r in runs]
    summary = {
        "task": inputs.config.task.name,
        "kind": inputs.reader.kind,
        "init_from": inputs.config.init_from,
        "init_kind": inputs.source.kind,
        "seeds": inputs.seeds,
        "kfold": inputs.config.data.kfold,
        "runs": runs,
        "mean_std": metrics.summarize_over_seeds(flat_runs) if all(flat_runs) else {},
    }
    if jax.process_index() == 0:
        fileio.write_json(os.path.join(workdir, SUMMARY_FILE), summary)
    return summary
