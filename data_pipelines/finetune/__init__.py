"""The data side of fine-tuning: one reader per task behind :func:`get_finetune_reader`.

A :class:`FinetuneReader` reads a split (from the original files or from TFDS) into examples and
featurises them into a :class:`~data_pipelines.finetune.features.FeatureSet` whose arrays follow
one of the fine-tuning specs of :mod:`data_pipelines.batch`:

==========================  =====================  ==========================================
task name                   kind                   batch spec
==========================  =====================  ==========================================
``glue/<task>`` (not stsb)  ``classification``     ``CLASSIFICATION_FIELDS``
``glue/stsb``               ``regression``         ``REGRESSION_FIELDS``
``squad/v1.1``, ``/v2.0``   ``span``               ``SPAN_FIELDS``
``conll2003``               ``tagging``            ``TAGGING_FIELDS``
``swag``                    ``multiple_choice``    ``MULTIPLE_CHOICE_FIELDS``
``local_text``              ``classification``     ``CLASSIFICATION_FIELDS``
``bbc_news``                ``classification``     ``CLASSIFICATION_FIELDS``
==========================  =====================  ==========================================

Example::

    reader = get_finetune_reader("glue/mrpc")
    examples = reader.read("validation", data_dir="/data/glue")        # or source="tfds"
    feature_set = reader.featurize(examples, tokenizer, max_seq_length=128)

Nothing here imports jax or bert_jax; scoring lives in ``bert_jax/metrics.py`` and SQuAD decoding
in ``bert_jax/squad_decoding.py``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from data_pipelines import batch as batch_lib
from data_pipelines.finetune import bbc_news, conll, features, glue, local_text, multiple_choice, squad

KINDS = ("classification", "regression", "span", "tagging", "multiple_choice")
SOURCES = ("files", "tfds")


@dataclasses.dataclass(frozen=True)
class FinetuneReader:
    """How one fine-tuning task reads and featurises its data.

    Attributes:
      task_name: the canonical name (``glue/mrpc``, ``squad/v2.0``, ...).
      kind: one of :data:`KINDS`; says which head and loss the task needs.
      fields: the :mod:`data_pipelines.batch` spec of the features.
      splits: the split names :meth:`read` accepts.
      read_files: ``(data_dir, split) -> examples`` from the original files.
      read_tfds: ``(split, tfds_data_dir) -> examples``, or None when the task has no TFDS source.
      featurize_fn: ``(examples, tokenizer, max_seq_length, **options) -> FeatureSet``.
      static_label_names: the class names when fixed by the task (None: regression/span, or inferred).
      infer_label_names: for tasks whose label set comes from the data: ``data_dir -> names``.
    """

    task_name: str
    kind: str
    fields: Mapping[str, tuple[str, ...]]
    splits: tuple[str, ...]
    read_files: Callable[[str, str], list]
    read_tfds: Callable[[str, str | None], list] | None
    featurize_fn: Callable[..., features.FeatureSet]
    static_label_names: tuple[str, ...] | None = None
    infer_label_names: Callable[[str], tuple[str, ...]] | None = None

    def read(self, split: str, *, data_dir: str | None = None, source: str = "files") -> list:
        """Reads one split.

        Args:
          split: one of :attr:`splits` (TFDS split slices such as ``'train[:10%]'`` work with tfds).
          data_dir: the folder of the original files (``source='files'``, required) or the TFDS data
            dir (``source='tfds'``, None = TFDS's default).
          source: ``'files'`` or ``'tfds'``.

        Returns:
          The task's examples (``TextPairExample``, ``SquadExample``, ``TaggedSentence`` or
          ``MultipleChoiceExample``).
        """
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if source == "tfds":
            if self.read_tfds is None:
                raise ValueError(f"{self.task_name} has no TFDS source; use source='files'")
            return self.read_tfds(split, data_dir)
        if split not in self.splits:
            raise ValueError(f"{self.task_name} has no split {split!r}; its splits: {list(self.splits)}")
        if data_dir is None:
            raise ValueError(f"{self.task_name}: source='files' needs data_dir")
        return self.read_files(data_dir, split)

    def featurize(self, examples: Sequence, tokenizer: Any, max_seq_length: int, **options: Any) -> features.FeatureSet:
        """Featurises examples; ``options`` go to the task's featurise function (e.g. SQuAD's
        ``is_training``, ``doc_stride``; CoNLL's ``long_sentences``)."""
        return self.featurize_fn(examples, tokenizer, max_seq_length, **options)

    def label_names(self, data_dir: str | None = None) -> tuple[str, ...] | None:
        """The class names (index order); inferred from ``data_dir``'s train file where the task says so."""
        if self.static_label_names is not None or self.infer_label_names is None:
            return self.static_label_names
        if data_dir is None:
            raise ValueError(f"{self.task_name}: the label set comes from the training file; pass data_dir")
        return self.infer_label_names(data_dir)


def _glue_reader(task: glue.GlueTask, on_malformed: str = "error") -> FinetuneReader:
    return FinetuneReader(
        task_name=f"glue/{task.name}",
        kind="regression" if task.is_regression else "classification",
        fields=batch_lib.REGRESSION_FIELDS if task.is_regression else batch_lib.CLASSIFICATION_FIELDS,
        splits=task.splits,
        read_files=lambda data_dir, split: glue.read_glue_tsv(task.name, split, data_dir, on_malformed=on_malformed),
        read_tfds=lambda split, data_dir: glue.read_glue_tfds(task.name, split, data_dir),
        featurize_fn=functools.partial(features.featurize_text_pairs, regression=task.is_regression),
        static_label_names=task.label_names,
    )


def _squad_reader(version: str) -> FinetuneReader:
    file_version = version.removeprefix("v")

    def read_files(data_dir: str, split: str) -> list:
        prefix = "train" if split == "train" else "dev"
        return squad.read_squad_json(f"{data_dir}/{prefix}-v{file_version}.json")

    def featurize(examples, tokenizer, max_seq_length, **options):
        return squad.featurize_squad(examples, tokenizer, max_seq_length=max_seq_length, **options)

    return FinetuneReader(
        task_name=f"squad/{version}",
        kind="span",
        fields=batch_lib.SPAN_FIELDS,
        splits=("train", "validation"),
        read_files=read_files,
        read_tfds=lambda split, data_dir: squad.read_squad_tfds(version, split, data_dir),
        featurize_fn=featurize,
    )


def _conll_reader() -> FinetuneReader:
    return FinetuneReader(
        task_name="conll2003",
        kind="tagging",
        fields=batch_lib.TAGGING_FIELDS,
        splits=tuple(conll.SPLIT_FILES),
        read_files=lambda data_dir, split: conll.read_conll_file(conll.conll_split_path(data_dir, split)),
        read_tfds=conll.read_conll_tfds,
        featurize_fn=conll.featurize_tagging,
        static_label_names=conll.NER_TAGS,
    )


def _swag_reader() -> FinetuneReader:
    return FinetuneReader(
        task_name="swag",
        kind="multiple_choice",
        fields=batch_lib.MULTIPLE_CHOICE_FIELDS,
        splits=tuple(multiple_choice.SPLIT_FILES),
        read_files=multiple_choice.read_swag_split,
        read_tfds=None,
        featurize_fn=multiple_choice.featurize_multiple_choice,
    )


def _local_text_reader(
    label_names: Sequence[str] | None = None, encoding: str = "utf-8", on_unknown_label: str = "error"
) -> FinetuneReader:
    def infer(data_dir: str) -> tuple[str, ...]:
        train = local_text.read_labelled_texts(local_text.split_path(data_dir, "train"), encoding=encoding)
        return local_text.infer_label_names(train)

    def read_files(data_dir: str, split: str) -> list:
        names = label_names if label_names is not None else infer(data_dir)
        return local_text.read_local_split(
            data_dir, split, label_names=names, encoding=encoding, on_unknown_label=on_unknown_label
        )

    return FinetuneReader(
        task_name="local_text",
        kind="classification",
        fields=batch_lib.CLASSIFICATION_FIELDS,
        splits=("train", "validation", "test"),
        read_files=read_files,
        read_tfds=None,
        featurize_fn=features.featurize_text_pairs,
        static_label_names=None if label_names is None else tuple(label_names),
        infer_label_names=infer,
    )


def _bbc_news_reader(split_seed: int = 0, validation_fraction: float = 0.1, test_fraction: float = 0.1,
                     train_per_class: int = 0, on_malformed: str = "skip", dedupe: bool = True) -> FinetuneReader:
    options = dict(split_seed=int(split_seed), validation_fraction=float(validation_fraction),
                   test_fraction=float(test_fraction), train_per_class=int(train_per_class),
                   on_malformed=on_malformed, dedupe=bool(dedupe))
    return FinetuneReader(
        task_name="bbc_news",
        kind="classification",
        fields=batch_lib.CLASSIFICATION_FIELDS,
        splits=bbc_news.SPLITS,
        read_files=lambda data_dir, split: bbc_news.read_split(data_dir, split, **options),
        read_tfds=None,
        featurize_fn=features.featurize_text_pairs,
        infer_label_names=bbc_news.class_names,
    )


def task_names() -> list[str]:
    """Every name :func:`get_finetune_reader` accepts (GLUE display names are accepted too)."""
    return [
        *(f"glue/{name}" for name in glue.GLUE_TASKS),
        *(f"squad/{version}" for version in squad.VERSIONS),
        "conll2003",
        "swag",
        "local_text",
        "bbc_news",
    ]


def get_finetune_reader(task_name: str, **options: Any) -> FinetuneReader:
    """The reader of a fine-tuning task.

    Args:
      task_name: ``glue/<task>`` (or a GLUE name such as ``MNLI-m``), ``squad/v1.1``,
        ``squad/v2.0``, ``conll2003``, ``swag``, ``local_text`` or ``bbc_news``.
      **options: task options: GLUE ``on_malformed``; local_text ``label_names``, ``encoding``,
        ``on_unknown_label``; bbc_news ``split_seed``, ``validation_fraction``, ``test_fraction``,
        ``train_per_class``, ``on_malformed``, ``dedupe`` (``data_pipelines/finetune/bbc_news.py``).

    Raises:
      ValueError: for an unknown task (listing the known ones) or options the task does not take.
    """
    name = task_name.strip()
    builders: dict[str, Callable[..., FinetuneReader]] = {
        **{f"squad/{version}": functools.partial(_squad_reader, version) for version in squad.VERSIONS},
        "conll2003": _conll_reader,
        "swag": _swag_reader,
        "local_text": _local_text_reader,
        "bbc_news": _bbc_news_reader,
    }
    if name.lower() in builders:
        builder = builders[name.lower()]
    else:
        try:
            builder = functools.partial(_glue_reader, glue.get_glue_task(name))
        except ValueError:
            raise ValueError(f"unknown fine-tuning task {task_name!r}; known: {task_names()}") from None
    try:
        return builder(**options)
    except TypeError as e:
        raise ValueError(f"{task_name}: unsupported options {sorted(options)} ({e})") from None
