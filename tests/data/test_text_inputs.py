"""Text inputs without a model: every input form, valid and malformed (fewshot.text_inputs)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from fewshot.errors import InputError
from fewshot.text_inputs import (DISPLAY_CHARS, TextItem, read_item_text, read_lines, read_table, shorten,
                                 text_items)


def test_strings_and_lists_are_text_not_paths(tmp_path):
    (tmp_path / "a.txt").write_text("hello")
    items = text_items("a.txt")  # a str is the text itself, even when a file has that name
    assert [it.value for it in items] == ["a.txt"]
    items = text_items(["one", "two"])
    assert [read_item_text(it) for it in items] == ["one", "two"]
    assert all(isinstance(it, TextItem) for it in items)


def test_txt_files_and_folders_are_one_example_each(tmp_path):
    (tmp_path / "a.txt").write_text("first example\nstill the first", encoding="utf-8")
    (tmp_path / "b.txt").write_bytes(b"\xef\xbb\xbfsecond")  # a UTF-8 BOM is allowed
    (tmp_path / "c.png").write_bytes(b"not text")  # other suffixes are ignored in a folder
    items = text_items(tmp_path)
    assert [read_item_text(it) for it in items] == ["first example\nstill the first", "second"]
    assert [read_item_text(it) for it in text_items([tmp_path / "b.txt", "inline"])] == ["second", "inline"]


@pytest.mark.parametrize("bad", ["", "   ", "\n\t"])
def test_empty_text_refused(bad):
    with pytest.raises(InputError, match="empty"):
        text_items([bad])


def test_too_long_text_refused(monkeypatch):
    monkeypatch.setenv("FEWSHOT_MAX_TEXT_CHARS", "10")
    with pytest.raises(InputError, match="FEWSHOT_MAX_TEXT_CHARS"):
        text_items("x" * 11)
    assert text_items("x" * 10)


def test_undecodable_and_empty_files_refused(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9")
    (tmp_path / "blank.txt").write_text("  \n")
    with pytest.raises(InputError, match="not UTF-8"):
        read_item_text(text_items(tmp_path / "bad.txt")[0])
    with pytest.raises(InputError, match="empty"):
        read_item_text(text_items(tmp_path / "blank.txt")[0])
    with pytest.raises(InputError, match="not found"):
        text_items(tmp_path / "missing.txt")


@pytest.mark.parametrize("bad", [3, [b"bytes"], {"a": 1}, [None]])
def test_other_types_refused(bad):
    with pytest.raises(InputError):
        text_items(bad)


def test_display_is_cut():
    long = "word " * 100
    assert len(shorten(long)) == DISPLAY_CHARS and shorten(long).endswith("...")
    assert text_items(long)[0].name == shorten(long)
    assert shorten("a\nb\tc") == "a b c"


def test_read_lines_skips_blank_lines(tmp_path, monkeypatch):
    f = tmp_path / "q.txt"
    f.write_text("first\n\n  \nsecond\n")
    assert [it.value for it in read_lines(str(f))] == ["first", "second"]
    f.write_text("\n\n")
    with pytest.raises(InputError, match="holds no text"):
        read_lines(str(f))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"from stdin\n")))
    assert [it.value for it in read_lines("-")] == ["from stdin"]


def _table(tmp_path: Path, name: str, body: str) -> str:
    p = tmp_path / name
    p.write_text(body, encoding="utf-8")
    return str(p)


def test_tables_csv_tsv_jsonl(tmp_path):
    csv_ = _table(tmp_path, "e.csv", 'text,label\n"hi, there",greet\nbye,leave\n')
    tsv = _table(tmp_path, "e.tsv", "utt\tintent\nhi there\tgreet\n")
    jsonl = _table(tmp_path, "e.jsonl", json.dumps({"text": "hi", "label": "greet"}) + "\n\n")
    assert [(lab, it.value) for lab, it in read_table(csv_)] == [("greet", "hi, there"), ("leave", "bye")]
    assert [(lab, it.value) for lab, it in read_table(tsv, "utt", "intent")] == [("greet", "hi there")]
    assert [(lab, it.value) for lab, it in read_table(jsonl)] == [("greet", "hi")]


@pytest.mark.parametrize("name,body,match", [
    ("e.csv", "utt,label\nhi,greet\n", "no column 'text'"),
    ("e.csv", "text,label\n ,greet\n", "row 1.*empty"),
    ("e.csv", "text,label\nhi,\n", "row 1: empty or missing label"),
    ("e.jsonl", '{"text": 3, "label": "a"}\n', "not a string"),
    ("e.jsonl", "{not json\n", "line 1 is not JSON"),
    ("e.jsonl", "[1, 2]\n", "not a JSON object"),
    ("e.csv", "text,label\n", "holds no examples"),
    ("e.xml", "<a/>", "must be .csv, .tsv or .jsonl"),
])
def test_malformed_tables(tmp_path, name, body, match):
    with pytest.raises(InputError, match=match):
        read_table(_table(tmp_path, name, body))


def test_table_file_size_limit(tmp_path, monkeypatch):
    path = _table(tmp_path, "e.csv", "text,label\nhi,greet\n")
    monkeypatch.setenv("FEWSHOT_MAX_TEXT_FILE_BYTES", "5")
    with pytest.raises(InputError, match="FEWSHOT_MAX_TEXT_FILE_BYTES"):
        read_table(path)
