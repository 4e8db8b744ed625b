"""Per-dataset facts, as data (intrinsics, object ids and names, symmetric ids, joint subsets).

Code looks a dataset up here by name instead of branching on it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from featmap_ros.errors import InputError

LINEMOD_OBJECTS = {
    1: "ape", 2: "benchvise", 3: "bowl", 4: "camera", 5: "can", 6: "cat", 7: "cup", 8: "driller",
    9: "duck", 10: "eggbox", 11: "glue", 12: "holepuncher", 13: "iron", 14: "lamp", 15: "phone",
}


@dataclass(frozen=True)
class ObjectDatasetSpec:
    """A BOP object dataset.

    Attributes:
        name: BOP name (``lm``, ``lmo``).
        fx, fy, cx, cy: default intrinsics, pixels (scene_camera.json overrides per frame).
        width, height: image size.
        object_names: obj_id -> name.
        eval_obj_ids: objects that are evaluated.
        symmetric_obj_ids: objects scored with ADD-S instead of ADD.
        depth_range_mm: camera-object distances of the dataset (for synthetic sampling).
    """

    name: str
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    object_names: dict[int, str]
    eval_obj_ids: tuple[int, ...]
    symmetric_obj_ids: tuple[int, ...]
    depth_range_mm: tuple[float, float] = (600.0, 1200.0)


@dataclass(frozen=True)
class HandDatasetSpec:
    """A hand dataset in the published (u, v, d) prediction format.

    Attributes:
        name: ``nyu``, ``icvl``, ``msra``.
        fx, fy, cx, cy: intrinsics, pixels.
        y_up: True when y = (cy - v) d / fy (NYU), False for the optical convention.
        joint_names: names of the evaluated joints, in file order.
        eval_joint_indices: for NYU, indices of those joints among the dataset's 36.
        subjects: (first_frame, last_frame, name) ranges of the test set, 1-based inclusive.
        cube_mm: side of the DeepPrior crop cube.
    """

    name: str
    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    y_up: bool
    joint_names: tuple[str, ...]
    eval_joint_indices: tuple[int, ...] = ()
    subjects: tuple[tuple[int, int, str], ...] = ()
    cube_mm: float = 300.0
    bones: tuple[tuple[str, str], ...] = ()

    def bone_indices(self) -> tuple[tuple[int, int], ...]:
        """Bones as index pairs into :attr:`joint_names`."""
        index = {n: i for i, n in enumerate(self.joint_names)}
        return tuple((index[a], index[b]) for a, b in self.bones)


OBJECT_DATASETS = {
    "lm": ObjectDatasetSpec(
        "lm", 572.4114, 573.57043, 325.2611, 242.04899, 640, 480, LINEMOD_OBJECTS,
        eval_obj_ids=(1, 2, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15), symmetric_obj_ids=(10, 11),
    ),
    "lmo": ObjectDatasetSpec(
        "lmo", 572.4114, 573.57043, 325.2611, 242.04899, 640, 480, LINEMOD_OBJECTS,
        eval_obj_ids=(1, 5, 6, 8, 9, 10, 11, 12), symmetric_obj_ids=(10, 11),
    ),
}

# The project's own object (featmap_ros/render/toy_object.py): the embedded sample and the
# bundled demo weights; LINEMOD's camera and distances.
OBJECT_DATASETS["toy"] = ObjectDatasetSpec(
    "toy", 572.4114, 573.57043, 325.2611, 242.04899, 640, 480, {1: "toy"},
    eval_obj_ids=(1,), symmetric_obj_ids=(),
)

NYU_EVAL_JOINTS = (0, 3, 6, 9, 12, 15, 18, 21, 24, 25, 27, 30, 31, 32)

HAND_DATASETS = {
    "nyu": HandDatasetSpec(
        "nyu", 588.03, 587.07, 320.0, 240.0, 640, 480, y_up=True,
        joint_names=(
            "pinky_tip", "pinky_mid", "ring_tip", "ring_mid", "middle_tip", "middle_mid",
            "index_tip", "index_mid", "thumb_tip", "thumb_mid", "thumb_root",
            # NYU joints 30, 31, 32 = PALM_1 (wrist, pinky side), PALM_2 (wrist, thumb side),
            # PALM_3 (palm centre); see featmap_ros/render/hand.py for the 36-joint layout
            "wrist_pinky", "wrist_thumb", "palm_center",
        ),
        eval_joint_indices=NYU_EVAL_JOINTS,
        subjects=((1, 2440, "subject_1"), (2441, 8252, "subject_2")),
        bones=(
            ("pinky_tip", "pinky_mid"), ("pinky_mid", "palm_center"),
            ("ring_tip", "ring_mid"), ("ring_mid", "palm_center"),
            ("middle_tip", "middle_mid"), ("middle_mid", "palm_center"),
            ("index_tip", "index_mid"), ("index_mid", "palm_center"),
            ("thumb_tip", "thumb_mid"), ("thumb_mid", "thumb_root"), ("thumb_root", "palm_center"),
            ("wrist_pinky", "palm_center"), ("wrist_thumb", "palm_center"), ("wrist_pinky", "wrist_thumb"),
        ),
    ),
    # ICVL and MSRA: intrinsics, y-down convention and joint order as in the published
    # evaluation code (xinghaochen/awesome-hand-pose-estimation evaluation/src/util.py,
    # compute_error.py). ICVL test: test_seq_1 (702 frames) then test_seq_2 (894 frames).
    "icvl": HandDatasetSpec(
        "icvl", 240.99, 240.96, 160.0, 120.0, 320, 240, y_up=False,
        joint_names=(
            "palm", "thumb_root", "thumb_mid", "thumb_tip", "index_root", "index_mid", "index_tip",
            "middle_root", "middle_mid", "middle_tip", "ring_root", "ring_mid", "ring_tip",
            "pinky_root", "pinky_mid", "pinky_tip",
        ),
        subjects=((1, 702, "test_seq_1"), (703, 1596, "test_seq_2")),
        cube_mm=250.0,
    ),
    # MSRA: leave-one-subject-out over 9 subjects, all 76 375 frames in one file, subject by
    # subject (frame counts from that collection's groundtruth/msra/msra_test_list.txt).
    "msra": HandDatasetSpec(
        "msra", 241.42, 241.42, 160.0, 120.0, 320, 240, y_up=False,
        joint_names=(
            "wrist", "index_mcp", "index_pip", "index_dip", "index_tip", "middle_mcp", "middle_pip",
            "middle_dip", "middle_tip", "ring_mcp", "ring_pip", "ring_dip", "ring_tip", "pinky_mcp",
            "pinky_pip", "pinky_dip", "pinky_tip", "thumb_mcp", "thumb_pip", "thumb_dip", "thumb_tip",
        ),
        subjects=(
            (1, 8499, "P0"), (8500, 16991, "P1"), (16992, 25403, "P2"), (25404, 33891, "P3"),
            (33892, 42391, "P4"), (42392, 50888, "P5"), (50889, 59385, "P6"), (59386, 67883, "P7"),
            (67884, 76375, "P8"),
        ),
        cube_mm=200.0,
    ),
}


def object_dataset(name: str) -> ObjectDatasetSpec:
    """Look up an object dataset spec; the error lists the valid names."""
    try:
        return OBJECT_DATASETS[name]
    except KeyError:
        raise InputError(f"unknown object dataset {name!r}; valid: {sorted(OBJECT_DATASETS)}") from None


def hand_dataset(name: str) -> HandDatasetSpec:
    """Look up a hand dataset spec; the error lists the valid names."""
    try:
        return HAND_DATASETS[name]
    except KeyError:
        raise InputError(f"unknown hand dataset {name!r}; valid: {sorted(HAND_DATASETS)}") from None


#: The hand skeleton drawn and published (markers, debug images), as pairs of NYU joint names.
HAND_BONES: tuple[tuple[str, str], ...] = hand_dataset("nyu").bones


def skeleton_edges(joint_names: Sequence[str], bones: Sequence[tuple[str, str]] = HAND_BONES) -> list[tuple[int, int]]:
    """Index pairs of the bones whose two joints are both named in ``joint_names``."""
    index = {n: i for i, n in enumerate(joint_names)}
    return [(index[a], index[b]) for a, b in bones if a in index and b in index]
