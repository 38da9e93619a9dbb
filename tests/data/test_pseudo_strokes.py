"""Tracing character images into pen trajectories (training data for stroke encoders)."""
from __future__ import annotations

import numpy as np
import pytest

from fewshot.data.pseudo_strokes import image_to_trajectory, load_traced_omniglot, thin, trace, trace_images
from fewshot.sequences import array_to_strokes, render_strokes


def _bar(h: int = 30, w: int = 40, thick: int = 5) -> np.ndarray:
    img = np.zeros((h, w), bool)
    img[12:12 + thick, 5:35] = True
    return img


def test_thin_leaves_a_one_pixel_line_along_a_thick_bar():
    skel = thin(_bar())
    cols = np.flatnonzero(skel.any(0))
    assert skel.any(0)[8:32].all()  # still spans the bar (the ends may shrink by the half-thickness)
    assert (skel.sum(0)[cols] == 1).all()  # one pixel per column
    assert set(np.nonzero(skel)[0]) <= set(range(12, 17))  # inside the bar


def test_thin_batches_like_one_at_a_time():
    rng = np.random.default_rng(0)
    imgs = np.stack([_bar(), _bar(thick=3), rng.random((30, 40)) > 0.4])
    assert np.array_equal(thin(imgs), np.stack([thin(i) for i in imgs]))


def test_trace_draws_an_l_as_one_stroke_from_its_top_end():
    skel = np.zeros((20, 20), bool)
    skel[2:15, 4] = True  # down ...
    skel[14, 4:16] = True  # ... then right
    strokes = trace(skel)
    assert len(strokes) == 1
    s = strokes[0]
    assert len(s) == skel.sum()
    assert tuple(s[0]) == (4.0, -2.0) and tuple(s[-1]) == (15.0, -14.0)  # x = col, y = -row
    assert (np.abs(np.diff(s, axis=0)).max(1) == 1).all()  # one pixel step at a time


def test_trace_joins_a_branch_to_the_ink_already_drawn():
    skel = np.zeros((20, 20), bool)
    skel[5, 2:18] = True  # a bar ...
    skel[6:15, 10] = True  # ... with a stem down from its middle: a T
    strokes = trace(skel)
    assert len(strokes) == 2
    assert {tuple(p) for p in np.concatenate(strokes)} == {(c, -r) for r, c in zip(*np.nonzero(skel))}
    assert tuple(strokes[1][0]) in {tuple(p) for p in strokes[0]}  # the stem starts on the bar


def test_image_to_trajectory_is_a_stroke_array_and_rejects_a_blank_image():
    img = (_bar() * 255).astype(np.uint8)
    a = image_to_trajectory(img)
    assert a.dtype == np.float32 and a.shape[1] == 3 and a[-1, 2] == 1.0
    with pytest.raises(ValueError, match="no ink"):
        image_to_trajectory(np.zeros((10, 10), np.uint8))
    assert trace_images(np.zeros((2, 10, 10), np.uint8))[0].shape == (1, 3)  # blank: one point, no crash


def test_traced_omniglot_redraws_the_characters(omniglot_zip):
    from fewshot.data.omniglot import load_omniglot

    ds = load_traced_omniglot(omniglot_zip, alphabets=["Greek"])
    images = load_omniglot(omniglot_zip, size=105, alphabets=["Greek"])
    assert ds.kind == "sequence" and ds.labels == images.labels and set(ds.groups) == {"Greek"}
    assert all(s.endswith("#traced") for s in ds.sources)
    ious = []
    for i in range(0, len(ds), 40):
        drawn = np.asarray(render_strokes(ds.items[i])) < 128
        ink = images.items[i] >= 128
        ious.append((drawn & ink).sum() / (drawn | ink).sum())
        assert 1 <= len(array_to_strokes(ds.items[i])) <= 12
    assert np.mean(ious) > 0.6, ious  # the rendering of the trace covers the character's ink


def test_trace_drops_a_short_spur_but_keeps_a_dot():
    skel = np.zeros((20, 30), bool)
    skel[5, 2:25] = True  # a bar ...
    skel[6:9, 12] = True  # ... with a 3-pixel spur under it (thinning leaves these at junctions)
    skel[15, 27] = True  # and a dot of its own
    strokes = trace(skel)
    assert len(strokes) == 2
    assert len(strokes[0]) == 23 and strokes[1].tolist() == [[27.0, -15.0]]
