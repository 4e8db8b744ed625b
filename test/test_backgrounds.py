"""Backgrounds: the photographs that installed packages ship, folders, the procedural fallback."""
import importlib.util
import logging

import cv2
import numpy as np
import pytest

from featmap_ros.data import backgrounds as bg
from featmap_ros.data.backgrounds import (
    PACKAGE_PHOTOS, PACKAGE_PHOTOS_KEY, BackgroundSource, background_files, package_photos, procedural_background,
)
from featmap_ros.errors import InputError

HAS_SKIMAGE = importlib.util.find_spec("skimage") is not None


def test_package_photos_are_installed_files_in_table_order():
    files = package_photos()
    assert files, "matplotlib (a dependency) ships grace_hopper.jpg"
    assert all(p.is_file() for p in files)
    names = [f"{pkg}:{rel}" for pkg, rel in PACKAGE_PHOTOS]
    found = []
    for p in files:
        hits = [n for n in names if n.endswith(p.name)]
        assert len(hits) == 1, p
        found.append(names.index(hits[0]))
    assert found == sorted(found)
    assert any(p.name == "grace_hopper.jpg" for p in files)


@pytest.mark.skipif(not HAS_SKIMAGE, reason="scikit-image not installed")
def test_scikit_image_photos_are_the_wheels_own():
    names = {p.name for p in package_photos()}
    # each of the ten is in the wheel (none fetched with pooch)
    assert {"astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "motorcycle_left.png",
            "camera.png", "coins.png", "brick.png", "grass.png", "gravel.png"} <= names


def test_every_package_photo_decodes_to_colour():
    src = BackgroundSource(PACKAGE_PHOTOS_KEY)
    assert len(src) == len(package_photos())
    for p in src.files:
        img = src._load(p)
        assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8 and min(img.shape[:2]) >= 200, p


def test_missing_packages_and_files_are_skipped():
    table = (("no_such_package_featmap", "a.png"), ("featmap_ros", "no_such_file.png"), ("featmap_ros", "__init__.py"))
    out = package_photos(table)
    assert [p.name for p in out] == ["__init__.py"]
    assert package_photos(()) == []


def test_background_files_values(tmp_path):
    assert background_files(None) == [] and background_files("") == []
    assert background_files(PACKAGE_PHOTOS_KEY) == package_photos()
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert background_files(str(tmp_path)) == [tmp_path / "a.png"]
    with pytest.raises(InputError, match="not found"):
        background_files(str(tmp_path / "missing"))
    # only the string is the key: a Path named photos is a folder (here a missing one)
    with pytest.raises(InputError, match="photos: background folder not found"):
        background_files(tmp_path / "photos")


def test_photo_backgrounds_are_random_crops_reproduced_by_the_seed():
    src = BackgroundSource(PACKAGE_PHOTOS_KEY)
    a = src.sample(np.random.default_rng(1), 48, 32)
    b = src.sample(np.random.default_rng(1), 48, 32)
    c = src.sample(np.random.default_rng(2), 48, 32)
    assert a.shape == (32, 48, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert not np.array_equal(a, procedural_background(np.random.default_rng(1), 48, 32))


def test_no_photos_installed_falls_back_to_procedural_with_one_warning(monkeypatch, caplog):
    monkeypatch.setattr(bg, "PACKAGE_PHOTOS", (("no_such_package_featmap", "a.png"),))
    with caplog.at_level(logging.WARNING, logger="featmap_ros.data.backgrounds"):
        src = BackgroundSource(PACKAGE_PHOTOS_KEY)
        out = src.sample(np.random.default_rng(3), 24, 16)
        src.sample(np.random.default_rng(4), 24, 16)
    assert len(src) == 0
    assert len([r for r in caplog.records if "procedural" in r.getMessage()]) == 1
    assert np.array_equal(out, procedural_background(np.random.default_rng(3), 24, 16))


def test_empty_value_is_procedural_without_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="featmap_ros.data.backgrounds"):
        assert len(BackgroundSource("")) == 0 and len(BackgroundSource(None)) == 0
    assert not caplog.records
