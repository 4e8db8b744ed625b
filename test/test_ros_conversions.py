"""featmap_ros/ros/conversions.py on real ROS 2 message types (rosbags typestores, no rclpy).

Every built message is serialised to CDR and read back with the typestore, which proves it has
exactly the fields and types of the ROS definition.
"""
from __future__ import annotations

import array
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("rosbags", reason="rosbags (pip) provides the ROS message types these tests build")

from featmap_ros.geometry import BOX_EDGES, CameraModel, look_at_R_m2c
from featmap_ros.ros import conversions as conv
from featmap_ros.ros.msg_defs import HAND_POSE_MSG, featmap_typestore
from featmap_ros.results import HandPose, ObjectPose

REPO = Path(__file__).resolve().parents[1]
K = np.array([[572.4114, 0.0, 325.2611], [0.0, 573.57043, 242.04899], [0.0, 0.0, 1.0]])


@pytest.fixture(scope="module", params=["jazzy", "humble"])
def store(request):
    return featmap_typestore(request.param)


@pytest.fixture(scope="module")
def msgs(store):
    return conv.RosbagsMessages(store)


def roundtrip(store, msg):
    """Serialise to CDR and back: fails unless msg matches the ROS definition exactly."""
    raw = store.serialize_cdr(msg, msg.__msgtype__)
    return store.deserialize_cdr(raw, msg.__msgtype__)


def header(msgs, ns=1_700_000_000_123_456_789, frame="camera_color_optical_frame"):
    return conv.make_header(msgs, ns, frame)


def image_msg(msgs, raw: bytes, h, w, enc, step, big=0):
    return msgs.new("sensor_msgs/msg/Image", header=header(msgs), height=h, width=w, encoding=enc,
                    is_bigendian=big, step=step, data=np.frombuffer(raw, np.uint8).copy())


def test_hand_pose_definition_matches_msg_file():
    assert (REPO / "msg" / "HandPose.msg").read_text() == HAND_POSE_MSG


# ---------------------------------------------------------------- images


@pytest.mark.parametrize("enc,dtype,ch", [("rgb8", np.uint8, 3), ("bgr8", np.uint8, 3), ("mono8", np.uint8, 1),
                                          ("16UC1", np.uint16, 1), ("32FC1", np.float32, 1)])
def test_image_roundtrip_through_cdr(store, msgs, enc, dtype, ch):
    rng = np.random.default_rng(0)
    shape = (5, 7, ch) if ch > 1 else (5, 7)
    arr = (rng.random(shape) * 200).astype(dtype)
    msg = conv.numpy_to_image(msgs, arr, enc, header(msgs))
    assert msg.step == 7 * ch * np.dtype(dtype).itemsize
    back = conv.image_to_numpy(roundtrip(store, msg))
    assert back.dtype == np.dtype(dtype) and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


def test_image_with_row_padding(msgs):
    arr = np.arange(3 * 4 * 3, dtype=np.uint8).reshape(3, 4, 3)
    step = 4 * 3 + 5  # 5 bytes of padding per row
    raw = b"".join(arr[r].tobytes() + b"\xee" * 5 for r in range(3))
    np.testing.assert_array_equal(conv.image_to_numpy(image_msg(msgs, raw, 3, 4, "rgb8", step)), arr)


def test_big_endian_16bit_and_float(msgs):
    depth_mm = np.array([[1, 258], [1000, 65535]], dtype=np.uint16)
    got = conv.image_to_numpy(image_msg(msgs, depth_mm.astype(">u2").tobytes(), 2, 2, "16UC1", 4, big=1))
    np.testing.assert_array_equal(got, depth_mm)
    assert got.dtype == np.uint16 and got.dtype.isnative
    depth_m = np.array([[0.5, 1.25], [np.nan, 3.0]], dtype=np.float32)
    got = conv.image_to_numpy(image_msg(msgs, depth_m.astype(">f4").tobytes(), 2, 2, "32FC1", 8, big=1))
    np.testing.assert_array_equal(got, depth_m)


def test_bgr_and_mono_to_rgb(msgs):
    bgr = np.zeros((2, 3, 3), np.uint8)
    bgr[..., 0] = 10  # blue
    bgr[..., 2] = 200  # red
    rgb = conv.image_to_rgb(conv.numpy_to_image(msgs, bgr, "bgr8", header(msgs)))
    assert rgb[0, 0].tolist() == [200, 0, 10]
    mono = np.array([[0, 128, 255]], np.uint8)
    rgb = conv.image_to_rgb(conv.numpy_to_image(msgs, mono, "mono8", header(msgs)))
    assert rgb.shape == (1, 3, 3) and rgb[0, 1].tolist() == [128, 128, 128]


def test_depth_in_metres_with_invalid_pixels(msgs):
    mm = np.array([[0, 500], [1234, 2000]], np.uint16)
    d = conv.image_to_depth_m(conv.numpy_to_image(msgs, mm, "16UC1", header(msgs)))
    assert d.dtype == np.float32 and np.isnan(d[0, 0])
    np.testing.assert_allclose(d[1], [1.234, 2.0], rtol=1e-6)
    m = np.array([[np.inf, -1.0], [0.7, np.nan]], np.float32)
    d = conv.image_to_depth_m(conv.numpy_to_image(msgs, m, "32FC1", header(msgs)))
    assert np.isnan(d).sum() == 3 and d[1, 0] == pytest.approx(0.7)


def _reference_image(msg) -> np.ndarray:
    """What image_to_numpy returned before it learned zero-copy views: row by row, copied, swapped."""
    dtype, ch = conv.IMAGE_ENCODINGS[msg.encoding]
    wire = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    raw = bytes(np.asarray(msg.data, np.uint8)) if not isinstance(msg.data, (bytes, array.array)) else bytes(msg.data)
    row_bytes = msg.width * ch * np.dtype(dtype).itemsize
    rows = [np.frombuffer(raw[r * msg.step:r * msg.step + row_bytes], wire).astype(dtype) for r in range(msg.height)]
    out = np.stack(rows)
    return out.reshape(msg.height, msg.width, ch) if ch > 1 else out


def _reference_rgb(msg) -> np.ndarray:
    a = _reference_image(msg)
    if a.ndim == 2:
        return np.stack([a, a, a], axis=2)
    return a[:, :, [2, 1, 0]] if msg.encoding.startswith("bgr") else a[:, :, :3]


def _reference_depth_m(msg, scale=0.001) -> np.ndarray:
    a = _reference_image(msg).astype(np.float32)
    d = a * np.float32(scale) if msg.encoding != "32FC1" else a
    d[~np.isfinite(d) | (d <= 0)] = np.nan
    return d


def _random_image(rng, enc, h, w, pad, big, container):
    """An Image-like message (attributes only, as the readers use) with ``pad`` bytes after each row."""
    dtype, ch = conv.IMAGE_ENCODINGS[enc]
    shape = (h, w, ch) if ch > 1 else (h, w)
    if dtype == np.float32:
        px = rng.uniform(0.2, 4.0, shape).astype(np.float32)
        px.flat[3::11] = np.nan  # every kind of invalid depth (REP 117), and -0.0
        px.flat[4::19] = -0.0
        px.flat[5::13] = -np.inf
        px.flat[2::17] = 0.0
        px.flat[6::23] = np.inf
        px.flat[1::29] = -2.0
    else:
        px = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
        px.flat[::9] = 0
    wire = px.astype(px.dtype.newbyteorder(">" if big else "<"))
    rows = wire.reshape(h, -1).view(np.uint8)
    raw = np.concatenate([rows, np.full((h, pad), 0xEE, np.uint8)], axis=1).ravel()
    data = {"ndarray": raw.copy(), "bytes": raw.tobytes(), "array": array.array("B", raw.tobytes())}[container]
    return SimpleNamespace(encoding=enc, height=h, width=w, step=rows.shape[1] + pad, is_bigendian=int(big), data=data)


@pytest.mark.parametrize("container", ["ndarray", "bytes", "array"])  # rosbags, raw CDR, rclpy
@pytest.mark.parametrize("pad,big", [(0, 0), (1, 0), (3, 0), (5, 1), (0, 1), (8, 0)])
@pytest.mark.parametrize("enc", list(conv.IMAGE_ENCODINGS))
def test_image_conversions_equal_the_copying_reference(enc, pad, big, container):
    rng = np.random.default_rng(abs(hash((enc, pad, big))) % 2 ** 32)
    msg = _random_image(rng, enc, 7, 5, pad, big, container)
    arr = conv.image_to_numpy(msg)
    ref = _reference_image(msg)
    assert arr.dtype == ref.dtype and arr.dtype.isnative and arr.shape == ref.shape
    np.testing.assert_array_equal(arr, ref)
    if enc in conv.COLOUR_ENCODINGS:
        rgb = conv.image_to_rgb(msg)
        assert rgb.dtype == np.uint8 and rgb.shape == (7, 5, 3) and rgb.flags.c_contiguous
        np.testing.assert_array_equal(rgb, _reference_rgb(msg))
    if enc in conv.DEPTH_ENCODINGS:
        for scale in (0.001, 0.000125, 1.0):
            d = conv.image_to_depth_m(msg, depth_scale_m=scale)
            assert d.dtype == np.float32 and d.shape == (7, 5)
            np.testing.assert_array_equal(d, _reference_depth_m(msg, scale))


def test_packed_native_images_are_read_only_views_of_the_message(msgs):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 255, (6, 4, 3), dtype=np.uint8)
    msg = conv.numpy_to_image(msgs, rgb, "rgb8", header(msgs))
    for out in (conv.image_to_numpy(msg), conv.image_to_rgb(msg)):
        assert np.shares_memory(out, msg.data) and not out.flags.writeable
        with pytest.raises(ValueError, match="read-only"):
            out[0, 0, 0] = 1  # a caller cannot write into the message through the view
    assert msg.data.flags.writeable  # ... and the message itself was left as it was
    np.testing.assert_array_equal(conv.image_to_rgb(msg), rgb)
    depth = rng.uniform(0.3, 2.0, (6, 4)).astype(np.float32)
    dmsg = conv.numpy_to_image(msgs, depth, "32FC1", header(msgs))
    d = conv.image_to_depth_m(dmsg)
    assert np.shares_memory(d, dmsg.data) and not d.flags.writeable
    np.testing.assert_array_equal(d, depth)


@pytest.mark.parametrize("case", ["bgr8", "mono8 to rgb", "padded rgb8", "big-endian 16UC1", "32FC1 with NaN", "16UC1 depth"])
def test_other_layouts_are_one_read_only_copy(msgs, case):
    rng = np.random.default_rng(2)
    if case == "bgr8":
        msg = conv.numpy_to_image(msgs, rng.integers(0, 255, (6, 4, 3), dtype=np.uint8), "bgr8", header(msgs))
        out = conv.image_to_rgb(msg)
    elif case == "mono8 to rgb":
        msg = conv.numpy_to_image(msgs, rng.integers(0, 255, (6, 4), dtype=np.uint8), "mono8", header(msgs))
        out = conv.image_to_rgb(msg)
    elif case == "padded rgb8":
        msg = _random_image(rng, "rgb8", 6, 4, 2, 0, "ndarray")
        out = conv.image_to_rgb(msg)
        assert out.flags.c_contiguous
    elif case == "big-endian 16UC1":
        msg = _random_image(rng, "16UC1", 6, 4, 0, 1, "ndarray")
        out = conv.image_to_numpy(msg)
    elif case == "32FC1 with NaN":
        depth = rng.uniform(0.3, 2.0, (6, 4)).astype(np.float32)
        depth[1, 2] = np.nan
        depth[0, 0] = -1.0
        msg = conv.numpy_to_image(msgs, depth, "32FC1", header(msgs))
        out = conv.image_to_depth_m(msg)
        assert np.isnan(out[0, 0]) and np.isnan(out[1, 2])
        assert msg.data.view(np.float32)[0] == -1.0  # the invalid pixel was set to NaN in the copy only
    else:
        msg = conv.numpy_to_image(msgs, rng.integers(1, 4000, (6, 4), dtype=np.uint16), "16UC1", header(msgs))
        out = conv.image_to_depth_m(msg)
    assert not np.shares_memory(out, np.asarray(msg.data)) and not out.flags.writeable


def test_a_view_does_not_outlive_a_refilled_message_unnoticed(msgs):
    """Documented contract: a view follows msg.data, a copy does not."""
    msg = conv.numpy_to_image(msgs, np.zeros((2, 2, 3), np.uint8), "rgb8", header(msgs))
    view = conv.image_to_rgb(msg)
    msg.data[:] = 7
    assert view.max() == 7
    bgr = conv.numpy_to_image(msgs, np.zeros((2, 2, 3), np.uint8), "bgr8", header(msgs))
    copy = conv.image_to_rgb(bgr)
    bgr.data[:] = 7
    assert copy.max() == 0


@pytest.mark.parametrize("case,field", [
    ("encoding", "image.encoding"), ("step", "image.step"), ("size", "image.data"), ("empty", "image.width/height"),
])
def test_bad_images_name_the_field(msgs, case, field):
    arr = np.zeros((4, 4, 3), np.uint8)
    raw = arr.tobytes()
    bad = {
        "encoding": image_msg(msgs, raw, 4, 4, "yuv422", 12),
        "step": image_msg(msgs, raw, 4, 4, "rgb8", 10),
        "size": image_msg(msgs, raw[:-1], 4, 4, "rgb8", 12),
        "empty": image_msg(msgs, b"", 0, 4, "rgb8", 12),
    }[case]
    with pytest.raises(conv.ConversionError, match=field.replace(".", r"\.").replace("/", "/")):
        conv.image_to_numpy(bad)


def test_wrong_kind_of_image_for_the_node(msgs):
    depth = conv.numpy_to_image(msgs, np.ones((2, 2), np.uint16), "16UC1", header(msgs))
    with pytest.raises(conv.ConversionError, match=r"image\.encoding: '16UC1' is not a colour"):
        conv.image_to_rgb(depth)
    colour = conv.numpy_to_image(msgs, np.ones((2, 2, 3), np.uint8), "rgb8", header(msgs))
    with pytest.raises(conv.ConversionError, match=r"depth\.encoding"):
        conv.image_to_depth_m(colour)
    nan = conv.numpy_to_image(msgs, np.full((2, 2), np.nan, np.float32), "32FC1", header(msgs))
    with pytest.raises(conv.ConversionError, match=r"depth\.data: no valid depth"):
        conv.image_to_depth_m(nan)
    with pytest.raises(conv.ConversionError, match="image array"):
        conv.numpy_to_image(msgs, np.ones((2, 2, 3), np.float32), "rgb8", header(msgs))


# ---------------------------------------------------------------- camera info


def test_camera_info_roundtrip_and_checks(store, msgs):
    model = CameraModel(K, 640, 480)
    info = roundtrip(store, conv.camera_model_to_info(msgs, model, header(msgs)))
    back = conv.camera_info_to_model(info)
    np.testing.assert_allclose(back.K, K)
    assert (back.width, back.height) == (640, 480)
    assert conv.camera_info_warnings(info) == []
    np.testing.assert_allclose(np.asarray(info.p).reshape(3, 4)[:, :3], K)
    conv.check_image_matches_camera((480, 640), back)
    with pytest.raises(conv.ConversionError, match=r"image\.width/height: 320x240 but camera_info says 640x480"):
        conv.check_image_matches_camera((240, 320), back)


def test_camera_info_distortion_warns(msgs):
    model = CameraModel(K, 640, 480, np.array([0.1, -0.05, 0.0, 0.0, 0.0]))
    info = conv.camera_model_to_info(msgs, model, header(msgs))
    warnings = conv.camera_info_warnings(info)
    assert len(warnings) == 1 and "camera_info.d" in warnings[0] and "rectified" in warnings[0]
    np.testing.assert_allclose(conv.camera_info_to_model(info).D, model.D)


@pytest.mark.parametrize("case,field", [("zero_k", r"camera_info\.k"), ("nan_k", r"camera_info\.k"),
                                        ("size", r"camera_info\.width/height"), ("nan_d", r"camera_info\.d")])
def test_bad_camera_info_names_the_field(msgs, case, field):
    k = K.ravel().copy()
    d = np.zeros(5)
    w = 640
    if case == "zero_k":
        k[:] = 0.0
    elif case == "nan_k":
        k[2] = np.nan
    elif case == "size":
        w = 0
    else:
        d[1] = np.nan
    info = msgs.new("sensor_msgs/msg/CameraInfo", header=header(msgs), width=w, height=480,
                    distortion_model="plumb_bob", d=d, k=k)
    with pytest.raises(conv.ConversionError, match=field):
        conv.camera_info_to_model(info)


# ---------------------------------------------------------------- objects


def make_pose(name="ape", obj_id=1, t=(0.05, -0.02, 0.8), score=0.9):
    R = look_at_R_m2c(np.array([0.3, -0.5, 0.8]), inplane_rad=0.4)
    return ObjectPose(object_name=name, obj_id=obj_id, R_m2c=R, t_m2c_m=np.array(t, float), score=score,
                      extents_m=np.array([0.075, 0.078, 0.092]), center_m=np.array([0.001, -0.002, 0.003]))


def test_pose_stamped_and_transform(store, msgs):
    p = make_pose()
    h = header(msgs)
    ps = roundtrip(store, conv.object_pose_to_pose_stamped(msgs, p, h))
    R, t = conv.pose_msg_to_Rt(ps.pose)
    np.testing.assert_allclose(R, p.R_m2c, atol=1e-12)
    np.testing.assert_allclose(t, p.t_m2c_m)
    assert ps.header.frame_id == "camera_color_optical_frame"
    assert conv.stamp_to_ns(ps.header.stamp) == 1_700_000_000_123_456_789
    tf = roundtrip(store, conv.object_pose_to_transform(msgs, p, h, frame_prefix="featmap/"))
    assert tf.child_frame_id == "featmap/ape" and tf.header.frame_id == "camera_color_optical_frame"
    q = tf.transform.rotation
    assert q.w >= 0 and np.isclose(q.x ** 2 + q.y ** 2 + q.z ** 2 + q.w ** 2, 1.0)
    assert tf.transform.translation.z == pytest.approx(0.8)
    tfm = store.types["tf2_msgs/msg/TFMessage"](transforms=[tf])
    assert roundtrip(store, tfm).transforms[0].child_frame_id == "featmap/ape"


def test_nan_pose_is_refused(msgs):
    p = make_pose(t=(np.nan, 0, 1))
    with pytest.raises(conv.ConversionError, match="ape: pose contains NaN"):
        conv.object_pose_to_pose_stamped(msgs, p, header(msgs))


def test_detection3d_array_roundtrip(store, msgs):
    poses = [make_pose(), make_pose("can", 5, (-0.1, 0.05, 1.1), 0.4)]
    arr = roundtrip(store, conv.object_poses_to_detection3d_array(msgs, poses, header(msgs)))
    assert [d.results[0].hypothesis.class_id for d in arr.detections] == ["ape", "can"]
    assert arr.detections[1].results[0].hypothesis.score == pytest.approx(0.4)
    assert arr.detections[0].bbox.size.z == pytest.approx(0.092)
    back = conv.detection3d_array_to_object_poses(arr, {"ape": 1, "can": 5})
    for a, b in zip(poses, back):
        assert b.object_name == a.object_name and b.obj_id == a.obj_id
        np.testing.assert_allclose(b.R_m2c, a.R_m2c, atol=1e-12)
        np.testing.assert_allclose(b.t_m2c_m, a.t_m2c_m, atol=1e-12)
        np.testing.assert_allclose(b.center_m, a.center_m, atol=1e-12)
        np.testing.assert_allclose(b.extents_m, a.extents_m)


def test_detection2d_boxes_roundtrip(store, msgs):
    boxes = [("ape", np.array([100.0, 50.0, 40.0, 30.0]), 0.8)]
    arr = roundtrip(store, conv.boxes_to_detection2d_array(msgs, boxes, header(msgs)))
    assert arr.detections[0].bbox.center.position.x == pytest.approx(120.0)
    got = conv.detection2d_array_to_boxes(arr)
    assert got[0][0] == "ape"
    np.testing.assert_allclose(got[0][1], [100.0, 50.0, 40.0, 30.0])
    bad = conv.boxes_to_detection2d_array(msgs, [("ape", np.array([1.0, 2.0, -3.0, 4.0]), 1.0)], header(msgs))
    with pytest.raises(conv.ConversionError, match=r"detections_2d\.detections\[0\]\.bbox"):
        conv.detection2d_array_to_boxes(bad)


def test_object_markers(store, msgs):
    poses = [make_pose(), make_pose(), make_pose("can", 5)]
    arr = roundtrip(store, conv.object_markers(msgs, poses, header(msgs), {"ape": "package://featmap_ros/meshes/ape.ply"}, 0.001))
    M = store.types["visualization_msgs/msg/Marker"]
    kinds = [(m.ns, m.id, m.type, m.action) for m in arr.markers]
    assert kinds[0][3] == M.DELETEALL
    assert kinds[1:] == [("ape/mesh", 0, M.MESH_RESOURCE, M.ADD), ("ape/box", 0, M.LINE_LIST, M.ADD),
                         ("ape/mesh", 1, M.MESH_RESOURCE, M.ADD), ("ape/box", 1, M.LINE_LIST, M.ADD),
                         ("can/box", 0, M.LINE_LIST, M.ADD)]
    mesh = arr.markers[1]
    assert mesh.mesh_resource == "package://featmap_ros/meshes/ape.ply" and mesh.scale.x == pytest.approx(0.001)
    box = arr.markers[2]
    assert len(box.points) == 2 * len(BOX_EDGES) == 24
    # box corners placed with the marker pose land where the pose puts the model's box
    R, t = conv.pose_msg_to_Rt(box.pose)
    pts_c = np.array([[q.x, q.y, q.z] for q in box.points]) @ R.T + t
    p = poses[0]
    expected_center_c = p.R_m2c @ p.center_m + p.t_m2c_m
    np.testing.assert_allclose(pts_c.mean(axis=0), expected_center_c, atol=1e-9)
    assert all(m.header.frame_id == "camera_color_optical_frame" for m in arr.markers)
    empty = roundtrip(store, conv.object_markers(msgs, [], header(msgs)))
    assert len(empty.markers) == 1 and empty.markers[0].action == M.DELETEALL


def test_one_builder_per_frame_gives_the_functions_messages(store, msgs):
    poses = [make_pose(), make_pose("can", 5, (-0.1, 0.05, 1.1), 0.4), make_pose()]
    h = header(msgs)
    out = conv.ObjectPoseMessages(msgs, poses)
    cdr = lambda m: bytes(store.serialize_cdr(m, m.__msgtype__))
    assert cdr(out.detection3d_array(h)) == cdr(conv.object_poses_to_detection3d_array(msgs, poses, h))
    meshes = {"ape": "package://featmap_ros/meshes/ape.ply"}
    assert cdr(out.markers(h, meshes, 0.001)) == cdr(conv.object_markers(msgs, poses, h, meshes, 0.001))
    for i, p in enumerate(poses):
        assert cdr(out.pose_stamped(i, h)) == cdr(conv.object_pose_to_pose_stamped(msgs, p, h))
        assert cdr(out.transform(i, h, "featmap/")) == cdr(conv.object_pose_to_transform(msgs, p, h, "featmap/"))
        assert cdr(out.pose_stamped(i, h).pose) == cdr(conv.pose_msg(msgs, p.R_m2c, p.t_m2c_m))
    assert conv.ObjectPoseMessages(msgs, []).detection3d_array(h).detections == []


def _rotations_every_branch() -> np.ndarray:
    """(N, 3, 3): random rotations, near-180 degree turns about each axis (every branch of the
    matrix -> quaternion conversion), tiny angles, the identity, OpenCV's Rodrigues matrices."""
    import cv2
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(0)
    Rs = [Rotation.random(3000, random_state=1).as_matrix(), np.tile(np.eye(3), (3, 1, 1)),
          Rotation.from_rotvec(rng.normal(0, 1e-7, (200, 3))).as_matrix(),
          np.array([cv2.Rodrigues(rng.normal(0, 1.5, 3))[0] for _ in range(500)])]
    for axis in np.eye(3):
        turn = (np.pi - rng.uniform(0, 1e-3, (300, 1))) * (axis + rng.normal(0, 0.01, (300, 3)))
        Rs.append(Rotation.from_rotvec(turn).as_matrix())
    return np.concatenate(Rs)


def test_rotation_quaternion_conversions_are_scipys_floats():
    """The Python conversions give geometry's (scipy's) numbers bit for bit: the messages do not change."""
    from featmap_ros.geometry import matrix_from_quat_xyzw, quat_xyzw_from_matrix

    R = _rotations_every_branch()
    for chunk in np.array_split(R, len(R) // 50):  # the Python path (<= 64 per call)
        assert np.array_equal(conv._quats_xyzw(chunk), quat_xyzw_from_matrix(chunk))
    assert np.array_equal(conv._quats_xyzw(R), quat_xyzw_from_matrix(R))  # many: scipy
    q = np.concatenate([np.random.default_rng(2).normal(size=(3000, 4)), quat_xyzw_from_matrix(R[:500]),
                        [[0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, -3.0], [1e-6, 0.0, 0.0, 0.0]]])
    for chunk in np.array_split(q, len(q) // 50):
        assert np.array_equal(conv._matrices_from_quats(chunk.tolist()), matrix_from_quat_xyzw(chunk))
    # a matrix scipy would orthogonalise, and a reflection, take scipy's own path
    skew = R[:3] * np.array([1.0, 1.0 + 1e-9, 1.0])[:, None]
    assert np.array_equal(conv._quats_xyzw(skew), quat_xyzw_from_matrix(skew))
    with pytest.raises(ValueError):
        conv._quats_xyzw(-np.eye(3)[None])
    assert conv._quats_xyzw(np.zeros((0, 3, 3))).shape == (0, 4)


def test_pipeline_outputs_equal_the_functions_messages(store, msgs):
    """ObjectPipeline builds every output from one ObjectPoseMessages: byte for byte what the
    module's functions give for the same poses (filtered and per frame)."""
    from featmap_ros.ros.params import OBJECT_NODE_PARAMS, validate_params
    from featmap_ros.ros.pipeline import ObjectPipeline, ObjectSettings

    class Fixed:  # an estimator that answers with fixed poses (two of one object)
        object_names = ["ape", "can"]

        def estimate(self, rgb, K, boxes=None):
            return [make_pose(), make_pose("can", 5, (-0.1, 0.05, 1.1), 0.4), make_pose(score=0.5)]

    cdr = lambda m: bytes(store.serialize_cdr(m, m.__msgtype__))
    cam = CameraModel.from_fxfycxcy(500.0, 500.0, 320.0, 240.0, 640, 480)
    values = validate_params(OBJECT_NODE_PARAMS, {"objects": "ape,can", "markers.mesh_resource": "package://featmap_ros/meshes/{object}.ply"})
    settings = ObjectSettings.from_params(values, ["ape", "can"])
    pipe = ObjectPipeline(Fixed(), msgs, settings)
    for k in range(3):
        h = conv.make_header(msgs, 1_700_000_000_000_000_000 + k * 33_000_000, "camera_color_optical_frame")
        image = conv.numpy_to_image(msgs, np.zeros((480, 640, 3), np.uint8), "rgb8", h)
        out = pipe.process(image, conv.camera_model_to_info(msgs, cam, h))
        shown, kept = out.results, out.raw_results
        assert cdr(out.detections) == cdr(conv.object_poses_to_detection3d_array(msgs, shown, h))
        assert cdr(out.detections_raw) == cdr(conv.object_poses_to_detection3d_array(msgs, kept, h))
        assert cdr(out.markers) == cdr(conv.object_markers(msgs, shown, h, settings.meshes, settings.mesh_scale))
        best = {}
        for p in shown:
            best[p.object_name] = p if p.object_name not in best or p.score > best[p.object_name].score else best[p.object_name]
        assert sorted(out.poses) == sorted(best) and len(out.transforms) == len(best)
        for (name, p), tf in zip(best.items(), out.transforms):
            assert cdr(out.poses[name]) == cdr(conv.object_pose_to_pose_stamped(msgs, p, h))
            assert cdr(tf) == cdr(conv.object_pose_to_transform(msgs, p, h, settings.frame_prefix))


def test_box_marker_points_are_the_pose_box_corners(msgs):
    p = make_pose()
    box = conv.object_markers(msgs, [p], header(msgs)).markers[1]
    pts = np.array([[q.x, q.y, q.z] for q in box.points])
    np.testing.assert_array_equal(pts, p.box_corners_m()[[i for e in BOX_EDGES for i in e]])
    # ...which lie where box_corners_c_m puts them once the marker pose is applied
    R, t = conv.pose_msg_to_Rt(box.pose)
    np.testing.assert_allclose(pts[::2] @ R.T + t, p.box_corners_c_m()[[e[0] for e in BOX_EDGES]], atol=1e-12)


@pytest.mark.parametrize("field", ["t", "R", "center"])
def test_a_bad_pose_among_several_names_its_object(msgs, field):
    poses = [make_pose(), make_pose("can", 5), make_pose("duck", 9)]
    if field == "t":
        poses[1].t_m2c_m = np.array([0.0, np.inf, 1.0])
    elif field == "R":
        poses[1].R_m2c = np.eye(3)[:2]
    else:
        poses[1].center_m = np.array([np.nan, 0.0, 0.0])
    with pytest.raises(conv.ConversionError, match=r"^can: "):
        conv.object_poses_to_detection3d_array(msgs, poses, header(msgs))
    if field != "center":  # the box centre is only in the detections
        with pytest.raises(conv.ConversionError, match=r"^can: "):
            conv.object_markers(msgs, poses, header(msgs))


def test_detection3d_zero_quaternion_names_the_field(msgs):
    arr = conv.object_poses_to_detection3d_array(msgs, [make_pose(), make_pose("can", 5)], header(msgs))
    q = arr.detections[1].results[0].pose.pose.orientation
    q.x = q.y = q.z = q.w = 0.0
    with pytest.raises(conv.ConversionError, match=r"detections\.detections\[1\]\.pose\.orientation: quaternion: zero norm"):
        conv.detection3d_array_to_object_poses(arr)


def test_rosbags_defaults_are_fresh_values(msgs):
    a, b = msgs.new("visualization_msgs/msg/Marker"), msgs.new("visualization_msgs/msg/Marker")
    assert a.pose is not b.pose and a.points is not b.points and a.texture.data is not b.texture.data
    a.points.append(conv.point_msg(msgs, [1, 2, 3]))
    assert b.points == []
    with pytest.raises(conv.ConversionError, match=r"geometry_msgs/msg/Point: no field\(s\) \['w'\]"):
        msgs.new("geometry_msgs/msg/Point", x=1.0, w=2.0)


# ---------------------------------------------------------------- hands


def make_hand():
    names = ["pinky_tip", "pinky_mid", "wrist_pinky", "palm_center", "thumb_tip"]
    joints = np.array([[0.0, 0.0, 0.5], [0.01, 0.0, 0.5], [0.02, 0.01, 0.51], [0.03, 0.02, 0.52], [0.05, 0.0, 0.49]])
    return HandPose(joint_names=names, joints_m=joints, score=0.7, joint_scores=np.linspace(0.5, 0.9, 5),
                    crop_center_m=np.array([0.02, 0.01, 0.5]))


def test_hand_pose_msg_roundtrip(store, msgs):
    hand = make_hand()
    msg = roundtrip(store, conv.hand_pose_to_msg(msgs, hand, header(msgs, frame="camera_depth_optical_frame")))
    assert msg.header.frame_id == "camera_depth_optical_frame"
    back = conv.hand_pose_msg_to_result(msg)
    assert back.joint_names == hand.joint_names
    np.testing.assert_allclose(back.joints_m, hand.joints_m)
    np.testing.assert_allclose(back.joint_scores, hand.joint_scores, rtol=1e-6)
    assert back.score == pytest.approx(0.7)
    np.testing.assert_allclose(back.crop_center_m, hand.crop_center_m)


def test_empty_hand_pose_means_no_hand(store, msgs):
    msg = roundtrip(store, conv.empty_hand_pose_msg(msgs, header(msgs)))
    back = conv.hand_pose_msg_to_result(msg)
    assert back.joint_names == [] and back.joints_m.shape == (0, 3) and back.score == 0.0


def test_hand_pose_bad_joints(msgs):
    hand = make_hand()
    hand.joints_m = hand.joints_m[:3]
    with pytest.raises(conv.ConversionError, match=r"hand_pose\.joints: expected \(5, 3\)"):
        conv.hand_pose_to_msg(msgs, hand, header(msgs))


def test_hand_markers(store, msgs):
    hand = make_hand()
    arr = roundtrip(store, conv.hand_markers(msgs, hand, header(msgs)))
    M = store.types["visualization_msgs/msg/Marker"]
    assert [m.action for m in arr.markers] == [M.DELETEALL, M.ADD, M.ADD]
    joints, bones = arr.markers[1], arr.markers[2]
    assert joints.type == M.SPHERE_LIST and len(joints.points) == 5
    # bones among these names: pinky_tip-pinky_mid, pinky_mid-palm_center, wrist_pinky-palm_center
    assert conv.skeleton_edges(hand.joint_names) == [(0, 1), (1, 3), (2, 3)]
    assert bones.type == M.LINE_LIST and len(bones.points) == 6
    cleared = roundtrip(store, conv.hand_markers(msgs, None, header(msgs)))
    assert len(cleared.markers) == 1



def test_rclpy_sequence_values_are_typed_arrays():
    """rclpy's generated setters take array.array of the field's typecode without per-element checks."""
    img = np.arange(12, dtype=np.uint16).reshape(2, 6)
    u8 = conv.RclpyMessages.u8_seq(img)
    assert u8.typecode == "B" and u8.tobytes() == img.tobytes()
    f32 = conv.RclpyMessages.f32_seq([0.5, 0.25])
    assert f32.typecode == "f" and list(f32) == [0.5, 0.25]
    f64 = conv.RclpyMessages.f64_seq(np.array([1.0, 2.0]))
    assert f64.typecode == "d" and list(f64) == [1.0, 2.0]
    k = conv.RclpyMessages.f64_array(np.eye(3))  # fixed-size float64[9] fields take float64 ndarrays
    assert k.dtype == np.float64 and k.shape == (9,)
    with pytest.raises(conv.ConversionError, match="not available"):
        conv.RclpyMessages().cls("no_such_pkg/msg/Thing")


def test_camera_info_reader_keeps_the_last_calibration(msgs):
    cam = CameraModel.from_fxfycxcy(500.0, 500.0, 320.0, 240.0, 640, 480)
    h = header(msgs)
    reader = conv.CameraInfoReader()
    info = conv.camera_model_to_info(msgs, cam, h)
    a, wa = reader.read(info)
    b, wb = reader.read(conv.camera_model_to_info(msgs, cam, h))  # same content, another message
    assert a is b and wa == wb == []
    np.testing.assert_array_equal(a.K, conv.camera_info_to_model(info).K)
    with pytest.raises(ValueError):  # the kept arrays cannot be changed by a caller
        a.K[0, 0] = 1.0
    K6 = np.array([[600.0, 0, 320], [0, 600, 240], [0, 0, 1]])
    other = conv.camera_model_to_info(msgs, CameraModel(K6, 640, 480, np.array([0.1, 0, 0, 0, 0])), h)
    c, wc = reader.read(other)
    assert c.fx == 600.0 and len(wc) == 1 and "camera_info.d" in wc[0]
    wc.clear()
    assert len(reader.read(other)[1]) == 1  # the caller's list is its own
    for bad in (np.nan, 0.0):
        info.k[0] = bad
        for _ in range(2):  # refused every time, never kept
            with pytest.raises(conv.ConversionError, match="camera_info.k"):
                reader.read(info)
    info.k[0] = 500.0
    assert reader.read(info)[0].fx == 500.0
