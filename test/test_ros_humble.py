"""Humble compatibility without a Humble install: ``featmap bag --distro humble`` metadata read
the way Humble's rosbag2 reads it (a Python rendering of ros2/rosbag2 ``humble``:
rosbag2_storage/src/rosbag2_storage/metadata_io.cpp ``convert<BagMetadata>::decode`` and
rosbag2_transport/src/rosbag2_transport/qos.cpp ``convert<Rosbag2QoS>::decode``), and the code's
Python stays within 3.10 (test_min_python.py runs vermin over the package)."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

pytest.importorskip("rosbags")

from featmap_ros.ros import conversions as conv  # noqa: E402
from featmap_ros.ros.bag import BagWriter  # noqa: E402


def _int(node, key):
    v = node[key]
    assert isinstance(v, int) and not isinstance(v, bool), f"{key}: {v!r} is not an integer"
    return v


def _str(node, key):
    v = node[key]
    assert isinstance(v, str), f"{key}: {v!r} is not a string (yaml-cpp as<std::string> fails on a sequence/map)"
    return v


def humble_decode_qos(node):
    """qos.cpp (humble) convert<Rosbag2QoS>::decode: every key read with as<...>()."""
    for key in ("history", "reliability", "durability", "liveliness", "depth"):
        _int(node, key)
    for key in ("deadline", "lifespan", "liveliness_lease_duration"):
        _int(node[key], "sec"), _int(node[key], "nsec")
    assert isinstance(node["avoid_ros_namespace_conventions"], bool)


def humble_decode_metadata(doc):
    """metadata_io.cpp (humble) convert<BagMetadata>::decode, field by field (unknown keys ignored)."""
    m = doc["rosbag2_bagfile_information"]
    version = _int(m, "version")
    _str(m, "storage_identifier")
    _int(m["duration"], "nanoseconds")
    _int(m["starting_time"], "nanoseconds_since_epoch")
    _int(m, "message_count")
    for t in m["topics_with_message_count"]:
        tm = t["topic_metadata"]
        for key in ("name", "type", "serialization_format"):
            _str(tm, key)
        if version >= 4:
            # rosbag2_transport then parses this string as a YAML sequence of QoS profiles
            for profile in yaml.safe_load(_str(tm, "offered_qos_profiles")):
                humble_decode_qos(profile)
        _int(t, "message_count")
    assert all(isinstance(p, str) for p in m["relative_file_paths"])
    if version >= 3:
        _str(m, "compression_format"), _str(m, "compression_mode")
    if version >= 5:
        for f in m["files"]:
            _str(f, "path"), _int(f["starting_time"], "nanoseconds_since_epoch")
            _int(f["duration"], "nanoseconds"), _int(f, "message_count")
    return m


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
def test_humble_bag_metadata_decodes_as_humble_reads_it(tmp_path, storage):
    out = tmp_path / "bag"
    with BagWriter(out, storage=storage, distro="humble") as w:
        msgs = conv.RosbagsMessages(w.typestore)
        for k in range(3):
            h = conv.make_header(msgs, 1_000_000_000 + k * 100_000_000, "camera_color_optical_frame")
            w.write("/camera/color/image_raw", conv.numpy_to_image(msgs, np.zeros((4, 6, 3), np.uint8), "rgb8", h), 1_000_000_000 + k)
        w.write_tf_static(["camera_color_optical_frame"], 1_000_000_000)
    m = humble_decode_metadata(yaml.safe_load((out / "metadata.yaml").read_text()))
    assert m["version"] == 8 and m["message_count"] == 4
    with BagWriter(tmp_path / "jazzy", storage=storage, distro="jazzy") as w:
        msgs = conv.RosbagsMessages(w.typestore)
        w.write("/x", conv.make_header(msgs, 1, "f"), 1)
    with pytest.raises(AssertionError, match="offered_qos_profiles"):  # why --distro humble exists
        humble_decode_metadata(yaml.safe_load((tmp_path / "jazzy" / "metadata.yaml").read_text()))
