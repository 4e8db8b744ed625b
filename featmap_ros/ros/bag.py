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


__all__ = ["BagWriter", "BagSummary", "write_bag", "frame_messages", "tf_static_message", "METADATA_VERSION", "STORAGES", "COLOUR_FRAME", "DEPTH_FRAME"]
