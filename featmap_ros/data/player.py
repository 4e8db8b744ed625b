"""Dataset replay without ROS: frames of a BOP or NYU folder as arrays + ground truth, and pacing.

Shared by ``dataset_player_node`` (live topics), ``featmap bag`` (rosbag2 files) and the
in-process replay benchmark, so the three publish exactly the same frames with the same stamps.

- :class:`BopSource` / :class:`NyuSource` list a dataset's frames at construction (JSON and
  ``joint_data.mat`` only) and read the images of one frame when asked (:meth:`frame`), so
  memory does not depend on the dataset size.
- :func:`parse_range` and :func:`schedule` pick the frames to play (a range, looping or not).
- :func:`stamp_ns` gives frame ``k`` of the replay its header stamp: ``start_ns + k * period``,
  strictly increasing across loops, so every message of a frame carries the same unique stamp
  and an evaluator can match estimates to ground truth exactly.
- :class:`Pacer` decides when the next frame may go out: at a fixed rate, as fast as possible,
  or "as fast as consumers ack" (the next frame waits until the estimator has answered the
  previous one, or a timeout has passed), which makes a replay lossless whatever the estimator's
  speed.

Frames and units: images in the camera optical frame; depth as uint16 millimetres (16UC1);
ground truth in metres (:class:`~featmap_ros.results.ObjectPose`, :class:`~featmap_ros.results.HandPose`).
BOP depth is registered to the colour image (same K), so both carry ``camera_color_optical_frame``;
NYU has a depth camera only: ``camera_depth_optical_frame``.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from featmap_ros import atomic
from featmap_ros.data import bop
from featmap_ros.data.nyu import NyuDataset, eval_joints, load_depth_mm
from featmap_ros.data.specs import OBJECT_DATASETS, hand_dataset, object_dataset
from featmap_ros.errors import InputError
from featmap_ros.render.depth_sensor import write_hand_dataset
from featmap_ros.render.real_like import RealLikeConfig, write_object_dataset
from featmap_ros.render.toy_object import make_toy_object
from featmap_ros.results import HandPose, ObjectPose

log = logging.getLogger(__name__)

#: Frame ids (REP 103 optical frames, RealSense naming).
COLOUR_FRAME = "camera_color_optical_frame"
DEPTH_FRAME = "camera_depth_optical_frame"
#: Parent of the optical frames in ``/tf_static``.
CAMERA_LINK = "camera_link"
#: camera_link (x forward, z up) -> optical (z forward, y down), quaternion (x, y, z, w).
OPTICAL_FROM_LINK_XYZW = (-0.5, 0.5, -0.5, 0.5)

#: Topic names of DESIGN §5.
TOPICS = {
    "colour_image": "/camera/color/image_raw",
    "colour_info": "/camera/color/camera_info",
    "depth_image": "/camera/depth/image_raw",
    "depth_info": "/camera/depth/camera_info",
    "gt_objects": "/ground_truth/detections",
    "gt_hand": "/ground_truth/hand_pose",
    "clock": "/clock",
    "tf_static": "/tf_static",
}

#: Default first stamp of a replay (1 s: a zero stamp reads as "unset" to many ROS tools).
DEFAULT_START_NS = 1_000_000_000
#: Nominal frame period when replaying "as fast as possible" (30 Hz, both datasets' sensors).
DEFAULT_PERIOD_NS = 33_333_333


@dataclass(frozen=True)
class PlayerFrame:
    """One frame ready to publish.

    Attributes:
        key: human-readable origin (``scene 000001 im 000005``, ``test frame 0000001``).
        index: position in its source (0-based).
        K: (3, 3) float64 intrinsics, pixels.
        width, height: image size, pixels.
        frame_id: optical frame of the images and the ground truth.
        rgb: (H, W, 3) uint8 RGB, or None.
        depth_mm: (H, W) uint16 millimetres (0 = invalid), or None.
        objects: ground-truth object poses (BOP), or None.
        hand: ground-truth hand (NYU, the 14 evaluation joints), or None.
    """

    key: str
    index: int
    K: np.ndarray
    width: int
    height: int
    frame_id: str
    rgb: np.ndarray | None = None
    depth_mm: np.ndarray | None = None
    objects: list[ObjectPose] | None = None
    hand: HandPose | None = None


def depth_m_to_mm_u16(depth_m: np.ndarray, where: str) -> np.ndarray:
    """(H, W) float metres (0/NaN invalid) -> (H, W) uint16 millimetres (0 invalid).

    Raises:
        InputError: a depth beyond 65.535 m (cannot be stored in 16UC1).
    """
    d = np.asarray(depth_m, dtype=np.float64)
    mm = np.where(np.isfinite(d) & (d > 0), np.round(d * 1000.0), 0.0)
    if mm.size and mm.max() > 65535:
        raise InputError(f"{where}: depth {mm.max() / 1000.0:.3f} m does not fit 16UC1 millimetres")
    return mm.astype(np.uint16)


class BopSource:
    """Frames of a BOP dataset split (LINEMOD, LM-O, or the project's generated ones).

    Args:
        root: dataset folder with ``models/models_info.json`` and ``<split>/<scene>/``.
        split: split folder (``test``, ``train``...).
        scenes: scene ids to play (None = all, sorted).
        objects: obj_ids whose ground truth is published (None = all); frames without any of
            them are skipped.
        dataset: spec name for object names (``lm``: 1 = ape ...); ids it does not know are
            called ``obj_XXXXXX``.
        depth: also read the depth images (when present).
        strict: a frame of ``scene_camera.json`` without its image is an error; by default such
            frames are skipped with a warning naming the first (BOP subsets often ship the JSON
            of every frame and the images of a few).

    Raises:
        InputError: naming the file or argument at fault (missing folder, bad JSON, unknown scene).
    """

    def __init__(self, root: str | os.PathLike, split: str = "test", scenes: Sequence[int] | None = None,
                 objects: Sequence[int] | None = None, dataset: str = "lm", depth: bool = True, strict: bool = False) -> None:

        self.root = Path(root)
        self.split = split
        self.depth = bool(depth)
        info_path = self.root / "models" / "models_info.json"
        self.models_info = bop.load_models_info(info_path)
        self.names = {oid: object_dataset(dataset).object_names.get(oid, f"obj_{oid:06d}") for oid in self.models_info}
        wanted = None if objects is None else {int(o) for o in objects}
        if wanted is not None and not wanted <= set(self.models_info):
            raise InputError(f"--object {sorted(wanted - set(self.models_info))}: not in {info_path} (known: {sorted(self.models_info)})")
        scene_dirs = bop.list_scenes(self.root / split)
        if scenes is not None:
            by_id = {int(p.name): p for p in scene_dirs}
            missing = [s for s in scenes if int(s) not in by_id]
            if missing:
                raise InputError(f"--scene {missing}: not in {self.root / split} (scenes: {sorted(by_id)})")
            scene_dirs = [by_id[int(s)] for s in scenes]
        if not scene_dirs:
            raise InputError(f"{self.root / split}: no scene folders")
        self._frames = []
        missing: list[Path] = []
        for sdir in scene_dirs:
            for fr in bop.read_scene(sdir, self.models_info):
                inst = [g for g in fr.instances if wanted is None or g.obj_id in wanted]
                if wanted is not None and not inst:
                    continue
                if fr.rgb_path is None:  # listed in scene_camera.json, image not shipped
                    missing.append(sdir / "rgb" / f"{fr.im_id:06d}.png")
                    continue
                self._frames.append((sdir, fr, inst))
        if missing and (strict or not self._frames):
            raise InputError(f"{missing[0]}: image not found ({len(missing)} frame(s) listed in scene_camera.json have no image)")
        if missing:
            log.warning("%s: %d frame(s) listed in scene_camera.json have no image and are skipped (first: %s)",
                        self.root / split, len(missing), missing[0])
        self.skipped = len(missing)
        if not self._frames:
            raise InputError(f"{self.root / split}: no frames{'' if wanted is None else f' with objects {sorted(wanted)}'}")

    def __len__(self) -> int:
        return len(self._frames)

    def object_names(self) -> dict[int, str]:
        """obj_id -> name, for every object of ``models_info.json``."""
        return dict(self.names)

    def ground_truth(self, i: int) -> list[ObjectPose]:
        """Ground truth of frame ``i`` (no image read)."""
        _, fr, inst = self._frames[i]
        out = []
        for g in inst:
            info = self.models_info[g.obj_id]
            out.append(ObjectPose(
                object_name=self.names[g.obj_id], obj_id=int(g.obj_id), R_m2c=np.array(g.R_m2c, dtype=np.float64),
                t_m2c_m=np.array(g.t_m2c_m, dtype=np.float64), score=1.0,
                bbox_xywh=np.asarray(g.bbox_obj if g.bbox_obj is not None else np.zeros(4), dtype=np.float64),
                extents_m=np.asarray(info.size_m, dtype=np.float64).copy(), center_m=info.center_m.copy(),
            ))
        return out

    def frame(self, i: int) -> PlayerFrame:
        """Frame ``i`` with its images read from disk.

        Raises:
            InputError: the colour image is missing or cannot be decoded (names the file).
        """

        sdir, fr, _ = self._frames[i]
        if fr.rgb_path is None:
            raise InputError(f"{sdir / 'rgb' / f'{fr.im_id:06d}.png'}: image not found (frame listed in {sdir / 'scene_camera.json'})")
        rgb = bop.load_rgb(fr.rgb_path)
        depth = None
        if self.depth and fr.depth_path is not None:
            depth_m = bop.load_depth_m(fr.depth_path, fr.depth_scale)
            if depth_m.shape != rgb.shape[:2]:
                raise InputError(f"{fr.depth_path}: depth is {depth_m.shape[::-1]} but {fr.rgb_path.name} is {rgb.shape[1::-1]}")
            depth = depth_m_to_mm_u16(depth_m, str(fr.depth_path))
        h, w = rgb.shape[:2]
        return PlayerFrame(
            key=f"scene {fr.scene_id:06d} im {fr.im_id:06d}", index=i, K=np.array(fr.K, dtype=np.float64), width=w,
            height=h, frame_id=COLOUR_FRAME, rgb=rgb, depth_mm=depth, objects=self.ground_truth(i),
        )


class NyuSource:
    """Frames of an NYU-layout split (the real dataset, or ``featmap render hand`` output).

    Ground truth: the 14 evaluation joints (DESIGN §2) in metres, optical frame, named as in
    :data:`featmap_ros.data.specs.HAND_DATASETS` ``["nyu"].joint_names``.

    Args:
        root: folder with ``train/`` and ``test/`` (or the split folder).
        split: ``train`` or ``test``.
        synthetic: publish ``synthdepth_*`` instead of the real ``depth_*`` images.
    """

    def __init__(self, root: str | os.PathLike, split: str = "test", synthetic: bool = False) -> None:

        self.dataset = NyuDataset(root, split)
        self.synthetic = bool(synthetic)
        self.spec = hand_dataset("nyu")
        if len(self.dataset) == 0:
            raise InputError(f"{self.dataset.mat_path}: no frames")

    def __len__(self) -> int:
        return len(self.dataset)

    def ground_truth(self, i: int) -> HandPose:
        """The 14 evaluation joints of frame ``i`` (no image read)."""

        J = eval_joints(self.dataset[i])
        return HandPose(joint_names=list(self.spec.joint_names), joints_m=np.array(J, dtype=np.float64), score=1.0,
                        crop_center_m=np.array(J[-1], dtype=np.float64))

    def frame(self, i: int) -> PlayerFrame:
        """Frame ``i`` with its depth PNG read (InputError naming a missing or truncated file)."""

        fr = self.dataset[i]
        path = fr.synth_path if self.synthetic else fr.depth_path
        mm = load_depth_mm(path)
        if mm.max() > 65535:
            raise InputError(f"{path}: depth beyond 65535 mm")
        h, w = mm.shape
        return PlayerFrame(
            key=f"{self.dataset.split} frame {fr.frame_number:07d}", index=i, K=self.dataset.K.copy(), width=w, height=h,
            frame_id=DEPTH_FRAME, depth_mm=mm.astype(np.uint16), hand=self.ground_truth(i),
        )


def parse_range(text: str | None, n: int, name: str = "--range") -> range:
    """``"A:B"`` (python slice of frame positions; either side may be empty) -> range in [0, n).

    Args:
        text: ``"A:B"``, ``"A:"``, ``":B"``, ``"A"`` (that one frame), or None/empty (all).
        n: frames in the source.
        name: how to call the argument in errors.

    Raises:
        InputError: not integers, negative, or an empty selection.
    """
    if text is None or str(text).strip() in ("", ":"):
        r = range(n)
    else:
        parts = str(text).split(":")
        try:
            if len(parts) == 1:
                a = int(parts[0])
                b = a + 1
            elif len(parts) == 2:
                a = int(parts[0]) if parts[0].strip() else 0
                b = int(parts[1]) if parts[1].strip() else n
            else:
                raise ValueError
        except ValueError:
            raise InputError(f"{name}: expected A:B with integers, got {text!r}") from None
        if a < 0 or b < 0:
            raise InputError(f"{name}: negative positions are not allowed, got {text!r}")
        r = range(a, min(b, n))
    if len(r) == 0:
        raise InputError(f"{name}: {text!r} selects no frame of {n}")
    return r


def schedule(frames: range, loop: bool = False, max_frames: int = 0) -> Iterator[int]:
    """Source positions in play order: ``frames`` once, or repeated when ``loop``.

    Args:
        frames: positions to play (from :func:`parse_range`).
        loop: start again after the last one.
        max_frames: stop after this many (0 = no limit; a loop without one never ends).
    """
    k = 0
    while True:
        for i in frames:
            if max_frames and k >= max_frames:
                return
            yield i
            k += 1
        if not loop:
            return


def period_ns(rate_hz: float) -> int:
    """Stamp spacing for a play rate; the nominal 30 Hz when ``rate_hz`` is 0 (as fast as possible)."""
    if not np.isfinite(rate_hz) or rate_hz < 0:
        raise InputError(f"rate: must be >= 0 Hz, got {rate_hz}")
    return DEFAULT_PERIOD_NS if rate_hz == 0 else max(1, int(round(1e9 / rate_hz)))


def stamp_ns(k: int, start_ns: int = DEFAULT_START_NS, step_ns: int = DEFAULT_PERIOD_NS) -> int:
    """Header stamp of the ``k``-th published frame (0-based), nanoseconds."""
    return int(start_ns) + int(k) * int(step_ns)


class Pacer:
    """When the next frame may be published.

    Args:
        rate_hz: frames per second of wall time; 0 = no rate limit.
        wait_for_ack: publish the next frame only once the previous one was acknowledged (the
            estimator published a result with its stamp) or ``ack_timeout_s`` has passed.
        ack_timeout_s: how long to wait for an acknowledgement, seconds (a dropped frame must not
            stall the replay; the evaluator counts it as a failure).

    Times are monotonic seconds given by the caller, so the logic is testable without a clock.
    """

    def __init__(self, rate_hz: float = 0.0, wait_for_ack: bool = False, ack_timeout_s: float = 5.0) -> None:
        if not np.isfinite(rate_hz) or rate_hz < 0:
            raise InputError(f"rate: must be >= 0 Hz, got {rate_hz}")
        if not np.isfinite(ack_timeout_s) or ack_timeout_s <= 0:
            raise InputError(f"ack_timeout_s: must be > 0, got {ack_timeout_s}")
        self.rate_hz = float(rate_hz)
        self.wait_for_ack = bool(wait_for_ack)
        self.ack_timeout_s = float(ack_timeout_s)
        self._last_pub_s: float | None = None
        self._outstanding: int | None = None
        self.published = 0
        self.acked = 0
        self.timeouts = 0

    def due(self, now_s: float) -> bool:
        """True if a frame may be published at ``now_s``."""
        # 5 % slack: a timer ticking at the rate itself sees intervals a hair short of the period
        if self.rate_hz > 0 and self._last_pub_s is not None and now_s - self._last_pub_s < 0.95 / self.rate_hz:
            return False
        if self.wait_for_ack and self._outstanding is not None:
            if now_s - (self._last_pub_s or 0.0) < self.ack_timeout_s:
                return False
            self.timeouts += 1
            self._outstanding = None
        return True

    def on_published(self, stamp: int, now_s: float) -> None:
        """Record that the frame stamped ``stamp`` (ns) went out at ``now_s``."""
        self._last_pub_s = float(now_s)
        self._outstanding = int(stamp) if self.wait_for_ack else None
        self.published += 1

    def on_ack(self, stamp: int) -> bool:
        """An estimator output stamped ``stamp`` arrived; True if it acknowledged the outstanding frame."""
        if self._outstanding is not None and int(stamp) == self._outstanding:
            self._outstanding = None
            self.acked += 1
            return True
        return False


def open_source(kind: str, root: str | os.PathLike, split: str = "test", scenes: Sequence[int] | None = None,
                objects: Sequence[int] | None = None, dataset: str = "lm", synthetic: bool = False, depth: bool = True,
                strict: bool = False):
    """:class:`BopSource` for ``kind`` ``bop`` (or a BOP dataset name), :class:`NyuSource` for ``nyu``."""
    if kind == "nyu":
        return NyuSource(root, split, synthetic=synthetic)
    if kind == "bop" or kind in OBJECT_DATASETS:
        return BopSource(root, split, scenes, objects, dataset if kind == "bop" else kind, depth=depth, strict=strict)
    raise InputError(f"dataset: {kind!r} is not one of {['bop', *sorted(OBJECT_DATASETS), 'nyu']}")


def embedded_sample(kind: str, cache_dir: str | os.PathLike | None = None, frames: int = 24, seed: int = 0) -> Path:
    """The small sample the project makes itself (for a launch with an empty ``dataset_root``).

    Generated once with ``featmap render object --toy`` (real-like, BOP layout) or ``featmap
    render hand`` (NYU layout, test split) into ``cache_dir`` (default
    ``$XDG_CACHE_HOME/featmap_ros`` or ``~/.cache/featmap_ros``), then reused; the writers are
    atomic, so an interrupted generation is redone.

    Returns:
        The dataset root to give :func:`open_source`.
    """
    import fcntl

    base = Path(cache_dir) if cache_dir else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "featmap_ros"
    if kind == "nyu":
        root, done = base / f"sample_nyu_{frames}_{seed}", ("test", "joint_data.mat")
    else:
        root, done = base / f"sample_lm_{frames}_{seed}", ("models", "models_info.json")
    atomic.make_dir(base)
    # the player and the evaluator of one launch may both ask at once: one generates, the other waits
    with open(base / f".{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not root.joinpath(*done).is_file():
            if kind == "nyu":  # = featmap render hand --count N --out ROOT --split test --seed S --no-preview
                write_hand_dataset(root, frames, seed, "test")
            else:  # = featmap render object --toy --count N --out ROOT --domain real-like --split test --seed S
                mesh, info = make_toy_object(1)
                write_object_dataset(root, mesh, info, frames, spec=OBJECT_DATASETS["lm"], domain="real-like", seed=seed,
                                     backgrounds_dir=None, split="test", scene_id=1, real_like=RealLikeConfig())
    return root


