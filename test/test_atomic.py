"""featmap_ros.atomic: a file is either complete at its path or absent."""
import json

import pytest

from featmap_ros import atomic


def test_write_json_and_text(tmp_path):
    p = tmp_path / "sub" / "r.json"
    atomic.write_json(p, {"a": 1})
    assert json.loads(p.read_text()) == {"a": 1}
    atomic.write_text(p, "x")
    assert p.read_text() == "x"
    assert [q.name for q in p.parent.iterdir()] == ["r.json"]  # no temporary left


def test_exception_mid_write_leaves_no_file(tmp_path):
    p = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic.atomic_path(p) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("interrupted")
    assert not p.exists()
    assert list(tmp_path.iterdir()) == []


def test_exception_keeps_previous_version(tmp_path):
    p = tmp_path / "out.json"
    atomic.write_json(p, {"v": 1})
    with pytest.raises(ValueError):
        with atomic.atomic_path(p) as tmp:
            tmp.write_text("{broken")
            raise ValueError("boom")
    assert json.loads(p.read_text()) == {"v": 1}
    assert [q.name for q in tmp_path.iterdir()] == ["out.json"]


def test_atomic_dir(tmp_path):
    d = tmp_path / "ds"
    with atomic.atomic_dir(d) as tmp:
        (tmp / "a.txt").write_text("1")
    assert (d / "a.txt").read_text() == "1"
    with pytest.raises(KeyError):
        with atomic.atomic_dir(d) as tmp:
            (tmp / "b.txt").write_text("2")
            raise KeyError("stop")
    assert sorted(q.name for q in d.iterdir()) == ["a.txt"]  # old version intact
    assert [q.name for q in tmp_path.iterdir()] == ["ds"]
    with atomic.atomic_dir(d) as tmp:
        (tmp / "c.txt").write_text("3")
    assert sorted(q.name for q in d.iterdir()) == ["c.txt"]  # replaced whole


def test_suffix_is_kept_for_format_inference(tmp_path):
    with atomic.atomic_path(tmp_path / "plot.png", suffix=".png") as tmp:
        assert tmp.name.endswith(".png")
        tmp.write_bytes(b"\x89PNG")
    assert (tmp_path / "plot.png").exists()


def test_written_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    from featmap_ros import atomic as A

    mask = os.umask(0o022)
    try:
        A.write_text(tmp_path / "r.txt", "x")
        with A.atomic_dir(tmp_path / "d") as d:
            (d / "f").write_text("y")
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "r.txt").stat().st_mode) == 0o644
    assert stat.S_IMODE((tmp_path / "d").stat().st_mode) == 0o755
