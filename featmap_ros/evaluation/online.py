"""Online evaluation: estimates matched to ground truth by stamp while a replay runs.

No ROS here: ``evaluator_node`` converts its messages to :class:`~featmap_ros.results.ObjectPose`
/ :class:`~featmap_ros.results.HandPose` and feeds :class:`OnlineObjectEvaluator` or
:class:`OnlineHandEvaluator`; the replay benchmark feeds them directly.

Matching (:class:`StampMatcher`): an estimate belongs to the ground truth with *exactly* the
same header stamp (the estimators stamp their outputs with the input header, and the player
gives all messages of a frame one stamp). Either may arrive first. A ground-truth frame with no
estimate is settled as a **failure** (never dropped) when it falls ``max_lag_ns`` of stamp time
behind the newest ground truth, when more than ``max_pending`` frames wait, or at
:meth:`finish`. An empty estimate message (the estimator ran and found nothing) is a failure
too. Estimates with no ground truth are counted, not scored.

Metrics (DESIGN §3) through :mod:`featmap_ros.evaluation.records` and :mod:`featmap_ros.evaluation.metrics` with the
same per-instance rules as ``featmap eval object|hand`` (:mod:`featmap_ros.commands.eval_models`),
so a lossless replay gives the same numbers: objects, 2D projection <= 5 px, ADD (ADD-S for
symmetric objects) <= 10 % of the diameter, 5 cm 5 deg, curves; model points are the mesh vertices
subsampled to 3000 with seed 0 as there; ``mean_corner_px`` is, in both, the distance between the
projected box corners of the estimated and ground-truth poses. Hands: per-joint errors in mm, mean, per joint, max-frame curve;
a missed frame scores 1000 mm on every joint (as ``featmap eval hand``).

Memory: per instance a fixed row of float64 errors is kept (tens of bytes), nothing per image.
"""
from __future__ import annotations

import io
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Mapping, Sequence, TypeVar

import numpy as np

from featmap_ros import atomic, geometry
from featmap_ros.data import bop
from featmap_ros.errors import InputError
from featmap_ros.evaluation import metrics, plots, records
from featmap_ros.results import HandPose, ObjectPose

#: Score of a missed hand joint, mm (beyond every curve threshold), as ``featmap eval hand``.
MISSED_JOINT_MM = 1000.0

G = TypeVar("G")
E = TypeVar("E")


# --------------------------------------------------------------------------------------------
# Stamp matching


@dataclass
class Settled(Generic[G, E]):
    """A ground-truth frame whose fate is decided: ``estimate`` None = no estimate (failure)."""

    stamp_ns: int
    ground_truth: G
    estimate: E | None


class StampMatcher(Generic[G, E]):
    """Pairs ground truth and estimates with identical stamps; bounded memory.

    Args:
        max_pending: most ground-truth frames (and unmatched estimates) held at once; the oldest
            beyond it is settled as a failure (or, for estimates, dropped and counted).
        max_lag_ns: a ground-truth frame this far (stamp time) behind the newest one is settled as
            a failure.
    """

    def __init__(self, max_pending: int = 1000, max_lag_ns: int = 10_000_000_000) -> None:
        if max_pending < 1:
            raise InputError(f"max_pending: must be >= 1, got {max_pending}")
        if max_lag_ns <= 0:
            raise InputError(f"max_lag_ns: must be > 0, got {max_lag_ns}")
        self.max_pending = int(max_pending)
        self.max_lag_ns = int(max_lag_ns)
        self._gt: OrderedDict[int, G] = OrderedDict()
        self._est: OrderedDict[int, E] = OrderedDict()
        self._settled_recent: OrderedDict[int, None] = OrderedDict()
        self.newest_gt_ns = -1
        self.duplicate_ground_truth = 0
        self.duplicate_estimates = 0
        self.unmatched_estimates = 0
        self.late_estimates = 0

    @property
    def pending(self) -> int:
        """Ground-truth frames waiting for an estimate."""
        return len(self._gt)

    def _remember(self, stamp: int) -> None:
        self._settled_recent[stamp] = None
        while len(self._settled_recent) > self.max_pending:
            self._settled_recent.popitem(last=False)

    def add_ground_truth(self, stamp_ns: int, gt: G) -> list[Settled[G, E]]:
        """Add a ground-truth frame; returns frames settled by it (in stamp order of arrival)."""
        s = int(stamp_ns)
        if s in self._gt or s in self._settled_recent:
            self.duplicate_ground_truth += 1
            return []
        out: list[Settled[G, E]] = []
        if s in self._est:
            out.append(Settled(s, gt, self._est.pop(s)))
            self._remember(s)
        else:
            self._gt[s] = gt
        self.newest_gt_ns = max(self.newest_gt_ns, s)
        out.extend(self._expire())
        return out

    def add_estimate(self, stamp_ns: int, est: E) -> list[Settled[G, E]]:
        """Add an estimate; returns the frame it settles (if its ground truth is here)."""
        s = int(stamp_ns)
        if s in self._gt:
            gt = self._gt.pop(s)
            self._remember(s)
            return [Settled(s, gt, est)]
        if s in self._settled_recent:
            self.late_estimates += 1  # its frame was already scored (as a failure, or twice-sent)
            return []
        if s in self._est:
            self.duplicate_estimates += 1
            return []
        self._est[s] = est
        while len(self._est) > self.max_pending:
            self._est.popitem(last=False)
            self.unmatched_estimates += 1
        return []

    def _expire(self) -> list[Settled[G, E]]:
        out = []
        while self._gt:
            s, gt = next(iter(self._gt.items()))
            if len(self._gt) > self.max_pending or self.newest_gt_ns - s > self.max_lag_ns:
                del self._gt[s]
                self._remember(s)
                out.append(Settled(s, gt, None))
            else:
                break
        return out

    def finish(self) -> list[Settled[G, E]]:
        """Settle every waiting ground-truth frame as a failure; count estimates left unmatched."""
        out = [Settled(s, gt, None) for s, gt in self._gt.items()]
        for x in out:
            self._remember(x.stamp_ns)
        self._gt.clear()
        self.unmatched_estimates += len(self._est)
        self._est.clear()
        return out

    def counters(self) -> dict[str, int]:
        return {"pending": self.pending, "duplicate_ground_truth": self.duplicate_ground_truth,
                "duplicate_estimates": self.duplicate_estimates, "unmatched_estimates": self.unmatched_estimates,
                "late_estimates": self.late_estimates}


class _Rows:
    """An append-only (N, C) float64 table in fixed chunks (memory ~ 8 C bytes per row, no
    doubling spikes: a long replay grows by its rows only)."""

    CHUNK = 4096

    def __init__(self, cols: int) -> None:
        self.cols = int(cols)
        self._chunks: list[np.ndarray] = []
        self.n = 0

    def append(self, row: Sequence[float]) -> None:
        k = self.n % self.CHUNK
        if k == 0:
            self._chunks.append(np.empty((self.CHUNK, self.cols), dtype=np.float64))
        self._chunks[-1][k] = row
        self.n += 1

    @property
    def data(self) -> np.ndarray:
        """(N, C) copy of the rows."""
        if not self._chunks:
            return np.empty((0, self.cols), dtype=np.float64)
        return np.concatenate(self._chunks)[: self.n]


# --------------------------------------------------------------------------------------------
# Objects


@dataclass(frozen=True)
class ObjectModel:
    """What scoring one object needs.

    Attributes:
        name: object name (vision_msgs class_id).
        points_m: (P, 3) float64 model points, metres (<= 3000, as ``featmap eval object``).
        diameter_m: model diameter, metres.
        symmetric: score with ADD-S.
        corners_m: (8, 3) float64 model box corners, metres.
    """

    name: str
    points_m: np.ndarray
    diameter_m: float
    symmetric: bool
    corners_m: np.ndarray


def load_object_models(root: str | os.PathLike, names: Mapping[int, str], obj_ids: Sequence[int] | None = None) -> dict[str, ObjectModel]:
    """Models of a BOP dataset keyed by object name.

    Args:
        root: BOP dataset folder (``models/``).
        names: obj_id -> name (e.g. :meth:`featmap_ros.data.player.BopSource.object_names`).
        obj_ids: which objects (None = every one in ``models_info.json``).

    Raises:
        InputError: naming a missing/corrupt ``models_info.json`` or mesh.
    """

    root = Path(root)
    infos = bop.load_models_info(root / "models" / "models_info.json")
    out = {}
    for oid in (sorted(infos) if obj_ids is None else obj_ids):
        if oid not in infos:
            raise InputError(f"{root / 'models' / 'models_info.json'}: no entry for obj_id {oid}")
        pts = records.add_points_m(root, oid)  # the same points as featmap eval object
        info = infos[oid]
        name = names.get(oid, f"obj_{oid:06d}")
        out[name] = ObjectModel(name, np.asarray(pts, np.float64), float(info.diameter_m), info.is_symmetric, info.corners_m)
    return out


_OBJ_COLS = ("proj2d_px", "add_m", "add_frac", "rot_deg", "trans_m", "corner_px", "found", "stamp_ns", "object")


@dataclass
class _ObjectGt:
    poses: list[ObjectPose]
    K: np.ndarray


class OnlineObjectEvaluator:
    """Object metrics accumulated frame by frame.

    Args:
        models: object name -> :class:`ObjectModel`; ground truth of other objects is an error
            unless ``objects`` leaves them out.
        objects: names to evaluate (None = every ground-truth instance).
        max_pending, max_lag_ns: see :class:`StampMatcher`.
    """

    task = "object"

    def __init__(self, models: Mapping[str, ObjectModel], objects: Sequence[str] | None = None,
                 max_pending: int = 1000, max_lag_ns: int = 10_000_000_000) -> None:
        self.models = dict(models)
        self.objects = None if objects is None else [str(o) for o in objects]
        if self.objects is not None:
            unknown = [o for o in self.objects if o not in self.models]
            if unknown:
                raise InputError(f"objects: {unknown} have no model (known: {sorted(self.models)})")
        self._names = sorted(self.models)
        self._code = {n: i for i, n in enumerate(self._names)}
        self.matcher: StampMatcher[_ObjectGt, list[ObjectPose]] = StampMatcher(max_pending, max_lag_ns)
        self._rows = _Rows(len(_OBJ_COLS))
        self.frames = 0
        self.frames_missed = 0

    def add_ground_truth(self, stamp_ns: int, poses: Sequence[ObjectPose], K: np.ndarray) -> int:
        """Ground truth of one frame (K: (3, 3) intrinsics, pixels). Returns frames settled."""
        K = geometry.check_K(K, "camera_info.k")
        keep = [p for p in poses if self.objects is None or p.object_name in self.objects]
        for p in keep:
            if p.object_name not in self.models:
                raise InputError(f"ground_truth: object {p.object_name!r} has no model (known: {self._names})")
        return self._score(self.matcher.add_ground_truth(stamp_ns, _ObjectGt(keep, K)))

    def add_estimate(self, stamp_ns: int, poses: Sequence[ObjectPose]) -> int:
        """Estimates of one frame (possibly none). Returns frames settled."""
        return self._score(self.matcher.add_estimate(stamp_ns, list(poses)))

    def finish(self) -> int:
        """Settle every waiting frame (missing estimates = failures)."""
        return self._score(self.matcher.finish())

    def _score(self, settled: list[Settled]) -> int:
        for s in settled:
            self.frames += 1
            ests = s.estimate
            if ests is None:
                self.frames_missed += 1
                ests = []
            by_name: dict[str, list[ObjectPose]] = {}
            for e in sorted(ests, key=lambda p: -float(p.score)):
                by_name.setdefault(e.object_name, []).append(e)
            for g in s.ground_truth.poses:
                cand = by_name.get(g.object_name, [])
                e = cand.pop(0) if cand else None
                self._rows.append(self._record(g, e, s.ground_truth.K, s.stamp_ns))
        return len(settled)

    def _record(self, g: ObjectPose, e: ObjectPose | None, K: np.ndarray, stamp_ns: int) -> list[float]:
        m = self.models[g.object_name]
        R = t = None
        if e is not None and np.all(np.isfinite(e.R_m2c)) and np.all(np.isfinite(e.t_m2c_m)):
            R, t = e.R_m2c, e.t_m2c_m
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # absurd (finite) poses score inf: a failure
            r = records.object_record(g.object_name, R, t, g.R_m2c, g.t_m2c_m, K, m.points_m, m.diameter_m,
                                      m.symmetric, m.corners_m)
        return [r.proj2d_px, r.add_m, r.add_frac, r.rot_deg, r.trans_m, r.corner_px, float(r.found), float(stamp_ns),
                float(self._code[g.object_name])]

    def records(self, name: str | None = None) -> list[records.ObjectRecord]:
        """Per-instance records (all, or of one object)."""
        d = self._rows.data
        out = []
        for row in d:
            n = self._names[int(row[8])]
            if name is None or n == name:
                out.append(records.ObjectRecord(n, *(float(x) for x in row[:6]), found=bool(row[6])))
        return out

    def running_summary(self) -> dict[str, Any]:
        """Cheap figures for the live report."""
        d = self._rows.data
        n = len(d)
        rot, tr = d[:, 3], d[:, 4]
        return {
            "task": "object", "frames": self.frames, "frames_missed": self.frames_missed, "instances": n,
            "proj2d_5px": float(np.mean(d[:, 0] <= metrics.PROJ2D_PX)) if n else 0.0,
            "add_10": float(np.mean(d[:, 2] <= metrics.ADD_FRACTION)) if n else 0.0,
            "5cm_5deg": float(np.mean(metrics.within_5cm_5deg(rot, tr))) if n else 0.0,
            "found": float(np.mean(d[:, 6])) if n else 0.0,
            **self.matcher.counters(),
        }

    def report(self) -> dict[str, Any]:
        """Final figures, as ``featmap eval object`` reports them (call :meth:`finish` first)."""
        recs = self.records()
        if not recs:
            raise InputError("evaluator: no ground-truth instance was received")
        per_object = {}
        for name in self._names:
            rs = [r for r in recs if r.object_name == name]
            if rs:
                per_object[name] = {k: v for k, v in records.object_summary(rs).items() if not k.startswith("curve")}
        return {"task": "object", "frames": self.frames, "frames_missed": self.frames_missed,
                "summary": records.object_summary(recs), "per_object": per_object, "matching": self.matcher.counters()}

    def csv_text(self) -> str:
        """One row per ground-truth instance: stamp, object and its errors."""
        buf = io.StringIO()
        buf.write("stamp_ns,object,found,proj2d_px,add_m,add_frac,rot_deg,trans_m,corner_px\n")
        for row in self._rows.data:
            buf.write(f"{int(row[7])},{self._names[int(row[8])]},{int(row[6])},"
                      + ",".join(f"{x:.6g}" for x in row[:6]) + "\n")
        return buf.getvalue()

    def write(self, out_dir: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> list[Path]:
        """Write ``object_metrics.json``, ``object_frames.csv``, ``object_curves.png`` (atomic)."""
        out = Path(out_dir)
        rep = {**(extra or {}), **self.report()}
        atomic.write_json(out / "object_metrics.json", jsonable(rep))
        atomic.write_text(out / "object_frames.csv", self.csv_text())
        plots.plot_object_curves({"online": rep["summary"]}, out / "object_curves.png", title="evaluator_node (online)")
        return [out / "object_metrics.json", out / "object_frames.csv", out / "object_curves.png"]


# --------------------------------------------------------------------------------------------
# Hands


class OnlineHandEvaluator:
    """Hand metrics accumulated frame by frame (joints matched by name).

    Args:
        joint_names: the evaluated joints (default: from the first ground truth).
        max_pending, max_lag_ns: see :class:`StampMatcher`.
    """

    task = "hand"

    def __init__(self, joint_names: Sequence[str] | None = None, max_pending: int = 1000,
                 max_lag_ns: int = 10_000_000_000) -> None:
        self.joint_names = None if joint_names is None else [str(n) for n in joint_names]
        self.matcher: StampMatcher[HandPose, HandPose | None] = StampMatcher(max_pending, max_lag_ns)
        self._rows: _Rows | None = None
        self._stamps = _Rows(1)
        self.frames = 0
        self.frames_missed = 0

    def _check_gt(self, gt: HandPose) -> None:
        J = np.asarray(gt.joints_m, dtype=np.float64)
        if J.ndim != 2 or J.shape[1] != 3 or J.shape[0] != len(gt.joint_names) or not np.all(np.isfinite(J)):
            raise InputError(f"ground_truth: joints must be finite ({len(gt.joint_names)}, 3), got {J.shape}")
        if self.joint_names is None:
            self.joint_names = list(gt.joint_names)
        missing = [n for n in self.joint_names if n not in gt.joint_names]
        if missing:
            raise InputError(f"ground_truth.joint_names: lacks {missing}")

    def add_ground_truth(self, stamp_ns: int, gt: HandPose) -> int:
        self._check_gt(gt)
        return self._score(self.matcher.add_ground_truth(stamp_ns, gt))

    def add_estimate(self, stamp_ns: int, est: HandPose | None) -> int:
        """An estimate (None = the estimator ran and found no hand: a failure)."""
        return self._score(self.matcher.add_estimate(stamp_ns, est))

    def finish(self) -> int:
        return self._score(self.matcher.finish())

    def _errors(self, gt: HandPose, est: HandPose | None) -> np.ndarray:
        names = self.joint_names
        gi = [list(gt.joint_names).index(n) for n in names]
        G = np.asarray(gt.joints_m, np.float64)[gi]
        if est is None:
            return np.full(len(names), MISSED_JOINT_MM)
        E = np.asarray(est.joints_m, np.float64).reshape(-1, 3)
        en = list(est.joint_names)
        if all(n in en for n in names):
            E = E[[en.index(n) for n in names]]
        elif len(en) == len(E) == len(gt.joint_names):  # other names, same layout: by position
            E = E[gi]
        else:
            return np.full(len(names), MISSED_JOINT_MM)
        with np.errstate(over="ignore", invalid="ignore"):
            err = np.linalg.norm(E - G, axis=1) * 1000.0
        return np.where(np.isfinite(err), err, MISSED_JOINT_MM)

    def _score(self, settled: list[Settled]) -> int:
        for s in settled:
            self.frames += 1
            if s.estimate is None:
                self.frames_missed += 1
            err = self._errors(s.ground_truth, s.estimate)
            if self._rows is None:
                self._rows = _Rows(len(err))
            self._rows.append(err)
            self._stamps.append([float(s.stamp_ns)])
        return len(settled)

    def errors_mm(self) -> np.ndarray:
        """(N, J) float64 joint errors, mm, in settle order."""
        return np.zeros((0, len(self.joint_names or []))) if self._rows is None else self._rows.data.copy()

    def running_summary(self) -> dict[str, Any]:
        e = self.errors_mm()
        return {"task": "hand", "frames": self.frames, "frames_missed": self.frames_missed,
                "mean_mm": float(e.mean()) if e.size else 0.0,
                "within_20mm": float(np.mean(e.max(axis=1) <= 20.0)) if e.size else 0.0, **self.matcher.counters()}

    def report(self) -> dict[str, Any]:
        e = self.errors_mm()
        if not len(e):
            raise InputError("evaluator: no ground-truth frame was received")
        s = records.hand_summary(e)
        s["missed"] = self.frames_missed
        return {"task": "hand", "frames": self.frames, "frames_missed": self.frames_missed, "joint_names": self.joint_names,
                "summary": s, "matching": self.matcher.counters()}

    def csv_text(self) -> str:
        names = self.joint_names or []
        buf = io.StringIO()
        buf.write("stamp_ns,found,mean_mm,max_mm," + ",".join(f"{n}_mm" for n in names) + "\n")
        for st, row in zip(self._stamps.data[:, 0], self.errors_mm()):
            found = int(not np.all(row == MISSED_JOINT_MM))
            buf.write(f"{int(st)},{found},{row.mean():.4f},{row.max():.4f}," + ",".join(f"{x:.4f}" for x in row) + "\n")
        return buf.getvalue()

    def write(self, out_dir: str | os.PathLike, extra: Mapping[str, Any] | None = None) -> list[Path]:
        """Write ``hand_metrics.json``, ``hand_frames.csv``, ``hand_curve.png`` (atomic)."""
        out = Path(out_dir)
        rep = {**(extra or {}), **self.report()}
        atomic.write_json(out / "hand_metrics.json", jsonable(rep))
        atomic.write_text(out / "hand_frames.csv", self.csv_text())
        c = rep["summary"]["max_frame_curve"]
        plots.plot_max_frame_curves({f"online ({rep['summary']['mean_mm']:.1f} mm)": (np.array(c["thresholds_mm"]), np.array(c["fraction"]))},
                                      out / "hand_curve.png", title="evaluator_node (online)")
        return [out / "hand_metrics.json", out / "hand_frames.csv", out / "hand_curve.png"]


def jsonable(x: Any) -> Any:
    """Replace non-finite floats (not valid JSON) by strings ``inf``/``nan``."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (float, np.floating)):
        v = float(x)
        return v if np.isfinite(v) else str(v)
    if isinstance(x, np.integer):
        return int(x)
    return x
