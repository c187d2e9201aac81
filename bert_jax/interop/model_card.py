"""The model card (``README.md``) of an exported run: what the model is, what it saw, how it scored.

Hugging Face reads the YAML front matter (``library_name``, ``pipeline_tag``, ``tags``); the body
lists the architecture, the training data and steps, the final evaluation metrics of the workdir's
``final_metrics.json`` (pretraining) or ``finetune_summary.json`` (fine-tuning), and how to load it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bert_jax.config import ModelConfig

MODEL_CARD_FILE = "README.md"
# transformers class -> the pipeline() task that runs it (None: no pipeline, e.g. multiple choice).
PIPELINE_TAGS = {
    "BertForPreTraining": "fill-mask",
    "BertForMaskedLM": "fill-mask",
    "BertForSequenceClassification": "text-classification",
    "BertForTokenClassification": "token-classification",
    "BertForQuestionAnswering": "question-answering",
    "BertForMultipleChoice": None,
    "BertModel": "feature-extraction",
}

# The pipeline() tasks transformers 5 still has (it removed "question-answering").
PIPELINES = ("fill-mask", "text-classification", "token-classification", "feature-extraction")


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What the card says about one exported run.

    Attributes:
      source: the ``init_from`` exported.
      kind: ``pretraining`` or the fine-tuning task kind.
      architecture: the transformers class written.
      model_config: the model's hyperparameters.
      run_config: the saved run config (a dict).
      step: the checkpoint step exported.
      summary: the workdir's final summary (``final_metrics.json`` / ``finetune_summary.json``), or None.
      label_names: class names in id order, if any.
    """

    source: str
    kind: str
    architecture: str
    model_config: ModelConfig
    run_config: Mapping[str, Any]
    step: int
    summary: Mapping[str, Any] | None
    label_names: tuple[str, ...] | None = None


def _format(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def _table(rows: Mapping[str, Any]) -> list[str]:
    return ["| metric | value |", "|---|---|", *(f"| {k} | {_format(v)} |" for k, v in sorted(rows.items()))]


def _data_lines(info: RunInfo) -> list[str]:
    data, train = dict(info.run_config.get("data") or {}), dict(info.run_config.get("train") or {})
    if info.kind == "pretraining":
        sources = [", ".join(f"{k}={v}" for k, v in sorted(s.items()) if v not in ("", None))
                   for s in data.get("sources") or []]
        objective = ("replaced-token detection (ELECTRA discriminator, masked-LM generator)"
                     if (info.run_config.get("task") or {}).get("name") == "rtd" else
                     f"masked LM{' + next-sentence prediction' if info.architecture == 'BertForPreTraining' else ''}")
        lines = [f"- Pretraining objective: {objective}",
                 *(f"- Source: {s}" for s in sources)]
        lines.append(f"- Rows of {data.get('max_seq_length')} tokens, {data.get('max_predictions_per_seq')} masked "
                     f"positions, batch size {train.get('batch_size')}")
    else:
        task = dict(info.run_config.get("task") or {})
        files = {k: v for k, v in dict(data.get("files") or {}).items() if v}
        where = ", ".join(f"{k}: {v}" for k, v in sorted(files.items())) or data.get("data_dir") or data.get("source")
        lines = [f"- Fine-tuning task: {task.get('name')} ({info.kind}), data: {where}",
                 f"- Initialised from: {info.run_config.get('init_from') or 'scratch'}"]
        if info.summary and "train_examples" in info.summary:
            lines.append(f"- {info.summary['train_examples']} training examples, batch size {train.get('batch_size')}, "
                         f"max length {data.get('max_seq_length')}")
        if info.label_names:
            lines.append(f"- Labels (id order): {', '.join(info.label_names)}")
    return lines


def _metric_lines(info: RunInfo) -> list[str]:
    summary = info.summary
    if not summary:
        return ["No final summary in the workdir (the run did not finish), so no evaluation metrics."]
    if info.kind == "pretraining":
        rows = dict(summary.get("eval") or {})
        if summary.get("unigram_baseline_mlm_accuracy") is not None:
            rows["unigram_baseline_mlm_accuracy"] = summary["unigram_baseline_mlm_accuracy"]
        return [f"Final evaluation at step {summary.get('step')} (`final_metrics.json`):", "", *_table(rows)]
    rows = {f"{split}/{name}": value for split, metrics in (summary.get("metrics") or {}).items()
            for name, value in metrics.items()}
    rows = rows or dict(summary.get("eval") or {})
    return [f"Final evaluation at step {summary.get('step')} (`finetune_summary.json`):", "", *_table(rows)]


def _usage(architecture: str) -> list[str]:
    tag = PIPELINE_TAGS.get(architecture)
    lines = ["```python", "import transformers", "",
             f'model = transformers.{architecture}.from_pretrained("path/to/this/directory")',
             'tokenizer = transformers.AutoTokenizer.from_pretrained("path/to/this/directory")']
    if tag in PIPELINES:
        lines.append(f'pipe = transformers.pipeline("{tag}", model="path/to/this/directory")')
    return [*lines, "```"]


def model_card(info: RunInfo) -> str:
    """The card's Markdown text (YAML front matter first)."""
    cfg, tag = info.model_config, PIPELINE_TAGS.get(info.architecture)
    front = ["---", "library_name: transformers", *([f"pipeline_tag: {tag}"] if tag else []),
             "tags:", "- bert", "- bert-jax", "---"]
    body = [
        f"# {info.architecture} exported from bert-jax", "",
        f"Exported from `{info.source}` (checkpoint step {info.step}).", "",
        "## Architecture", "",
        f"- `{info.architecture}` ({info.kind}): {cfg.num_layers} layers, hidden size {cfg.hidden_size}, "
        f"{cfg.num_heads} attention heads, intermediate size {cfg.intermediate_size}, activation {cfg.hidden_act}",
        f"- Vocabulary {cfg.vocab_size} tokens, {cfg.max_position_embeddings} positions, "
        f"{cfg.type_vocab_size} token types; weights fp32 (`model.safetensors`)", "",
        "## Training", "",
        *_data_lines(info), f"- Steps: {info.step}", "",
        "## Evaluation", "",
        *_metric_lines(info), "",
        "## Use", "",
        *_usage(info.architecture),
    ]
    return "\n".join(front + body) + "\n"


def write_model_card(out_dir: str | Path, info: RunInfo) -> Path:
    """Writes ``out_dir/README.md``; returns its path."""
    path = Path(out_dir) / MODEL_CARD_FILE
    path.write_text(model_card(info), encoding="utf-8")
    return path
