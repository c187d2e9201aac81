"""Sentence embeddings and nearest-neighbour search (faiss) over a file of sentences.

    python -m launch.embed --init_from=DIR --input=sentences.txt --output=embeddings.npy [--pooling=max]
    python -m launch.embed --init_from=DIR --input=sentences.txt --query="a charming, funny film" --k=5 \
        [--index=hnsw --index_params=m=32,ef_search=64] [--save_index=FILE] (later: --load_index=FILE)
"""

from __future__ import annotations

import numpy as np
from absl import flags

from bert_jax import entry, inference, pooling

_INIT_FROM = flags.DEFINE_string("init_from", None, "Model directory (Hugging Face or a workdir).", required=True)
_INPUT = flags.DEFINE_string("input", None, "Sentences: .txt one a line, .tsv, .jsonl (or --load_index).")
_ENCODING = flags.DEFINE_string("encoding", "utf-8", "Text encoding of --input (gensim's polarity file: cp1252).")
_OUTPUT = flags.DEFINE_string("output", None, "Where to save the embeddings (.npy).")
_NORMALIZE = flags.DEFINE_boolean("normalize", False, "L2-normalise the embeddings (saved and indexed).")
_POOLING = flags.DEFINE_enum("pooling", "mean", pooling.POOLINGS, "Sentence vector (a loaded index keeps its own).")
_QUERY = flags.DEFINE_multi_string("query", [], "Sentence to search for (repeat the flag for more).")
_K = flags.DEFINE_integer("k", 5, "Neighbours per query.")
_INDEX = flags.DEFINE_enum("index", "flat", inference.INDEXES, "flat (exact), hnsw or ivf (approximate).")
_METRIC = flags.DEFINE_enum("metric", "cosine", inference.METRICS, "Similarity of the search.")
_INDEX_PARAMS = flags.DEFINE_string("index_params", "", "e.g. m=32,ef_search=64 (hnsw), nlist=16,nprobe=4 (ivf).")
_SAVE_INDEX = flags.DEFINE_string("save_index", None, "Write the index here (and its sentences to FILE.json).")
_LOAD_INDEX = flags.DEFINE_string("load_index", None, "Search an index saved with --save_index (no --input).")
flags.mark_flags_as_mutual_exclusive(["input", "load_index"], required=True)


@entry.main()
def main(argv):
    entry.no_arguments(argv)
    model = inference.load_model(_INIT_FROM.value)  # a bad directory or file: one line, exit 2
    index = inference.NearestNeighbours.load(_LOAD_INDEX.value) if _LOAD_INDEX.value else None
    if index is None:
        sentences = inference.read_sentences(_INPUT.value, _ENCODING.value)
        vectors = inference.embed(model, sentences, pooling=_POOLING.value, normalize=_NORMALIZE.value)
        if _OUTPUT.value:
            np.save(_OUTPUT.value, vectors)
            print(f"saved {vectors.shape[0]} embeddings of size {vectors.shape[1]} to {_OUTPUT.value}")
        if _QUERY.value or _SAVE_INDEX.value:
            index = inference.NearestNeighbours(vectors, sentences, index=_INDEX.value, metric=_METRIC.value,
                                                info={"pooling": _POOLING.value, "normalize": _NORMALIZE.value},
                                                **inference.parse_index_params(_INDEX_PARAMS.value))
    if _SAVE_INDEX.value:
        index.save(_SAVE_INDEX.value)  # Its sentences, pooling and normalize go to FILE.json.
    if _QUERY.value:
        queries = inference.embed(model, _QUERY.value, **index.info)  # embedded as the corpus was
        for query, scores, indices in zip(_QUERY.value, *index.search(queries, _K.value)):
            print(query + "".join(f"\n  {s:.4f}  [{i}] {index.texts[i]}" for s, i in zip(scores, indices) if i >= 0))


if __name__ == "__main__":
    main.run()
