"""Objectives the trainer runs, by name: ``get_task("pretraining", model_config, ...)``.

Fine-tuning tasks are named after the kind of head they need (``FinetuneReader.kind`` of
``data_pipelines.finetune``): ``classification``, ``regression``, ``span``, ``tagging``,
``multiple_choice``.
"""

from __future__ import annotations

from typing import Any

from bert_jax.config import ModelConfig
from bert_jax.tasks.base import Task
from bert_jax.tasks.classification import ClassificationTask, FinetuneTask, RegressionTask
from bert_jax.tasks.multiple_choice import MultipleChoiceTask
from bert_jax.tasks.pretraining import PretrainingTask
from bert_jax.tasks.span import SpanTask
from bert_jax.tasks.tagging import TaggingTask

TASKS: dict[str, type[Task]] = {
    task.name: task
    for task in (PretrainingTask, ClassificationTask, RegressionTask, SpanTask, TaggingTask, MultipleChoiceTask)
}

__all__ = ["TASKS", "FinetuneTask", "Task", "get_task"]


def get_task(name: str, model_config: ModelConfig, **kwargs: Any) -> Task:
    """Builds the task registered as ``name`` with the task's own keyword arguments.

    Raises:
      ValueError: on an unknown task name.
    """
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    return TASKS[name](model_config, **kwargs)
