"""The shipped time-series encoders (ts-rocket, ts-gru): load from package data (weights_only), embed series
of any channel count, back an index."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fewshot import encoders
from fewshot.errors import InputError


@pytest.fixture(scope="module", params=["ts-rocket", "ts-gru"])
def ts_encoder(request):
    torch.set_num_threads(1)
    return encoders.load(request.param)


def test_loads_weights_only_and_matches_its_spec(ts_encoder):
    from fewshot.encoders.weights import load_weights_file, packaged_path

    payload = load_weights_file(packaged_path(ts_encoder.name.replace("-", "_") + ".pt"))  # torch.load(weights_only=True)
    assert payload["config"]["arch"] == ts_encoder.name and payload["config"]["preprocess"]["kind"] == "ts"
    spec = {s.name: s for s in encoders.available()}[ts_encoder.name]
    assert ts_encoder.dim == spec.dim and ts_encoder.input_kind == "sequence"
    assert ts_encoder.fingerprint == encoders.load(ts_encoder.name).fingerprint


def test_embeds_any_channel_count_and_length(ts_encoder):
    rng = np.random.default_rng(0)
    uni = [rng.normal(size=(n, 1)).astype(np.float32) for n in (24, 100, 1460)]
    multi = [rng.normal(size=(n, 12)).astype(np.float32) for n in (7, 29)]
    for batch in (uni, multi):
        e = ts_encoder.embed(batch)
        assert e.shape == (len(batch), ts_encoder.dim) and np.isfinite(e).all()
        np.testing.assert_allclose(ts_encoder.embed(batch[:1]), e[:1], atol=1e-5)  # alone = in a batch
    with pytest.raises(InputError, match="channel"):
        ts_encoder.embed([uni[0], multi[0]])


def test_an_index_classifies_with_it(tmp_path, ts_encoder):
    from fewshot import FewShotIndex

    t = np.linspace(0, 1, 80)[:, None]
    sine, saw = np.sin(2 * np.pi * 3 * t), (3 * t) % 1.0
    rng = np.random.default_rng(1)
    noisy = lambda x: (x + rng.normal(0, 0.05, x.shape)).astype(np.float32)  # noqa: E731
    with FewShotIndex.create(tmp_path / "idx", encoder=ts_encoder) as idx:
        idx.add_many([("sine", noisy(sine)), ("saw", noisy(saw))])
        preds = idx.classify([noisy(sine), noisy(saw)])
    assert [p.label for p in preds] == ["sine", "saw"]
