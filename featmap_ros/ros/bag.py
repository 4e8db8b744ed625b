"""Datasets -> rosbag2 bags with the rosbags library (no ROS needed), written atomically.

What a bag holds (topics of DESIGN §5, the same as ``dataset_player_node`` publishes):

============================== ================================== =================================
topic                          type                               when
============================== ================================== =================================
/camera/color/image_raw        sensor_msgs/msg/Image (rgb8)       BOP
/camera/color/camera_info      sensor_msgs/msg/CameraInfo         BOP
/camera/depth/image_raw        sensor_msgs/msg/Image (16UC1, mm)  BOP with depth/, NYU
/camera/depth/camera_info      sensor_msgs/msg/CameraInfo         BOP with depth/, NYU
/ground_truth/detections       vision_msgs/msg/Detection3DArray   BOP
/ground_truth/hand_pose        featmap_ros/msg/HandPose           NYU
/tf_static                     tf2_msgs/msg/TFMessage             once, first
============================== ================================== =================================

Every message of a frame carries the same header stamp (:func:`featmap_ros.data.player.stamp_ns`),
which is also its bag receive time. Frame ids: BOP colour and its registered depth
``camera_color_optical_frame``; NYU depth ``camera_depth_optical_frame``; ``/tf_static`` has
``camera_link`` -> each of them (REP 103 optical rotation), with transient-local QoS so that
``ros2 bag play`` latches it.

Formats: ``--distro jazzy`` writes rosbag2 metadata version 9 (Jazzy's); ``--distro humble``
writes version 8, whose ``offered_qos_profiles`` is a YAML *string* — Humble's reader (metadata
version 5, ``rosbag2_storage/src/rosbag2_storage/metadata_io.cpp`` on the ``humble`` branch)
decodes that field ``as<std::string>()`` and fails on version 9's list, and ignores the keys it
does not know (``type_description_hash``, ``custom_data``, ``ros_distro``). Types come from the
typestore of that distro plus ``vision_msgs`` and ``featmap_ros/msg/HandPose`` registered from
their ``.msg`` text (:mod:`featmap_ros.ros.msg_defs`); each connection stores its full message
definition, so readers need no installed package to decode them.

Atomicity: the bag is written into a hidden temporary folder beside ``--out`` and renamed into
place only after the writer closed cleanly; a killed conversion leaves no folder at ``--out``
(and an existing bag there is replaced only by a complete one). Streaming: one frame in memory
at a time (sqlite3 keeps its journal on disk, mcap flushes 1 MiB chunks).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from featmap_ros import atomic
from featmap_ros.data import player
from featmap_ros.data.player import CAMERA_LINK, COLOUR_FRAME, DEPTH_FRAME, OPTICAL_FROM_LINK_XYZW, TOPICS, PlayerFrame
from featmap_ros.errors import InputError
from featmap_ros.geometry import CameraModel, matrix_from_quat_xyzw
from featmap_ros.ros import conversions as conv
from featmap_ros.ros.msg_defs import featmap_typestore

#: rosbag2 metadata version written per distro (Humble reads <= 8 with string QoS; Jazzy writes 9).
METADATA_VERSION = {"humble": 8, "jazzy": 9}
STORAGES = ("sqlite3", "mcap")


@dataclass
class BagSummary:
    """What was written."""

    path: Path
    frames: int
    messages: dict[str, int] = field(default_factory=dict)
    storage: str = "sqlite3"
    distro: str = "jazzy"
    version: int = 9


def _qos(depth: int = 10, transient_local: bool = False) -> Any:
    from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime

    zero = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, depth, QosReliability.RELIABLE,
               QosDurability.TRANSIENT_LOCAL if transient_local else QosDurability.VOLATILE,
               zero, zero, QosLiveliness.AUTOMATIC, zero, False)


class BagWriter:
    """A rosbag2 bag written frame by frame into a temporary folder, renamed when complete.

    Use as a context manager::

        with BagWriter(out, storage="mcap", distro="humble") as w:
            for frame in frames:
                w.write_frame(frame, stamp)

    Args:
        out: the bag folder to create (replaced only when the new one is complete).
        storage: ``sqlite3`` or ``mcap``.
        distro: ``jazzy`` (metadata version 9) or ``humble`` (version 8).

    Raises:
        InputError: unknown storage or distro.
    """

    def __init__(self, out: str | os.PathLike, storage: str = "sqlite3", distro: str = "jazzy",
                 custom_data: dict[str, str] | None = None) -> None:
        if storage not in STORAGES:
            raise InputError(f"--storage: {storage!r} is not one of {list(STORAGES)}")
        if distro not in METADATA_VERSION:
            raise InputError(f"--distro: {distro!r} is not one of {sorted(METADATA_VERSION)}")
        self.out = Path(out)
        self.storage = storage
        self.distro = distro
        self.typestore = featmap_typestore(distro)
        self.msgs = conv.RosbagsMessages(self.typestore)
        self._tmp: Path | None = None
        self._writer: Any = None
        self._conns: dict[str, Any] = {}
        self._tf_frames: set[str] = set()
        self.counts: dict[str, int] = {}
        self.frames = 0
        self.custom_data = {"featmap_ros.writer": "featmap bag", **{str(k): str(v) for k, v in (custom_data or {}).items()}}

    def __enter__(self) -> "BagWriter":
        from rosbags.rosbag2 import StoragePlugin, Writer

        if self.out.exists() and not (self.out / "metadata.yaml").is_file():
            raise InputError(f"--out {self.out}: exists and is not a rosbag2 bag; refusing to replace it")
        atomic.make_dir(self.out.parent, what=str(self.out))
        self._tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".partial", dir=self.out.parent))
        plugin = StoragePlugin.MCAP if self.storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(self._tmp / self.out.name, version=METADATA_VERSION[self.distro], storage_plugin=plugin)
        for k, v in self.custom_data.items():
            self._writer.set_custom_data(k, v)
        self._writer.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            if exc_type is None:
                self._writer.close()
                self._move_into_place()
            else:
                try:
                    self._writer.abort()
                except Exception:  # noqa: BLE001 - the original error matters, not the cleanup's
                    pass
        finally:
            if self._tmp is not None and self._tmp.exists():
                shutil.rmtree(self._tmp, ignore_errors=True)
        return False

    def _move_into_place(self) -> None:
        assert self._tmp is not None
        new = self._tmp / self.out.name
        if self.out.exists():
            old = self.out.with_name(f".{self.out.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.out, old)
            os.replace(new, self.out)
            shutil.rmtree(old)
        else:
            os.replace(new, self.out)

    def _conn(self, topic: str, typename: str, transient_local: bool = False) -> Any:
        c = self._conns.get(topic)
        if c is None:
            c = self._writer.add_connection(topic, typename, typestore=self.typestore,
                                            offered_qos_profiles=[_qos(1 if transient_local else 10, transient_local)])
            self._conns[topic] = c
            self.counts[topic] = 0
        return c

    def write(self, topic: str, msg: Any, stamp: int, transient_local: bool = False) -> None:
        """Serialise ``msg`` (a typestore message) to CDR and write it at ``stamp`` ns."""
        typename = msg.__msgtype__
        data = self.typestore.serialize_cdr(msg, typename)
        self._writer.write(self._conn(topic, typename, transient_local), int(stamp), data)
        self.counts[topic] += 1

    def write_tf_static(self, frame_ids: Iterable[str], stamp: int) -> None:
        """``camera_link`` -> each optical frame, once per frame id (REP 103 optical rotation)."""
        new = [f for f in frame_ids if f not in self._tf_frames]
        if not new:
            return
        self._tf_frames.update(new)
        self.write(TOPICS["tf_static"], tf_static_message(self.msgs, new, stamp), stamp, transient_local=True)

    def write_frame(self, frame: PlayerFrame, stamp: int) -> None:
        """All messages of one frame, stamped ``stamp`` ns (header and bag time)."""
        if self.frames == 0:
            self.write_tf_static([frame.frame_id], stamp)
        for topic, msg in frame_messages(self.msgs, frame, stamp):
            self.write(topic, msg, stamp)
        self.frames += 1

    def summary(self) -> BagSummary:
        return BagSummary(self.out, self.frames, dict(self.counts), self.storage, self.distro, METADATA_VERSION[self.distro])


def frame_messages(msgs: Any, frame: PlayerFrame, stamp: int) -> list[tuple[str, Any]]:
    """(topic, message) pairs of one frame, every header stamped ``stamp`` ns in ``frame.frame_id``.

    Used by the bag writer and ``dataset_player_node`` alike (``msgs`` is
    :class:`~featmap_ros.ros.conversions.RosbagsMessages` or ``RclpyMessages``).
    """

    header = conv.make_header(msgs, stamp, frame.frame_id)
    info = conv.camera_model_to_info(msgs, CameraModel(frame.K, frame.width, frame.height, np.zeros(5)), header)
    out: list[tuple[str, Any]] = []
    if frame.rgb is not None:
        out += [(TOPICS["colour_image"], conv.numpy_to_image(msgs, frame.rgb, "rgb8", header)), (TOPICS["colour_info"], info)]
    if frame.depth_mm is not None:
        out += [(TOPICS["depth_image"], conv.numpy_to_image(msgs, frame.depth_mm, "16UC1", header)), (TOPICS["depth_info"], info)]
    if frame.objects is not None:
        out.append((TOPICS["gt_objects"], conv.object_poses_to_detection3d_array(msgs, frame.objects, header)))
    if frame.hand is not None:
        out.append((TOPICS["gt_hand"], conv.hand_pose_to_msg(msgs, frame.hand, header)))
    return out


def tf_static_message(msgs: Any, frame_ids: Iterable[str], stamp: int) -> Any:
    """tf2_msgs/TFMessage: ``camera_link`` -> each optical frame (REP 103 optical rotation, no offset)."""

    R = matrix_from_quat_xyzw(np.asarray(OPTICAL_FROM_LINK_XYZW, dtype=np.float64))
    tfs = [conv.transform_msg(msgs, R, np.zeros(3), conv.make_header(msgs, stamp, CAMERA_LINK), f) for f in frame_ids]
    return msgs.new("tf2_msgs/msg/TFMessage", transforms=tfs)


def write_bag(source: Any, positions: Iterable[int], out: str | os.PathLike, storage: str = "sqlite3", distro: str = "jazzy",
              start_ns: int | None = None, step_ns: int | None = None, progress: bool = True,
              custom_data: dict[str, str] | None = None) -> BagSummary:
    """Convert frames of a :mod:`featmap_ros.data.player` source into a bag.

    Args:
        source: :class:`~featmap_ros.data.player.BopSource` or :class:`~featmap_ros.data.player.NyuSource`.
        positions: frame positions to write, in order (e.g. ``player.parse_range(...)``).
        out: bag folder.
        storage, distro: see :class:`BagWriter`.
        start_ns, step_ns: stamps ``start_ns + k * step_ns`` (defaults: 1 s and 30 Hz).
        progress: show a tqdm bar.
        custom_data: string pairs stored in the metadata's ``custom_data`` (provenance).

    Returns:
        What was written. Nothing exists at ``out`` if this raises or is killed.
    """
    from tqdm import tqdm

    positions = list(positions)
    if not positions:
        raise InputError(f"{out}: no frames selected")
    start = player.DEFAULT_START_NS if start_ns is None else int(start_ns)
    step = player.DEFAULT_PERIOD_NS if step_ns is None else int(step_ns)
    with BagWriter(out, storage, distro, custom_data) as w:
        for k, i in enumerate(tqdm(positions, desc=f"bag {Path(out).name}", unit="frame", disable=not progress, dynamic_ncols=True)):
            w.write_frame(source.frame(i), player.stamp_ns(k, start, step))
    return w.summary()


def default_info_topic(image_topic: str) -> str:
    """The camera_info topic beside an image topic (``/camera/color/image_raw`` ->
    ``/camera/color/camera_info``), as image_transport / camera drivers name them."""
    head = image_topic.rstrip("/").rsplit("/", 1)[0] if "/" in image_topic.strip("/") else ""
    return f"{head}/camera_info" if head else "camera_info"


@dataclass
class CameraFramesSummary:
    """What :func:`bag_to_bop_frames` wrote."""

    root: Path
    frames: int
    skipped_no_info: int
    with_depth: int


def bag_to_bop_frames(bag: str | os.PathLike, out_root: str | os.PathLike, image_topic: str, info_topic: str | None = None,
                      depth_topic: str | None = None, every: int = 1, max_frames: int = 0, scene_id: int = 1,
                      split: str = "test", progress: bool = True) -> CameraFramesSummary:
    """A rosbag2 of a camera (as ``ros2 bag record`` writes it) -> an unlabelled BOP folder.

    Reads ``image_topic`` (sensor_msgs/Image, any colour encoding of
    :func:`~featmap_ros.ros.conversions.image_to_rgb`) and ``info_topic`` (CameraInfo; default
    :func:`default_info_topic`); each image takes the newest camera_info received at or before it
    (an image before any camera_info is skipped, counted). With ``depth_topic`` (registered depth,
    16UC1 mm or 32FC1 m), an image also takes the depth message of the same header stamp, when
    there is one. Writes ``out_root/<split>/<scene_id:06d>/rgb/<k:06d>.png``, ``depth/`` (uint16 mm)
    and ``scene_camera.json`` (``cam_K``, ``depth_scale`` 1.0), frames numbered from 0 in bag
    order; no ground truth. The folder is written atomically.

    Args:
        bag: the bag folder (sqlite3 or mcap; any rosbag2 metadata version rosbags reads).
        out_root: the BOP folder to create.
        image_topic, info_topic, depth_topic: topics.
        every: keep every n-th image.
        max_frames: stop after this many frames (0 = all).
        scene_id, split: BOP numbering of the output.
        progress: tqdm bar.

    Raises:
        InputError: a missing bag, a topic not in the bag (naming the topics it has), a message
            that does not convert (naming the topic and the field), or no frame written.
    """
    import cv2
    from rosbags.rosbag2 import Reader
    from tqdm import tqdm

    bag = Path(bag)
    if not (bag / "metadata.yaml").is_file():
        raise InputError(f"--bag: {bag}: not a rosbag2 bag (no metadata.yaml)")
    if every < 1:
        raise InputError(f"--every: must be >= 1, got {every}")
    info_topic = info_topic or default_info_topic(image_topic)
    typestore = featmap_typestore("jazzy")
    frames, skipped, n_depth = 0, 0, 0
    with Reader(bag) as reader, atomic.atomic_dir(out_root) as tmp:
        topics = {c.topic: c for c in reader.connections}
        for t, what in ((image_topic, "--topic"), (info_topic, "--info-topic")) + (((depth_topic, "--depth-topic"),) if depth_topic else ()):
            if t not in topics:
                raise InputError(f"{what}: {t!r} is not a topic of {bag} (topics: {sorted(topics)})")
        wanted = [topics[image_topic], topics[info_topic]] + ([topics[depth_topic]] if depth_topic else [])
        sdir = Path(tmp) / split / f"{int(scene_id):06d}"
        (sdir / "rgb").mkdir(parents=True)
        if depth_topic:
            (sdir / "depth").mkdir()
        cams: dict[str, dict] = {}
        info_reader = conv.CameraInfoReader()
        model = None
        depth_by_stamp: dict[int, np.ndarray] = {}
        pending: list[tuple[int, np.ndarray, Any]] = []  # images waiting for their depth (same stamp)
        n_images = 0

        def flush(upto_ns: int | None) -> None:
            nonlocal frames, n_depth
            while pending and (upto_ns is None or pending[0][0] < upto_ns):
                stamp, rgb, cam = pending.pop(0)
                if max_frames and frames >= max_frames:
                    continue
                k = frames
                cv2.imwrite(str(sdir / "rgb" / f"{k:06d}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                d = depth_by_stamp.pop(stamp, None)
                if d is not None:
                    mm = np.where(np.isfinite(d) & (d > 0), np.round(d * 1000.0), 0).clip(0, 65535).astype(np.uint16)
                    cv2.imwrite(str(sdir / "depth" / f"{k:06d}.png"), mm)
                    n_depth += 1
                cams[str(k)] = {"cam_K": [float(x) for x in cam.K.ravel()], "depth_scale": 1.0}
                frames += 1
            for old in [s for s in depth_by_stamp if upto_ns is None or s < upto_ns]:  # depth of skipped images
                del depth_by_stamp[old]

        total = sum(c.msgcount for c in wanted)
        for conn, _, raw in tqdm(reader.messages(connections=wanted), total=total, desc=f"read {bag.name}", unit="msg",
                                 disable=not progress, dynamic_ncols=True):
            msg = typestore.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == info_topic:
                model, _ = info_reader.read(msg, info_topic)
                continue
            stamp = conv.stamp_to_ns(msg.header.stamp)
            if conn.topic == depth_topic:
                depth_by_stamp[stamp] = np.array(conv.image_to_depth_m(msg, depth_topic))
                continue
            n_images += 1
            if (n_images - 1) % every:
                continue
            if model is None:
                skipped += 1
                continue
            rgb = np.array(conv.image_to_rgb(msg, image_topic))
            conv.check_image_matches_camera(rgb.shape[:2], model, image_topic)
            pending.append((stamp, rgb, model))
            if not depth_topic:
                flush(None)
            else:  # depth of the same stamp may come just after the image: wait until the bag is past it
                flush(stamp)
        flush(None)
        if frames == 0:
            raise InputError(f"--bag: {bag}: no image on {image_topic!r} with a camera_info on {info_topic!r} before it")
        atomic.write_json(sdir / "scene_camera.json", cams)
    return CameraFramesSummary(Path(out_root), frames, skipped, n_depth)


__all__ = ["BagWriter", "BagSummary", "write_bag", "bag_to_bop_frames", "default_info_topic", "frame_messages", "tf_static_message", "METADATA_VERSION", "STORAGES", "COLOUR_FRAME", "DEPTH_FRAME"]
