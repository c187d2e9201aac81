"""Pretraining sources: the Wikipedia dump builder on the real demo excerpt, books, TFDS, synthetic."""

import bz2
import json
import os
import pickle
import subprocess
import sys
import tracemalloc
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest

from data_pipelines.sources import HeldOutSplit, demo_dump_path, get_source, heldout_mask
from data_pipelines.sources import books as books_module
from data_pipelines.sources import fingerprint, wikipedia_dump
from data_pipelines.text import split_sentences

MARKUP = ("{{", "}}", "[[", "]]", "<ref", "</ref", "{|", "|}", "__NOTOC__")


def _all_documents(source) -> list[str]:
    return [source[i] for i in range(len(source))]


def _independent_page_counts(dump_path: str) -> dict[str, int]:
    """Counts pages by loading the whole XML tree (no streaming, no code under test)."""
    root = ElementTree.parse(bz2.open(dump_path)).getroot()
    namespace = root.tag[: root.tag.index("}") + 1]
    counts = {"pages_seen": 0, "redirects": 0, "other_namespaces": 0, "articles": 0}
    for page in root.iter(f"{namespace}page"):
        counts["pages_seen"] += 1
        if page.findtext(f"{namespace}ns") != "0":
            counts["other_namespaces"] += 1
        elif page.find(f"{namespace}redirect") is not None:
            counts["redirects"] += 1
        else:
            counts["articles"] += 1
    return counts


# --- the Wikipedia dump builder on the real demo excerpt -------------------------------------


def test_demo_corpus_article_count_matches_the_raw_xml(sample_corpus):
    expected = _independent_page_counts(sample_corpus.dump_path)
    assert expected["pages_seen"] == 206
    summary = wikipedia_dump.builder_for(sample_corpus.spec).info.metadata["summary"]
    assert summary["pages_seen"] == expected["pages_seen"]
    assert summary["redirects"] == expected["redirects"]
    assert summary["other_namespaces"] == expected["other_namespaces"]
    assert summary["kept"] + summary["empty"] == expected["articles"]
    assert len(get_source(sample_corpus.spec, split="all")) == summary["kept"]


def test_demo_corpus_documents_are_clean_titled_prose(sample_corpus):
    documents = get_source(sample_corpus.spec, split="all")
    titles, ids = {}, set()
    for index in range(len(documents)):
        record = documents.record(index)
        text = documents[index]
        title = record["title"].decode("utf-8")
        assert title and text.strip() == text and "\n\n" not in text, title
        for marker in MARKUP:
            assert marker not in text, f"{marker!r} left in {title!r}"
        titles[title] = text
        ids.add(int(record["id"]))
    assert len(ids) == len(documents)
    assert {"Anarchism", "Abraham Lincoln", "Alabama", "Autism"} <= set(titles)
    assert titles["Anarchism"].startswith("Anarchism is a political philosophy")
    # Lists and apparatus sections are gone; prose paragraphs remain.
    assert all(not line.startswith(("*", "#")) for line in titles["Alabama"].split("\n"))
    assert len(split_sentences(titles["Abraham Lincoln"])) > 100


def test_train_and_eval_are_disjoint_complete_and_stable(sample_corpus):
    all_documents = get_source(sample_corpus.spec, split="all")
    train = get_source(sample_corpus.spec, split="train")
    held_out = get_source(sample_corpus.spec, split="eval")
    assert isinstance(train, HeldOutSplit) and train.name == "wikipedia_dump"
    assert not set(train.indices) & set(held_out.indices)
    assert sorted([*train.indices, *held_out.indices]) == list(range(len(all_documents)))
    assert sorted(_all_documents(train) + _all_documents(held_out)) == sorted(_all_documents(all_documents))
    # Stable: a pickled copy (as a Grain worker gets it) and a fresh open hold out the same articles.
    copy = pickle.loads(pickle.dumps(held_out))
    assert _all_documents(copy) == _all_documents(get_source(sample_corpus.spec, split="eval"))


def test_heldout_mask_is_a_fixed_function_of_the_index():
    mask = heldout_mask(200_000, 0.1)
    assert abs(mask.mean() - 0.1) < 0.005
    np.testing.assert_array_equal(mask[:50_000], heldout_mask(50_000, 0.1))  # prefix-stable
    assert not heldout_mask(1000, 0.0).any()
    # Golden values: changing the salt or the mix would silently move documents between splits.
    assert np.flatnonzero(mask[:100]).tolist() == [4, 12, 28, 37, 40, 51, 56, 63, 86, 92, 93]


def test_tfds_source_reads_the_built_dump_dataset(sample_corpus):
    config = wikipedia_dump.config_name_for_dump(sample_corpus.dump_path)
    spec = {"name": "tfds", "dataset": f"wikipedia_dump/{config}", "data_dir": sample_corpus.data_dir}
    via_tfds = get_source(spec, split="all")
    assert _all_documents(via_tfds) == _all_documents(get_source(sample_corpus.spec, split="all"))
    with pytest.raises(ValueError, match=r"no feature 'body'.*\['id', 'text', 'title'\]"):
        get_source({**spec, "text_field": "body"})
    with pytest.raises(FileNotFoundError, match="tfds build no_such_dataset_xyz --file_format=array_record"):
        get_source({"name": "tfds", "dataset": "no_such_dataset_xyz", "data_dir": sample_corpus.data_dir})


def test_unprepared_dump_error_names_the_command(tmp_path):
    spec = {"name": "wikipedia_dump", "dump_path": "/dumps/enwiki-20240601-pages-articles.xml.bz2",
            "data_dir": str(tmp_path)}
    command = (f"python -m launch.prepare_data --source=wikipedia_dump "
               f"--dump_path=/dumps/enwiki-20240601-pages-articles.xml.bz2 --data_dir={tmp_path}")
    with pytest.raises(FileNotFoundError) as error:
        get_source(spec)
    assert command in str(error.value) and "'prepare': True" in str(error.value)
    with pytest.raises(FileNotFoundError, match="Wikipedia dump .*enwiki-20240601.* not found"):
        get_source({**spec, "prepare": True})


def _write_dump(path, num_pages: int) -> None:
    with open(path, "w", encoding="utf-8") as stream:
        stream.write('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/">\n')
        for i in range(num_pages):
            stream.write(
                f"<page><title>T{i}</title><ns>0</ns><id>{i + 1}</id><revision><id>{i}</id>"
                f"<text>Page {i} is about [[things]]. {'word ' * 60}</text></revision></page>\n"
            )
        stream.write("</mediawiki>\n")


def test_dump_parsing_memory_does_not_grow_with_the_dump(tmp_path):
    peaks = {}
    for num_pages in (1_000, 5_000):
        path = tmp_path / f"dump_{num_pages}.xml"
        _write_dump(path, num_pages)
        tracemalloc.start()
        seen = sum(1 for _ in wikipedia_dump.iter_dump_pages(path))
        peaks[num_pages] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert seen == num_pages
    # Retained elements would make the 5x dump's peak several times larger.
    assert peaks[5_000] < 1.5 * peaks[1_000], peaks


def test_cleaning_in_worker_processes_matches_inline(tmp_path):
    path = tmp_path / "small.xml.bz2"
    with bz2.open(demo_dump_path(), "rt", encoding="utf-8") as source:
        head = source.read(400_000)  # the first pages of the real dump
    head = head[: head.rindex("</page>") + len("</page>")] + "\n</mediawiki>\n"
    with bz2.open(path, "wt", encoding="utf-8") as target:
        target.write(head)
    inline, pooled = wikipedia_dump.DumpSummary(), wikipedia_dump.DumpSummary()
    expected = [(p.page_id, text) for p, text in wikipedia_dump.cleaned_articles(path, inline, 1)]
    got = [(p.page_id, text) for p, text in wikipedia_dump.cleaned_articles(path, pooled, 2)]
    assert got == expected and len(expected) >= 2 and pooled == inline


# --- books -----------------------------------------------------------------------------------


@pytest.fixture
def messy_books(tmp_path):
    """A folder with good books and every kind of bad input the builder must count."""
    folder = tmp_path / "messy_books"
    (folder / "series").mkdir(parents=True)
    (folder / "alpha.txt").write_text("Chapter One.\n\nIt was a bright cold day.\n  The clocks struck.  \n")
    (folder / "latin1.txt").write_bytes("Caf\u00e9 society.\n".encode("latin-1") + b"A valid line.\n")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "blank.txt").write_text("  \n\t\n\n")
    (folder / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    with open(folder / "huge_line.txt", "wb") as stream:
        stream.write(b"Intro line.\n")
        stream.write(b"x" * (50 * 1024 * 1024))
        stream.write(b"\nOutro line.\n")
    (folder / "series" / "beta.txt").write_text("Book two begins.\nIt ends.\n")
    (folder / "notes.md").write_text("# not a book\n")
    return folder


def test_books_bad_input_is_counted_exactly(messy_books, tmp_path):
    spec = {"name": "books", "books_dir": str(messy_books), "data_dir": str(tmp_path / "data"),
            "prepare": True}
    documents = get_source(spec, split="all")
    summary = books_module.builder_for(spec).info.metadata["summary"]
    assert summary == {
        "txt_files": 7, "other_files": 1, "binary_files": 1, "binary_lines": 0,
        "invalid_utf8_lines": 1, "overlong_lines": 1, "empty_documents": 2, "kept": 4,
    }
    by_title = {documents.record(i)["title"].decode(): documents[i] for i in range(len(documents))}
    assert by_title == {
        "alpha.txt": "Chapter One.\nIt was a bright cold day.\nThe clocks struck.",
        "latin1.txt": "Caf\ufffd society.\nA valid line.",
        "huge_line.txt": "Intro line.\nOutro line.",
        "series/beta.txt": "Book two begins.\nIt ends.",
    }


def test_books_bert_format_splits_documents_at_blank_lines(tmp_path):
    folder = tmp_path / "bert_books"
    folder.mkdir()
    first_document = [f"Sentence number {n}." for n in range(600)]  # > 8 KiB: not sniffed as binary
    (folder / "part1.txt").write_bytes(
        "\n".join(first_document).encode() + b"\n\nOther doc.\n\n\nThird doc a.\nBad \x00 line.\nThird doc b.\n"
    )
    (folder / "part2.txt").write_bytes(b"\n\n")
    spec = {"name": "books", "books_dir": str(folder), "format": "bert",
            "data_dir": str(tmp_path / "data"), "prepare": True}
    documents = get_source(spec, split="all")
    by_id = {documents.record(i)["id"].decode(): documents[i] for i in range(len(documents))}
    assert by_id == {
        "part1.txt#0": "\n".join(first_document),
        "part1.txt#1": "Other doc.",
        "part1.txt#2": "Third doc a.\nThird doc b.",
    }
    summary = books_module.builder_for(spec).info.metadata["summary"]
    assert (summary["binary_lines"], summary["empty_documents"], summary["kept"]) == (1, 1, 3)


def test_books_folder_without_any_document_is_an_error(tmp_path):
    folder = tmp_path / "only_bad"
    folder.mkdir()
    (folder / "blank.txt").write_text(" \n")
    (folder / "image.txt").write_bytes(b"GIF89a\x00\x01")
    spec = {"name": "books", "books_dir": str(folder), "data_dir": str(tmp_path / "d"), "prepare": True}
    with pytest.raises(ValueError, match="no documents .*only_bad.*binary_files=1.*empty_documents=1"):
        get_source(spec)


def test_books_folders_with_the_same_name_or_new_files_are_not_confused(tmp_path):
    """The dataset is named after the folder; its fingerprint tells v1/corpus from v2/corpus."""
    v1, v2 = tmp_path / "v1" / "corpus", tmp_path / "v2" / "corpus"
    v1.mkdir(parents=True)
    v2.mkdir(parents=True)
    (v1 / "a.txt").write_text("The first edition of the book.\n")
    (v2 / "a.txt").write_text("A completely different second corpus.\n")
    spec = {"name": "books", "data_dir": str(tmp_path / "data")}
    first = get_source({**spec, "books_dir": str(v1), "prepare": True}, split="all")
    assert _all_documents(first) == ["The first edition of the book."]
    with pytest.raises(fingerprint.StaleDatasetError) as error:
        get_source({**spec, "books_dir": str(v2)}, split="all")
    message = str(error.value)
    assert "\n" not in message and f"built from books folder {v1} (1 .txt file, 31 bytes" in message
    assert f"the source spec names books folder {v2} (1 .txt file, 38 bytes" in message
    assert f"--books_dir={v2}" in message and "'prepare': True" in message
    second = get_source({**spec, "books_dir": str(v2), "prepare": True}, split="all")
    assert _all_documents(second) == ["A completely different second corpus."]
    (v2 / "b.txt").write_text("A book added later.\n")  # same folder, one file more
    with pytest.raises(fingerprint.StaleDatasetError, match=r"\(1 .txt file, .* names books folder .*\(2 .txt files"):
        get_source({**spec, "books_dir": str(v2)}, split="all")
    third = get_source({**spec, "books_dir": str(v2), "prepare": True}, split="all")
    assert sorted(_all_documents(third)) == ["A book added later.", "A completely different second corpus."]
    assert len(get_source({**spec, "books_dir": str(v2)}, split="all")) == 2  # unchanged: reused
    # A different format of the same folder is another dataset (its own config name), not stale.
    assert len(get_source({**spec, "books_dir": str(v2), "format": "bert", "prepare": True}, split="all")) == 2


def test_sample_corpus_is_built_once_and_reused(sample_corpus):
    builder = wikipedia_dump.builder_for(sample_corpus.spec)
    info_file = builder.data_path / "dataset_info.json"
    before = os.stat(info_file).st_mtime_ns
    stored = builder.info.metadata[fingerprint.METADATA_KEY]
    assert stored == builder.source_fingerprint() and stored["source"].startswith(f"dump {os.path.realpath(sample_corpus.dump_path)} (")
    get_source({**sample_corpus.spec, "prepare": True}, split="all")  # matching fingerprint: no rebuild
    assert os.stat(info_file).st_mtime_ns == before


def test_books_missing_folder_and_unprepared_errors(tmp_path):
    spec = {"name": "books", "books_dir": str(tmp_path / "nowhere"), "data_dir": str(tmp_path / "d")}
    with pytest.raises(FileNotFoundError) as error:
        get_source(spec)
    assert (f"python -m launch.prepare_data --source=books --books_dir={tmp_path / 'nowhere'} "
            f"--books_format=book_per_file --data_dir={tmp_path / 'd'}") in str(error.value)
    with pytest.raises(FileNotFoundError, match="nowhere' is not a folder; expected a folder of .txt"):
        get_source({**spec, "prepare": True})


def test_bounded_lines_never_returns_an_overlong_line(tmp_path):
    path = tmp_path / "lines.bin"
    path.write_bytes(b"short\n" + b"y" * 25 + b"\n" + b"z" * 10 + b"\nlast")
    with open(path, "rb") as stream:
        assert list(books_module.bounded_lines(stream, 10)) == [b"short", None, b"z" * 10, b"last"]


# --- synthetic and the dispatch --------------------------------------------------------------


def test_synthetic_documents_are_deterministic_and_split_into_their_sentences():
    spec = {"name": "synthetic", "num_documents": 300, "seed": 3}
    first, again = get_source(spec, split="all"), get_source(spec, split="all")
    other_seed = get_source({**spec, "seed": 4}, split="all")
    assert len(first) == 300 and _all_documents(first) == _all_documents(again)
    assert first[7] != other_seed[7]
    assert pickle.loads(pickle.dumps(first))[299] == first[299]
    for index in range(50):
        document = first[index]
        enders = document.count(".") + document.count("?")
        assert 2 <= len(split_sentences(document)) == enders <= 16
    train, held_out = get_source(spec, "train"), get_source(spec, "eval")
    assert len(train) + len(held_out) == 300 and 0 < len(held_out) < 30


def test_get_source_rejects_bad_specs():
    with pytest.raises(ValueError, match="'name' must be one of"):
        get_source({"name": "wikipedia"})
    with pytest.raises(ValueError, match=r"unknown field\(s\) \['dump'\]"):
        get_source({"name": "wikipedia_dump", "dump": "x.xml"})
    with pytest.raises(ValueError, match="split must be one of"):
        get_source({"name": "synthetic"}, split="validation")
    with pytest.raises(ValueError, match="'eval' split of source 'synthetic' is empty"):
        get_source({"name": "synthetic", "num_documents": 5, "eval_fraction": 0.0}, split="eval")


def test_prepare_data_entry_point_reuses_a_prepared_corpus(sample_corpus):
    result = subprocess.run(
        [sys.executable, "-m", "launch.prepare_data", f"--data_dir={sample_corpus.data_dir}"],
        capture_output=True, text=True, check=True, timeout=300,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    spec = json.loads(result.stdout.strip().splitlines()[-1])
    assert spec == {"name": "wikipedia_dump", "data_dir": sample_corpus.data_dir,
                    "dump_path": sample_corpus.dump_path}
