"""The evaluator node's front end (no rclpy): ROS messages (rclpy or rosbags types) -> the online
evaluators of :mod:`featmap_ros.evaluation.online`, matched by stamp."""
from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from featmap_ros.data import bop
from featmap_ros.data.specs import OBJECT_DATASETS, hand_dataset, object_dataset
from featmap_ros.errors import InputError
from featmap_ros.evaluation.online import OnlineHandEvaluator, OnlineObjectEvaluator, load_object_models
from featmap_ros.results import ObjectPose
from featmap_ros.ros import conversions as conv
from featmap_ros.ros.conversions import camera_info_to_model, stamp_to_ns


class MessageEvaluator:
    """Feeds ROS messages (rclpy or rosbags) to an online evaluator; never raises on bad input.

    Each ``on_*`` returns None when the message was used, or the reason it was rejected (text
    naming the field, from :class:`~featmap_ros.ros.conversions.ConversionError` or
    :class:`~featmap_ros.errors.InputError`); :attr:`rejected` counts reasons by topic.

    Args:
        evaluator: :class:`OnlineObjectEvaluator` or :class:`OnlineHandEvaluator`.
        obj_ids: object name -> id (objects only; for the converted poses).
        max_waiting: ground-truth messages held while no camera_info has been seen (objects).
    """

    def __init__(self, evaluator: Any, obj_ids: Mapping[str, int] | None = None, max_waiting: int = 100) -> None:
        self.evaluator = evaluator
        self.obj_ids = dict(obj_ids or {})
        self.max_waiting = int(max_waiting)
        self._K: OrderedDict[int, np.ndarray] = OrderedDict()
        self._latest_K: np.ndarray | None = None
        self._waiting: list[tuple[int, list[ObjectPose]]] = []
        self.rejected: dict[str, int] = {}
        self.accepted: dict[str, int] = {}

    def _reject(self, topic: str, err: Exception) -> str:
        self.rejected[topic] = self.rejected.get(topic, 0) + 1
        return f"{topic}: {err}"

    def _accept(self, topic: str) -> None:
        self.accepted[topic] = self.accepted.get(topic, 0) + 1

    @staticmethod
    def _stamp(msg: Any, topic: str) -> int:

        try:
            s = stamp_to_ns(msg.header.stamp)
        except (AttributeError, TypeError, ValueError, OverflowError) as e:
            raise InputError(f"header.stamp: unreadable ({e})") from None
        if s < 0:
            raise InputError(f"header.stamp: negative ({s} ns)")
        return s

    def on_camera_info(self, msg: Any, topic: str = "camera_info") -> str | None:
        """Remember K by stamp (objects need it to project)."""

        try:
            stamp = self._stamp(msg, topic)
            K = camera_info_to_model(msg, topic).K
        except (InputError, AttributeError, TypeError, ValueError, OverflowError) as e:
            return self._reject(topic, e)
        self._K[stamp] = K
        while len(self._K) > 2 * self.evaluator.matcher.max_pending:
            self._K.popitem(last=False)
        self._latest_K = K
        self._accept(topic)
        waiting, self._waiting = self._waiting, []
        for s, poses in waiting:
            try:
                self.evaluator.add_ground_truth(s, poses, self._K.get(s, K))
            except InputError as e:
                self._reject("ground_truth", e)
        return None

    def on_ground_truth(self, msg: Any, topic: str = "ground_truth") -> str | None:

        try:
            stamp = self._stamp(msg, topic)
            if self.evaluator.task == "hand":
                gt = conv.hand_pose_msg_to_result(msg)
                self.evaluator.add_ground_truth(stamp, gt)
            else:
                poses = conv.detection3d_array_to_object_poses(msg, self.obj_ids, name=topic)
                K = self._K.get(stamp, self._latest_K)
                if K is None:
                    if len(self._waiting) >= self.max_waiting:
                        raise InputError(f"no camera_info received yet; dropped a frame (holding {self.max_waiting})")
                    self._waiting.append((stamp, poses))
                else:
                    self.evaluator.add_ground_truth(stamp, poses, K)
        except (InputError, AttributeError, TypeError, ValueError, OverflowError, IndexError) as e:
            return self._reject(topic, e)
        self._accept(topic)
        return None

    def on_estimate(self, msg: Any, topic: str = "estimates") -> str | None:

        try:
            stamp = self._stamp(msg, topic)
            if self.evaluator.task == "hand":
                est = conv.hand_pose_msg_to_result(msg)
                if not np.all(np.isfinite(est.joints_m)):
                    raise InputError("joints: contain NaN or inf")
                # no joints: the estimator ran and found no hand (a failure, counted as missed)
                self.evaluator.add_estimate(stamp, est if len(est.joints_m) else None)
            else:
                self.evaluator.add_estimate(stamp, conv.detection3d_array_to_object_poses(msg, self.obj_ids, name=topic))
        except (InputError, AttributeError, TypeError, ValueError, OverflowError, IndexError) as e:
            return self._reject(topic, e)
        self._accept(topic)
        return None

    def summary(self) -> dict[str, Any]:
        """Running summary plus message counters."""
        return {**self.evaluator.running_summary(), "accepted": dict(self.accepted), "rejected": dict(self.rejected)}

    def finish(self) -> None:
        """Settle everything (ground truth still waiting for a camera_info is dropped, counted)."""
        if self._waiting:
            self.rejected["ground_truth_without_camera_info"] = len(self._waiting)
            self._waiting = []
        self.evaluator.finish()


def make_evaluator(task: str, dataset: str, dataset_root: str | os.PathLike, objects: Sequence[str] | None = None,
                   max_pending: int = 1000, max_lag_ns: int = 10_000_000_000) -> MessageEvaluator:
    """The evaluator ``evaluator_node`` runs, from its parameters.

    Objects: models and names from the BOP folder (``dataset`` gives the names: ``lm`` 1 = ape).

    Raises:
        InputError: naming the parameter or file at fault.
    """
    if task == "hand":

        return MessageEvaluator(OnlineHandEvaluator(list(hand_dataset("nyu").joint_names), max_pending, max_lag_ns))
    if task != "object":
        raise InputError(f"parameter 'task': {task!r} is not one of ['object', 'hand']")

    root = Path(dataset_root)
    infos = bop.load_models_info(root / "models" / "models_info.json")
    spec_names = object_dataset(dataset if dataset in OBJECT_DATASETS else "lm").object_names
    names = {oid: spec_names.get(oid, f"obj_{oid:06d}") for oid in infos}
    models = load_object_models(root, names)
    ev = OnlineObjectEvaluator(models, objects or None, max_pending, max_lag_ns)
    return MessageEvaluator(ev, {n: oid for oid, n in names.items()})
