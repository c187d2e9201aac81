"""Sentence splitting (``data_pipelines.text.split_sentences``) per language: MB/s of UTF-8 text on one core.

Texts: English = the demo Wikipedia dump excerpt (gensim's test data, markup crudely stripped);
Korean = ``tests/data/korean_prose.txt``; Russian, Greek, Chinese and Japanese = the short paragraphs
below, each repeated to about the size of the Korean file's repeats. Every text is split ``--repeats``
times, the languages interleaved, so all see the same machine load; the best of the repeats counts.
``--baseline=REV`` also times ``split_sentences`` of ``data_pipelines/text.py`` at git revision REV in
the same run (ratios are then load-independent) and reports how many sentences each finds.

Usage::

    python -m bench.bench_sentences
    python -m bench.bench_sentences --baseline=HEAD~1 --repeats=7
"""

from __future__ import annotations

import argparse
import bz2
import html
import os
import re
import subprocess
import sys
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from data_pipelines import text as text_lib  # noqa: E402

OTHER_LANGUAGES = {
    "russian": "Москва является столицей России. Город стоит на реке Москве. В нём живёт более "
               "двенадцати миллионов человек. А. С. Пушкин родился в Москве в 1799 году.\n",
    "greek": "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας. Είναι μία από τις αρχαιότερες πόλεις του κόσμου. "
             "Ο Παρθενώνας βρίσκεται στην Ακρόπολη.\n",
    "chinese": "北京是中华人民共和国的首都。它位于华北平原的北部。北京有三千多年的建城史！你去过长城吗？\n",
    "japanese": "東京は日本の首都です。人口は約千四百万人です。「また来てね。」と彼女は言った。\n",
}


def _english() -> str:
    import gensim

    dump = os.path.join(os.path.dirname(gensim.__file__), "test", "test_data",
                        "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    with bz2.open(dump, "rt", encoding="utf-8") as f:
        raw = f.read()
    texts = [html.unescape(t) for t in re.findall(r"<text[^>]*>(.*?)</text>", raw, flags=re.S)]
    markup = r"<[^>]+>|\{\{[^{}]*\}\}|\[\[(?:[^|\]]*\|)?([^\]]*)\]\]|'{2,}|={2,}"
    return text_lib.normalize_document("\n".join(re.sub(markup, r"\1", t) for t in texts))


def _texts() -> dict[str, str]:
    with open(os.path.join(ROOT, "tests", "data", "korean_prose.txt"), encoding="utf-8") as f:
        korean = f.read()
    size = len(korean.encode("utf-8")) * 20
    texts = {"english": _english(), "korean": korean * 20}
    for name, paragraph in OTHER_LANGUAGES.items():
        texts[name] = paragraph * (size // len(paragraph.encode("utf-8")) + 1)
    return texts


def _baseline_module(rev: str) -> types.ModuleType:
    source = subprocess.run(["git", "show", f"{rev}:data_pipelines/text.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("text_baseline")
    exec(compile(source, f"{rev}:data_pipelines/text.py", "exec"), module.__dict__)  # noqa: S102
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--baseline", default=None, help="git revision whose split_sentences to time as well")
    args = parser.parse_args()
    splitters = {"current": text_lib.split_sentences}
    if args.baseline:
        splitters[args.baseline] = _baseline_module(args.baseline).split_sentences
    texts = _texts()
    best = {(lang, name): float("inf") for lang in texts for name in splitters}
    counts = {}
    for _ in range(args.repeats):
        for lang, text in texts.items():
            for name, split in splitters.items():
                start = time.process_time()
                counts[lang, name] = len(split(text))
                best[lang, name] = min(best[lang, name], time.process_time() - start)
    print(f"{'language':10} {'MB':>6} " + " ".join(f"{name + ' MB/s':>16} {'sentences':>9}" for name in splitters)
          + ("  ratio" if args.baseline else ""))
    for lang, text in texts.items():
        megabytes = len(text.encode("utf-8")) / 1e6
        row = f"{lang:10} {megabytes:6.2f} " + " ".join(
            f"{megabytes / best[lang, name]:16.2f} {counts[lang, name]:9d}" for name in splitters)
        if args.baseline:
            row += f"  {best[lang, args.baseline] / best[lang, 'current']:.2f}"
        print(row)


if __name__ == "__main__":
    main()
