"""Predictions from a fine-tuned run: ``predict(init_from, inputs)`` -> one record per input example.

``init_from`` is resolved as fine-tuning resolves it (``finetune.resolve_init_source``). It names either
a fine-tuned workdir of ours (one run: ``<run>``, ``<run>/checkpoints`` or ``<run>/checkpoints/<step>``,
with the run's ``config.json`` beside the checkpoints: it gives the task, the tokenizer, the row length
and the decoding options; its ``finetune_summary.json`` the class names), or a fine-tuned Hugging Face
directory (as ``launch/export.py`` writes it): its ``config.json`` ``architectures`` gives the task
(``BertForSequenceClassification``: classification, or regression with ``problem_type="regression"``
or one label; ``BertForTokenClassification``: tagging; ``BertForQuestionAnswering``: span;
``BertForMultipleChoice``), ``id2label`` the class names, its tokenizer files the tokenizer; rows are
``max_seq_length`` long (default 128, at most ``max_position_embeddings``), featurised and decoded
with the fine-tuning defaults (SQuAD v1.1 decoding: ``HF_DECODE``; see ``HF_TASK_READERS``).

Inputs are JSON lines (one object per line) or tab-separated lines (no header; columns in the order of
the task's ``input_fields``), from a file or from a text stream such as stdin:

=================  =========================================  ==============================================
task kind          input fields (TSV column order)            record out
=================  =========================================  ==============================================
classification     ``text``, ``text_b`` (optional)            ``{"id", "label", "probabilities": {...}}``
regression         ``text``, ``text_b`` (optional)            ``{"id", "score"}``
span (SQuAD)       ``question``, ``context`` (``id``)         ``{"id", "answer", "probability"}``
tagging (NER)      ``text`` (or JSON ``words``)               ``{"id", "words", "tags"}``
multiple_choice    ``context``, ``question``, ``endings``...  ``{"id", "choice", "probabilities": [...]}``
=================  =========================================  ==============================================

The rows go through the fine-tuning eval step in fixed-size batches (a tqdm bar counts them), and each
task decodes its own outputs (:meth:`FinetuneTask.decode`), as in fine-tuning's prediction files.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TextIO

import jax
import jax.numpy as jnp

from bert_jax import checkpoint as checkpoint_lib
from bert_jax import finetune, finetune_inputs, finetune_scoring, run_config, sharding
from bert_jax.config import ModelConfig
from bert_jax.interop import hf_convert, hf_files, init_source
from bert_jax.models.layers import unbox
from bert_jax.tasks import Benchmark, FinetuneTask, SplitData, finetune_task
from data_pipelines import tokenizer as tokenizer_lib
from data_pipelines.finetune import features, get_finetune_reader

FORMATS = ("jsonl", "tsv")


@dataclasses.dataclass
class Predictor:
    """A fine-tuned model ready to predict: its task, parameters, tokenizer and the run's settings.

    Attributes:
      task: the fine-tuning task (its ``decode`` turns rows into records).
      benchmark: task name, class names and decoding options of the run.
      params: the restored parameters, on ``mesh``.
      tokenizer: the run's tokenizer.
      reader: the run's ``data_pipelines.finetune`` reader (featurises the inputs).
      max_seq_length: the run's row length.
      featurize_options: the run's ``data.featurize_options``.
      mesh: the (data-parallel) device mesh.
      source: what ``init_from`` named.
    """

    task: FinetuneTask
    benchmark: Benchmark
    params: Any
    tokenizer: tokenizer_lib.Tokenizer
    reader: Any
    max_seq_length: int
    featurize_options: dict[str, Any]
    mesh: jax.sharding.Mesh
    source: str

    def __post_init__(self):
        params_shardings = jax.tree.map(lambda x: x.sharding, self.params)
        self._step = finetune_scoring.jit_predict_step(self.task, params_shardings, self.mesh, sharding.DEFAULT_RULES)

    def featurize(self, examples: list) -> SplitData:
        """The examples' rows, featurised as the run featurised its eval splits."""
        options = type(self.task).featurize_options(self.featurize_options, training=False)
        rows = self.reader.featurize(examples, self.tokenizer, self.max_seq_length, **options)
        return SplitData("input", examples, rows, is_test=True)

    def predict_examples(self, examples: list, *, batch_size: int = 32, progress: bool = True) -> list[dict]:
        """One record per example (see the module docstring), in order."""
        if not examples:
            return []
        split = self.featurize(examples)
        ways = self.mesh.devices.size
        batch_size = max(ways, -(-batch_size // ways) * ways)  # whole batches per device
        batches: Iterable = finetune_inputs.eval_batches(split.features, batch_size)
        if progress:
            from tqdm import tqdm  # pylint: disable=g-import-not-at-top

            batches = tqdm(batches, total=math.ceil(len(split.features) / batch_size), unit="batch",
                           desc="predict", file=sys.stderr, dynamic_ncols=True)
        _, rows = finetune_scoring.run_rows(self._step, self.params, batches, self.mesh, len(split.features))
        return self.task.decode(split, rows, self.benchmark)


def _run_settings(checkpoint_path: str) -> tuple[dict[str, Any], tuple[str, ...] | None]:
    """The run config and class names saved beside a fine-tuning checkpoint ``<run>/checkpoints/<step>``."""
    run_dir = os.path.dirname(os.path.dirname(checkpoint_path))
    saved = run_config.load_saved_config(run_dir)
    if "task" not in saved or "data" not in saved:
        raise ValueError(f"{run_dir}/config.json is not a fine-tuning run's config (no task/data sections)")
    summary_path = os.path.join(run_dir, finetune.SUMMARY_FILE)
    names = None
    if os.path.exists(summary_path):
        with open(summary_path, encoding="utf-8") as f:
            names = json.load(f).get("label_names")
    return saved, None if names is None else tuple(names)


# The reader (featurisation and decoding) predict uses per task kind of a Hugging Face directory.
HF_TASK_READERS = {"classification": "local_text", "regression": "glue/sts-b", "span": "squad/v1.1",
                   "tagging": "conll2003", "multiple_choice": "swag"}
HF_DECODE = {"n_best_size": 20, "max_answer_length": 30, "null_score_diff_threshold": 0.0}  # configs/common.py
DEFAULT_MAX_SEQ_LENGTH = 128


def _hf_settings(path: str, max_seq_length: int | None) -> dict[str, Any]:
    """The settings of an exported (or any fine-tuned) Hugging Face directory, from its ``config.json``."""
    hf_config = hf_files.read_hf_config(path)
    conversion = hf_convert.for_model_type(hf_config)
    kind = hf_convert.hf_task_kind(conversion, hf_config)
    if kind is None:
        raise ValueError(f"{path}/config.json: architectures={hf_config.get('architectures')}; predict needs one of "
                         f"{sorted(set(conversion.task_architectures.values()))}")
    limit = int(hf_config.get("max_position_embeddings", DEFAULT_MAX_SEQ_LENGTH))
    names = hf_convert.hf_label_names(hf_config) if kind in ("classification", "tagging") else None
    if kind in ("classification", "tagging") and not names:
        raise ValueError(f"{path}/config.json: no id2label, so the {kind} head's class names are unknown")
    return {"task_name": HF_TASK_READERS[kind], "kind": kind, "label_names": names, "decode": HF_DECODE,
            "max_seq_length": min(max_seq_length or DEFAULT_MAX_SEQ_LENGTH, limit), "featurize_options": {},
            "pooling": "cls"}


def load_predictor(init_from: str, *, max_seq_length: int | None = None) -> Predictor:
    """Loads a fine-tuned run for prediction (see the module docstring for what ``init_from`` may name).

    Args:
      init_from: a fine-tuned workdir of ours, or a fine-tuned Hugging Face directory.
      max_seq_length: the row length for a Hugging Face directory (default 128, at most its
        ``max_position_embeddings``); a run of ours uses its own (this must then be None or equal).

    Raises:
      FileNotFoundError / ValueError: naming what is missing (checkpoint, run config, the task head).
    """
    source = finetune.resolve_init_source(init_from)
    if source.kind == "scratch":
        raise ValueError("init_from=(empty): predict needs a fine-tuned run of ours (a workdir with "
                         "checkpoints/<step> and config.json) or a fine-tuned Hugging Face directory")
    if source.kind == "hf":
        settings = _hf_settings(source.path, max_seq_length)
        model_config = ModelConfig(**source.model_fields)
    else:
        saved, label_names = _run_settings(source.path)
        settings = {"task_name": saved["task"]["name"], "label_names": label_names, "decode": saved.get("decode"),
                    "max_seq_length": saved["data"]["max_seq_length"], "pooling": saved["task"].get("pooling", "cls"),
                    "featurize_options": dict(saved["data"].get("featurize_options", {}))}
        if max_seq_length not in (None, settings["max_seq_length"]):
            raise ValueError(f"max_seq_length={max_seq_length}: {init_from} was fine-tuned with "
                             f"{settings['max_seq_length']}; leave it unset")
        model_config = ModelConfig(**saved["model"])
    task_name, label_names = settings["task_name"], settings["label_names"]
    try:
        reader = get_finetune_reader(task_name)
    except ValueError:
        raise ValueError(f"{init_from}: its run config's task {task_name!r} is not a fine-tuning task; predict "
                         "needs a fine-tuned run") from None
    if label_names is None and source.kind == "checkpoint":  # runs written before the summary kept them
        label_names = reader.label_names(saved["data"].get("data_dir") or None)
    task_class = finetune_task(reader.kind)
    example = [task_class.input_example(0, "shape", _shape_record(task_class))]
    tokenizer = tokenizer_lib.load_tokenizer(source.tokenizer_spec or {})
    rows = reader.featurize(example, tokenizer, settings["max_seq_length"],
                            **task_class.featurize_options(settings["featurize_options"], training=False))
    task = task_class.for_data(model_config, label_names=label_names, train_features=rows, pooling=settings["pooling"])
    mesh = sharding.make_mesh({"data": -1})
    boxed = jax.eval_shape(task.init_params, jax.random.key(0))
    shardings = sharding.logical_shardings(boxed, mesh, sharding.DEFAULT_RULES)
    template = jax.jit(lambda key: unbox(task.init_params(key)), out_shardings=shardings)(jax.random.key(0))
    if source.kind == "hf":
        params = init_source.hf_importer(model_config.scan_layers, reader.kind, label_names)(source.path, template)
        fresh = [name for name in task.head_names  # a head still at its initialisation: HF had none
                 if all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(params[name]),
                                                                      jax.tree.leaves(template[name])))]
    else:
        directory, step = checkpoint_lib.find_checkpoint_dir(source.path)
        params, fresh = checkpoint_lib.restore_params_only(directory, step, template)
    missing = [name for name in ("bert", *task.head_names) if name in fresh]
    if missing:
        raise ValueError(f"{source.path} has no {', '.join(missing)} parameters: not a fine-tuned {reader.kind} run")
    return Predictor(task, Benchmark(task_name, label_names, settings["decode"]), params, tokenizer, reader,
                     settings["max_seq_length"], settings["featurize_options"], mesh, init_from)


def _shape_record(task_class: type[FinetuneTask]) -> dict[str, Any]:
    """A record with every input field, to size the task (e.g. the candidates of multiple choice)."""
    return {name: ["a", "b", "c", "d"] if name == "endings" else "a" for name in task_class.input_fields}


def _lines(inputs: str | TextIO) -> tuple[Iterator[str], str]:
    if not isinstance(inputs, str):
        return iter(inputs), getattr(inputs, "name", "<input>")
    if inputs == "-":
        return iter(sys.stdin), "<stdin>"
    return iter(io.open(inputs, encoding="utf-8")), inputs


def read_records(inputs: str | TextIO, fields: tuple[str, ...], input_format: str | None = None
                 ) -> list[tuple[str, dict[str, Any]]]:
    """``(where, record)`` per non-blank line of a JSON-lines or TSV input.

    Args:
      inputs: a path, ``'-'`` (stdin), or an open text stream.
      fields: the TSV columns' field names (the last, when it ends in ``s``, takes the rest as a list).
      input_format: ``'jsonl'`` or ``'tsv'``; None: ``.jsonl``/``.json`` files are JSON lines, other
        files TSV, and a stream is JSON lines when its first non-blank line starts with ``{``.

    Raises:
      ValueError: naming ``file:line`` for a line that is not a JSON object, or an unknown format.
    """
    lines, name = _lines(inputs)
    if input_format is None and isinstance(inputs, str) and inputs != "-":
        input_format = "jsonl" if inputs.endswith((".jsonl", ".json")) else "tsv"
    if input_format is not None and input_format not in FORMATS:
        raise ValueError(f"input format {input_format!r}: expected one of {FORMATS}")
    records = []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\n").rstrip("\r")
        if not line.strip():
            continue
        where = f"{name}:{number}"
        if input_format is None:
            input_format = "jsonl" if line.lstrip().startswith("{") else "tsv"
        if input_format == "jsonl":
            record = features.parse_json_object(line, where)
        else:
            columns = line.split("\t")
            if fields[-1].endswith("s") and len(fields) > 1:
                record = dict(zip(fields[:-1], columns))
                record[fields[-1]] = columns[len(fields) - 1:]
            else:
                record = dict(zip(fields, columns))
        records.append((where, record))
    return records


def predict(init_from: str, inputs: str | TextIO | Iterable[Mapping[str, Any]], *, batch_size: int = 32,
            input_format: str | None = None, progress: bool = True, max_seq_length: int | None = None
            ) -> list[dict]:
    """Predicts every input example with a fine-tuned run.

    Args:
      init_from: the fine-tuned run (see the module docstring).
      inputs: a path, ``'-'`` (stdin) or an open text stream of JSON or TSV lines; or records (dicts).
      batch_size: rows per batch (rounded up to a multiple of the device count).
      input_format: ``'jsonl'``, ``'tsv'`` or None (guessed, see :func:`read_records`).
      progress: show a tqdm bar over the batches (on stderr).
      max_seq_length: row length for a Hugging Face ``init_from`` (see :func:`load_predictor`).

    Returns:
      One JSON-ready record per example, in input order (fields per task kind: module docstring).

    Raises:
      ValueError / FileNotFoundError: naming the file, line and field of bad input, or what ``init_from`` lacks.
    """
    predictor = load_predictor(init_from, max_seq_length=max_seq_length)
    task_class = type(predictor.task)
    if isinstance(inputs, (str, io.IOBase)) or hasattr(inputs, "readline"):
        records = read_records(inputs, task_class.input_fields, input_format)
    else:
        records = [(f"<record {i}>", dict(r)) for i, r in enumerate(inputs)]
    examples = [task_class.input_example(i, where, record) for i, (where, record) in enumerate(records)]
    return predictor.predict_examples(examples, batch_size=batch_size, progress=progress)


def write_records(records: Iterable[Mapping[str, Any]], output: str | TextIO = "-") -> None:
    """Writes records as JSON lines to ``output`` (a path, or ``'-'``: stdout)."""
    stream = sys.stdout if output == "-" else output if not isinstance(output, str) else None
    text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    if stream is None:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        stream.write(text)
        stream.flush()
