"""The inputs of a fine-tuning run: which splits, read and featurised, and the batches that feed the trainer.

``read_inputs(config, source, tokenizer)`` reads every split the config names through the task's reader
(``data_pipelines.finetune``; ``data.files`` for local text files) and featurises it with the options
the task adds (:meth:`FinetuneTask.featurize_options`); with ``data.kfold`` it cuts the train split into
folds (stratified on :meth:`FinetuneTask.fold_labels`). Bad rows, labels and answers fail here, before
anything compiles. ``train_iterator`` and ``eval_batches`` turn the rows into this process's batches.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import grain
import jax
import ml_collections
import numpy as np

from bert_jax import run_config
from bert_jax.tasks import FinetuneTask, SplitData, finetune_task
from data_pipelines.finetune import FinetuneReader, features, get_finetune_reader, local_text


def split_list(value: str) -> list[str]:
    """``"a, b,"`` -> ``["a", "b"]``."""
    return [item.strip() for item in str(value).split(",") if item.strip()]


def int_list(value: str, field: str) -> list[int]:
    """Comma-separated integers of config field ``field``; ``ConfigError`` naming it otherwise."""
    try:
        return [int(item) for item in split_list(value)]
    except ValueError:
        raise run_config.ConfigError(f"{field}={value!r}: expected comma-separated integers") from None


def reader_options(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """``task.reader_options`` as keyword arguments (a comma-separated ``label_names`` becomes a tuple)."""
    options = dict(config.task.reader_options)
    if isinstance(options.get("label_names"), str):
        options["label_names"] = tuple(split_list(options["label_names"])) or None
    return {k: v for k, v in options.items() if v is not None}


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
    """Featurises ``examples`` with the reader and the options its task adds (e.g. SQuAD's ``is_training``).

    Raises:
      ValueError: for unlabelled examples in a split that is scored, or a split that yields no rows.
    """
    unlabelled = next((e for e in examples if getattr(e, "label", 0) is None), None)
    if unlabelled is not None and not is_test:
        raise ValueError(f"split {name!r} has unlabelled examples (e.g. {unlabelled.guid}); list it in "
                         "data.test_splits to predict it")
    options = finetune_task(reader.kind).featurize_options(dict(config.data.featurize_options), training=training)
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


@dataclasses.dataclass
class RunInputs:
    """Everything ``run`` needs before compiling: resolved config, reader and featurised splits.

    Attributes:
      task_class: the reader kind's :class:`FinetuneTask`.
      plans: ``(fold name or None, train split, eval splits)`` per fold (one entry without k-fold).
    """

    config: ml_collections.ConfigDict
    reader: FinetuneReader
    task_class: type[FinetuneTask]
    label_names: tuple[str, ...] | None
    seeds: list[int]
    plans: list[tuple[str | None, SplitData, list[SplitData]]]
    tests: list[SplitData]


def read_inputs(config: ml_collections.ConfigDict, tokenizer) -> RunInputs:
    """Reads and featurises every split of a resolved config (no compilation; bad input fails here)."""
    seeds = int_list(config.seeds, "seeds")
    if not seeds:
        raise run_config.ConfigError("seeds is empty; give at least one, e.g. --config.seeds=0")
    reader = get_finetune_reader(config.task.name, **reader_options(config))
    task_class = finetune_task(reader.kind)
    label_names = label_names_of(config, reader)
    data = config.data
    train_examples = read_examples(config, reader, data.train_split)
    tests = [featurize(config, reader, tokenizer, name, read_examples(config, reader, name), training=False,
                       is_test=True) for name in split_list(data.test_splits)]
    if data.kfold:
        folds = local_text.kfold_indices(len(train_examples), data.kfold, data.kfold_seed,
                                         task_class.fold_labels(train_examples))
        chosen = int_list(data.folds, "data.folds") or list(range(data.kfold))
        bad = [f for f in chosen if not 0 <= f < data.kfold]
        if bad:
            raise run_config.ConfigError(f"data.folds {bad} outside [0, {data.kfold})")

        def pick(indices):
            return [train_examples[i] for i in indices]

        plans = [(f"fold_{f}", pick(folds[f][0]), [("heldout", pick(folds[f][1]))]) for f in chosen]
    else:
        plans = [(None, train_examples, [(name, read_examples(config, reader, name))
                                         for name in split_list(data.eval_splits)])]
    featurized = []
    for plan_name, train_part, eval_parts in plans:
        train = featurize(config, reader, tokenizer, data.train_split, train_part, training=True)
        evals = [featurize(config, reader, tokenizer, name, part, training=False) for name, part in eval_parts]
        featurized.append((plan_name, train, evals))
    return RunInputs(config, reader, task_class, label_names, seeds, featurized, tests)
