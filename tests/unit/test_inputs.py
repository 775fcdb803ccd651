"""The one input convention of classify, extract, explain and score (``pipeline.cli._inputs``):
TEXT|FILE, ``--input FILE``, ``--text TEXT``, ``-`` for stdin, and the column options."""

from __future__ import annotations

import gzip
import io
import json
import sys

import pytest
import typer

from pipeline.cli._inputs import ReadOptions, TextInput, classify_argument, looks_like_path, resolve_input
from pipeline.errors import InputError


def resolve(argument=None, input_path=None, text=None) -> TextInput:
    return resolve_input(argument=argument, input_path=input_path, text=text, example="jpipe classify reviews.txt")


@pytest.mark.parametrize(
    "value, expected",
    [
        ("reviews.txt", True),
        ("data/reviews", True),
        ("REVIEWS.CSV", True),
        ("opinions.jsonl.gz", True),
        ("out.parquet", True),
        ("京都の紅葉は最高でした。", False),
        ("ラーメンが美味しい", False),
        ("一行目\nreviews.txt", False),  # several lines: a text
        ("", False),
    ],
)
def test_looks_like_path(value, expected):
    assert looks_like_path(value) is expected


def test_a_positional_text_is_the_text(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve("駅前のラーメン屋はスープが美味しかった。") == TextInput(text="駅前のラーメン屋はスープが美味しかった。")


def test_a_positional_existing_file_is_read_as_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "京都").write_text("京都の寺\n", encoding="utf-8")  # even without an extension
    (tmp_path / "reviews.txt").write_text("a\n", encoding="utf-8")
    assert resolve("京都") == TextInput(path="京都")
    assert resolve("reviews.txt").is_file and resolve(str(tmp_path / "reviews.txt")).path == str(tmp_path / "reviews.txt")


@pytest.mark.parametrize("argument", ["missing.txt", "data/reviews", "reviews.csv.gz"])
def test_a_missing_path_like_argument_is_a_coded_error_not_a_text(tmp_path, monkeypatch, argument):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError) as caught:
        resolve(argument)
    assert caught.value.code == "E205" and "does not exist" in caught.value.message and argument in caught.value.message
    assert "--" not in caught.value.hint  # library-style hint; the command line adds its own tip (CLI_TIPS)


def test_the_cli_tip_of_e205_names_text_and_input():
    from pipeline.cli._app import CLI_TIPS

    assert "--text" in CLI_TIPS["E205"] and "--input" in CLI_TIPS["E205"]


def test_a_directory_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reviews").mkdir()
    with pytest.raises(InputError, match="is a directory"):
        resolve("reviews")


def test_dash_is_stdin_and_input_is_always_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve("-") == TextInput(path="-") == resolve(input_path="-")
    # --input never falls back to a text: a missing file is the reader's E205 when rows are read.
    source = resolve(input_path="京都の寺")
    assert source == TextInput(path="京都の寺")
    with pytest.raises(InputError) as caught:
        list(source.records(ReadOptions()))
    assert caught.value.code == "E205"


def test_text_is_always_a_text_even_when_a_file_of_that_name_exists(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "reviews.txt").write_text("a\n", encoding="utf-8")
    source = resolve(text="reviews.txt")
    assert source == TextInput(text="reviews.txt") and not source.is_file
    (record,) = source.records(ReadOptions())
    assert (record.id, record.text, record.error) == ("1", "reviews.txt", None)


@pytest.mark.parametrize(
    "given, message",
    [
        ({}, "No input given"),
        ({"argument": "a", "text": "b"}, "not TEXT|FILE and --text"),
        ({"input_path": "-", "text": "b"}, "--input and --text"),
    ],
)
def test_none_or_several_inputs_are_a_usage_error(given, message, capsys):
    with pytest.raises(typer.Exit) as caught:
        resolve(**given)
    assert caught.value.exit_code == 2
    assert message in capsys.readouterr().err


def test_a_single_text_gets_the_row_checks(tmp_path):
    (record,) = TextInput(text="   ").records(ReadOptions())
    assert record.error == "whitespace-only text"
    (record,) = TextInput(text="京都" * 6).records(ReadOptions(max_chars=10))
    assert "over-long" in record.error


def test_files_of_every_format_with_the_column_options(tmp_path):
    (tmp_path / "r.txt").write_text("京都の寺\nラーメン\n", encoding="utf-8")
    (tmp_path / "r.csv").write_text("no,review\nA1,京都の寺\nA2,ラーメン\n", encoding="utf-8")
    (tmp_path / "r.tsv").write_text("review\n京都の寺\nラーメン\n", encoding="utf-8")
    with gzip.open(tmp_path / "r.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.write("\n".join(json.dumps({"body": t, "no": n}, ensure_ascii=False) for n, t in (("J1", "京都の寺"), ("J2", "ラーメン"))))

    def rows(name: str, **options) -> list[tuple[str, str]]:
        return [(r.id, r.text) for r in TextInput(path=str(tmp_path / name)).records(ReadOptions(**options))]

    assert rows("r.txt") == [("1", "京都の寺"), ("2", "ラーメン")]
    assert rows("r.csv", text_column="review", id_column="no") == [("A1", "京都の寺"), ("A2", "ラーメン")]
    assert rows("r.tsv", text_field="review") == [("1", "京都の寺"), ("2", "ラーメン")]  # --text-field alone names a column too
    assert rows("r.jsonl.gz", text_field="body", id_column="no") == [("J1", "京都の寺"), ("J2", "ラーメン")]
    assert rows("r.jsonl.gz", text_column="body") == [("1", "京都の寺"), ("2", "ラーメン")]  # as extract/score took it before
    # Each format takes its own option first when both are given.
    assert rows("r.jsonl.gz", text_column="review", text_field="body")[0][1] == "京都の寺"
    assert rows("r.csv", text_column="review", text_field="body")[0][1] == "京都の寺"
    assert rows("r.txt", input_format="csv", text_column="京都の寺") == [("1", "ラーメン")]


def test_stdin_is_read_as_txt_unless_a_format_is_given(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("京都の寺\nラーメン\n".encode())))
    assert [r.text for r in TextInput(path="-").records(ReadOptions())] == ["京都の寺", "ラーメン"]
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO('{"t": "寺"}\n'.encode())))
    assert [r.text for r in TextInput(path="-").records(ReadOptions(input_format="jsonl", text_field="t"))] == ["寺"]


def test_classify_argument_survives_texts_no_file_name_can_hold():
    long_text = "京都の紅葉は最高でした。" * 400  # longer than a file name may be
    assert classify_argument(long_text) == TextInput(text=long_text)
    assert classify_argument("京都\x00寺") == TextInput(text="京都\x00寺")
