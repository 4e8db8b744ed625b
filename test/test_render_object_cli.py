"""``featmap render object`` and ``featmap render gt`` end to end, on data written by the test."""
import json

import numpy as np
import pytest

from featmap_ros.cli import main
from featmap_ros.data import bop


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli") / "toyset"
    assert main(["render", "object", "--toy", "--count", "3", "--out", str(root), "--seed", "2",
                 "--domain", "real-like", "--split", "test", "--scene", "4"]) == 0
    return root


def test_render_object_writes_bop(dataset):
    frames = bop.read_scene(dataset / "test" / "000004", bop.load_models_info(dataset / "models" / "models_info.json"))
    assert len(frames) == 3 and all(f.rgb_path is not None for f in frames)
    assert bop.load_mesh(bop.model_path(dataset, 1)).colors is not None


def test_render_gt_reproduces_the_written_silhouettes(dataset, tmp_path, capsys):
    out = tmp_path / "gt"
    rc = main(["render", "gt", str(dataset), "--split", "test", "--scene", "4", "--out", str(out),
               "--pixel-center", "opencv"])
    assert rc == 0
    sil = json.loads((out / "silhouettes.json").read_text())
    info = json.loads((dataset / "test" / "000004" / "scene_gt_info.json").read_text())
    assert sorted(sil, key=int) == ["0", "1", "2"]
    for k in sil:
        (a,), (b,) = sil[k], info[k]
        assert a["obj_id"] == 1
        assert a["bbox"] == b["bbox_obj"] and a["px_count"] == b["px_count_all"]
    assert sorted(p.name for p in out.glob("overlay_*.png")) == [f"overlay_{i:06d}.png" for i in range(3)]
    assert "bbox IoU min 1.0000" in capsys.readouterr().out
    overlay = bop.load_rgb(out / "overlay_000000.png")
    raw = bop.load_rgb(dataset / "test" / "000004" / "rgb" / "000000.png")
    assert overlay.shape == raw.shape and np.abs(overlay.astype(int) - raw.astype(int)).sum() > 0


def test_render_gt_frames_and_bad_input(dataset, tmp_path, capsys):
    out = tmp_path / "one"
    assert main(["render", "gt", str(dataset), "--split", "test", "--scene", "4", "--frames", "1", "--out", str(out)]) == 0
    assert list(json.loads((out / "silhouettes.json").read_text())) == ["1"]
    assert main(["render", "gt", str(dataset), "--split", "test", "--scene", "4", "--frames", "9", "--out", str(out)]) == 2
    assert "no frames [9]" in capsys.readouterr().err
    assert main(["render", "gt", str(tmp_path / "nothing"), "--scene", "1", "--out", str(out)]) == 2
    assert "models_info.json" in capsys.readouterr().err
    assert main(["render", "object", "--mesh", str(tmp_path / "missing.ply"), "--count", "1", "--out", str(out)]) == 2
    assert "missing.ply" in capsys.readouterr().err


def test_render_object_sequence(tmp_path, capsys):
    root = tmp_path / "seq"
    assert main(["render", "object", "--toy", "--count", "3", "--out", str(root), "--seed", "1", "--domain", "real-like",
                 "--sequence", "--fps", "5", "--split", "test"]) == 0
    assert "sequence (5 fps" in capsys.readouterr().out
    meta = json.loads((root / "sequence.json").read_text())
    assert meta["fps"] == 5.0 and meta["frames"] == 3 and meta["rest_periods"][0][0] == 0
    frames = bop.read_scene(root / "test" / "000001")
    assert len(frames) == 3 and all(f.depth_path is not None for f in frames)
    assert main(["render", "object", "--toy", "--count", "3", "--out", str(root), "--sequence", "--fps", "0"]) == 2
