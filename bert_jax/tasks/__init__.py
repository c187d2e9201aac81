"""Objectives the trainer runs, by name: ``get_task("pretraining", model_config, ...)``.

Fine-tuning tasks are named after the kind of head they need (``FinetuneReader.kind`` of
``data_pipelines.finetune``): ``classification``, ``regression``, ``span``, ``tagging``,
``multiple_choice``. Each is a :class:`FinetuneTask` (``tasks/finetune_base.py``) that also reads its
predictions back on the host: ``TASKS[kind].for_data(...)`` sizes it for a benchmark, ``decode`` and
``score`` turn its outputs into prediction records, metrics and files. The heads themselves are in
``bert_jax/heads.py``.
"""

from __future__ import annotations

from typing import Any

from bert_jax.config import ModelConfig
from bert_jax.tasks.base import Task
from bert_jax.tasks.classification import ClassificationTask, RegressionTask
from bert_jax.tasks.finetune_base import Benchmark, FinetuneTask, SplitData
from bert_jax.tasks.multiple_choice import MultipleChoiceTask
from bert_jax.tasks.pretraining import PretrainingTask
from bert_jax.tasks.replaced_token_detection import ReplacedTokenDetectionTask
from bert_jax.tasks.span import SpanTask
from bert_jax.tasks.tagging import TaggingTask

TASKS: dict[str, type[Task]] = {
    task.name: task
    for task in (PretrainingTask, ReplacedTokenDetectionTask, ClassificationTask, RegressionTask, SpanTask, TaggingTask, MultipleChoiceTask)
}

__all__ = ["TASKS", "Benchmark", "FinetuneTask", "SplitData", "Task", "get_task", "finetune_task"]


def get_task(name: str, model_config: ModelConfig, **kwargs: Any) -> Task:
    """Builds the task registered as ``name`` with the task's own keyword arguments.

    Raises:
      ValueError: on an unknown task name.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name](model_config, **kwargs)


def finetune_task(kind: str) -> type[FinetuneTask]:
    """The fine-tuning task class of a reader kind (``FinetuneReader.kind``).

    Raises:
      ValueError: when ``kind`` names no fine-tuning task.
    """
    task = TASKS.get(kind)
    if task is None or not issubclass(task, FinetuneTask):
        kinds = sorted(name for name, t in TASKS.items() if issubclass(t, FinetuneTask))
        raise ValueError(f"no fine-tuning task for kind {kind!r}; expected one of {kinds}")
    return task
