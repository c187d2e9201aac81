"""Wikitext cleaning, document normalisation and sentence splitting (data_pipelines/text.py)."""

import os
import time

import pytest

from data_pipelines.sources import demo_dump_path, get_source
from data_pipelines.sources.wikipedia_dump import iter_dump_pages
from data_pipelines.text import clean_wikitext, dropped_link_namespaces, normalize_document, split_sentences

# Markup in the style of the public dumps (shapes taken from the demo excerpt's articles).
ARTICLE_WIKITEXT = """{{Redirect|Anarchist|the fictional character|Anarchist (comics)}}
{{Use British English|date=January 2014}}
{{Anarchism sidebar}}
'''Anarchism''' is a [[political philosophy]] that advocates [[self-governance|self-governed]] \
societies based on voluntary institutions.<ref>{{cite book |last=Malatesta |title=Towards Anarchy}}</ref> \
These are often described as [[stateless society|stateless societies]],<ref name="iaf-ifa"/> although \
several authors have defined them more specifically.<!-- see talk page -->
[[File:Paris Commune Hotel de Ville.jpg|thumb|The [[Paris Commune]] in 1871]]

== Etymology and terminology ==
{{Main article|Anarchism (word)}}
The term ''anarchism'' derives from the Greek {{lang|grc|ἀναρχία}}, ''anarchia'', meaning \
"without rulers".<ref>Oxford English Dictionary</ref> It was first used in 1539&nbsp;AD by \
[http://example.org/history historians] (see http://example.org).
* Mutualism
* Collectivism
# Numbered item
; Term : definition
{| class="wikitable"
|-
! Year !! Event
|-
| 1871 || Paris Commune
|}
The summit is {{convert|5|km|mi}} high and H<sub>2</sub>O is <b>water</b>.
__NOTOC__

== See also ==
The works of [[Pierre-Joseph Proudhon]].
=== Lists ===
More apparatus.

== Legacy ==
Anarchism ({{IPAc-en|ˈ|æ|n|ər|k|ɪ|z|əm}}; from Greek) influenced [[:Category:Movements|movements]].
[[Category:Anarchism| ]]
[[de:Anarchismus]]
"""

EXPECTED_CLEAN = (
    "Anarchism is a political philosophy that advocates self-governed societies based on voluntary "
    "institutions. These are often described as stateless societies, although several authors have "
    "defined them more specifically.\n"
    "The term anarchism derives from the Greek ἀναρχία, anarchia, meaning \"without rulers\". It was "
    "first used in 1539 AD by historians (see).\n"
    "The summit is 5 km high and H2O is water.\n"
    "Anarchism (from Greek) influenced movements."
)


def test_clean_wikitext_keeps_prose_and_drops_markup():
    assert clean_wikitext(ARTICLE_WIKITEXT) == EXPECTED_CLEAN


def test_clean_wikitext_of_an_article_without_prose_is_empty():
    assert clean_wikitext("{{Infobox person|name=X}}\n* only\n* a list\n[[Category:People]]\n") == ""


def test_clean_wikitext_drops_lines_with_unbalanced_markup():
    # An unclosed template swallows nothing; the rest of the line is not trusted.
    cleaned = clean_wikitext("Good sentence here.\nBroken {{cite web|title=x and more text.\nLast line.")
    assert cleaned == "Good sentence here. Last line."  # one paragraph: its lines are joined
    cleaned = clean_wikitext("Good sentence here.\n\nBroken {{cite web|title=x and more text.\n\nLast line.")
    assert cleaned == "Good sentence here.\nLast line."


def test_lines_of_one_paragraph_are_joined_as_mediawiki_renders_them():
    wikitext = ("'''Alan Turing''' was an English [[mathematician]] and computer scientist who\n"
                "formalised the concepts of [[algorithm]] and computation.\nHe was born in London.\n\n"
                "In 1936 he described the\n[[Turing machine]].\n== Legacy ==\nHis work\nlives on.\n"
                "* a list item\nAfter the list.")
    cleaned = clean_wikitext(wikitext)
    assert cleaned.split("\n") == [
        "Alan Turing was an English mathematician and computer scientist who formalised the concepts "
        "of algorithm and computation. He was born in London.",
        "In 1936 he described the Turing machine.",
        "His work lives on.",
        "After the list.",
    ]
    assert split_sentences(cleaned)[:2] == [
        "Alan Turing was an English mathematician and computer scientist who formalised the concepts "
        "of algorithm and computation.",
        "He was born in London.",
    ]


def test_local_namespace_names_drop_their_links():
    namespaces = {6: ("Datei", "File"), 14: ("Kategorie", "Category"), 4: ("Wikipedia",)}
    drop = dropped_link_namespaces(namespaces)
    assert {"datei", "kategorie", "file", "image", "media", "category"} <= drop and "wikipedia" not in drop
    wikitext = "Berlin liegt an der [[Spree]].\n[[Kategorie:Ort in Berlin]]\n[[Wikipedia:Hilfe|Hilfe]] gibt es."
    # The line that held only the category link is left blank: it ends the paragraph.
    assert clean_wikitext(wikitext, dropped_namespaces=drop) == "Berlin liegt an der Spree.\nHilfe gibt es."
    assert "Kategorie:Ort in Berlin" in clean_wikitext(wikitext)  # English names only: the local one leaks


def test_regex_prestrip_gives_the_same_text_as_the_parser_alone():
    articles = [page.wikitext for page in iter_dump_pages(demo_dump_path())
                if page.namespace == 0 and not page.is_redirect]
    sample = articles[10:25]  # real articles full of <ref>s, comments and nested templates
    assert sum("<ref" in text and "{{" in text for text in sample) >= 10
    for wikitext in sample:
        assert clean_wikitext(wikitext) == clean_wikitext(wikitext, prestrip=False)


def test_normalize_document():
    assert normalize_document("  One \t two  \r\n\n\n  three\u00a0four \n   \n") == "One two\nthree four"
    assert normalize_document(" \n\t\n") == ""


# Real sentences from the demo dump's articles (Anarchism, Abraham Lincoln, Alabama, Autism, ...).
REAL_SENTENCES = [
    'Unlike Pierre-Joseph Proudhon, he argued that, "it is not the product of his or her labour that '
    'the worker has a right to, but to the satisfaction of his or her needs, whatever may be their '
    'nature."',
    "In 1844 in Germany the post-hegelian philosopher Max Stirner published the book, The Ego and Its "
    "Own, which would later be considered an influential early text of individualist anarchism.",
    "In response, the federalist sections formed their own International at the St. Imier Congress, "
    "adopting a revolutionary anarchist program.",
    "They found that new forests in tropical and midlatitude areas tended to cool; new forests in high "
    "latitudes (e.g. Siberia) were neutral or perhaps warming.",
    "Globally, autism is estimated to affect 21.7 million people as of 2013.",
    "Finally, Lincoln's Treasury Secretary, Salmon P. Chase, was nominated as Chief Justice, and "
    "appointed the same day, on December 6, 1864.",
    "Property taxes are the lowest in the U.S.",
    "The current state constitution requires a voter referendum to raise property taxes.",
    "The value has risen to the point where the U.S. Internal Revenue Service issued a statement "
    "regarding the gifts and their taxable status.",
    "Dr. Samuel Jutzi, director of FAO's animal production and health division, states that lobbying "
    "by large corporations has stopped reforms that would improve human health and the environment.",
    "He thought that \"Education is the tendency of one man to make another just like himself...",
    "Education is culture under restraint, culture is free.",
    "See Summa Theologica, Part I, Question 3, etc.",
    "These thinkers blended Aristotelian philosophy with Christianity, bringing the thought of Ancient "
    "Greece into the Middle Ages.",
    "Mechanical typewriters followed the standard set by the Remington No. 2 (1878), the first "
    "typewriter with a shift key.",
    "Is this the end?",
    "It is!",
]


def test_split_sentences_on_real_sentences():
    paragraph = " ".join(REAL_SENTENCES[:9])
    document = paragraph + "\n" + " ".join(REAL_SENTENCES[9:])
    assert split_sentences(document) == REAL_SENTENCES


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Pi is about 3.14 and e is 2.718. Both are irrational.",
         ["Pi is about 3.14 and e is 2.718.", "Both are irrational."]),
        ("He waited... and waited.", ["He waited... and waited."]),
        ("He waited\u2026 Then he left.", ["He waited\u2026", "Then he left."]),
        ("J. R. R. Tolkien wrote it (i.e. The Hobbit). Fans agree.",
         ["J. R. R. Tolkien wrote it (i.e. The Hobbit).", "Fans agree."]),
        ("She said 'Stop!' They stopped.", ["She said 'Stop!'", "They stopped."]),
        ("A line without a stop\nNext line.", ["A line without a stop", "Next line."]),
        ("", []),
        ("  \n \n", []),
        # Other scripts: a sentence starts with an upper-case letter of any cased script or any letter
        # of a script without case; full-width CJK stops need no space after them.
        ("Это первое предложение. Это второе.", ["Это первое предложение.", "Это второе."]),
        ("А. С. Пушкин родился в Москве. он поэт.", ["А. С. Пушкин родился в Москве. он поэт."]),
        ("Αυτή είναι η πρώτη πρόταση. Αυτή είναι η δεύτερη.",
         ["Αυτή είναι η πρώτη πρόταση.", "Αυτή είναι η δεύτερη."]),
        ("BERT는 언어 모델이다. 인코더만 쌓는다! 문맥을 볼까? 본다.",
         ["BERT는 언어 모델이다.", "인코더만 쌓는다!", "문맥을 볼까?", "본다."]),
        ("이것은 꿈. 저것은 별. 그렇다.", ["이것은 꿈.", "저것은 별.", "그렇다."]),  # one syllable is no initial
        ("\"좋다.\"라고 말했다. 3. 다음", ["\"좋다.\"라고 말했다.", "3.", "다음"]),
        ("今天天气很好。我们去公园吧！你去吗？", ["今天天气很好。", "我们去公园吧！", "你去吗？"]),
        ("東京は日本の首都です。 「また来てね。」と彼女は言った。",
         ["東京は日本の首都です。", "「また来てね。」", "と彼女は言った。"]),
        ("यह पहला वाक्य है। यह दूसरा है।", ["यह पहला वाक्य है।", "यह दूसरा है।"]),
        ("Ils sont partis. Éric est resté.", ["Ils sont partis.", "Éric est resté."]),
    ],
)
def test_split_sentences_rules(text, expected):
    assert split_sentences(text) == expected


def test_split_sentences_is_fast_on_the_demo_corpus(sample_corpus):
    documents = get_source(sample_corpus.spec, split="all")
    text = "\n".join(documents[i] for i in range(len(documents)))
    start = time.perf_counter()
    sentences = split_sentences(text)
    seconds = time.perf_counter() - start
    megabytes = len(text.encode("utf-8")) / 1e6
    # ~8 MB/s on one idle core; a loose floor that still catches a pathological regex.
    assert megabytes / seconds > 0.5, f"{megabytes / seconds:.2f} MB/s"
    assert len(sentences) > 10 * len(documents)
    # Inside a line, no split follows a title abbreviation or an initial ("Dr. Samuel", "P. Chase").
    for line in text.split("\n"):
        for sentence in split_sentences(line)[:-1]:
            last_word = sentence.rsplit(" ", 1)[-1]
            assert last_word not in {"Dr.", "Mr.", "Mrs.", "St.", "e.g.", "i.e.", "Prof."}, sentence
            assert not (len(last_word) == 2 and last_word[0].isupper() and last_word[1] == "."), sentence


def test_split_sentences_splits_korean_paragraphs():
    """Every line of the Korean fixture is a paragraph of three sentences (the last three name foreign
    sentences inline, which split too)."""
    with open(os.path.join(os.path.dirname(__file__), "data", "korean_prose.txt"), encoding="utf-8") as f:
        paragraphs = f.read().splitlines()
    counts = [len(split_sentences(p)) for p in paragraphs]
    assert len(paragraphs) > 100 and sum(c == 3 for c in counts) >= len(paragraphs) - 3, counts
    assert all(s.endswith((".", "!", "?", "\u3002")) for p in paragraphs for s in split_sentences(p))
