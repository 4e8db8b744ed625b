"""featmap_ros/data/bag.py and ``featmap bag``: bags read back with rosbags, metadata per distro, atomicity."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rosbags")

from rosbags.rosbag2 import Reader

from featmap_ros.data import player
from featmap_ros.cli import main as featmap
from featmap_ros.ros.bag import METADATA_VERSION, BagWriter, write_bag
from featmap_ros.errors import InputError
from featmap_ros.ros import conversions as conv
from featmap_ros.ros.msg_defs import featmap_typestore
from test_player import K_SMALL, make_bop, make_nyu


def read_bag(path, distro="jazzy"):
    """{topic: [(bag time, message)]}, connection msgdefs, metadata.yaml as a dict."""
    store = featmap_typestore(distro)
    out, defs = {}, {}
    with Reader(path) as r:
        for c in r.connections:
            defs[c.topic] = (c.msgtype, c.msgdef.data)
        for c, t, raw in r.messages():
            out.setdefault(c.topic, []).append((t, store.deserialize_cdr(raw, c.msgtype)))
    from ruamel.yaml import YAML  # YAML 1.2 like rosbag2's yaml-cpp ("1:3" is a string, not 63)

    meta = YAML(typ="safe").load((path / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    return out, defs, meta


@pytest.mark.parametrize("storage,distro", [("sqlite3", "jazzy"), ("mcap", "humble"), ("sqlite3", "humble"), ("mcap", "jazzy")])
def test_bop_bag_round_trip(tmp_path, storage, distro):
    root = make_bop(tmp_path / "lm", n=3)
    out = tmp_path / "lm_bag"
    rc = featmap(["bag", "bop", str(root), "--out", str(out), "--storage", storage, "--distro", distro, "--range", "1:3",
                  "--rate", "10", "--no-progress"])
    assert rc == 0
    msgs, defs, meta = read_bag(out, distro)
    assert meta["version"] == METADATA_VERSION[distro] and meta["storage_identifier"] == storage
    qos = [t["topic_metadata"]["offered_qos_profiles"] for t in meta["topics_with_message_count"]]
    if distro == "humble":  # Humble's metadata reader decodes this field as a string
        assert all(isinstance(q, str) for q in qos)
    else:
        assert all(isinstance(q, list) for q in qos)
    assert meta["custom_data"]["featmap_ros.range"] == "1:3"
    src = player.BopSource(root)
    assert sorted(msgs) == sorted(["/tf_static", "/camera/color/image_raw", "/camera/color/camera_info",
                                   "/camera/depth/image_raw", "/camera/depth/camera_info", "/ground_truth/detections"])
    for k, pos in enumerate((1, 2)):
        fr = src.frame(pos)
        stamp = player.DEFAULT_START_NS + k * 100_000_000
        for topic in ("/camera/color/image_raw", "/camera/color/camera_info", "/camera/depth/image_raw", "/ground_truth/detections"):
            t, m = msgs[topic][k]
            assert t == stamp and conv.stamp_to_ns(m.header.stamp) == stamp and m.header.frame_id == player.COLOUR_FRAME
        assert np.array_equal(conv.image_to_rgb(msgs["/camera/color/image_raw"][k][1]), fr.rgb)
        depth = msgs["/camera/depth/image_raw"][k][1]
        assert depth.encoding == "16UC1" and np.array_equal(conv.image_to_numpy(depth), fr.depth_mm)
        assert np.allclose(conv.camera_info_to_model(msgs["/camera/color/camera_info"][k][1]).K, K_SMALL)
        gt = conv.detection3d_array_to_object_poses(msgs["/ground_truth/detections"][k][1])
        assert [g.object_name for g in gt] == ["ape", "eggbox"]
        for g, ref in zip(gt, fr.objects):
            assert np.allclose(g.R_m2c, ref.R_m2c, atol=1e-9) and np.allclose(g.t_m2c_m, ref.t_m2c_m)
            assert np.allclose(g.extents_m, ref.extents_m)
    tf = msgs["/tf_static"][0][1].transforms[0]
    assert (tf.header.frame_id, tf.child_frame_id) == (player.CAMERA_LINK, player.COLOUR_FRAME)
    q = tf.transform.rotation
    assert np.allclose([q.x, q.y, q.z, q.w], player.OPTICAL_FROM_LINK_XYZW)
    # the vision_msgs definition travels in the bag, so readers need no installed package
    typ, text = defs["/ground_truth/detections"]
    assert typ == "vision_msgs/msg/Detection3DArray" and "MSG: vision_msgs/ObjectHypothesisWithPose" in text
    tf_qos = [t for t in meta["topics_with_message_count"] if t["topic_metadata"]["name"] == "/tf_static"][0]
    assert "transient_local" in str(tf_qos).lower() or "durability: 1" in str(tf_qos)


def test_nyu_bag_hand_ground_truth(tmp_path):
    root = make_nyu(tmp_path / "nyu", n=3)
    out = tmp_path / "nyu_bag"
    assert featmap(["bag", "nyu", str(root), "--out", str(out), "--storage", "mcap", "--no-progress"]) == 0
    msgs, defs, meta = read_bag(out)
    assert meta["version"] == 9
    assert sorted(msgs) == sorted(["/tf_static", "/camera/depth/image_raw", "/camera/depth/camera_info", "/ground_truth/hand_pose"])
    src = player.NyuSource(root)
    for k in range(3):
        t, hp = msgs["/ground_truth/hand_pose"][k]
        assert hp.header.frame_id == player.DEPTH_FRAME and t == msgs["/camera/depth/image_raw"][k][0]
        hand = conv.hand_pose_msg_to_result(hp)
        assert hand.joint_names == src.ground_truth(k).joint_names
        assert np.allclose(hand.joints_m, src.ground_truth(k).joints_m)
        assert np.array_equal(conv.image_to_numpy(msgs["/camera/depth/image_raw"][k][1]), src.frame(k).depth_mm)
    assert defs["/ground_truth/hand_pose"][0] == "featmap_ros/msg/HandPose" and "joint_scores" in defs["/ground_truth/hand_pose"][1]


class _Breaks:
    """A source whose third frame fails, as a corrupt file would."""

    def __init__(self, src):
        self.src = src

    def __len__(self):
        return len(self.src)

    def frame(self, i):
        if i == 2:
            raise InputError("frame 2: broken on purpose")
        return self.src.frame(i)


def test_failed_conversion_leaves_nothing_and_keeps_the_old_bag(tmp_path):
    src = player.BopSource(make_bop(tmp_path / "lm", n=4))
    out = tmp_path / "b"
    with pytest.raises(InputError, match="broken on purpose"):
        write_bag(_Breaks(src), range(4), out, progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "lm"]
    write_bag(src, range(2), out, progress=False)
    with pytest.raises(InputError):
        write_bag(_Breaks(src), range(4), out, progress=False)
    msgs, _, meta = read_bag(out)  # the complete old bag is still there
    assert meta["message_count"] == 1 + 2 * 5 and len(msgs["/camera/color/image_raw"]) == 2
    write_bag(src, range(3), out, progress=False)  # a complete new one replaces it
    assert len(read_bag(out)[0]["/camera/color/image_raw"]) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "lm"]


def test_bad_arguments_name_the_option(tmp_path, capsys):
    root = make_bop(tmp_path / "lm", n=2)
    assert featmap(["bag", "bop", str(root), "--out", str(tmp_path / "x"), "--range", "5:9", "--no-progress"]) == 2
    assert "--range" in capsys.readouterr().err
    assert featmap(["bag", "bop", str(root), "--out", str(tmp_path / "x"), "--scene", "1,x", "--no-progress"]) == 2
    assert "--scene" in capsys.readouterr().err
    (tmp_path / "notabag").mkdir()
    (tmp_path / "notabag" / "precious.txt").write_text("keep")
    assert featmap(["bag", "bop", str(root), "--out", str(tmp_path / "notabag"), "--no-progress"]) == 2
    assert "not a rosbag2 bag" in capsys.readouterr().err and (tmp_path / "notabag" / "precious.txt").exists()
    with pytest.raises(InputError, match="--storage"):
        BagWriter(tmp_path / "y", storage="zip")
    with pytest.raises(InputError, match="--distro"):
        BagWriter(tmp_path / "y", distro="iron")
