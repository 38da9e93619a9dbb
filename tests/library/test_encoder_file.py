"""An index keeps its own copy of its encoder file, and the CLI's loose ends (issue 16, item 15).

``--encoder file.pt`` is copied into the index (``INDEX/encoder-<fingerprint>.pt``,
referenced relatively), so moving or deleting the original, or moving the index,
breaks nothing; an older index whose file is gone says how to recover, and ``info``
still works. ``reindex`` to an encoder without a temperature resets it. Unknown
labels in ``search --label`` are an error, ``init`` on an index gives the CLI's way,
and every command's ``--help`` shows two examples.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fewshot.cli import EXAMPLES, cli
from fewshot.fewshot_index import DEFAULT_TEMPERATURE, FewShotIndex
from helpers import drawing, fails_cleanly, perturbed_copy, run, tree_digest


@pytest.fixture()
def png(tmp_path) -> Path:
    p = tmp_path / "q.png"
    drawing(7).save(p)
    return p


def make_index(tmp_path, encoder, png, temperature=None) -> tuple[Path, Path]:
    enc_file = tmp_path / "mine" / "my_encoder.pt"
    enc_file.parent.mkdir()
    encoder.save(enc_file)
    if temperature is not None:  # on a private copy: the fixture's encoder is shared (and cached)
        from fewshot import encoders

        mine = encoders.from_file(enc_file)
        mine.temperature = temperature
        mine.save(enc_file)
    ix = tmp_path / "own"
    r = run("init", ix, "--encoder", enc_file)
    assert r.exit_code == 0, r.stderr
    assert run("add", ix, "--label", "a", png).exit_code == 0
    return ix, enc_file


def test_the_index_keeps_a_copy_of_its_encoder_file(tmp_path, encoder, png):
    ix, enc_file = make_index(tmp_path, encoder, png)
    info = json.loads(run("info", ix, "--json").stdout)
    copies = list(ix.glob("encoder-*.pt"))
    assert len(copies) == 1 and info["encoder_ref"] == copies[0].name  # relative
    assert copies[0].read_bytes() == enc_file.read_bytes()
    shutil.rmtree(enc_file.parent)  # the original is gone
    moved = tmp_path / "moved_index"
    shutil.move(ix, moved)  # and the index moved
    for args in (["info", moved], ["classify", moved, png], ["search", moved, png], ["check", moved]):
        r = run(*args)
        assert r.exit_code == 0, (args, r.stderr)
    r = run("add", moved, "--label", "b", png, "--json")
    assert r.exit_code == 0, r.stderr


def test_a_changed_original_does_not_matter_a_damaged_copy_does(tmp_path, encoder, png):
    ix, enc_file = make_index(tmp_path, encoder, png)
    perturbed_copy(encoder, enc_file)
    assert run("classify", ix, png).exit_code == 0  # the index uses its own copy
    [copy] = ix.glob("encoder-*.pt")
    perturbed_copy(encoder, copy)
    msg = fails_cleanly(ix, "classify", ix, png, match="fingerprint")
    assert "reindex" in msg


def test_a_missing_copy_says_how_to_recover(tmp_path, encoder, png):
    ix, _ = make_index(tmp_path, encoder, png)
    [copy] = ix.glob("encoder-*.pt")
    copy.unlink()
    msg = fails_cleanly(ix, "classify", ix, png, match="is missing")
    assert "fewshot reindex" in msg
    assert run("info", ix).exit_code == 0


def test_an_older_index_whose_encoder_file_moved(tmp_path, encoder, png):
    """Older indexes stored the file's absolute path: info works, the rest says how to recover."""
    ix, enc_file = make_index(tmp_path, encoder, png)
    with FewShotIndex.open(ix, encoder=encoder) as idx:  # what an older fewshot wrote
        idx.store.set_extra(encoder=str(enc_file.resolve()))
    for f in ix.glob("encoder-*.pt"):
        f.unlink()
    new_home = tmp_path / "elsewhere.pt"
    shutil.move(enc_file, new_home)
    assert run("info", ix).exit_code == 0
    msg = fails_cleanly(ix, "classify", ix, png, match="which is gone")
    assert str(enc_file.resolve()) in msg and "fewshot reindex" in msg
    r = run("reindex", ix, "--encoder", new_home, "--json")  # the recovery the message gives
    assert r.exit_code == 0, r.stderr
    new_home.unlink()
    assert run("classify", ix, png).exit_code == 0 and len(list(ix.glob("encoder-*.pt"))) == 1


def test_reindex_resets_the_temperature_and_drops_the_old_copy(tmp_path, encoder, png):
    ix, enc_file = make_index(tmp_path, encoder, png, temperature=0.5)
    assert json.loads(run("info", ix, "--json").stdout)["temperature"] == 0.5
    import torch

    from fewshot import encoders

    other = tmp_path / "other.pt"
    enc = encoders.from_file(enc_file)
    with torch.no_grad():
        next(enc.module.parameters()).mul_(1.01)
    enc.invalidate()
    enc.temperature = None  # another encoder, without a temperature
    enc.save(other)
    assert encoders.from_file(other).temperature is None
    r = run("reindex", ix, "--encoder", other)
    assert r.exit_code == 0, r.stderr
    info = json.loads(run("info", ix, "--json").stdout)
    assert info["temperature"] == DEFAULT_TEMPERATURE
    assert [p.name for p in ix.glob("encoder-*.pt")] == [info["encoder_ref"]]


def test_search_with_an_unknown_label_is_an_error(ix, png):
    msg = fails_cleanly(ix, "search", ix, png, "--label", "nope", match="no class named 'nope'")
    assert "fewshot info" in msg
    r = run("search", ix, png, "--label", "alpha", "--json")
    assert r.exit_code == 0 and {n["label"] for n in json.loads(r.stdout)[0]["neighbors"]} == {"alpha"}


def test_init_on_an_index_gives_the_cli_way(ix):
    before = tree_digest(ix)
    msg = fails_cleanly(ix, "init", ix, match="already holds a fewshot index")
    assert "exist_ok" not in msg and f"fewshot add {ix}" in msg
    assert tree_digest(ix) == before


def test_every_command_help_shows_two_examples():
    for name in cli.commands:
        r = run(name, "--help")
        assert r.exit_code == 0, name
        lines = r.stdout.split("Examples:", 1)[-1].splitlines()
        examples = [ln.strip() for ln in lines if ln.strip().startswith(f"fewshot {name}")]
        assert "Examples:" in r.stdout and len(examples) >= 2, (name, r.stdout[-400:])
    assert set(EXAMPLES) | {"finetune"} >= set(cli.commands)
