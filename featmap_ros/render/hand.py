"""An articulated hand with the NYU joint layout: shape, forward kinematics, capsules, sampling.

Hand frame (metres): origin at the middle of the wrist, +y along the middle finger, +x towards
the thumb (radial side; a right hand seen from its palm side), +z out of the palm (palmar side).
Fingers flex towards +z.

The NYU layout (``joint_data.mat``'s ``joint_names``) has 36 joints: five fingers F1 (pinky),
F2 (ring), F3 (middle), F4 (index), TH (thumb), each with three bones KNU3 (distal), KNU2
(middle; thumb: proximal phalanx), KNU1 (proximal; thumb: metacarpal) and two points per bone,
A (the bone's distal "neck"; for KNU3 the tip) and B (the bone's base joint), tip first; then
PALM_1..PALM_6. Here PALM_1 = wrist, ulnar (pinky) side; PALM_2 = wrist, radial (thumb) side;
PALM_3 = palm centre (the DeepPrior training centre, evaluation joint 13); PALM_4 / PALM_5 =
ulnar / radial edge of the palm; PALM_6 = wrist centre. The 14 evaluation joints are
``specs.NYU_EVAL_JOINTS``.

Each bone is a capsule (segment plus radius); the palm is a few overlapping capsules, the
forearm one capsule. Articulation: per finger (abduction towards the thumb, base flexion, middle flexion, tip
flexion) in radians, limited by :data:`ANGLE_LIMITS_RAD`; global pose ``R_h2c``, ``t_h2c_m``
(wrist origin in the camera optical frame) and the wrist's own two angles that orient the
forearm relative to the hand.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from scipy.spatial.transform import Rotation

from featmap_ros.errors import InputError

FINGERS = ("F1", "F2", "F3", "F4", "TH")
FINGER_NAMES = ("pinky", "ring", "middle", "index", "thumb")
NYU_JOINT_NAMES = tuple(
    f"{f}_KNU{k}_{ab}" for f in FINGERS for k in (3, 2, 1) for ab in ("A", "B")
) + tuple(f"PALM_{i}" for i in range(1, 7))
N_JOINTS = 36
PALM_CENTER = 32  # index of PALM_3 among the 36
#: fraction along a bone (from its base) of the bone's A point; the distal bone's A is the tip.
A_FRACTION = 0.75

#: (5, 4, 2) lower/upper limits of (abduction, base flexion, middle flexion, tip flexion), rad.
ANGLE_LIMITS_RAD = np.array(
    [
        [[-0.35, 0.35], [-0.35, 1.60], [0.0, 1.90], [-0.10, 1.40]],  # pinky
        [[-0.30, 0.30], [-0.35, 1.60], [0.0, 1.90], [-0.10, 1.40]],  # ring
        [[-0.30, 0.30], [-0.35, 1.60], [0.0, 1.90], [-0.10, 1.40]],  # middle
        [[-0.35, 0.35], [-0.35, 1.60], [0.0, 1.90], [-0.10, 1.40]],  # index
        [[-0.50, 0.70], [-0.30, 1.00], [-0.20, 1.10], [-0.30, 1.40]],  # thumb (CMC abd, CMC, MCP, IP)
    ]
)

#: Named base poses (5, 4) rad, perturbed by :func:`sample_articulation`.
BASE_POSES_RAD: dict[str, np.ndarray] = {
    "open": np.array([[-0.1, 0.1, 0.1, 0.05], [-0.05, 0.1, 0.1, 0.05], [0.0, 0.1, 0.1, 0.05], [0.05, 0.1, 0.1, 0.05], [0.3, 0.1, 0.1, 0.1]]),
    "relaxed": np.array([[0.05, 0.5, 0.7, 0.4], [0.0, 0.4, 0.6, 0.35], [0.0, 0.3, 0.5, 0.3], [0.0, 0.25, 0.4, 0.25], [0.1, 0.3, 0.3, 0.3]]),
    "fist": np.array([[0.0, 1.4, 1.6, 1.0], [0.0, 1.4, 1.6, 1.0], [0.0, 1.4, 1.6, 1.0], [0.0, 1.4, 1.6, 1.0], [-0.2, 0.8, 0.6, 0.6]]),
    "point": np.array([[0.0, 1.4, 1.6, 1.0], [0.0, 1.4, 1.6, 1.0], [0.0, 1.4, 1.6, 1.0], [0.0, 0.05, 0.1, 0.05], [-0.1, 0.7, 0.5, 0.5]]),
    "victory": np.array([[0.0, 1.4, 1.6, 1.0], [0.0, 1.4, 1.6, 1.0], [-0.15, 0.05, 0.1, 0.05], [0.2, 0.05, 0.1, 0.05], [-0.1, 0.7, 0.5, 0.5]]),
    "pinch": np.array([[0.1, 0.3, 0.4, 0.2], [0.05, 0.3, 0.4, 0.2], [0.0, 0.3, 0.4, 0.2], [0.0, 0.7, 0.9, 0.5], [-0.1, 0.7, 0.5, 0.6]]),
    "claw": np.array([[0.1, 0.2, 1.3, 1.0], [0.05, 0.2, 1.3, 1.0], [0.0, 0.2, 1.3, 1.0], [-0.05, 0.2, 1.3, 1.0], [0.2, 0.3, 0.6, 0.6]]),
    "spread": np.array([[-0.35, 0.0, 0.0, 0.0], [-0.2, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.3, 0.0, 0.0, 0.0], [0.6, -0.2, 0.0, 0.0]]),
}


def _default_bases() -> np.ndarray:
    # pinky, ring, middle MCPs, index MCP, thumb CMC
    return np.array([[-0.030, 0.082, 0.0], [-0.013, 0.090, 0.0], [0.004, 0.093, 0.0], [0.022, 0.090, 0.0], [0.017, 0.014, 0.008]])


def _default_lengths() -> np.ndarray:
    # (proximal, middle, distal); thumb: (metacarpal, proximal, distal)
    return np.array([[0.032, 0.019, 0.017], [0.038, 0.025, 0.019], [0.041, 0.026, 0.021], [0.038, 0.023, 0.020], [0.045, 0.036, 0.023]])


def _default_radii() -> np.ndarray:
    return np.array([[0.0080, 0.0072, 0.0065], [0.0090, 0.0080, 0.0072], [0.0093, 0.0083, 0.0075], [0.0090, 0.0080, 0.0072], [0.0130, 0.0105, 0.0090]])


def _default_splay() -> np.ndarray:
    # rest direction of each finger in the palm plane, towards the thumb > 0
    return np.array([-0.20, -0.08, 0.0, 0.10, 0.0])


def _default_palm_joints() -> np.ndarray:
    return np.array([
        [-0.0146, 0.000, 0.0],  # PALM_1 wrist ulnar
        [0.0146, 0.000, 0.0],  # PALM_2 wrist radial
        [0.000, 0.062, 0.0],  # PALM_3 palm centre
        [-0.030, 0.050, 0.0],  # PALM_4 palm ulnar edge
        [0.026, 0.050, 0.0],  # PALM_5 palm radial edge
        [0.000, 0.000, 0.0],  # PALM_6 wrist centre
    ])


@dataclass(frozen=True)
class HandShape:
    """Bone lengths, radii and palm layout of one hand (before ``scale``), metres, hand frame.

    Attributes:
        scale: uniform factor applied to every length and radius.
        bases_m: (5, 3) base joint of each finger chain (MCP; thumb: CMC).
        lengths_m: (5, 3) bone lengths, base bone first.
        radii_m: (5, 3) capsule radii of the bones.
        splay_rad: (5,) rest direction of each finger in the palm plane, rad, towards the thumb > 0
            (the thumb's entry is unused: its rest frame is fixed).
        palm_joints_m: (6, 3) PALM_1..PALM_6.
        palm_radius_m: radius of the palm capsules (half the palm thickness).
        forearm_radius_m: forearm capsule radius.
        joint_radii_m: (5, 4) surface radius at each finger's base, inner joints and tip, or None
            (the capsule hand); set, it selects the anatomic surface (:func:`anatomic_capsules_h`).
    """

    scale: float = 1.0
    bases_m: np.ndarray = field(default_factory=_default_bases)
    lengths_m: np.ndarray = field(default_factory=_default_lengths)
    radii_m: np.ndarray = field(default_factory=_default_radii)
    splay_rad: np.ndarray = field(default_factory=_default_splay)
    palm_joints_m: np.ndarray = field(default_factory=_default_palm_joints)
    palm_radius_m: float = 0.0125
    forearm_radius_m: float = 0.026
    joint_radii_m: np.ndarray | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.scale) and self.scale > 0):
            raise InputError(f"HandShape.scale must be positive, got {self.scale}")
        for name, shape in (("bases_m", (5, 3)), ("lengths_m", (5, 3)), ("radii_m", (5, 3)), ("splay_rad", (5,)), ("palm_joints_m", (6, 3))):
            arr = np.asarray(getattr(self, name), dtype=np.float64)
            if arr.shape != shape:
                raise InputError(f"HandShape.{name}: expected shape {shape}, got {arr.shape}")
            object.__setattr__(self, name, arr)
        if self.joint_radii_m is not None:
            jr = np.asarray(self.joint_radii_m, dtype=np.float64)
            if jr.shape != (5, 4) or np.any(jr <= 0):
                raise InputError(f"HandShape.joint_radii_m: expected positive (5, 4), got shape {jr.shape}")
            object.__setattr__(self, "joint_radii_m", jr)
        if np.any(self.lengths_m <= 0) or np.any(self.radii_m <= 0):
            raise InputError("HandShape: bone lengths and radii must be positive")

    def bone_lengths_m(self) -> np.ndarray:
        """(5, 3) scaled bone lengths, metres."""
        return self.lengths_m * self.scale


def _rx(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def _rz(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _thumb_rest_R(shape: HandShape) -> np.ndarray:
    """Rest frame of the thumb chain: y along the metacarpal, flexion moves it across the palm."""
    y = np.array([0.62, 0.76, 0.16])
    y /= np.linalg.norm(y)
    z = np.array([-0.92, 0.0, 0.38])
    z -= y * (z @ y)
    z /= np.linalg.norm(z)
    x = np.cross(y, z)
    return np.stack([x, y, z], axis=1)


def clip_angles(angles_rad: np.ndarray) -> np.ndarray:
    """Clip (5, 4) joint angles to :data:`ANGLE_LIMITS_RAD`; returns a new array."""
    a = np.asarray(angles_rad, dtype=np.float64)
    if a.shape != (5, 4):
        raise InputError(f"angles_rad: expected shape (5, 4), got {a.shape}")
    return np.clip(a, ANGLE_LIMITS_RAD[..., 0], ANGLE_LIMITS_RAD[..., 1])


def finger_chains_h(shape: HandShape, angles_rad: np.ndarray) -> np.ndarray:
    """Positions of the four chain points (base, two inner joints, tip) of each finger.

    Args:
        shape: the hand.
        angles_rad: (5, 4) (abduction, base, middle, tip flexion); clipped to the limits.

    Returns:
        (5, 4, 3) float64, hand frame, metres (scaled).
    """
    a = clip_angles(angles_rad)
    L = shape.bone_lengths_m()
    out = np.zeros((5, 4, 3))
    thumb_R = _thumb_rest_R(shape)
    for f in range(5):
        R = thumb_R if f == 4 else _rz(-shape.splay_rad[f])
        p = shape.bases_m[f] * shape.scale
        R = R @ _rz(-a[f, 0] if f != 4 else a[f, 0]) @ _rx(a[f, 1])
        out[f, 0] = p
        for k in range(3):
            if k > 0:
                R = R @ _rx(a[f, k + 1])
            p = p + R[:, 1] * L[f, k]
            out[f, k + 1] = p
    return out


def forward_kinematics_h(shape: HandShape, angles_rad: np.ndarray) -> np.ndarray:
    """All 36 NYU joints in the hand frame.

    Args:
        shape: the hand.
        angles_rad: (5, 4) joint angles, rad (clipped to the limits).

    Returns:
        (36, 3) float64, metres, in :data:`NYU_JOINT_NAMES` order.
    """
    ch = finger_chains_h(shape, angles_rad)
    J = np.zeros((N_JOINTS, 3))
    for f in range(5):
        p0, p1, p2, p3 = ch[f]
        J[6 * f + 0] = p3  # KNU3_A tip
        J[6 * f + 1] = p2  # KNU3_B distal base
        J[6 * f + 2] = p1 + A_FRACTION * (p2 - p1)  # KNU2_A
        J[6 * f + 3] = p1  # KNU2_B
        J[6 * f + 4] = p0 + A_FRACTION * (p1 - p0)  # KNU1_A
        J[6 * f + 5] = p0  # KNU1_B
    J[30:36] = shape.palm_joints_m * shape.scale
    return J


def bone_segments() -> tuple[tuple[int, int], ...]:
    """(parent, child) joint index pairs of the 15 finger bones in the 36-joint layout."""
    segs = []
    for f in range(5):
        segs += [(6 * f + 5, 6 * f + 3), (6 * f + 3, 6 * f + 1), (6 * f + 1, 6 * f + 0)]
    return tuple(segs)


def capsules_h(shape: HandShape, angles_rad: np.ndarray, forearm_length_m: float = 0.10, wrist_rad: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The hand's surface as capsules (segment a-b, radius r), hand frame.

    Args:
        shape: the hand.
        angles_rad: (5, 4) joint angles.
        forearm_length_m: length of the forearm capsule behind the wrist (0 = none).
        wrist_rad: (2,) wrist flexion and deviation: the forearm's direction relative to the hand.

    Returns:
        a (N, 3), b (N, 3), r (N,) float64, metres.
    """
    s = shape.scale
    ch = finger_chains_h(shape, angles_rad)
    A, B, R = [], [], []
    for f in range(5):
        for k in range(3):
            A.append(ch[f, k])
            B.append(ch[f, k + 1])
            R.append(shape.radii_m[f, k] * s)
    pr = shape.palm_radius_m * s
    wrist_l = shape.palm_joints_m[0] * s
    wrist_r = shape.palm_joints_m[1] * s
    # metacarpals of the four fingers: from the wrist line to the MCPs
    for f in range(4):
        mcp = ch[f, 0]
        base = np.array([np.clip(mcp[0] * 0.55, wrist_l[0], wrist_r[0]), 0.012 * s, 0.0])
        A.append(base)
        B.append(mcp)
        R.append(pr)
    # fill between index and pinky metacarpals at mid-palm, and the wrist
    A.append(np.array([-0.024, 0.055, 0.0]) * s)
    B.append(np.array([0.020, 0.055, 0.0]) * s)
    R.append(pr)
    A.append(wrist_l + np.array([-0.004, 0.010, 0.0]) * s)
    B.append(wrist_r + np.array([0.004, 0.010, 0.0]) * s)
    R.append(pr * 1.15)
    if forearm_length_m > 0:
        w = np.zeros(2) if wrist_rad is None else np.asarray(wrist_rad, dtype=np.float64).reshape(2)
        d = _rx(w[0]) @ _rz(w[1]) @ np.array([0.0, -1.0, 0.0])
        A.append(np.array([0.0, -0.005 * s, 0.0]))
        B.append(np.array([0.0, -0.005 * s, 0.0]) + d * forearm_length_m)
        R.append(shape.forearm_radius_m * s)
    return np.array(A), np.array(B), np.array(R)


# ============================================================================= anatomic surface
#
# Adult hand proportions, metres, sexes pooled and rounded (approximate means of the published
# tables: hand breadth at the metacarpals ~84 mm, hand thickness at metacarpal III ~28 mm, wrist
# breadth ~60 mm and thickness ~38 mm, finger breadths at the proximal / distal interphalangeal
# joints, as in the US Army hand anthropometry of Greiner (1991); phalanx lengths in the ratios of
# Buryanov & Kotiuk (2010)). Written by this project; no third-party hand model is used.

#: (5, 3) bone lengths of the anatomic hand (proximal, middle, distal incl. the pad); thumb:
#: (metacarpal, proximal, distal).
ANATOMIC_LENGTHS_M = np.array([[0.0330, 0.0185, 0.0175], [0.0415, 0.0255, 0.0195], [0.0445, 0.0265, 0.0200],
                               [0.0400, 0.0225, 0.0190], [0.0460, 0.0320, 0.0240]])
#: (5, 4) surface radius (half breadth) at each finger's base, two inner joints and tip.
ANATOMIC_JOINT_RADII_M = np.array([[0.0088, 0.0080, 0.0071, 0.0061], [0.0098, 0.0093, 0.0079, 0.0068],
                                   [0.0105, 0.0099, 0.0084, 0.0071], [0.0105, 0.0098, 0.0083, 0.0070],
                                   [0.0130, 0.0110, 0.0105, 0.0088]])
#: finger base joints (MCP; thumb CMC) of the anatomic hand, hand frame: a wider palm (breadth ~80 mm).
ANATOMIC_BASES_M = np.array([[-0.034, 0.080, 0.0], [-0.015, 0.091, 0.0], [0.004, 0.095, 0.0], [0.024, 0.091, 0.0], [0.019, 0.016, 0.009]])


def anatomic_shape(scale: float = 1.0, finger_length_factor: np.ndarray | None = None, palm_width_factor: float = 1.0,
                   thickness_factor: float = 1.0) -> "HandShape":
    """A :class:`HandShape` with the anthropometric proportions above.

    Args:
        scale: overall size factor.
        finger_length_factor: (5,) factor on each finger's bones (default ones).
        palm_width_factor: factor on the palm's breadth (x of the finger bases and palm joints).
        thickness_factor: factor on every surface radius (palm thickness, finger breadths).

    Returns:
        HandShape whose ``joint_radii_m`` drive the anatomic surface.
    """
    fl = np.ones(5) if finger_length_factor is None else np.asarray(finger_length_factor, dtype=np.float64).reshape(5)
    bases = ANATOMIC_BASES_M.copy()
    bases[:, 0] *= palm_width_factor
    palm = _default_palm_joints()
    palm[:, 0] *= palm_width_factor
    palm[[0, 1], 0] = np.array([-0.0165, 0.0165]) * palm_width_factor
    return HandShape(scale=float(scale), bases_m=bases, lengths_m=ANATOMIC_LENGTHS_M * fl[:, None],
                     radii_m=ANATOMIC_JOINT_RADII_M[:, 1:] * thickness_factor, palm_joints_m=palm,
                     palm_radius_m=0.0140 * thickness_factor, forearm_radius_m=0.0195 * thickness_factor,
                     joint_radii_m=ANATOMIC_JOINT_RADII_M * thickness_factor)


def _tapered(a: np.ndarray, b: np.ndarray, ra: float, rb: float, pieces: int) -> tuple[list, list, list]:
    """A round cone from a (radius ra) to b (radius rb) as ``pieces`` capsules of stepped radius."""
    A, B, R = [], [], []
    for i in range(pieces):
        t0, t1 = i / pieces, (i + 1) / pieces
        A.append(a + t0 * (b - a))
        B.append(a + t1 * (b - a))
        R.append(max(ra + (rb - ra) * t0, ra + (rb - ra) * t1))  # never thinner than the cone
    return A, B, R


#: label of the parts of :func:`anatomic_capsules_h`: skin, sleeve (a different material for the sensor).
PART_SKIN, PART_SLEEVE = 1, 2


def anatomic_capsules_h(shape: "HandShape", angles_rad: np.ndarray, forearm_length_m: float = 0.10, wrist_rad: np.ndarray | None = None,
                        sleeve: tuple[float, float] | None = None, pieces: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The anatomic hand surface: tapered fingers, a palm of real thickness with thenar and
    hypothenar pads, a wrist of elliptic section and a tapering forearm, optionally a sleeve.

    A sphere-mesh in the sense of Tkach et al. (2016): a union of round cones (here each made of
    ``pieces`` capsules of stepped radius) whose radii at the joints are the anthropometric
    breadths, so neighbouring parts blend like a skinned surface, and exact ray casting stays cheap.

    Args:
        shape: the hand (``joint_radii_m`` set, e.g. by :func:`anatomic_shape`).
        angles_rad: (5, 4) joint angles.
        forearm_length_m: forearm length behind the wrist (0 = none).
        wrist_rad: (2,) forearm flexion and deviation relative to the hand.
        sleeve: (cuff distance behind the wrist, sleeve radius), metres, or None.
        pieces: capsules per round cone.

    Returns:
        a (N, 3), b (N, 3), r (N,) float64 metres, hand frame; part (N,) int (PART_SKIN / PART_SLEEVE).
    """
    s = shape.scale
    jr = shape.joint_radii_m * s
    ch = finger_chains_h(shape, angles_rad)
    A, B, R = [], [], []

    def add(a, b, ra, rb, n=pieces):
        a_, b_, r_ = _tapered(np.asarray(a, float), np.asarray(b, float), float(ra), float(rb), n)
        A.extend(a_), B.extend(b_), R.extend(r_)

    for f in range(5):
        for k in range(3):
            if f == 4 and k == 0:
                continue  # the thumb's metacarpal is inside the thenar pad below
            add(ch[f, k], ch[f, k + 1], jr[f, k], jr[f, k + 1])
    pr = shape.palm_radius_m * s
    wl, wr = shape.palm_joints_m[0] * s, shape.palm_joints_m[1] * s
    # metacarpals: from the wrist line to the MCPs, thick in the middle of the palm
    for f in range(4):
        mcp = ch[f, 0]
        base = np.array([np.clip(mcp[0] * 0.5, wl[0], wr[0]), 0.014 * s, 0.0])
        add(base, mcp, pr * 0.95, max(jr[f, 0], pr * 0.8))
    # transverse fill across the palm at three heights
    xs = (ch[0, 0, 0], ch[3, 0, 0])
    for y, rr in ((0.030, 1.0), (0.055, 1.0), (0.075, 0.9)):
        add(np.array([xs[0] * 0.85 + 0.002 * s, y * s, 0.0]), np.array([xs[1] * 0.85, y * s, 0.0]), pr * rr, pr * rr, 1)
    # thenar pad (covers the thumb's metacarpal) and hypothenar pad, on the palmar side
    add(ch[4, 0] + np.array([-0.004, -0.002, 0.0]) * s, ch[4, 1], jr[4, 0] * 1.1, jr[4, 1])
    add(np.array([-0.020, 0.018, 0.004]) * s, np.array([-0.028, 0.062, 0.002]) * s, pr * 0.95, pr * 0.8)
    # wrist (elliptic section: two capsules side by side) and the forearm tapering wider to the elbow
    fr = shape.forearm_radius_m * s
    part = [PART_SKIN] * len(R)
    if forearm_length_m > 0:
        w = np.zeros(2) if wrist_rad is None else np.asarray(wrist_rad, dtype=np.float64).reshape(2)
        d = _rx(w[0]) @ _rz(w[1]) @ np.array([0.0, -1.0, 0.0])
        side = np.cross(d, np.array([0.0, 0.0, 1.0]))
        side /= max(np.linalg.norm(side), 1e-9)
        for sgn in (-1.0, 1.0):
            a0 = np.array([0.0, 0.004 * s, 0.0]) + sgn * 0.011 * s * side
            b0 = a0 + d * forearm_length_m + sgn * 0.008 * side * (forearm_length_m / 0.25)
            add(a0, b0, fr, fr * (1.0 + 0.35 * min(forearm_length_m / 0.25, 1.0)), max(pieces, 3))
        part += [PART_SKIN] * (len(R) - len(part))
        if sleeve is not None:
            cuff_m, rad_m = float(sleeve[0]), float(sleeve[1])
            if cuff_m < forearm_length_m:
                a0 = d * cuff_m
                add(a0, d * forearm_length_m, rad_m, rad_m * 1.1, 2)
                part += [PART_SLEEVE] * (len(R) - len(part))
    return np.array(A), np.array(B), np.array(R), np.array(part, dtype=np.int32)


@dataclass(frozen=True)
class HandInstance:
    """A posed hand in a camera.

    Attributes:
        shape: bone lengths and radii.
        angles_rad: (5, 4) joint angles.
        R_h2c: (3, 3) hand frame -> camera optical frame.
        t_h2c_m: (3,) hand-frame origin (wrist centre) in the camera frame, metres.
        wrist_rad: (2,) forearm flexion and deviation relative to the hand.
        sleeve: (cuff distance behind the wrist, radius), metres, or None (anatomic surface only).
    """

    shape: HandShape
    angles_rad: np.ndarray
    R_h2c: np.ndarray
    t_h2c_m: np.ndarray
    wrist_rad: np.ndarray = field(default_factory=lambda: np.zeros(2))
    sleeve: tuple[float, float] | None = None

    def joints_c_m(self) -> np.ndarray:
        """(36, 3) float64 NYU joints in the camera optical frame, metres."""
        return forward_kinematics_h(self.shape, self.angles_rad) @ self.R_h2c.T + self.t_h2c_m

    def capsules_c(self, forearm_length_m: float = 0.10) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Capsules in the camera frame: a (N, 3), b (N, 3), r (N,), metres."""
        a, b, r, _ = self.surface_c(forearm_length_m)
        return a, b, r

    def surface_c(self, forearm_length_m: float = 0.10) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The surface's capsules in the camera frame and their parts.

        The capsule hand when ``shape.joint_radii_m`` is None, else the anatomic surface
        (:func:`anatomic_capsules_h`, with ``sleeve``).

        Returns:
            a (N, 3), b (N, 3), r (N,) float64 metres; part (N,) int (PART_SKIN / PART_SLEEVE).
        """
        if self.shape.joint_radii_m is None:
            a, b, r = capsules_h(self.shape, self.angles_rad, forearm_length_m, self.wrist_rad)
            part = np.full(len(r), PART_SKIN, dtype=np.int32)
        else:
            a, b, r, part = anatomic_capsules_h(self.shape, self.angles_rad, forearm_length_m, self.wrist_rad, self.sleeve)
        return a @ self.R_h2c.T + self.t_h2c_m, b @ self.R_h2c.T + self.t_h2c_m, r, part

    def forearm_direction_c(self) -> np.ndarray:
        """(3,) unit vector from the wrist along the forearm, camera frame."""
        w = self.wrist_rad
        return self.R_h2c @ (_rx(w[0]) @ _rz(w[1]) @ np.array([0.0, -1.0, 0.0]))


def sample_articulation(rng: np.random.Generator, base_poses: dict[str, np.ndarray] | None = None, sigma_rad: float = 0.25, base: str | None = None) -> np.ndarray:
    """A base pose with random extra articulation ("training poses perturbed").

    Args:
        rng: random generator.
        base_poses: name -> (5, 4) angles; default :data:`BASE_POSES_RAD`.
        sigma_rad: standard deviation of the Gaussian added to every angle.
        base: use this base pose instead of a random one.

    Returns:
        (5, 4) float64 angles within the limits.
    """
    poses = BASE_POSES_RAD if base_poses is None else base_poses
    names = sorted(poses)
    if base is None:
        base = names[int(rng.integers(len(names)))]
    elif base not in poses:
        raise InputError(f"unknown base pose {base!r}; valid: {names}")
    return clip_angles(np.asarray(poses[base], dtype=np.float64) + rng.normal(0.0, sigma_rad, size=(5, 4)))


def sample_rotation_h2c(rng: np.random.Generator, max_tilt_deg: float = 60.0, inplane_deg: float = 70.0, back_prob: float = 0.35) -> np.ndarray:
    """A hand orientation like NYU's: fingers roughly up, palm or back towards the camera.

    The canonical orientation has the fingers pointing up in the image (-y optical) and the
    palm facing the camera (hand +z = optical -z). It is turned about the optical axis by
    U(-inplane, inplane), tilted by up to ``max_tilt_deg`` about a random in-image axis and,
    with probability ``back_prob``, shows the back of the hand.

    Returns:
        R_h2c (3, 3) float64.
    """
    R0 = np.array([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])  # x_h -> -x_c, y_h -> -y_c, z_h -> -z_c
    if rng.uniform() < back_prob:
        R0 = Rotation.from_euler("y", 180.0, degrees=True).as_matrix() @ R0
    axis_angle = rng.uniform(0.0, 2 * np.pi)
    tilt = np.radians(rng.uniform(0.0, max_tilt_deg))
    R_tilt = Rotation.from_rotvec(tilt * np.array([np.cos(axis_angle), np.sin(axis_angle), 0.0])).as_matrix()
    R_in = Rotation.from_euler("z", rng.uniform(-inplane_deg, inplane_deg), degrees=True).as_matrix()
    return R_in @ R_tilt @ R0


def sample_hand(
    rng: np.random.Generator,
    K: np.ndarray,
    width: int,
    height: int,
    depth_range_m: tuple[float, float] = (0.55, 1.05),
    scale_range: tuple[float, float] = (0.88, 1.12),
    sigma_rad: float = 0.25,
    base_poses: dict[str, np.ndarray] | None = None,
    margin_px: float = 90.0,
    min_forearm_away: float = 0.2,
    shape: HandShape | None = None,
    angles_rad: np.ndarray | None = None,
) -> HandInstance:
    """A random posed hand whose palm centre projects inside the image.

    Args:
        rng: random generator.
        K: (3, 3) intrinsics, pixels.
        width, height: image size, pixels.
        depth_range_m: range of the palm centre's z, metres.
        scale_range: range of the hand scale.
        sigma_rad: articulation noise around the base poses.
        base_poses: name -> (5, 4) angles (default :data:`BASE_POSES_RAD`).
        margin_px: the palm centre stays this far from the image border.
        min_forearm_away: keep orientations whose forearm points away from the camera by at
            least this much (its direction's z component), as in NYU: the subject faces the
            camera and holds the hand out in front of the body.
        shape: use this hand (then ``scale_range`` is not drawn).
        angles_rad: (5, 4) use this articulation (then ``sigma_rad``, ``base_poses`` are unused).

    Returns:
        HandInstance.
    """
    K = np.asarray(K, dtype=np.float64)
    shape = HandShape(scale=float(rng.uniform(*scale_range))) if shape is None else shape
    angles = sample_articulation(rng, base_poses, sigma_rad) if angles_rad is None else clip_angles(angles_rad)
    wrist = np.array([rng.uniform(-0.5, 0.6), rng.uniform(-0.3, 0.3)])
    for _ in range(100):
        R = sample_rotation_h2c(rng)
        hand = HandInstance(shape, angles, R, np.zeros(3), wrist)
        if hand.forearm_direction_c()[2] >= min_forearm_away:
            break
    z = rng.uniform(*depth_range_m)
    mu = min(margin_px, width / 2 - 1)
    mv = min(margin_px, height / 2 - 1)
    u = rng.uniform(mu, width - mu)
    v = rng.uniform(mv, height - mv)
    center_c = np.array([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z])
    center_h = shape.palm_joints_m[2] * shape.scale
    return replace(hand, t_h2c_m=center_c - R @ center_h)


def hand_trimesh(hand: HandInstance, forearm_length_m: float = 0.10, sections: int = 12):
    """The hand's capsules as one trimesh.Trimesh in the camera frame (for mesh renderers).

    Overlapping capsules are concatenated, not merged: fine for depth rendering.
    """
    import trimesh

    a, b, r = hand.capsules_c(forearm_length_m)
    parts = []
    for ai, bi, ri in zip(a, b, r):
        d = bi - ai
        h = float(np.linalg.norm(d))
        m = trimesh.creation.capsule(height=max(h, 1e-6), radius=float(ri), count=[sections, sections])
        z = np.array([0.0, 0.0, 1.0])
        T = np.eye(4)
        if h > 1e-9:
            T[:3, :3] = trimesh.geometry.align_vectors(z, d / h)[:3, :3]
        T[:3, 3] = (ai + bi) / 2.0
        # trimesh's capsule is centred at the origin along z
        lo, hi = m.bounds[:, 2]
        m.apply_translation([0.0, 0.0, -(lo + hi) / 2.0])
        m.apply_transform(T)
        parts.append(m)
    return trimesh.util.concatenate(parts)
