"""The time-series recipe: its augmentations, and smoke training runs of ts-gru and ts-rocket on tiny synthetic
series (two problems, 1 and 3 channels)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fewshot.data.timeseries import series_set
from fewshot.encoders.registry import from_file
from fewshot.train.series_augment import SeriesAugment
from fewshot.train.timeseries import pool_sets, train_ts_encoder, ts_config


def toy_problem(name: str, channels: int, n_classes: int, per_class: int, seed: int):
    """Sines of a class-specific frequency per channel, random phase, length and noise."""
    rng = np.random.default_rng(seed)
    series, labels = [], []
    for c in range(n_classes):
        for _ in range(per_class):
            t = np.linspace(0, 1, int(rng.integers(30, 60)))[:, None]
            freq = (c + 1) * np.arange(1, channels + 1)[None, :]
            series.append(np.sin(2 * np.pi * freq * t + rng.uniform(0, 6)) + rng.normal(0, 0.1, (len(t), channels)))
            labels.append(f"{name}/{c}")
    return series_set(series, labels, [name] * len(series))


def test_augment_keeps_channels_is_seeded_and_keeps_one_channel():
    a = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    aug = SeriesAugment(channel_dropout=1.0)
    out = aug(a, np.random.default_rng(1))
    assert out.shape[1] == 4 and 2 <= len(out) <= 50 and out.dtype == np.float32
    np.testing.assert_array_equal(out, aug(a, np.random.default_rng(1)))
    assert (out.std(0) > 1e-6).sum() == 1  # every channel but one dropped (made constant)
    warped = SeriesAugment(slice_range=(1.0, 1.0)).time_warp(np.arange(20.0)[:, None], np.random.default_rng(2))
    assert warped[0, 0] == 0 and warped[-1, 0] == pytest.approx(19) and (np.diff(warped[:, 0]) > 0).all()


def test_smoke_training_mixed_channel_counts(tmp_path):
    torch.set_num_threads(1)
    data = pool_sets([toy_problem("uni", 1, 3, 5, 0), toy_problem("tri", 3, 3, 5, 1)])
    cfg = ts_config(steps=4, seed=0, threads=1, ways=4)
    enc, summary = train_ts_encoder(data, tmp_path / "run", cfg, conv=8, hidden=8, channel_dim=8, slots=4)
    assert summary["step"] == 4 and (tmp_path / "run" / "last.pt").exists()
    log = (tmp_path / "run" / "log.jsonl").read_text().splitlines()
    assert np.isfinite(__import__("json").loads(log[-1])["loss"])
    emb = enc.embed(data.subset(range(15)).items)  # the univariate problem
    assert emb.shape == (15, 40) and np.isfinite(emb).all()
    # saved and reloaded (weights_only): same vectors; a series alone = in a batch
    path = enc.save(tmp_path / "ts.pt")
    again = from_file(path)
    x = data.items[20:24]
    np.testing.assert_allclose(again.embed(x), enc.embed(x), atol=1e-5)
    np.testing.assert_allclose(enc.embed([x[0]]), enc.embed(x)[:1], atol=1e-5)


def test_smoke_training_ts_rocket_learns_its_metric_only(tmp_path):
    torch.set_num_threads(1)
    data = pool_sets([toy_problem("uni", 1, 3, 5, 0), toy_problem("tri", 3, 3, 5, 1)])
    cfg = ts_config(steps=4, seed=0, threads=1, arch="ts-rocket")  # 2-way episodes within one problem
    enc, summary = train_ts_encoder(data, tmp_path / "run", cfg, arch="ts-rocket", name="ts-rocket", steps=32,
                                    dilations=[1, 2], quantiles=[0.3, 0.7], slots=4)
    assert summary["step"] == 4 and (cfg.ways, cfg.within_group_fraction) == (2, 1.0)
    m = enc.module
    assert m.biases.abs().sum() > 0 and m.abs_scale.min() > 0  # fitted before training, without labels
    assert not torch.allclose(m.log_group, torch.zeros_like(m.log_group))  # the metric moved
    assert sum(p.numel() for p in m.parameters()) == 2 * 2 + 84 + 2 + 2  # nothing else is learnt
    emb = enc.embed(data.subset(range(15)).items)
    assert emb.shape == (15, 4 * (84 * 2 * 2 + 4)) and np.isfinite(emb).all()
    again = from_file(enc.save(tmp_path / "ts.pt"))  # the biases and spread travel in the file
    np.testing.assert_allclose(again.embed(data.items[20:24]), enc.embed(data.items[20:24]), atol=1e-6)
    assert again.preprocess.standardise is False


def test_channels_fill_their_slots_and_keep_level_and_scale():
    from fewshot.encoders.timeseries import new_ts_encoder

    torch.manual_seed(0)
    enc = new_ts_encoder(conv=8, hidden=8, channel_dim=8, slots=4)
    x = np.random.default_rng(0).normal(size=(2, 40, 3)).astype(np.float32)
    e = enc.embed(list(x)).reshape(2, 4, 10)
    np.testing.assert_allclose(np.linalg.norm(e[:, :3, :8], axis=2), 1, rtol=1e-4)  # a unit shape vector per channel
    assert not e[:, 3].any()  # the fourth slot: no channel
    shifted = x[0].copy()
    shifted[:, 1] += 3  # one channel's level changes relative to the others: only its level entry moves
    d = enc.embed([shifted]).reshape(4, 10) - enc.embed([x[0]]).reshape(4, 10)
    assert abs(d[1, 8]) > 0.1
    np.testing.assert_allclose(d[:, :8], 0, atol=1e-4)
    with pytest.raises(Exception, match="channel"):
        enc.embed([x[0], x[1][:, :2]])


def test_hold_out_problems_keeps_whole_problems_apart():
    from fewshot.train.timeseries import hold_out_problems

    data = pool_sets([toy_problem(f"p{i}", 1, 2, 6, i) for i in range(6)])
    train, val = hold_out_problems(data, 3, seed=0)
    assert len(set(val.groups)) == 3 and not set(val.groups) & set(train.groups)
    assert len(train) + len(val) == len(data)
    assert set(hold_out_problems(data, 3, seed=0)[1].groups) == set(val.groups)  # seeded
    assert hold_out_problems(data, 5, seed=0)[1] is None  # fewer than k + 2 problems: no hold-out
    assert hold_out_problems(data, 0, seed=0) == (data, None)


def test_ts_rocket_keeps_the_weights_best_on_held_out_problems(tmp_path):
    torch.set_num_threads(1)
    data = pool_sets([toy_problem(f"p{i}", 1 + i % 2, 2, 6, i) for i in range(5)])
    cfg = ts_config(steps=4, seed=0, threads=1, arch="ts-rocket", val_problems=3)
    cfg.val_every, cfg.val_episodes = 2, 20
    enc, summary = train_ts_encoder(data, tmp_path / "run", cfg, arch="ts-rocket", name="ts-rocket", steps=32,
                                    dilations=[1], quantiles=[0.5], slots=2)
    assert len(summary["validation_problems"]) == 3 and np.isfinite(summary["val_acc_start"])
    assert summary["best_val_acc"] >= summary["val_acc_start"]
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=True)
    torch.testing.assert_close(enc.module.state_dict()["log_group"], best["log_group"])
