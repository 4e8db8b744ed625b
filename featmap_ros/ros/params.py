"""The nodes' parameters as data: name, default, description, range, read-only; and their checks.

No rclpy here: the nodes turn each :class:`ParamSpec` into a ``ParameterDescriptor`` and declare
it once; the tests and ``featmap bench node`` validate ``config/*.yaml`` with the same code.
A wrong value raises :class:`~featmap_ros.errors.InputError` naming the parameter.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import yaml

from featmap_ros.errors import InputError
from featmap_ros.onnx_export import DEFAULT_RUNTIME, RUNTIMES
from featmap_ros.tracking import FILTER_KINDS, PoseFilterConfig

#: The filter's defaults, one home: featmap_ros.tracking.PoseFilterConfig.
_PF = PoseFilterConfig()

#: Where bundled demo weights live inside the installed Python package.
WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
DEFAULT_WEIGHTS = {"object": "demo_object.pt", "hand": "demo_hand.pt"}  # as featmap_ros.checkpoint.bundled_weights


@dataclass(frozen=True)
class ParamSpec:
    """One node parameter.

    Attributes:
        name: dotted name (``qos.depth``), as in the YAML's nested keys.
        default: default value; its Python type is the parameter type (bool, int, float, str).
        description: shown by ``ros2 param describe``.
        read_only: True if it only takes effect at start-up.
        min: lower bound (int/float parameters).
        max: upper bound (int/float parameters).
        choices: allowed values (str parameters).
        pattern: regular expression the whole value must match (str parameters).
        list_ok: a str parameter that also takes a list of strings (``cameras: [a, b]`` as well as
            ``cameras: "a,b"``); declared with dynamic typing, checked by its own parser.
    """

    name: str
    default: Any
    description: str
    read_only: bool = True
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    pattern: str = ""
    list_ok: bool = False

    @property
    def type(self) -> type:
        return type(self.default)

    def describe(self) -> str:
        """The description with its constraints, for ``ros2 param describe``."""
        extra = []
        if self.choices:
            extra.append(f"one of {list(self.choices)}")
        if self.pattern:
            extra.append(f"matches {self.pattern!r}")
        return self.description + (f" ({'; '.join(extra)})" if extra else "")

    def check(self, value: Any) -> Any:
        """Validate and normalise a value (ints are accepted for float parameters).

        Raises:
            InputError: ``parameter '<name>': ...``.
        """
        t = self.type
        if self.list_ok and isinstance(value, (list, tuple)):
            if not all(isinstance(v, str) for v in value):
                raise InputError(f"parameter '{self.name}': expected a string or a list of strings, got {value!r}")
            return tuple(value)
        if t is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if t is int and isinstance(value, bool) or not isinstance(value, t):
            raise InputError(f"parameter '{self.name}': expected {t.__name__}, got {type(value).__name__} {value!r}")
        if t in (int, float):
            if t is float and value != value:
                raise InputError(f"parameter '{self.name}': NaN")
            if self.min is not None and value < self.min or self.max is not None and value > self.max:
                raise InputError(f"parameter '{self.name}': {value} is outside [{self.min}, {self.max}]")
        if t is str:
            if self.choices and value not in self.choices:
                raise InputError(f"parameter '{self.name}': {value!r} is not one of {list(self.choices)}")
            if self.pattern and not re.fullmatch(self.pattern, value):
                raise InputError(f"parameter '{self.name}': {value!r} does not match {self.pattern!r}")
        return value


_COMMON = (
    ParamSpec("device", "auto", "torch device for inference: auto (CUDA if available), cpu, cuda or cuda:N",
              pattern=r"auto|cpu|cuda(:\d+)?"),
    ParamSpec("runtime", DEFAULT_RUNTIME, "what runs f, g, h (and the hand-centre refiner): onnxruntime (the networks "
              "exported to ONNX at start-up, 4-5x faster on a CPU; torch where ONNX Runtime is missing or fails, "
              "logged once) or torch", choices=RUNTIMES),
    ParamSpec("warmup", True, "run one dummy inference at start-up so the first frame is not slow"),
    ParamSpec("min_score", 0.0, "estimates with a lower confidence are not published", read_only=False, min=0.0, max=1.0),
    ParamSpec("frame_prefix", "featmap/", "TF child frames are <frame_prefix><name> under the input's frame", read_only=False,
              pattern=r"[A-Za-z0-9_/]*"),
    ParamSpec("publish_tf", True, "broadcast TF for the estimates", read_only=False),
    ParamSpec("qos.reliability", "best_effort", "input QoS reliability (sensor data: best_effort)",
              choices=("best_effort", "reliable")),
    ParamSpec("qos.depth", 5, "input QoS history depth", min=1, max=1000),
    ParamSpec("sync.queue_size", 10, "message_filters ApproximateTimeSynchronizer queue size", min=1, max=1000),
    ParamSpec("sync.slop_s", 0.05, "largest stamp difference of synchronised messages, seconds", min=1e-4, max=10.0),
    ParamSpec("diagnostics.period_s", 1.0, "period of /diagnostics reports and of the missing-input check, seconds",
              min=0.1, max=60.0),
    ParamSpec("log_throttle_s", 5.0, "each kind of bad-input warning is logged at most once per this many seconds",
              read_only=False, min=0.0, max=3600.0),
    ParamSpec("mode", "continuous", "continuous = estimate every synchronised frame the worker can take; on_request = "
              "estimate only for ~/estimate service requests (no inference between them: the GPU is free)",
              read_only=False, choices=("continuous", "on_request")),
    ParamSpec("request.timeout_s", 5.0, "~/estimate: longest wait for a frame when a request asks for timeout_s 0, seconds",
              read_only=False, min=0.001, max=3600.0),
)

OBJECT_NODE_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("weights", "", "object checkpoint (.pt), or a bundled one by name (lmo); empty = bundled featmap_ros/weights/demo_object.pt"),
    *_COMMON,
    ParamSpec("objects", "", "comma-separated object names to estimate; empty = every object of the checkpoint"),
    ParamSpec("roi_source", "localiser",
              "where the image windows come from: localiser (built in), detections (detections_2d topic), "
              "tracking (last pose, localiser when lost), ground_truth (ground_truth/detections, evaluation)",
              choices=("localiser", "detections", "tracking", "ground_truth")),
    ParamSpec("zoom_in", -1, "zoom-in rounds: crop again at the training window of the estimated pose and estimate again, "
              "this many times (one more network call each); -1 = the checkpoint head's default (coords 1, bb8 0)",
              min=-1, max=5),
    ParamSpec("tracking.max_age_s", 0.5, "tracking: a pose older than this is lost, seconds", read_only=False, min=0.0, max=60.0),
    ParamSpec("tracking.min_score", 0.3, "tracking: a pose scored lower is lost", read_only=False, min=0.0, max=1.0),
    ParamSpec("refine.depth", "auto",
              "refine the poses with a depth image registered to the colour image (inputs depth, 16UC1 mm or "
              "32FC1 m, and depth_camera_info; same size and K as the colour image, e.g. RealSense "
              "aligned_depth_to_color): auto = when depth arrives (a colour-only camera still gets answers), "
              "on = every frame waits for its depth, off = colour only", choices=("auto", "on", "off")),
    ParamSpec("refine.mesh_root", "", "folder of the meshes a checkpoint names by relative path (meta.mesh_paths, e.g. "
              "obj_000001.ply: the BOP dataset's models/ folder); empty = relative to the working directory"),
    ParamSpec("filter.enabled", True, "smooth the poses over time (filter.kind on SE(3) per object track): filtered "
              "poses on ~/detections, pose topics, TF and markers; the per-frame ones always on ~/detections_raw",
              read_only=False),
    ParamSpec("filter.kind", _PF.kind, "kalman = constant-velocity Kalman filter (follows motion without lag; its state "
              "covariance is the published covariance), one_euro = One-Euro low-pass filter (lags in motion; the "
              "estimator's covariance passes through)", read_only=False, choices=FILTER_KINDS),
    ParamSpec("filter.meas_sigma_m", _PF.meas_sigma_m, "kalman: measurement noise per axis of a pose without a "
              "covariance of its own, metres", read_only=False, min=1e-6, max=10.0),
    ParamSpec("filter.meas_sigma_deg", _PF.meas_sigma_deg, "kalman: the same for the rotation, degrees per axis",
              read_only=False, min=1e-4, max=180.0),
    ParamSpec("filter.accel_sigma", _PF.accel_sigma_mps2, "kalman: acceleration noise at rest, m/s^2 per sqrt(Hz): "
              "lower = less jitter; the innovations raise it in motion", read_only=False, min=1e-7, max=1e3),
    ParamSpec("filter.ang_accel_sigma", _PF.ang_accel_sigma_radps2, "kalman: angular acceleration noise at rest, "
              "rad/s^2 per sqrt(Hz)", read_only=False, min=1e-7, max=1e3),
    ParamSpec("filter.min_cutoff", _PF.trans_min_cutoff_hz, "one_euro: cutoff at rest, Hz (translation and rotation): "
              "lower = less jitter, more lag when motion starts", read_only=False, min=1e-3, max=100.0),
    ParamSpec("filter.beta", _PF.trans_beta_hz_s_per_m, "one_euro: translation cutoff rise with speed, Hz per m/s: "
              "higher = less lag in motion, more jitter at rest", read_only=False, min=0.0, max=1e4),
    ParamSpec("filter.beta_rot", _PF.rot_beta_hz_s_per_rad, "one_euro: rotation cutoff rise with angular speed, "
              "Hz per rad/s", read_only=False, min=0.0, max=1e4),
    ParamSpec("filter.d_cutoff", _PF.d_cutoff_hz, "one_euro: cutoff of the speed estimate, Hz", read_only=False,
              min=1e-3, max=100.0),
    ParamSpec("filter.max_gap_s", _PF.max_gap_s, "a track unseen for longer than this starts over, seconds (input stamps)",
              read_only=False, min=0.0, max=3600.0),
    ParamSpec("filter.max_jump_m", _PF.max_jump_m, "a pose further than this from its track starts the track over, metres",
              read_only=False, min=0.0, max=100.0),
    ParamSpec("filter.max_jump_deg", _PF.max_jump_deg, "a pose turned further than this from its track starts it over, "
              "degrees", read_only=False, min=0.0, max=180.0),
    ParamSpec("planning_scene.enabled", False, "publish moveit_msgs/CollisionObject on ~/collision_objects: each object's "
              "mesh (from refine.mesh_root, in metres, decimated) at its filtered pose, ADD when it appears or moves, "
              "REMOVE when it is lost (filter.max_gap_s); off with a log line when moveit_msgs is not installed"),
    ParamSpec("planning_scene.max_triangles", 2000, "planning_scene: meshes are decimated to at most this many triangles",
              min=12, max=1000000),
    ParamSpec("cameras", "", "several cameras in one node: their namespaces, as a list ([cam_left, cam_right]) or "
              "comma-separated; each camera's inputs are <cam>/image, <cam>/camera_info (and <cam>/detections_2d, "
              "<cam>/depth, ... as for one camera), its outputs ~/<cam>/detections, ~/<cam>/markers, ...; the image "
              "windows of the cameras' frames within batch.window_s go through the network together. Empty = one "
              "camera on image, camera_info, ...", list_ok=True),
    ParamSpec("batch.window_s", 0.03, "cameras: the frames of the cameras that arrive within this many seconds of the "
              "first are estimated together (a batch also closes when every camera has a frame)", min=0.0, max=10.0),
    ParamSpec("markers.mesh_resource", "package://featmap_ros/meshes/{object}.ply",
              "mesh marker URI; {object} = object name, {obj_id} (e.g. {obj_id:06d}) = dataset id; empty = boxes only", read_only=False),
    ParamSpec("markers.mesh_scale", 0.001, "mesh marker scale (0.001 for meshes in millimetres)", read_only=False,
              min=1e-6, max=1000.0),
)

HAND_NODE_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("weights", "", "hand checkpoint (.pt); empty = bundled featmap_ros/weights/demo_hand.pt"),
    *_COMMON,
    ParamSpec("depth_scale_m", 0.001, "metres per unit of 16UC1 depth (0.001 = millimetres)", min=1e-6, max=1.0),
    ParamSpec("palm_joint", "palm_center", "joint whose position is broadcast as TF <frame_prefix>hand", read_only=False),
)


def spec_table(specs: tuple[ParamSpec, ...]) -> dict[str, ParamSpec]:
    """name -> spec."""
    return {s.name: s for s in specs}


def validate_params(specs: tuple[ParamSpec, ...], values: Mapping[str, Any], where: str = "") -> dict[str, Any]:
    """Check a full or partial set of values; missing ones take defaults.

    Args:
        specs: the node's parameter specs.
        values: dotted name -> value.
        where: prefix for error messages (e.g. the YAML path).

    Returns:
        dotted name -> validated value, for every spec.

    Raises:
        InputError: an unknown name or a bad value, naming the parameter.
    """
    table = spec_table(specs)
    unknown = sorted(set(values) - set(table))
    if unknown:
        raise InputError(f"{where}parameter '{unknown[0]}': unknown; valid: {sorted(table)}")
    out = {}
    for name, spec in table.items():
        try:
            out[name] = spec.check(values[name]) if name in values else spec.default
        except InputError as e:
            raise InputError(f"{where}{e}") from None
    return out


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested YAML mapping -> dotted names (ROS 2 parameter file convention)."""
    out: dict[str, Any] = {}
    for k, v in tree.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, f"{name}."))
        else:
            out[name] = v
    return out


def load_param_file(path: str | Path, node_name: str) -> dict[str, Any]:
    """Read a ROS 2 parameter YAML (``<node or /**>: ros__parameters: ...``) -> dotted values.

    Raises:
        InputError: unreadable file, or no ``ros__parameters`` for ``node_name`` or ``/**``.
    """
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise InputError(f"{path}: cannot read parameters: {e}") from None
    if not isinstance(doc, Mapping):
        raise InputError(f"{path}: expected a mapping of node names")
    values: dict[str, Any] = {}
    for key in ("/**", node_name, f"/{node_name}"):
        section = doc.get(key)
        if isinstance(section, Mapping):
            if not isinstance(section.get("ros__parameters"), Mapping):
                raise InputError(f"{path}: '{key}' has no 'ros__parameters' mapping")
            values.update(flatten(section["ros__parameters"]))
    if not values:
        raise InputError(f"{path}: no parameters for '{node_name}' (or '/**')")
    return values


def resolve_weights(value: str, kind: str) -> Path:
    """The checkpoint a ``weights`` parameter names: a path, or the name of a bundled file
    (``lmo`` = ``featmap_ros/weights/lmo.pt``); empty = the bundled demo weights.

    Raises:
        InputError: ``parameter 'weights': ...`` when the file does not exist.
    """
    path = Path(value).expanduser() if value else WEIGHTS_DIR / DEFAULT_WEIGHTS[kind]
    bundled = WEIGHTS_DIR / f"{value}.pt"
    if value and not path.is_file() and "/" not in value and bundled.is_file():
        path = bundled
    if not path.is_file():
        hint = " (bundled weights missing: run 'featmap demo' or set the parameter)" if not value else ""
        raise InputError(f"parameter 'weights': {path} does not exist{hint}")
    return path


def parse_objects(value: str) -> tuple[str, ...]:
    """``"ape, can"`` -> ``("ape", "can")``; empty -> ``()``."""
    return tuple(n.strip() for n in value.split(",") if n.strip())


#: A camera namespace: ROS name tokens separated by '/'.
CAMERA_NAME = r"[A-Za-z][A-Za-z0-9_]*(/[A-Za-z][A-Za-z0-9_]*)*"


def parse_cameras(value: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The ``cameras`` parameter -> camera namespaces: ``"cam_left, cam_right"`` or
    ``["cam_left", "cam_right"]`` -> ``("cam_left", "cam_right")``; empty -> ``()`` (one camera).

    Raises:
        InputError: ``parameter 'cameras': ...`` for a name that is not a ROS namespace or a repeated one.
    """
    names = parse_objects(value) if isinstance(value, str) else tuple(v.strip() for v in value if v.strip())
    for n in names:
        if not re.fullmatch(CAMERA_NAME, n):
            raise InputError(f"parameter 'cameras': {n!r} is not a camera namespace (letters, digits, _ and /, "
                             "starting with a letter)")
    if len(set(names)) != len(names):
        raise InputError(f"parameter 'cameras': {list(names)} names a camera twice")
    return names


def check_objects(requested: tuple[str, ...], available: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The objects to estimate: ``requested`` (all known to the checkpoint) or all when empty.

    Raises:
        InputError: ``parameter 'objects': ...`` naming the unknown object and the valid ones.
    """
    unknown = [n for n in requested if n not in available]
    if unknown:
        raise InputError(f"parameter 'objects': {unknown} not in the checkpoint; valid: {list(available)}")
    return tuple(requested) if requested else tuple(available)


#: dataset_player_node's parameters (declared once by the node; checked by the tests).
PLAYER_NODE_PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("dataset", "lm", "dataset kind: lm / lmo / bop (BOP layout) or nyu (NYU layout)", choices=("lm", "lmo", "toy", "bop", "nyu")),
    ParamSpec("dataset_root", "", "dataset folder; empty = the embedded sample the project generates (cached)"),
    ParamSpec("split", "test", "split folder"),
    ParamSpec("scenes", "", "BOP scene ids, comma-separated; empty = all", pattern=r"[0-9, ]*"),
    ParamSpec("objects", "", "BOP obj_ids whose ground truth is published, comma-separated; empty = all", pattern=r"[0-9, ]*"),
    ParamSpec("range", "", "frame positions A:B (B exclusive) after the selection; empty = all", pattern=r"[0-9 ]*:?[0-9 ]*"),
    ParamSpec("synthetic", False, "NYU: publish synthdepth_* instead of depth_*"),
    ParamSpec("rate", 30.0, "frames per second of wall time; 0 = as fast as possible (or as acks come)", min=0.0, max=10000.0),
    ParamSpec("loop", False, "start again after the last frame (stamps keep increasing)"),
    ParamSpec("wait_for_ack", False, "publish the next frame only after the estimator answered the last one "
              "(its output on ack_topic carries the frame's stamp) or ack_timeout_s passed: lossless evaluation"),
    ParamSpec("ack_topic", "", "estimator output to pace on; empty = /object_pose_node/detections or /hand_pose_node/hand_pose"),
    ParamSpec("ack_timeout_s", 5.0, "longest wait for an ack, seconds (a missed frame then counts as a failure)", min=0.001, max=3600.0),
    ParamSpec("startup_timeout_s", 120.0, "lossless replay (wait_for_ack): longest wait for a subscriber to the images before the "
              "first frame, seconds (an estimator node loading its networks)", min=0.001, max=86400.0),
    ParamSpec("publish_clock", True, "publish /clock with each frame's stamp (for use_sim_time)"),
    ParamSpec("start_time_s", 1.0, "stamp of the first frame, seconds", min=0.0, max=1e9),
    ParamSpec("start_delay_s", 1.0, "wait this long before the first frame (subscribers connect)", min=0.0, max=3600.0),
    ParamSpec("qos.reliability", "reliable", "QoS reliability of the published topics", choices=("reliable", "best_effort")),
    ParamSpec("qos.depth", 5, "QoS history depth of the published topics (publishing never blocks)", min=1, max=1000),
    ParamSpec("shutdown_when_done", False, "exit when the last frame (no loop) has been published"),
)


def _evaluator_params():
    return (
        ParamSpec("task", "object", "what is evaluated: object (Detection3DArray) or hand (featmap_ros/HandPose)",
                  choices=("object", "hand")),
        ParamSpec("dataset", "lm", "BOP dataset name for object names (objects)", choices=("lm", "lmo", "toy", "bop", "nyu")),
        ParamSpec("dataset_root", "", "dataset folder (objects: models/ for points and diameters); empty = the embedded sample"),
        ParamSpec("objects", "", "object names to evaluate, comma-separated; empty = every ground-truth instance"),
        ParamSpec("camera_info_topic", "/camera/color/camera_info", "camera_info giving K for the 2D projection error (objects)"),
        ParamSpec("output_dir", "featmap_eval_online", "where metrics JSON/CSV/PNG are written at shutdown (a relative path is under $ROS_HOME, default ~/.ros)"),
        ParamSpec("write_period_s", 0.0, "also write the results every this many seconds (0 = only at shutdown)", min=0.0, max=3600.0),
        ParamSpec("summary_period_s", 2.0, "period of the running summary (log, ~/summary, /diagnostics), seconds", min=0.1, max=3600.0),
        ParamSpec("max_lag_s", 10.0, "a ground-truth frame this far (stamp time) behind the newest is scored as missed, seconds",
                  min=0.001, max=1e6),
        ParamSpec("max_pending", 1000, "most frames waiting for an estimate", min=1, max=1_000_000),
        ParamSpec("qos.reliability", "reliable", "QoS reliability of the subscriptions", choices=("reliable", "best_effort")),
        ParamSpec("qos.depth", 100, "QoS history depth of the subscriptions", min=1, max=100000),
    )


#: evaluator_node's parameters (declared once by the node; checked by the tests).
EVALUATOR_NODE_PARAMS = _evaluator_params()
