"""ROS messages <-> numpy arrays and result dataclasses, for rclpy and rosbags alike.

Nothing here imports rclpy. Functions that *read* a message only use its attributes, so they
take rclpy messages and rosbags messages the same way. Functions that *build* a message take a
message factory (:class:`RclpyMessages` on ROS, :class:`RosbagsMessages` with a rosbags
typestore elsewhere): the same code fills the nodes' publishers and the bag writer.

Conventions: camera optical frame (x right, y down, z forward), metres (REP 103), quaternions
(x, y, z, w) through scipy (never tf_transformations, broken with numpy >= 1.24 on Humble), no
cv_bridge (built against NumPy 1 it breaks under NumPy 2). Every bad input raises
:class:`ConversionError` naming the message field at fault.
"""
from __future__ import annotations

import array
import importlib
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from featmap_ros.data.specs import HAND_BONES, skeleton_edges
from featmap_ros.draw.colours import ESTIMATE_RGB, rgba_unit
from featmap_ros.errors import InputError
from featmap_ros.geometry import BOX_EDGES, CameraModel, check_K, matrix_from_quat_xyzw, quat_xyzw_from_matrix
from featmap_ros.results import HandPose, ObjectPose


class ConversionError(InputError):
    """A message that cannot be converted; the text names the field (``image.step``, ...)."""


# --------------------------------------------------------------------------------------------
# Message factories
# --------------------------------------------------------------------------------------------

_NUMPY_OF_ROS = {
    "bool": np.bool_, "byte": np.uint8, "char": np.uint8, "octet": np.uint8,
    "int8": np.int8, "uint8": np.uint8, "int16": np.int16, "uint16": np.uint16,
    "int32": np.int32, "uint32": np.uint32, "int64": np.int64, "uint64": np.uint64,
    "float32": np.float32, "float64": np.float64,
}


class RosbagsMessages:
    """Builds rosbags typestore messages; fields left out get their ROS default values.

    Args:
        typestore: a rosbags typestore holding every type that will be built (see
            :func:`featmap_ros.ros.msg_defs.featmap_typestore`).
    """

    def __init__(self, typestore: Any) -> None:
        self.typestore = typestore
        #: typename -> (class, field names, {field: immutable default}, ((field, maker of a fresh
        #: default), ...) for the mutable ones), read from the typestore's field definitions on
        #: first use of the type: they never change, and reading them for every message was most
        #: of the cost of building one.
        self._layouts: dict[str, tuple[type, frozenset[str], dict[str, Any], tuple[tuple[str, Callable[[], Any]], ...]]] = {}

    def cls(self, typename: str) -> Any:
        """The class of ``pkg/msg/Name`` (its constants are class attributes)."""
        try:
            return self.typestore.types[typename]
        except KeyError:
            raise ConversionError(f"message type {typename!r} is not in the typestore") from None

    def new(self, typename: str, **fields: Any) -> Any:
        """A message of ``typename`` from ``fields``; missing fields take default values."""
        cls, names, constants, makers = self._layouts.get(typename) or self._layout(typename)
        if not names.issuperset(fields):
            raise ConversionError(f"{typename}: no field(s) {sorted(set(fields) - names)}")
        values = {**constants, **fields}
        for fname, make in makers:
            if fname not in fields:
                values[fname] = make()
        return cls(**values)

    def _layout(self, typename: str) -> tuple[type, frozenset[str], dict[str, Any], tuple[tuple[str, Callable[[], Any]], ...]]:
        from rosbags.interfaces import Nodetype  # rosbags is not needed on a ROS machine

        cls = self.cls(typename)
        _, fielddefs = self.typestore.fielddefs[typename]
        constants, makers = {}, []
        for fname, desc in fielddefs:
            if desc[0] == Nodetype.BASE:  # numbers, bools, strings: immutable, shared
                constants[fname] = _base_default(desc[1][0])
            else:
                makers.append((fname, self._default_maker(desc)))
        layout = (cls, frozenset(f for f, _ in fielddefs), constants, tuple(makers))
        self._layouts[typename] = layout
        return layout

    def _default_maker(self, desc: Any) -> Callable[[], Any]:
        """A function returning a fresh default value of a field (messages are mutable: never shared)."""
        from rosbags.interfaces import Nodetype  # rosbags is not needed on a ROS machine

        kind, sub = desc
        if kind == Nodetype.BASE:
            value = _base_default(sub[0])
            return lambda: value
        if kind == Nodetype.NAME:
            return lambda: self.new(sub)
        (ekind, esub), length = sub
        if ekind == Nodetype.BASE and esub[0] in _NUMPY_OF_ROS:
            n, dtype = (length if kind == Nodetype.ARRAY else 0), _NUMPY_OF_ROS[esub[0]]
            return lambda: np.zeros(n, dtype=dtype)
        if kind == Nodetype.SEQUENCE:
            return list
        element = self._default_maker((ekind, esub))
        return lambda: [element() for _ in range(length)]

    @staticmethod
    def u8_seq(data: np.ndarray | bytes) -> np.ndarray:
        """A ``uint8[]`` field value (a copy of the bytes)."""
        if isinstance(data, np.ndarray):
            return np.ascontiguousarray(data).reshape(-1).view(np.uint8).copy()
        return np.frombuffer(bytes(data), np.uint8).copy()

    @staticmethod
    def f32_seq(values: Iterable[float]) -> np.ndarray:
        """A ``float32[]`` field value."""
        return np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float32).ravel()

    @staticmethod
    def f64_seq(values: Iterable[float]) -> np.ndarray:
        """A ``float64[]`` field value."""
        return np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64).ravel()

    f64_array = f64_seq  # fixed-size float64[N]


class RclpyMessages:
    """Builds rclpy messages (``sensor_msgs.msg.Image`` ...), imported on first use.

    Sequences of numbers are given as ``array.array``: the generated setters accept that
    without checking every element, which matters for image data.
    """

    def cls(self, typename: str) -> Any:
        pkg, kind, name = typename.split("/")
        try:
            return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
        except (ImportError, AttributeError) as e:
            raise ConversionError(f"message type {typename!r} is not available: {e}") from None

    def new(self, typename: str, **fields: Any) -> Any:
        return self.cls(typename)(**fields)

    @staticmethod
    def u8_seq(data: np.ndarray | bytes) -> array.array:
        out = array.array("B")
        out.frombytes(memoryview(np.ascontiguousarray(data)).cast("B") if isinstance(data, np.ndarray) else bytes(data))
        return out

    @staticmethod
    def f32_seq(values: Iterable[float]) -> array.array:
        return array.array("f", np.asarray(list(values) if not isinstance(values, np.ndarray) else values, np.float32).ravel().tobytes())

    @staticmethod
    def f64_seq(values: Iterable[float]) -> array.array:
        return array.array("d", np.asarray(list(values) if not isinstance(values, np.ndarray) else values, np.float64).ravel().tobytes())

    @staticmethod
    def f64_array(values: Iterable[float]) -> np.ndarray:
        return np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64).ravel()


def _base_default(typ: str) -> Any:
    if typ == "string" or typ == "wstring":
        return ""
    if typ == "bool":
        return False
    if typ in ("float32", "float64"):
        return 0.0
    return 0


# --------------------------------------------------------------------------------------------
# Stamps and headers
# --------------------------------------------------------------------------------------------


def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_time(msgs: Any, ns: int) -> Any:
    """Integer nanoseconds (>= 0) -> builtin_interfaces/Time."""
    ns = int(ns)
    if ns < 0:
        raise ConversionError(f"stamp: negative time {ns} ns")
    return msgs.new("builtin_interfaces/msg/Time", sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def make_header(msgs: Any, stamp_ns: int, frame_id: str) -> Any:
    """std_msgs/Header from nanoseconds and a frame id."""
    return msgs.new("std_msgs/msg/Header", stamp=ns_to_time(msgs, stamp_ns), frame_id=str(frame_id))


# --------------------------------------------------------------------------------------------
# Images
# --------------------------------------------------------------------------------------------

#: encoding -> (numpy dtype, channels)
IMAGE_ENCODINGS: dict[str, tuple[type, int]] = {
    "rgb8": (np.uint8, 3), "bgr8": (np.uint8, 3), "rgba8": (np.uint8, 4), "bgra8": (np.uint8, 4),
    "mono8": (np.uint8, 1), "8UC1": (np.uint8, 1), "mono16": (np.uint16, 1), "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
}
COLOUR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1")
DEPTH_ENCODINGS = ("16UC1", "mono16", "32FC1")


def _bytes_of(data: Any) -> np.ndarray:
    """A message's ``uint8[]`` field (ndarray, array.array, bytes, list) as a 1-D uint8 array.

    A view of the field's memory where it has a buffer (rosbags ndarray, rclpy array.array,
    bytes); a copy only for a list or an ndarray of wider items.
    """
    if isinstance(data, np.ndarray):
        return data.reshape(-1).view(np.uint8) if data.dtype.itemsize == 1 else np.frombuffer(data.tobytes(), np.uint8)
    try:
        return np.frombuffer(memoryview(data).cast("B"), np.uint8)
    except TypeError:
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _image_wire_view(msg: Any, name: str) -> tuple[str, np.ndarray, bool]:
    """Validate an Image and view its pixels where they lie: no copy of the data.

    Returns:
        (encoding, pixels, packed): pixels is (H, W, C) or (H, W) in the wire byte order (which
        may not be native), its rows ``step`` bytes apart; packed = rows without padding and
        items aligned, so the view is usable as it is.

    Raises:
        ConversionError: unsupported encoding, empty size, ``step`` too small, ``data`` length
            not ``step * height``.
    """
    enc = str(msg.encoding)
    if enc not in IMAGE_ENCODINGS:
        raise ConversionError(f"{name}.encoding: {enc!r} is not supported; use one of {list(IMAGE_ENCODINGS)}")
    dtype, channels = IMAGE_ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise ConversionError(f"{name}.width/height: empty image {w}x{h}")
    itemsize = np.dtype(dtype).itemsize
    row_bytes = w * channels * itemsize
    if step < row_bytes:
        raise ConversionError(f"{name}.step: {step} bytes is less than width*channels*bytes = {row_bytes} for {enc}")
    data = _bytes_of(msg.data)
    if data.size != step * h:
        raise ConversionError(f"{name}.data: {data.size} bytes, expected step*height = {step}*{h} = {step * h}")
    wire = np.dtype(dtype).newbyteorder(">" if int(msg.is_bigendian) and itemsize > 1 else "<")
    px = data.reshape(h, step)[:, :row_bytes].view(wire)  # last axis contiguous: a view even with padding
    px = px.reshape(h, w, channels) if channels > 1 else px
    return enc, px, step == row_bytes and px.flags.aligned


def _read_only(arr: np.ndarray) -> np.ndarray:
    arr.flags.writeable = False
    return arr


def image_to_numpy(msg: Any, name: str = "image") -> np.ndarray:
    """sensor_msgs/Image -> array, honouring row padding (``step``) and ``is_bigendian``.

    A read-only view of ``msg.data`` when the rows are packed (``step == width * channels *
    bytes``), in native byte order and aligned: zero copies. Otherwise one copy (dropping the
    padding and swapping the bytes in the same pass), read-only as well so that every layout
    gives callers the same contract. A view follows ``msg.data``: do not refill the message
    while using the array.

    Args:
        msg: the Image message (rclpy or rosbags).
        name: what to call the message in errors (e.g. the topic).

    Returns:
        A read-only array in native byte order: (H, W, C) for multi-channel encodings, (H, W)
        for one channel; dtype uint8 (``rgb8`` ...), uint16 (``16UC1``) or float32 (``32FC1``).

    Raises:
        ConversionError: unsupported encoding, empty size, ``step`` too small, ``data`` length
            not ``step * height``.
    """
    _, px, packed = _image_wire_view(msg, name)
    if not (packed and px.dtype.isnative):
        px = np.ascontiguousarray(px, dtype=px.dtype.newbyteorder("="))
    return _read_only(px)


#: colour encoding -> OpenCV conversion to RGB (None: the pixels are RGB already)
_TO_RGB = {"rgb8": None, "bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB,
           "mono8": cv2.COLOR_GRAY2RGB, "8UC1": cv2.COLOR_GRAY2RGB}


def image_to_rgb(msg: Any, name: str = "image") -> np.ndarray:
    """A colour or grey Image -> (H, W, 3) uint8 RGB, read-only.

    ``rgb8`` with packed rows is a view of ``msg.data`` (see :func:`image_to_numpy`); every
    other layout and encoding costs one copy, the channel swap or grey -> RGB done by OpenCV
    on the padded rows directly.

    Raises:
        ConversionError: the encoding is not one of :data:`COLOUR_ENCODINGS`, or as
            :func:`image_to_numpy`.
    """
    enc = str(msg.encoding)
    if enc not in COLOUR_ENCODINGS:
        raise ConversionError(f"{name}.encoding: {enc!r} is not a colour encoding; use one of {list(COLOUR_ENCODINGS)}")
    _, px, packed = _image_wire_view(msg, name)
    code = _TO_RGB[enc]
    if code is None:
        return _read_only(px if packed else np.ascontiguousarray(px))
    return _read_only(cv2.cvtColor(px, code))


_F32 = np.finfo(np.float32)


def image_to_depth_m(msg: Any, name: str = "depth", depth_scale_m: float = 0.001) -> np.ndarray:
    """A depth Image -> (H, W) float32 metres, invalid pixels NaN, read-only.

    ``16UC1``/``mono16`` hold integer units of ``depth_scale_m`` (millimetres by default, 0 =
    invalid): one new array. ``32FC1`` holds metres (NaN, +-inf, <= 0 = invalid, REP 117): a
    view of ``msg.data`` when packed, native and without invalid pixels, else one copy with
    the invalid pixels set to NaN.

    Raises:
        ConversionError: not a depth encoding, no valid pixel at all, or as :func:`image_to_numpy`.
    """
    enc = str(msg.encoding)
    if enc not in DEPTH_ENCODINGS:
        raise ConversionError(f"{name}.encoding: {enc!r} is not a depth encoding; use one of {list(DEPTH_ENCODINGS)}")
    if not (np.isfinite(depth_scale_m) and depth_scale_m > 0):
        raise ConversionError(f"depth_scale_m: must be positive, got {depth_scale_m}")
    _, px, packed = _image_wire_view(msg, name)
    if px.dtype.kind == "u":
        scale = np.float32(depth_scale_m)
        depth_m = np.multiply(px, scale, dtype=np.float32)  # byte swap and padding removal in the same pass
        if _F32.tiny <= scale <= _F32.max / 65535:
            valid = px != 0  # then only 0 maps to a product that is not positive and finite
        else:  # a scale at the float32 limits: products underflow to 0 or overflow to inf
            valid = (depth_m > 0) & (depth_m < np.inf)
        depth_m[~valid] = np.nan
    else:
        valid = (px > 0) & (px < np.inf)  # False for NaN
        if packed and px.dtype.isnative and valid.all():
            depth_m = px
        else:
            depth_m = np.where(valid, px, np.float32(np.nan)).astype(np.float32, copy=False)
    if not valid.any():
        raise ConversionError(f"{name}.data: no valid depth pixel (all zero, NaN or inf)")
    return _read_only(depth_m)


def numpy_to_image(msgs: Any, arr: np.ndarray, encoding: str, header: Any) -> Any:
    """An array -> sensor_msgs/Image (no padding, native byte order flagged in ``is_bigendian``).

    Args:
        msgs: message factory.
        arr: (H, W, C) or (H, W) array whose dtype and channels match ``encoding``.
        encoding: one of :data:`IMAGE_ENCODINGS`.
        header: std_msgs/Header to stamp it with.

    Raises:
        ConversionError: the array does not fit the encoding.
    """
    if encoding not in IMAGE_ENCODINGS:
        raise ConversionError(f"encoding: {encoding!r} is not supported; use one of {list(IMAGE_ENCODINGS)}")
    dtype, channels = IMAGE_ENCODINGS[encoding]
    a = np.asarray(arr)
    shape_ok = (a.ndim == 2 and channels == 1) or (a.ndim == 3 and a.shape[2] == channels)
    if not shape_ok or a.dtype != np.dtype(dtype) or a.shape[0] == 0 or a.shape[1] == 0:
        raise ConversionError(
            f"image array: {encoding} needs ({'H, W' if channels == 1 else f'H, W, {channels}'}) "
            f"{np.dtype(dtype).name}, got {a.shape} {a.dtype}"
        )
    a = np.ascontiguousarray(a)
    h, w = a.shape[:2]
    return msgs.new(
        "sensor_msgs/msg/Image", header=header, height=h, width=w, encoding=encoding,
        is_bigendian=int(sys.byteorder == "big" and a.dtype.itemsize > 1), step=w * channels * a.dtype.itemsize,
        data=msgs.u8_seq(a),
    )


# --------------------------------------------------------------------------------------------
# Camera info
# --------------------------------------------------------------------------------------------


def camera_info_to_model(msg: Any, name: str = "camera_info") -> CameraModel:
    """sensor_msgs/CameraInfo -> :class:`CameraModel` (K from ``k``, distortion from ``d``).

    The images are assumed rectified (use :func:`camera_info_warnings` to tell the user when
    they are probably not).

    Raises:
        ConversionError: zero size, zero/NaN/ill-formed ``k``, non-finite ``d``.
    """
    w, h = int(msg.width), int(msg.height)
    if w <= 0 or h <= 0:
        raise ConversionError(f"{name}.width/height: must be positive, got {w}x{h}")
    try:
        K = check_K(np.asarray(msg.k, dtype=np.float64), f"{name}.k")
    except InputError as e:
        raise ConversionError(str(e)) from None
    if abs(K[2, 2] - 1.0) > 1e-6 or abs(K[2, 0]) > 1e-9 or abs(K[2, 1]) > 1e-9 or abs(K[1, 0]) > 1e-9:
        raise ConversionError(f"{name}.k: not a pinhole matrix [[fx,s,cx],[0,fy,cy],[0,0,1]]: {K.ravel().tolist()}")
    D = np.asarray(msg.d, dtype=np.float64).ravel()
    if not np.all(np.isfinite(D)):
        raise ConversionError(f"{name}.d: contains NaN or inf: {D.tolist()}")
    return CameraModel(K, w, h, D)


def camera_info_warnings(msg: Any, name: str = "camera_info") -> list[str]:
    """Why a CameraInfo may not fit the rectified-image assumption (empty list if it does)."""
    D = np.asarray(msg.d, dtype=np.float64).ravel()
    if D.size and np.any(np.abs(D) > 1e-9):
        return [
            f"{name}.d: non-zero distortion ({msg.distortion_model}: {np.round(D, 4).tolist()}); "
            "the estimators assume rectified images: subscribe to a rectified image (image_rect) "
            "or expect a larger pose error"
        ]
    return []


class CameraInfoReader:
    """:func:`camera_info_to_model` and :func:`camera_info_warnings` of a camera whose
    CameraInfo rarely changes: the result of the last content read is kept and given again
    while the size, ``k``, ``d``, distortion model (and ``name``) stay the same (a camera
    publishes the same calibration with every image). Content that changes, or that did not
    pass, is read and checked again in full; NaN never compares equal, so it is never kept.
    The kept model's arrays are read-only copies.
    """

    def __init__(self) -> None:
        self._key: tuple | None = None
        self._value: tuple[CameraModel, list[str]] | None = None

    def read(self, msg: Any, name: str = "camera_info") -> tuple[CameraModel, list[str]]:
        """(camera model, warnings) of ``msg``; raises ConversionError as :func:`camera_info_to_model`."""
        try:
            key = (name, msg.width, msg.height, tuple(msg.k), tuple(msg.d), msg.distortion_model)
        except TypeError:  # not sequences: the full check names the field
            key = None
        if key is None or key != self._key or self._value is None:
            self._key, self._value = None, None
            read = camera_info_to_model(msg, name)
            model = CameraModel(read.K, read.width, read.height, read.D.copy())  # K copied by the model
            model.K.flags.writeable = model.D.flags.writeable = False
            self._value = (model, camera_info_warnings(msg, name))
            self._key = key
        model, warnings = self._value
        return model, list(warnings)


def check_image_matches_camera(image_hw: tuple[int, int], model: CameraModel, name: str = "image") -> None:
    """Raise if an image's size differs from the CameraInfo size it is paired with."""
    h, w = int(image_hw[0]), int(image_hw[1])
    if (w, h) != (model.width, model.height):
        raise ConversionError(
            f"{name}.width/height: {w}x{h} but camera_info says {model.width}x{model.height}"
        )


def camera_model_to_info(msgs: Any, model: CameraModel, header: Any, distortion_model: str = "plumb_bob") -> Any:
    """:class:`CameraModel` -> sensor_msgs/CameraInfo (R = I, P = [K | 0])."""
    D = model.D if model.D.size else np.zeros(5)
    P = np.hstack([model.K, np.zeros((3, 1))])
    return msgs.new(
        "sensor_msgs/msg/CameraInfo", header=header, height=int(model.height), width=int(model.width),
        distortion_model=distortion_model, d=msgs.f64_seq(D), k=msgs.f64_array(model.K.ravel()),
        r=msgs.f64_array(np.eye(3).ravel()), p=msgs.f64_array(P.ravel()),
    )


# --------------------------------------------------------------------------------------------
# Poses, TF, detections
# --------------------------------------------------------------------------------------------


def _finite_Rt(items: Sequence[tuple[Any, Any, str]]) -> tuple[np.ndarray, np.ndarray]:
    """[(R, t, name)] -> ((N, 3, 3) rotations, (N, 3) metres), float64, checked.

    Raises:
        ConversionError: naming the first item whose R is not (3, 3), t not (3,), or either not finite.
    """
    Rs, ts = [], []
    for R, t, name in items:
        R = np.asarray(R, dtype=np.float64)
        t = np.asarray(t, dtype=np.float64).reshape(-1)
        if R.shape != (3, 3) or t.shape != (3,):
            raise ConversionError(f"{name}: R must be (3, 3) and t (3,), got {R.shape} and {t.shape}")
        Rs.append(R)
        ts.append(t)
    if not Rs:
        return np.zeros((0, 3, 3)), np.zeros((0, 3))
    R, t = np.stack(Rs), np.stack(ts)
    finite = np.isfinite(R).all(axis=(1, 2)) & np.isfinite(t).all(axis=1)
    if not finite.all():
        raise ConversionError(f"{items[int(np.argmin(finite))][2]}: pose contains NaN or inf")
    return R, t


#: Up to this many rotations per call are converted in Python (below); more go to scipy at once.
_PY_ROTATIONS_MAX = 64
#: |R R^T - I| bound under which a matrix is converted in Python: scipy orthogonalises a matrix
#: only beyond 1e-12, so below this bound it takes the same path as here.
_ORTHONORMAL_TOL = 1e-13


def _quat_of_rotation(m: list[list[float]]) -> list[float] | None:
    """One rotation (3 rows of 3 floats) -> [x, y, z, w], w >= 0, computed as scipy's
    ``Rotation.from_matrix(m).as_quat()`` computes it (the same operations in the same order:
    the same floats), or None when ``m`` is not orthonormal within :data:`_ORTHONORMAL_TOL` or
    is a reflection (then scipy's own path decides)."""
    (m00, m01, m02), (m10, m11, m12), (m20, m21, m22) = m
    tol = _ORTHONORMAL_TOL
    if not (abs(m00 * m00 + m01 * m01 + m02 * m02 - 1.0) <= tol and abs(m10 * m10 + m11 * m11 + m12 * m12 - 1.0) <= tol
            and abs(m20 * m20 + m21 * m21 + m22 * m22 - 1.0) <= tol and abs(m00 * m10 + m01 * m11 + m02 * m12) <= tol
            and abs(m00 * m20 + m01 * m21 + m02 * m22) <= tol and abs(m10 * m20 + m11 * m21 + m12 * m22) <= tol
            and m00 * (m11 * m22 - m12 * m21) - m01 * (m10 * m22 - m12 * m20) + m02 * (m10 * m21 - m11 * m20) > 0.0):
        return None
    tr = m00 + m11 + m22
    k, top = 0, m00  # the first largest of (m00, m11, m22, trace), as scipy's argmax picks it
    if m11 > top:
        k, top = 1, m11
    if m22 > top:
        k, top = 2, m22
    if tr > top:
        k = 3
    if k == 0:
        q = (1 - tr + 2 * m00, m10 + m01, m20 + m02, m21 - m12)
    elif k == 1:
        q = (m10 + m01, 1 - tr + 2 * m11, m21 + m12, m02 - m20)
    elif k == 2:
        q = (m20 + m02, m21 + m12, 1 - tr + 2 * m22, m10 - m01)
    else:
        q = (m21 - m12, m02 - m20, m10 - m01, 1 + tr)
    n = math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])
    x, y, z, w = q[0] / n, q[1] / n, q[2] / n, q[3] / n
    return [-x, -y, -z, -w] if w < 0 else [x, y, z, w]


def _quats_xyzw(R: np.ndarray) -> np.ndarray:
    """(N, 3, 3) -> (N, 4) quaternions (x, y, z, w), w >= 0: the floats of
    :func:`featmap_ros.geometry.quat_xyzw_from_matrix` (scipy), bit for bit (test_ros_conversions
    checks), computed in Python for the few rotations of a frame: a scipy call costs 0.1-0.2 ms
    whatever the count, this ~4 us per rotation. Many rotations, or any matrix that is not a
    clean rotation, go to scipy."""
    R = np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)
    if not len(R):
        return np.zeros((0, 4))
    if len(R) <= _PY_ROTATIONS_MAX:
        qs = [_quat_of_rotation(m) for m in R.tolist()]
        if all(q is not None for q in qs):
            return np.array(qs, dtype=np.float64)
    return quat_xyzw_from_matrix(R).reshape(-1, 4)


def _rotation_of_quat(q: Sequence[float]) -> list[list[float]]:
    """[x, y, z, w] (non-zero) -> its rotation (3 rows), computed as scipy's
    ``Rotation.from_quat(q).as_matrix()`` computes it (normalised first): the same floats."""
    x, y, z, w = q
    n = math.sqrt(x * x + y * y + z * z + w * w)
    x, y, z, w = x / n, y / n, z / n, w / n
    x2, y2, z2, w2 = x * x, y * y, z * z, w * w
    xy, zw, xz, yw, yz, xw = x * y, z * w, x * z, y * w, y * z, x * w
    return [[x2 - y2 - z2 + w2, 2 * (xy - zw), 2 * (xz + yw)],
            [2 * (xy + zw), -x2 + y2 - z2 + w2, 2 * (yz - xw)],
            [2 * (xz - yw), 2 * (yz + xw), -x2 - y2 + z2 + w2]]


def _matrices_from_quats(q: Sequence[Sequence[float]]) -> np.ndarray:
    """N quaternions (x, y, z, w), each checked finite and non-zero (:func:`_pose_fields`) ->
    (N, 3, 3): :func:`featmap_ros.geometry.matrix_from_quat_xyzw`'s floats, in Python for a few."""
    if len(q) <= _PY_ROTATIONS_MAX:
        return np.array([_rotation_of_quat(v) for v in q], dtype=np.float64).reshape(-1, 3, 3)
    return matrix_from_quat_xyzw(np.array(q, dtype=np.float64)).reshape(-1, 3, 3)


def _pose_msgs(msgs: Any, t_m: np.ndarray, q_xyzw: np.ndarray) -> list[Any]:
    """(N, 3) metres and (N, 4) quaternions -> N geometry_msgs/Pose, classes called directly."""
    Pose, Point, Quaternion = (msgs.cls(f"geometry_msgs/msg/{n}") for n in ("Pose", "Point", "Quaternion"))
    return [Pose(position=Point(x=x, y=y, z=z), orientation=Quaternion(x=qx, y=qy, z=qz, w=qw))
            for (x, y, z), (qx, qy, qz, qw) in zip(t_m.tolist(), q_xyzw.tolist())]


def _point_msgs(msgs: Any, xyz: np.ndarray) -> list[Any]:
    """(N, 3) metres -> N geometry_msgs/Point."""
    Point = msgs.cls("geometry_msgs/msg/Point")
    return [Point(x=x, y=y, z=z) for x, y, z in np.asarray(xyz, dtype=np.float64).reshape(-1, 3).tolist()]


def point_msg(msgs: Any, xyz: Any) -> Any:
    """(3,) metres -> geometry_msgs/Point."""
    return _point_msgs(msgs, np.asarray(xyz, dtype=np.float64).reshape(3))[0]


def pose_msg(msgs: Any, R: np.ndarray, t_m: np.ndarray, name: str = "pose") -> Any:
    """(3, 3) rotation and (3,) metres -> geometry_msgs/Pose."""
    R, t = _finite_Rt([(R, t_m, name)])
    return _pose_msgs(msgs, t, _quats_xyzw(R))[0]


def _identity_pose(msgs: Any) -> Any:
    return _pose_msgs(msgs, np.zeros((1, 3)), np.array([[0.0, 0.0, 0.0, 1.0]]))[0]


def _pose_fields(pose: Any, name: str) -> tuple[list[float], list[float]]:
    """geometry_msgs/Pose -> (quaternion xyzw, position), checked as :func:`pose_msg_to_Rt`."""
    o, p = pose.orientation, pose.position
    q = [float(o.x), float(o.y), float(o.z), float(o.w)]
    t = [float(p.x), float(p.y), float(p.z)]
    if not all(map(math.isfinite, q + t)):
        raise ConversionError(f"{name}: contains NaN or inf")
    if math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]) < 1e-12:
        raise ConversionError(f"{name}.orientation: quaternion: zero norm")
    return q, t


def pose_msg_to_Rt(pose: Any) -> tuple[np.ndarray, np.ndarray]:
    """geometry_msgs/Pose -> ((3, 3) rotation, (3,) metres)."""
    q, t = _pose_fields(pose, "pose")
    return _matrices_from_quats([q])[0], np.array(t)


def object_pose_to_pose_stamped(msgs: Any, pose: ObjectPose, header: Any) -> Any:
    """ObjectPose -> geometry_msgs/PoseStamped in ``header.frame_id``."""
    return ObjectPoseMessages(msgs, [pose]).pose_stamped(0, header)


def transform_msg(msgs: Any, R: np.ndarray, t_m: np.ndarray, header: Any, child_frame_id: str) -> Any:
    """A rotation and translation -> geometry_msgs/TransformStamped (parent = header.frame_id)."""
    R, t = _finite_Rt([(R, t_m, str(child_frame_id))])
    return _transform_msg(msgs, t[0], _quats_xyzw(R)[0], header, child_frame_id)


def _transform_msg(msgs: Any, t_m: np.ndarray, q_xyzw: np.ndarray, header: Any, child_frame_id: str) -> Any:
    (x, y, z), (qx, qy, qz, qw) = t_m.tolist(), q_xyzw.tolist()
    return msgs.new(
        "geometry_msgs/msg/TransformStamped", header=header, child_frame_id=str(child_frame_id),
        transform=msgs.cls("geometry_msgs/msg/Transform")(
            translation=msgs.cls("geometry_msgs/msg/Vector3")(x=x, y=y, z=z),
            rotation=msgs.cls("geometry_msgs/msg/Quaternion")(x=qx, y=qy, z=qz, w=qw),
        ),
    )


def object_pose_to_transform(msgs: Any, pose: ObjectPose, header: Any, frame_prefix: str = "") -> Any:
    """ObjectPose -> TransformStamped from the camera frame to ``<frame_prefix><object_name>``."""
    return ObjectPoseMessages(msgs, [pose]).transform(0, header, frame_prefix)


def object_poses_to_detection3d_array(msgs: Any, poses: Sequence[ObjectPose], header: Any) -> Any:
    """ObjectPoses -> vision_msgs/Detection3DArray (see :meth:`ObjectPoseMessages.detection3d_array`)."""
    return ObjectPoseMessages(msgs, poses).detection3d_array(header)


class ObjectPoseMessages:
    """The output messages of one frame's object poses; what they share is computed once.

    Every message of a pose (detection, PoseStamped, TF, markers) carries the same rotation as a
    quaternion: it is converted here once for all poses (:func:`_quats_xyzw`), and the poses'
    messages are built once per call. Build one per frame (per set of poses) and take every
    message from it, as ``pipeline.ObjectPipeline`` does; the module's functions build a
    single-use one each.

    Args:
        msgs: message factory.
        poses: estimates in the camera optical frame (not modified).

    Raises:
        ConversionError: a pose whose R is not (3, 3), t not (3,), or not finite (names the object).
    """

    def __init__(self, msgs: Any, poses: Sequence[ObjectPose]) -> None:
        self.msgs = msgs
        self.poses = list(poses)
        self.R_m2c, self.t_m2c_m = _finite_Rt([(p.R_m2c, p.t_m2c_m, p.object_name) for p in self.poses])
        self.q_m2c_xyzw = _quats_xyzw(self.R_m2c)  # (N, 4)

    def pose_stamped(self, i: int, header: Any) -> Any:
        """geometry_msgs/PoseStamped of pose ``i`` in ``header.frame_id``."""
        pose = _pose_msgs(self.msgs, self.t_m2c_m[i:i + 1], self.q_m2c_xyzw[i:i + 1])[0]
        return self.msgs.new("geometry_msgs/msg/PoseStamped", header=header, pose=pose)

    def covariance_row_major(self, i: int) -> np.ndarray:
        """(36,) float64 covariance of pose ``i``, row-major (x, y, z, rot x, rot y, rot z: m^2,
        rad^2, REP 103); all zeros when the pose has none (unknown)."""
        c = self.poses[i].covariance
        if c is None:
            return np.zeros(36)
        c = np.asarray(c, np.float64)
        if c.size != 36 or not np.all(np.isfinite(c)):
            raise ConversionError(f"pose of {self.poses[i].object_name!r}: covariance is not a finite 6x6 matrix")
        return c.reshape(36).copy()

    def pose_with_covariance_stamped(self, i: int, header: Any) -> Any:
        """geometry_msgs/PoseWithCovarianceStamped of pose ``i`` in ``header.frame_id``."""
        pose = _pose_msgs(self.msgs, self.t_m2c_m[i:i + 1], self.q_m2c_xyzw[i:i + 1])[0]
        pwc = self.msgs.new("geometry_msgs/msg/PoseWithCovariance", pose=pose,
                            covariance=self.msgs.f64_array(self.covariance_row_major(i)))
        return self.msgs.new("geometry_msgs/msg/PoseWithCovarianceStamped", header=header, pose=pwc)

    def transform(self, i: int, header: Any, frame_prefix: str = "") -> Any:
        """TransformStamped from ``header.frame_id`` to ``<frame_prefix><object_name>`` of pose ``i``."""
        return _transform_msg(self.msgs, self.t_m2c_m[i], self.q_m2c_xyzw[i], header, f"{frame_prefix}{self.poses[i].object_name}")

    def detection3d_array(self, header: Any) -> Any:
        """vision_msgs/Detection3DArray, one detection per pose.

        Each detection: ``results[0].hypothesis`` = (object name, score), ``results[0].pose.pose``
        = the model frame's pose, ``results[0].pose.covariance`` = its covariance (row-major 6x6,
        zeros = unknown; :meth:`covariance_row_major`), ``bbox`` = the model's box (centre in the camera frame,
        oriented as the model, size = extents), ``id`` = object name.

        Raises:
            ConversionError: a box centre that is not finite (names the object).
        """
        msgs, n = self.msgs, len(self.poses)
        centers_m = np.array([np.asarray(p.center_m, np.float64).reshape(3) for p in self.poses]).reshape(n, 3)
        box_c = np.einsum("nij,nj->ni", self.R_m2c, centers_m) + self.t_m2c_m  # (N, 3) box centres, camera frame
        _finite_Rt([(R, t, p.object_name) for R, t, p in zip(self.R_m2c, box_c, self.poses)])
        model_poses = _pose_msgs(msgs, self.t_m2c_m, self.q_m2c_xyzw)
        box_poses = _pose_msgs(msgs, box_c, self.q_m2c_xyzw)
        Vector3 = msgs.cls("geometry_msgs/msg/Vector3")
        dets = []
        for i, (p, model_pose, box_pose) in enumerate(zip(self.poses, model_poses, box_poses)):
            hyp = msgs.new(
                "vision_msgs/msg/ObjectHypothesisWithPose",
                hypothesis=msgs.new("vision_msgs/msg/ObjectHypothesis", class_id=str(p.object_name), score=float(p.score)),
                pose=msgs.new("geometry_msgs/msg/PoseWithCovariance", pose=model_pose,
                              covariance=msgs.f64_array(self.covariance_row_major(i))),
            )
            sx, sy, sz = np.asarray(p.extents_m, dtype=np.float64).reshape(3).tolist()
            bbox = msgs.new("vision_msgs/msg/BoundingBox3D", center=box_pose, size=Vector3(x=sx, y=sy, z=sz))
            dets.append(msgs.new("vision_msgs/msg/Detection3D", header=header, results=[hyp], bbox=bbox, id=str(p.object_name)))
        return msgs.new("vision_msgs/msg/Detection3DArray", header=header, detections=dets)

    def markers(self, header: Any, mesh_resources: Mapping[str, str] | None = None, mesh_scale: float = 1.0,
                rgba: Sequence[float] = rgba_unit(ESTIMATE_RGB)) -> Any:
        """visualization_msgs/MarkerArray: DELETEALL, then per pose a mesh and its box.

        Args:
            header: the input image's header.
            mesh_resources: object name -> ``package://featmap_ros/meshes/<name>.ply`` (or any URI
                RViz reads); objects without one get the box only.
            mesh_scale: scale applied to the mesh (0.001 for BOP meshes in millimetres).
            rgba: colour of boxes and meshes without embedded colours.

        Returns:
            MarkerArray with namespaces ``<name>/mesh`` (MESH_RESOURCE) and ``<name>/box``
            (LINE_LIST of the 12 box edges in the model frame, marker pose = object pose).
        """
        msgs = self.msgs
        M = msgs.cls("visualization_msgs/msg/Marker")
        mesh_type, line_list, add = int(M.MESH_RESOURCE), int(M.LINE_LIST), int(M.ADD)
        markers = [delete_all_marker(msgs, header)]
        seen: dict[str, int] = {}
        s = float(mesh_scale)
        for p, pose in zip(self.poses, _pose_msgs(msgs, self.t_m2c_m, self.q_m2c_xyzw)):
            k = seen.get(p.object_name, 0)
            seen[p.object_name] = k + 1
            uri = (mesh_resources or {}).get(p.object_name, "")
            if uri:
                markers.append(msgs.new(
                    "visualization_msgs/msg/Marker", header=header, ns=f"{p.object_name}/mesh", id=k,
                    type=mesh_type, action=add, pose=pose, scale=_vec3(msgs, s, s, s),
                    color=_color(msgs, rgba), mesh_resource=uri, mesh_use_embedded_materials=True,
                ))
            markers.append(msgs.new(
                "visualization_msgs/msg/Marker", header=header, ns=f"{p.object_name}/box", id=k,
                type=line_list, action=add, pose=pose, scale=_vec3(msgs, 0.003, 0.0, 0.0),
                color=_color(msgs, rgba), points=_point_msgs(msgs, p.box_corners_m()[_BOX_EDGE_ENDS]),
            ))
        return msgs.new("visualization_msgs/msg/MarkerArray", markers=markers)


#: the corner indices of the box's edges, end after end: (24,)
_BOX_EDGE_ENDS = np.array([i for edge in BOX_EDGES for i in edge])
_BOX_EDGE_ENDS.flags.writeable = False


def detection3d_array_to_object_poses(msg: Any, obj_ids: Mapping[str, int] | None = None, name: str = "detections") -> list[ObjectPose]:
    """vision_msgs/Detection3DArray -> ObjectPoses (the best hypothesis of each detection).

    Args:
        msg: the message (e.g. the player's ground truth or this node's output).
        obj_ids: object name -> dataset id; -1 when absent.

    Raises:
        ConversionError: a detection without results or with a NaN pose.
    """
    picked = []
    for i, det in enumerate(msg.detections):
        if not det.results:
            raise ConversionError(f"{name}.detections[{i}].results: empty")
        best = max(det.results, key=lambda r: float(r.hypothesis.score))
        q, t = _pose_fields(best.pose.pose, f"{name}.detections[{i}].pose")
        qb, tb = _pose_fields(det.bbox.center, f"{name}.detections[{i}].pose")
        picked.append((best, det.bbox.size, q, t, qb, tb))
    if not picked:
        return []
    # one rotation conversion for all detections; the box's rotation is not needed (it is the model's)
    Rs = _matrices_from_quats([q for _, _, q, _, _, _ in picked])
    out = []
    for (best, size, _, t, _, tb), R in zip(picked, Rs):
        cls = str(best.hypothesis.class_id)
        t, tb = np.array(t), np.array(tb)
        cov = np.asarray(best.pose.covariance, dtype=np.float64).reshape(-1)
        out.append(ObjectPose(
            object_name=cls, obj_id=int((obj_ids or {}).get(cls, -1)), R_m2c=R, t_m2c_m=t,
            score=float(best.hypothesis.score),
            extents_m=np.array([size.x, size.y, size.z], dtype=np.float64),
            center_m=R.T @ (tb - t),
            # all zeros = unknown (REP 103 has no flag for it)
            covariance=cov.reshape(6, 6).copy() if cov.size == 36 and np.all(np.isfinite(cov)) and np.any(cov) else None,
        ))
    return out


def detection2d_array_to_boxes(msg: Any, name: str = "detections_2d") -> list[tuple[str, np.ndarray]]:
    """vision_msgs/Detection2DArray -> [(class_id, (4,) float64 xywh pixels)], best hypothesis each.

    Uses ``bbox.center.position.x/y`` (vision_msgs >= 4, Humble and later).

    Raises:
        ConversionError: a detection without results, or a non-finite or non-positive box.
    """
    out = []
    for i, det in enumerate(msg.detections):
        if not det.results:
            raise ConversionError(f"{name}.detections[{i}].results: empty (no class_id)")
        best = max(det.results, key=lambda r: float(r.hypothesis.score))
        c = det.bbox.center.position
        cx, cy, sw, sh = float(c.x), float(c.y), float(det.bbox.size_x), float(det.bbox.size_y)
        if not (np.all(np.isfinite([cx, cy, sw, sh])) and sw > 0 and sh > 0):
            raise ConversionError(f"{name}.detections[{i}].bbox: needs finite centre and positive size, got centre ({cx}, {cy}) size {sw}x{sh}")
        out.append((str(best.hypothesis.class_id), np.array([cx - sw / 2, cy - sh / 2, sw, sh], dtype=np.float64)))
    return out


def boxes_to_detection2d_array(msgs: Any, boxes: Sequence[tuple[str, np.ndarray, float]], header: Any) -> Any:
    """[(class_id, (4,) xywh pixels, score)] -> vision_msgs/Detection2DArray."""
    dets = []
    for cls, xywh, score in boxes:
        x, y, w, h = (float(v) for v in np.asarray(xywh, dtype=np.float64).reshape(4))
        hyp = msgs.new("vision_msgs/msg/ObjectHypothesisWithPose",
                       hypothesis=msgs.new("vision_msgs/msg/ObjectHypothesis", class_id=str(cls), score=float(score)))
        center = msgs.new("vision_msgs/msg/Pose2D", position=msgs.new("vision_msgs/msg/Point2D", x=x + w / 2, y=y + h / 2), theta=0.0)
        bbox = msgs.new("vision_msgs/msg/BoundingBox2D", center=center, size_x=w, size_y=h)
        dets.append(msgs.new("vision_msgs/msg/Detection2D", header=header, results=[hyp], bbox=bbox, id=str(cls)))
    return msgs.new("vision_msgs/msg/Detection2DArray", header=header, detections=dets)


# --------------------------------------------------------------------------------------------
# Hands
# --------------------------------------------------------------------------------------------


def hand_pose_to_msg(msgs: Any, hand: HandPose, header: Any) -> Any:
    """HandPose -> featmap_ros/HandPose (joints in metres in ``header.frame_id``).

    Raises:
        ConversionError: joints not (J, 3), names not J long, or NaN joints.
    """
    joints = np.asarray(hand.joints_m, dtype=np.float64)
    if joints.ndim != 2 or joints.shape[1] != 3 or joints.shape[0] != len(hand.joint_names):
        raise ConversionError(f"hand_pose.joints: expected ({len(hand.joint_names)}, 3), got {joints.shape}")
    if not np.all(np.isfinite(joints)):
        raise ConversionError("hand_pose.joints: contain NaN or inf")
    return msgs.new(
        "featmap_ros/msg/HandPose", header=header, joint_names=[str(n) for n in hand.joint_names],
        joints=_point_msgs(msgs, joints), joint_scores=msgs.f32_seq(np.asarray(hand.joint_scores, np.float32).ravel()),
        score=float(hand.score), crop_center=point_msg(msgs, np.asarray(hand.crop_center_m, np.float64).reshape(3)),
    )


def empty_hand_pose_msg(msgs: Any, header: Any) -> Any:
    """featmap_ros/HandPose with no joints and score 0: the frame was processed, no hand was found.

    Published so that consumers (the evaluator, a player pacing on acks) see every frame.
    """
    return msgs.new("featmap_ros/msg/HandPose", header=header, joint_names=[], joints=[],
                    joint_scores=msgs.f32_seq([]), score=0.0, crop_center=point_msg(msgs, np.zeros(3)))


def hand_pose_msg_to_result(msg: Any) -> HandPose:
    """featmap_ros/HandPose -> HandPose (for the evaluator and the ground-truth topic)."""
    joints = np.array([[p.x, p.y, p.z] for p in msg.joints], dtype=np.float64).reshape(-1, 3)
    if len(msg.joint_names) != joints.shape[0]:
        raise ConversionError(f"hand_pose.joint_names: {len(msg.joint_names)} names for {joints.shape[0]} joints")
    c = msg.crop_center
    return HandPose(
        joint_names=[str(n) for n in msg.joint_names], joints_m=joints, score=float(msg.score),
        joint_scores=np.asarray(msg.joint_scores, dtype=np.float64).ravel(),
        crop_center_m=np.array([c.x, c.y, c.z], dtype=np.float64),
    )


#: Bones drawn between named joints (NYU's 14 evaluation joints); pairs with a missing name are skipped.
HAND_SKELETON = HAND_BONES  # the markers' skeleton: the one of data.specs


# --------------------------------------------------------------------------------------------
# Markers
# --------------------------------------------------------------------------------------------


def _color(msgs: Any, rgba: Sequence[float]) -> Any:
    r, g, b, a = (float(v) for v in rgba)
    return msgs.cls("std_msgs/msg/ColorRGBA")(r=r, g=g, b=b, a=a)


def _vec3(msgs: Any, x: float, y: float, z: float) -> Any:
    return msgs.cls("geometry_msgs/msg/Vector3")(x=float(x), y=float(y), z=float(z))


def delete_all_marker(msgs: Any, header: Any) -> Any:
    """A DELETEALL marker: first in every array, so markers of objects no longer seen vanish."""
    M = msgs.cls("visualization_msgs/msg/Marker")
    return msgs.new("visualization_msgs/msg/Marker", header=header, action=int(M.DELETEALL), pose=_identity_pose(msgs))


def object_markers(
    msgs: Any,
    poses: Sequence[ObjectPose],
    header: Any,
    mesh_resources: Mapping[str, str] | None = None,
    mesh_scale: float = 1.0,
    rgba: Sequence[float] = rgba_unit(ESTIMATE_RGB),
) -> Any:
    """ObjectPoses -> visualization_msgs/MarkerArray: DELETEALL, then per object a mesh and its box.

    See :meth:`ObjectPoseMessages.markers` for the arguments and the namespaces.
    """
    return ObjectPoseMessages(msgs, poses).markers(header, mesh_resources, mesh_scale, rgba)


def hand_markers(
    msgs: Any,
    hand: HandPose | None,
    header: Any,
    skeleton: Sequence[tuple[str, str]] = HAND_SKELETON,
    joint_diameter_m: float = 0.012,
    rgba: Sequence[float] = rgba_unit(ESTIMATE_RGB),
) -> Any:
    """A hand -> MarkerArray: DELETEALL, joints (SPHERE_LIST, ns ``hand/joints``) and bones
    (LINE_LIST, ns ``hand/bones``). ``hand=None`` clears the display."""
    M = msgs.cls("visualization_msgs/msg/Marker")
    markers = [delete_all_marker(msgs, header)]
    if hand is not None:
        joints = np.asarray(hand.joints_m, dtype=np.float64).reshape(-1, 3)
        if not np.all(np.isfinite(joints)):
            raise ConversionError("hand_pose.joints: contain NaN or inf")
        d = float(joint_diameter_m)
        markers.append(msgs.new(
            "visualization_msgs/msg/Marker", header=header, ns="hand/joints", id=0, type=int(M.SPHERE_LIST),
            action=int(M.ADD), pose=_identity_pose(msgs), scale=_vec3(msgs, d, d, d), color=_color(msgs, rgba),
            points=_point_msgs(msgs, joints),
        ))
        edges = skeleton_edges(hand.joint_names, skeleton)
        markers.append(msgs.new(
            "visualization_msgs/msg/Marker", header=header, ns="hand/bones", id=0, type=int(M.LINE_LIST),
            action=int(M.ADD), pose=_identity_pose(msgs), scale=_vec3(msgs, d / 3, 0.0, 0.0), color=_color(msgs, rgba),
            points=_point_msgs(msgs, joints[np.asarray(edges, dtype=np.intp).reshape(-1)]),
        ))
    return msgs.new("visualization_msgs/msg/MarkerArray", markers=markers)
