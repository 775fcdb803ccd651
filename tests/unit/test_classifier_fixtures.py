"""The shared helpers in tests/conftest.py do what the tests rely on: the tiny classifier project, png_size."""

from __future__ import annotations

import json
import struct
import zlib

import pytest

from tests.conftest import SENTIMENT_WORDS, THEME_WORDS, make_rows, png_size, write_tiny_project


def test_fixture_rows_cover_every_label_and_split():
    rows = make_rows()
    assert {r["theme"] for r in rows} == set(THEME_WORDS)
    assert {r["sentiment"] for r in rows} == set(SENTIMENT_WORDS)
    assert {r["split"] for r in rows} == {"train", "dev", "test"}


def test_tiny_project_has_tokens_meta_and_vectors_for_every_word(tmp_path):
    project = write_tiny_project(tmp_path / "p")
    rows = [json.loads(line) for line in (project / "data/tokens/knbc.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 360 and rows == make_rows()
    assert json.loads((project / "data/tokens/meta.json").read_text()) == {"split_mode": "C"}
    header, *lines = (project / "models/vectors/word2vec/vectors.txt").read_text(encoding="utf-8").splitlines()
    words = {line.split(" ")[0] for line in lines}
    assert header == f"{len(words)} 8" and words == {w for r in rows for w in r["norm"]}
    assert not (write_tiny_project(tmp_path / "bare", vectors=False) / "models").exists()


def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def test_png_size_reads_the_header_and_rejects_what_is_not_a_whole_png(tmp_path):
    # A 3 x 2 grey image: one filter byte + 3 pixels per row.
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 3, 2, 8, 0, 0, 0, 0))
    png += chunk(b"IDAT", zlib.compress(b"\x00\x10\x20\x30" * 2)) + chunk(b"IEND", b"")
    (tmp_path / "ok.png").write_bytes(png)
    assert png_size(tmp_path / "ok.png") == (3, 2)
    (tmp_path / "cut.png").write_bytes(png[:-12])
    with pytest.raises(AssertionError, match="truncated"):
        png_size(tmp_path / "cut.png")
    (tmp_path / "fake.png").write_bytes(b"GIF89a" + png[6:])
    with pytest.raises(AssertionError, match="not a PNG"):
        png_size(tmp_path / "fake.png")
