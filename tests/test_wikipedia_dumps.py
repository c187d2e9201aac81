"""Wikipedia dumps: non-English namespaces from siteinfo, unreadable dumps, rebuilt stale datasets."""

import bz2
import os

import pytest

from data_pipelines.sources import fingerprint, get_source
from data_pipelines.sources.wikipedia_dump import DumpFormatError, iter_dump_pages, read_namespaces
from data_pipelines.text import split_sentences

# Real namespace names of each wiki (its siteinfo): Media, Special, main, File, Category.
SITEINFO_NAMESPACES = {
    "bg": {-2: "Медия", -1: "Специални", 6: "Файл", 14: "Категория"},
    "de": {-2: "Medium", -1: "Spezial", 6: "Datei", 14: "Kategorie"},
    "ko": {-2: "미디어", -1: "특수", 6: "파일", 14: "분류"},
}
# (title, wikitext, expected clean text): categories, files (local names and the Bulgarian alias
# "Картинка" that siteinfo does not list) and a paragraph wrapped over several lines. A line that
# held only a file link ends the paragraph (MediaWiki renders a thumbnail as a block).
ARTICLES = {
    "bg": ("Календар",
           "'''Календарът''' е система за организиране на дните\nза социални, религиозни и търговски цели.\n"
           "[[Картинка:Usmivka.png|мини|200px|Усмивка]]\n"
           "Той се основава на движението на [[Слънце]]то и [[Луна]]та.\n\n"
           "[[Файл:Gregorian calendar.svg|мини|Григориански календар]]\n"
           "[[Категория:Календари]]\n[[Категория:Време|Календар]]\n",
           "Календарът е система за организиране на дните за социални, религиозни и търговски цели.\n"
           "Той се основава на движението на Слънцето и Луната."),
    "de": ("Berlin",
           "'''Berlin''' ist die Hauptstadt der Bundesrepublik Deutschland und mit rund 3,7 Millionen\n"
           "Einwohnern die bevölkerungsreichste Stadt des Landes.\n"
           "[[Datei:Brandenburger Tor abends.jpg|mini|Das [[Brandenburger Tor]]]]\n\n"
           "Die Stadt liegt an der [[Spree]] und der [[Havel (Fluss)|Havel]].\n"
           "[[Kategorie:Ort in Berlin]]\n[[Kategorie:Hauptstadt in Europa|Berlin]]\n",
           "Berlin ist die Hauptstadt der Bundesrepublik Deutschland und mit rund 3,7 Millionen "
           "Einwohnern die bevölkerungsreichste Stadt des Landes.\n"
           "Die Stadt liegt an der Spree und der Havel."),
    "ko": ("서울특별시",
           "'''서울특별시'''는 대한민국의 수도이자 최대 도시이다.\n"
           "[[파일:Seoul skyline at night.jpg|섬네일|서울의 야경]]\n"
           "서울은 [[한강]]을 사이에 두고\n강북과 강남으로 나뉜다.\n\n"
           "[[분류:대한민국의 도시]]\n[[분류:아시아의 수도]]\n",
           "서울특별시는 대한민국의 수도이자 최대 도시이다.\n서울은 한강을 사이에 두고 강북과 강남으로 나뉜다."),
}


def _dump_xml(language: str) -> str:
    namespaces = "".join(
        f'      <namespace key="{key}" case="first-letter">{name}</namespace>\n'
        for key, name in sorted({**SITEINFO_NAMESPACES[language], 0: ""}.items())
    ).replace('case="first-letter"></namespace>', 'case="first-letter" />')
    title, wikitext, _ = ARTICLES[language]
    escaped = wikitext.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return (
        f'<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.11/" version="0.11" xml:lang="{language}">\n'
        f"  <siteinfo>\n    <sitename>Wikipedia</sitename>\n    <dbname>{language}wiki</dbname>\n"
        f"    <case>first-letter</case>\n    <namespaces>\n{namespaces}    </namespaces>\n  </siteinfo>\n"
        f"  <page>\n    <title>{title}</title>\n    <ns>0</ns>\n    <id>7</id>\n"
        f"    <revision>\n      <id>70</id>\n      <text bytes=\"{len(wikitext.encode())}\" xml:space=\"preserve\">"
        f"{escaped}</text>\n    </revision>\n  </page>\n"
        f"  <page>\n    <title>{SITEINFO_NAMESPACES[language][14]}:Пример</title>\n    <ns>14</ns>\n    <id>8</id>\n"
        f"    <revision>\n      <id>80</id>\n      <text>Category page text.</text>\n    </revision>\n  </page>\n"
        "</mediawiki>\n"
    )


def _write_bz2(path, text: str) -> str:
    path.write_bytes(bz2.compress(text.encode("utf-8")))
    return str(path)


@pytest.mark.parametrize("language", sorted(ARTICLES))
def test_non_english_dump_drops_its_category_and_file_links(tmp_path, language):
    dump = _write_bz2(tmp_path / f"{language}wiki-latest-pages-articles.xml.bz2", _dump_xml(language))
    assert read_namespaces(dump)[14] == (SITEINFO_NAMESPACES[language][14],)
    spec = {"name": "wikipedia_dump", "dump_path": dump, "data_dir": str(tmp_path / "data"), "prepare": True}
    documents = get_source(spec, split="all")
    assert len(documents) == 1  # the category page (namespace 14) is not an article
    text = documents[0]
    assert text == ARTICLES[language][2]
    for name in SITEINFO_NAMESPACES[language].values():
        assert name not in text
    assert "мини" not in text and "mini" not in text and "섬네일" not in text


def test_a_sentence_wrapped_over_lines_stays_one_sentence(tmp_path):
    dump = _write_bz2(tmp_path / "kowiki-latest-pages-articles.xml.bz2", _dump_xml("ko"))
    text = get_source({"name": "wikipedia_dump", "dump_path": dump, "data_dir": str(tmp_path),
                       "prepare": True}, split="all")[0]
    assert split_sentences(text) == [
        "서울특별시는 대한민국의 수도이자 최대 도시이다.", "서울은 한강을 사이에 두고 강북과 강남으로 나뉜다."]


@pytest.mark.parametrize("name, content, expected", [
    ("enwiki-latest-pages-articles.xml.bz2", os.urandom(4096),
     r": cannot be decompressed \(Invalid data stream\); expected a MediaWiki pages-articles XML dump "
     r"compressed with bzip2"),
    ("truncated.xml.bz2", bz2.compress(_dump_xml("de").encode())[:200],
     r": truncated \(Compressed file ended .*\); expected a MediaWiki"),
    ("empty.xml", b"", r":1: not valid XML \(no element found: line 1, column 0\); expected a MediaWiki"),
    ("garbage.xml", b"<mediawiki>\n<page><title>A</title>\n\x00\x01 not xml <<\n",
     r":3: not valid XML \(not well-formed .*\); expected a MediaWiki"),
    ("feed.xml", b"<rss><channel/></rss>", r": root element is <rss>, not <mediawiki>; expected a MediaWiki"),
], ids=["random-bytes-bz2", "truncated-bz2", "empty-xml", "garbage-xml", "not-mediawiki"])
def test_unreadable_dump_names_the_file_and_what_was_expected(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DumpFormatError, match=rf"^{path}{expected}"):
        list(iter_dump_pages(path))
    with pytest.raises(DumpFormatError, match=rf"^{path}{expected}"):
        get_source({"name": "wikipedia_dump", "dump_path": str(path), "data_dir": str(tmp_path / "data"),
                    "prepare": True}, split="all")


def test_two_dumps_with_the_same_file_name_are_not_confused(tmp_path):
    """Re-downloading ``...-latest-...`` (same name, other content) rebuilds, or stops naming both."""
    name = "dewiki-latest-pages-articles.xml.bz2"
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    first = _write_bz2(tmp_path / "v1" / name, _dump_xml("de"))
    second = _write_bz2(tmp_path / "v2" / name, _dump_xml("ko"))
    spec = {"name": "wikipedia_dump", "data_dir": str(tmp_path / "data")}
    assert get_source({**spec, "dump_path": first, "prepare": True}, split="all")[0] == ARTICLES["de"][2]
    with pytest.raises(fingerprint.StaleDatasetError) as error:
        get_source({**spec, "dump_path": second}, split="all")
    message = str(error.value)
    assert "\n" not in message and f"built from dump {first} (" in message
    assert f"the source spec names dump {second} (" in message and "launch.prepare_data" in message
    assert get_source({**spec, "dump_path": second, "prepare": True}, split="all")[0] == ARTICLES["ko"][2]
    # The same file replaced in place (same path and name, new bytes) is noticed too.
    _write_bz2(tmp_path / "v2" / name, _dump_xml("bg"))
    assert get_source({**spec, "dump_path": second, "prepare": True}, split="all")[0] == ARTICLES["bg"][2]
    # Reading the copied dataset without its dump (only the name is needed) still works.
    os.remove(second)
    assert get_source({**spec, "dump_path": second}, split="all")[0] == ARTICLES["bg"][2]
