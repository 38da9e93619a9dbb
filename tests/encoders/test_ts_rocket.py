"""ts-rocket's maths: MiniRocket kernels and PPV, what each part of a channel's vector keeps, NaN-padded channels."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fewshot.encoders.timeseries import new_ts_encoder
from fewshot.encoders.ts_rocket import N_KERNELS, minirocket_kernels
from fewshot.sequences import SequencePreprocess


def small_encoder(series):
    """A small ts-rocket (2 dilations x 3 biases, 4 slots) with its statistics fitted on ``series``."""
    torch.manual_seed(0)
    enc = new_ts_encoder("t", steps=64, arch="ts-rocket", dilations=[1, 4], quantiles=[0.25, 0.5, 0.75], slots=4)
    enc.module.fit_statistics([enc.preprocess.apply(s) for s in series])
    return enc


def series(n=20, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, 50)[:, None]
    return [(np.sin(2 * np.pi * rng.integers(1, 5) * t + rng.uniform(0, 6, channels)) * rng.uniform(0.5, 3, channels)
             + rng.normal(0, 0.1, (50, channels)) + rng.uniform(-5, 5, channels)).astype(np.float32) for _ in range(n)]


def test_kernels_are_minirocket_s_84():
    k = minirocket_kernels()[:, 0]
    assert k.shape == (N_KERNELS, 9) == (84, 9)
    assert (k.sum(1) == 0).all() and ((k == 2).sum(1) == 3).all()  # three 2s, six -1s: a constant gives 0
    assert len({tuple(r.tolist()) for r in k}) == 84


def test_biases_are_ordered_quantiles_and_ppv_is_a_share():
    data = series()
    enc = small_encoder(data)
    b = enc.module.biases
    assert b.shape == (2, 84, 3) and (b.diff(dim=2) >= 0).all()
    z = torch.randn(5, 64)
    f = enc.module.ppv(z)
    assert f.shape == (5, 2, 84, 3) and f.min() >= 0 and f.max() <= 1
    assert (f.diff(dim=3) <= 0).all()  # a higher bias is passed less often
    # the share of positions above the bias, counted by hand for one kernel, dilation and bias
    c = torch.nn.functional.conv1d(z[:1, None], enc.module.kernels[7:8], padding=16, dilation=4)[0, 0]
    assert f[0, 1, 7, 2] == pytest.approx(float((c > b[1, 7, 2]).float().mean()))


def test_channel_vector_shape_level_and_scale():
    data = series()
    enc = small_encoder(data)
    width = 84 * 2 * 3 + 4
    e = enc.embed(data[:2]).reshape(2, 4, width)
    np.testing.assert_allclose(np.linalg.norm(e[:, :3, :-4], axis=2), 1, rtol=1e-5)  # a unit PPV vector per channel
    assert not e[:, 3].any()  # three channels, four slots
    x = data[0]
    # the whole series shifted and scaled: shape and relative level/scale stay, the absolute ones move
    moved = enc.embed([x * 10 + 100]).reshape(4, width) - e[0]
    np.testing.assert_allclose(moved[:3, :-2], 0, atol=1e-4)
    assert (np.abs(moved[:3, -2:]) > 0.01).all()
    # one channel alone shifted: only its level numbers (relative and absolute) move
    one = x.copy()
    one[:, 1] += 3
    d = enc.embed([one]).reshape(4, width) - e[0]
    np.testing.assert_allclose(d[:, :-4], 0, atol=1e-4)
    assert abs(d[1, -4]) > 0.01 and abs(d[1, -2]) > 0.01
    assert np.isfinite(enc.embed([np.full((30, 3), 7.0, np.float32)])).all()  # a constant series


def test_absent_channels_add_nothing_and_a_series_alone_equals_in_a_batch():
    data = series(6, 2)
    enc = small_encoder(data)
    x = torch.from_numpy(np.stack([enc.preprocess.apply(s) for s in data]))
    padded = torch.cat([x, torch.full((len(x), x.shape[1], 2), float("nan"))], 2)  # a wider problem in the batch
    with torch.no_grad():
        np.testing.assert_allclose(enc.module(padded).numpy(), enc.module(x).numpy(), atol=1e-6)
    np.testing.assert_allclose(enc.embed(data[:1]), enc.embed(data)[:1], atol=1e-6)


def test_raw_preprocess_keeps_the_old_fingerprint_dict():
    std = SequencePreprocess(kind="ts", n_features=0, steps=16)
    assert "standardise" not in std.to_dict()  # ts-gru's file, and its fingerprint, unchanged
    raw = SequencePreprocess(kind="ts", n_features=0, steps=16, standardise=False)
    assert raw.to_dict()["standardise"] is False and SequencePreprocess.from_dict(raw.to_dict()) == raw
    a = np.arange(32, dtype=np.float32).reshape(16, 2) * 5 + 100
    np.testing.assert_allclose(raw.apply(a), a)  # resampled to the same length: unchanged
    assert abs(std.apply(a).mean()) < 1e-5


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="quantiles"):
        new_ts_encoder(arch="ts-rocket", quantiles=[0.5, 1.0])
    with pytest.raises(ValueError, match="dilations"):
        new_ts_encoder(arch="ts-rocket", dilations=[])
