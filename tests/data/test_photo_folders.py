"""Photo datasets as class-per-folder folders or zips (the layout of cifar10_train.zip), from tiny JPEGs."""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from fewshot.data.registry import dataset_kind, load_dataset
from fewshot.errors import InputError
from helpers import jpeg_bytes

CLASSES = ("cat", "ship", "truck")


def make_folder(root: Path, per_class: int = 3, size: int = 32) -> Path:
    for ci, c in enumerate(CLASSES):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            (root / c / f"{i:04d}.jpg").write_bytes(jpeg_bytes(100 * ci + i, size))
    return root


def make_zip(path: Path, prefix: str = "cifar10/train/", per_class: int = 3, extra: dict | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for ci, c in enumerate(CLASSES):
            zf.writestr(f"{prefix}{c}/", b"")
            for i in range(per_class):
                zf.writestr(f"{prefix}{c}/{i:04d}.jpg", jpeg_bytes(100 * ci + i))
        zf.writestr("__MACOSX/._junk.jpg", b"not an image")
        for name, data in (extra or {}).items():
            zf.writestr(name, data)
    return path


def test_a_class_per_folder_zip_loads_as_rgb_photos(tmp_path):
    z = make_zip(tmp_path / "photos.zip")
    assert dataset_kind(z) == "image"
    ds = load_dataset(z, size=32, rgb=True)
    assert ds.kind == "image" and ds.items.shape == (9, 32, 32, 3) and ds.items.dtype == np.uint8
    assert ds.classes == sorted(CLASSES) and ds.labels.count("ship") == 3
    assert ds.sources[0].endswith("photos.zip:cifar10/train/cat/0000.jpg")
    # resized, and the same pixels as the folder it was zipped from
    assert load_dataset(z, size=16, rgb=True).items.shape == (9, 16, 16, 3)
    folder = load_dataset(make_folder(tmp_path / "tree"), size=32, rgb=True)
    np.testing.assert_array_equal(folder.items, ds.items)
    assert folder.labels == ds.labels


def test_a_zip_with_its_class_folders_at_the_top_and_a_one_class_zip(tmp_path):
    ds = load_dataset(make_zip(tmp_path / "flat.zip", prefix=""), size=32, rgb=True)
    assert ds.classes == sorted(CLASSES)
    with zipfile.ZipFile(tmp_path / "one.zip", "w") as zf:
        for i in range(2):
            zf.writestr(f"photos/dog/{i}.jpg", jpeg_bytes(i))
    assert load_dataset(tmp_path / "one.zip", size=32, rgb=True).classes == ["dog"]


def test_photos_load_through_the_encoder_preprocess(tmp_path):
    """cifar-cnn (3 channels) gets RGB; omniglot-conv4 (1 channel) gets ink-high grayscale: the encoder decides."""
    from fewshot.encoders.builtin import cifar_cnn
    from fewshot.train.prepare import load_training_data

    z = make_zip(tmp_path / "photos.zip")
    rgb = load_training_data(str(z), cifar_cnn(weights="none"))
    assert rgb.items.shape == (9, 32, 32, 3)

    class Gray:
        input_kind = "image"

        class preprocess:  # noqa: N801 - the one field load_training_data reads, as on ImagePreprocess
            channels, size, resize_size = 1, 28, 0
    assert load_training_data(str(z), Gray()).items.shape == (9, 28, 28)


@pytest.mark.parametrize("bad, match", [
    (b"\xff\xd8\xff\xe0 truncated jpeg", "cifar10/train/cat/bad.jpg: cannot decode image"),
    (b"", "cifar10/train/cat/bad.jpg: file is empty"),
    (b"plain text, not a photo", "cifar10/train/cat/bad.jpg: not an image file"),
])
def test_a_corrupt_photo_in_a_zip_is_one_clear_error(tmp_path, bad, match):
    z = make_zip(tmp_path / "photos.zip", extra={"cifar10/train/cat/bad.jpg": bad})
    with pytest.raises(InputError, match=match):
        load_dataset(z, size=32, rgb=True)


def test_a_corrupt_photo_in_a_folder_is_one_clear_error(tmp_path):
    root = make_folder(tmp_path / "tree")
    (root / "ship" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 nope")
    with pytest.raises(InputError, match="broken.jpg: cannot decode image"):
        load_dataset(root, size=32, rgb=True)


def test_empty_folders_and_zips_are_clear_errors(tmp_path):
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(InputError, match="holds no images"):
        load_dataset(tmp_path / "empty", rgb=True)
    with zipfile.ZipFile(tmp_path / "empty.zip", "w") as zf:
        zf.writestr("cifar10/train/cat/", b"")
        zf.writestr("cifar10/train/readme.txt", b"no photos here")
    with pytest.raises(InputError, match="holds no images"):
        load_dataset(tmp_path / "empty.zip", rgb=True)


def test_photos_outside_class_folders_and_broken_zips_are_refused(tmp_path):
    z = make_zip(tmp_path / "loose.zip", prefix="train/", extra={"train/stray.jpg": jpeg_bytes(7)})
    with pytest.raises(InputError, match="stray.jpg sits directly in train"):
        load_dataset(z, rgb=True)
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(InputError, match="not a readable zip file"):
        load_dataset(tmp_path / "broken.zip", rgb=True)
    (tmp_path / "photo.jpg").write_bytes(jpeg_bytes(1))
    with pytest.raises(InputError, match="must be a zip"):
        load_dataset(tmp_path / "photo.jpg", rgb=True)


def test_an_oversized_zip_entry_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    monkeypatch.setenv("FEWSHOT_MAX_IMAGE_BYTES", "100")
    with pytest.raises(InputError, match="limit"):
        load_dataset(make_zip(tmp_path / "photos.zip"), rgb=True)


def test_an_omniglot_style_zip_of_pngs_is_still_omniglot(tmp_path):
    from fewshot.data.registry import zip_layout

    with zipfile.ZipFile(tmp_path / "images_background.zip", "w") as zf:
        for a in ("Greek", "Latin"):
            for ch in ("character01", "character02"):
                zf.writestr(f"images_background/{a}/{ch}/1.png", b"")
    assert zip_layout(tmp_path / "images_background.zip") == "omniglot"
    assert zip_layout(make_zip(tmp_path / "photos.zip")) == "folders"


def test_the_cli_evaluates_a_photo_zip(tmp_path):
    """`fewshot evaluate --data ZIP` reads the zip as the encoder sees photos (a random cifar-cnn: fast)."""
    import json

    from helpers import run

    z = make_zip(tmp_path / "photos.zip", per_class=4)
    r = run("evaluate", "--data", z, "--encoder", "cifar-cnn", "--weights", "none", "--ways", "3", "--shots", "1",
            "--queries", "2", "--episodes", "5", "--json")
    assert r.exit_code == 0, r.output + r.stderr
    d = json.loads(r.stdout)
    assert 0 <= d["accuracy"] <= 1 and d["protocol"]["ways"] == 3
    r = run("evaluate", "--data", tmp_path / "nothing.zip", "--encoder", "cifar-cnn", "--weights", "none")
    assert r.exit_code != 0 and r.stderr.startswith("error: ")
