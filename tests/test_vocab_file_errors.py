"""A vocabulary file that is not text (an image given by mistake) is refused naming the file."""

import struct
import zlib

import pytest

from data_pipelines.tokenizer import load_tokenizer


def _png(path) -> str:
    """Writes a real 1x1 grey PNG image (signature, IHDR, IDAT, IEND chunks)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    image = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
             + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))
    path.write_bytes(image)
    return str(path)


@pytest.mark.parametrize("name, expected", [("vocab.txt", "a vocab.txt"), ("tokenizer.json", "a tokenizer.json")])
def test_png_as_vocab_file_names_the_file_and_what_was_expected(tmp_path, name, expected):
    path = _png(tmp_path / name)
    with pytest.raises(ValueError, match=rf"^{path}:1: byte 0 \(0x89\) is not UTF-8 \(a PNG image\); expected {expected}"):
        load_tokenizer({"kind": "wordpiece", "vocab_file": path})


def test_latin1_byte_in_vocab_names_its_line(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ncaf".encode() + b"\xe9\n")
    with pytest.raises(ValueError, match=rf"^{path}:6: byte 34 \(0xe9\) is not UTF-8; expected a vocab.txt"):
        load_tokenizer({"kind": "wordpiece", "vocab_file": str(path)})
