"""Reliability: fuzzed messages, corrupt dataset files, interrupted writes, a long replay's memory.

Counts are defaults that keep this file well under a minute on a shared CPU; raise them with
``FEATMAP_FUZZ_N`` (malformed messages, default 10 000) and ``FEATMAP_REPLAY_FRAMES`` (default
240). The long runs are ``featmap bench replay --frames N`` (see README "bags").
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rosbags")

from featmap_ros.ros import online_eval
from featmap_ros.data import player
from featmap_ros.cli import main as featmap
from featmap_ros.errors import InputError
from featmap_ros.results import HandPose, ObjectPose
from featmap_ros.ros import conversions as conv
from featmap_ros.ros.msg_defs import featmap_typestore
from test_player import make_bop, make_nyu

REPO = Path(__file__).resolve().parents[1]
FUZZ_N = int(os.environ.get("FEATMAP_FUZZ_N", "10000"))
REPLAY_FRAMES = int(os.environ.get("FEATMAP_REPLAY_FRAMES", "240"))
#: A rejection must say which field or topic is at fault: "<name>[.<field>...]: <why>".
REASON = re.compile(r"^[A-Za-z_][\w/]*(\[\d+\])?(\.[\w\[\]/]+)*: \S")


@pytest.fixture(scope="module")
def msgs():
    return conv.RosbagsMessages(featmap_typestore("jazzy"))


# ------------------------------------------------------------------------------------ fuzzing

ENCODINGS = list(conv.IMAGE_ENCODINGS) + ["", "rgb16", "jpeg", "RGB8", "16UC3", "32FC3", "64FC1", "bayer_rggb8", "\x00"]
SPECIAL = [0.0, -1.0, -0.0, 1e-300, 1e300, float("nan"), float("inf"), -float("inf"), 3.0, 500.0]


def _image(msgs, rng, K_ok=True):
    enc = ENCODINGS[rng.integers(len(ENCODINGS))]
    dtype, ch = conv.IMAGE_ENCODINGS.get(enc, (np.uint8, int(rng.integers(1, 5))))
    h, w = (int(x) for x in rng.choice([0, 1, 2, 3, 7, 16, 48], 2))
    if rng.random() < 0.05:
        h = int(rng.choice([-1, 2**31, 10**6]))
    row = w * ch * np.dtype(dtype).itemsize
    step = int(row + rng.choice([0, 0, 0, 1, 3, -1, -row, 10**9]))
    n = max(0, step * max(h, 0)) if abs(step * max(h, 0)) < 10**6 else 16
    n = int(n + rng.choice([0, 0, 0, -1, 1, 7, -n]))
    if dtype == np.float32 and n % 4 == 0 and n:
        with np.errstate(over="ignore"):  # 1e300 -> inf in float32, on purpose
            data = rng.choice(SPECIAL, n // 4).astype(np.float32).view(np.uint8)
    else:
        data = rng.integers(0, 256, max(n, 0), dtype=np.uint8)
    header = conv.make_header(msgs, int(rng.integers(0, 2**40)), "camera_color_optical_frame")
    return msgs.new("sensor_msgs/msg/Image", header=header, height=h, width=w, encoding=enc, step=step,
                    is_bigendian=int(rng.integers(0, 2)), data=data)


def _info(msgs, rng, w=16, h=48):
    k = np.array([500.0, 0, w / 2, 0, 500.0, h / 2, 0, 0, 1.0])
    for _ in range(int(rng.integers(0, 4))):
        k[rng.integers(9)] = rng.choice(SPECIAL)
    d = rng.choice(SPECIAL, int(rng.choice([0, 5, 8]))) if rng.random() < 0.3 else np.zeros(5)
    header = conv.make_header(msgs, int(rng.integers(0, 2**40)), "camera_color_optical_frame")
    ww, hh = (w, h) if rng.random() < 0.7 else (int(rng.choice([0, 1, 640])), int(rng.choice([0, 1, 480])))
    return msgs.new("sensor_msgs/msg/CameraInfo", header=header, width=ww, height=hh, k=k, d=d.astype(np.float64),
                    distortion_model="plumb_bob", r=np.eye(3).ravel(), p=np.zeros(12))


def _detections(msgs, rng):
    header = conv.make_header(msgs, int(rng.integers(0, 2**40)), "camera_color_optical_frame")
    n = int(rng.choice([0, 1, 2, 3])) if rng.random() > 0.02 else int(rng.choice([100, 1000]))  # empty ... huge
    poses = [ObjectPose(str(rng.choice(["ape", "eggbox", "", "ghost"])), 1, np.eye(3), np.array([0.0, 0.0, 0.6]), float(rng.random()),
                        extents_m=np.array([0.05, 0.04, 0.03])) for _ in range(n)]
    m = conv.object_poses_to_detection3d_array(msgs, poses, header)
    for det in m.detections:
        r = rng.random()
        if r < 0.1:
            det.results = []
        elif r < 0.2:
            det.results[0].pose.pose.position.z = float(rng.choice(SPECIAL))
        elif r < 0.3:
            q = det.results[0].pose.pose.orientation
            q.x = q.y = q.z = q.w = float(rng.choice([0.0, float("nan"), float("inf")]))
        elif r < 0.35:
            det.results[0].hypothesis.score = float(rng.choice(SPECIAL))
    return m


def _hand(msgs, rng):
    header = conv.make_header(msgs, int(rng.integers(0, 2**40)), "camera_depth_optical_frame")
    J = int(rng.choice([0, 1, 14, 36]))
    m = conv.hand_pose_to_msg(msgs, HandPose([f"j{i}" for i in range(J)], rng.normal(0, 0.05, (J, 3)) + [0, 0, 0.6], 1.0), header) \
        if J else conv.empty_hand_pose_msg(msgs, header)
    r = rng.random()
    if r < 0.2 and J:
        m.joints[int(rng.integers(J))].z = float(rng.choice(SPECIAL))
    elif r < 0.35:
        m.joint_names = m.joint_names[: max(0, len(m.joint_names) - 1)]
    return m


def _check(results: Counter, failures: list, fn, *args):
    """Call ``fn``; an InputError with a reason naming the field is a rejection, anything else a failure."""
    try:
        fn(*args)
        results["accepted"] += 1
    except InputError as e:
        text = str(e)
        if REASON.match(text):
            results["rejected"] += 1
            results["reason: " + re.sub(r"\d+", "#", text.split(":")[0])] += 1
        else:
            failures.append(f"{fn.__qualname__}: rejection without a field name: {text!r}")
    except Exception as e:  # noqa: BLE001 - this is what the test hunts for
        failures.append(f"{fn.__qualname__}: {type(e).__name__}: {e}")


class _FakeObjectEstimator:
    object_names = ["ape", "eggbox"]

    def estimate(self, rgb, K, boxes=None):
        return [ObjectPose(n, 1, np.eye(3), np.array([0.0, 0.0, 0.6]), 0.9, extents_m=np.full(3, 0.05)) for n, _ in (boxes or [])]


class _FakeHandEstimator:
    def __init__(self, rng):
        self.rng = rng

    def estimate(self, depth_m, K):
        r = self.rng.random()
        if r < 0.3:
            return None
        J = self.rng.normal(0, 0.05, (14, 3)) + [0, 0, 0.6]
        if r < 0.4:
            J[3, 1] = np.nan  # the pipeline must drop a non-finite hand, not publish it
        return HandPose([f"j{i}" for i in range(14)], J, 0.9)


@pytest.mark.filterwarnings("error::RuntimeWarning")  # overflow/NaN warnings count as unhandled too
def test_fuzz_conversions_and_callbacks(msgs, tmp_path):
    from featmap_ros.ros.pipeline import HandPipeline, HandSettings, ObjectPipeline, ObjectSettings

    rng = np.random.default_rng(12345)
    results: Counter = Counter()
    failures: list[str] = []
    obj_pipe = ObjectPipeline(_FakeObjectEstimator(), msgs, ObjectSettings(objects=("ape", "eggbox"), roi_source="ground_truth"))
    hand_pipe = HandPipeline(_FakeHandEstimator(rng), msgs, HandSettings())
    root = make_bop(tmp_path / "lm", n=1)
    obj_eval = online_eval.make_evaluator("object", "lm", root)
    hand_eval = online_eval.make_evaluator("hand", "nyu", "")
    calls = 0
    while calls < FUZZ_N:
        img = _image(msgs, rng)
        info = _info(msgs, rng, max(int(img.width), 1), max(int(img.height), 1))
        det, hand = _detections(msgs, rng), _hand(msgs, rng)
        _check(results, failures, conv.image_to_numpy, img)
        _check(results, failures, conv.image_to_rgb, img)
        _check(results, failures, conv.image_to_depth_m, img)
        _check(results, failures, conv.camera_info_to_model, info)
        _check(results, failures, conv.detection3d_array_to_object_poses, det)
        _check(results, failures, conv.hand_pose_msg_to_result, hand)
        _check(results, failures, lambda i, c, g: obj_pipe.process(i, c, ground_truth_msg=g), img, info, det)
        _check(results, failures, hand_pipe.process, img, info)
        calls += 8
        for ev, fn, m in ((obj_eval, obj_eval.on_camera_info, info), (obj_eval, obj_eval.on_ground_truth, det),
                          (obj_eval, obj_eval.on_estimate, det), (hand_eval, hand_eval.on_ground_truth, hand),
                          (hand_eval, hand_eval.on_estimate, hand)):
            try:
                reason = fn(m)
            except Exception as e:  # noqa: BLE001 - the evaluator's callbacks must never raise
                failures.append(f"{fn.__qualname__} raised {type(e).__name__}: {e}")
                continue
            results["evaluator rejected" if reason else "evaluator accepted"] += 1
            if reason and not REASON.match(reason):
                failures.append(f"{fn.__qualname__}: reason without a field name: {reason!r}")
            calls += 1
    for ev in (obj_eval, hand_eval):
        ev.finish()
    print(f"\n{calls} malformed/random inputs: {results['accepted']} accepted, {results['rejected']} rejected with a reason, "
          f"evaluator {results['evaluator accepted']} used / {results['evaluator rejected']} rejected, {len(failures)} failures")
    for k, v in sorted(((k, v) for k, v in results.items() if k.startswith("reason")), key=lambda kv: -kv[1])[:12]:
        print(f"  {v:6d}  {k}")
    assert failures == [], "\n".join(failures[:20])
    assert calls >= FUZZ_N and results["rejected"] > FUZZ_N // 10 and results["accepted"] > FUZZ_N // 20


# ------------------------------------------------------------------------------------ corrupt files


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


@pytest.mark.parametrize("damage,where", [
    ("rgb", "rgb/000001.png"), ("depth", "depth/000001.png"), ("scene_gt", "scene_gt.json"),
    ("models_info", "models_info.json"), ("missing_rgb", "rgb/000001.png"),
])
def test_corrupt_bop_files_are_named(tmp_path, capsys, damage, where):
    root = make_bop(tmp_path / "lm", n=3)
    scene = root / "test" / "000001"
    if damage == "rgb":
        _truncate(scene / "rgb" / "000001.png")
    elif damage == "depth":
        _truncate(scene / "depth" / "000001.png")
    elif damage == "scene_gt":
        (scene / "scene_gt.json").write_text((scene / "scene_gt.json").read_text()[:-20])
    elif damage == "models_info":
        (root / "models" / "models_info.json").write_text("{\"1\": {\"diameter\": ")
    else:
        (scene / "rgb" / "000001.png").unlink()
    out = tmp_path / "bag"
    assert featmap(["bag", "bop", str(root), "--out", str(out), "--no-progress", "--strict"]) == 2
    err = capsys.readouterr().err
    assert where in err, err
    assert not out.exists()


@pytest.mark.parametrize("damage", ["short_mat", "truncated_depth", "missing_depth", "bad_png"])
def test_corrupt_nyu_files_are_named(tmp_path, damage):
    root = make_nyu(tmp_path / "nyu", n=3)
    split = root / "test"
    if damage == "short_mat":
        _truncate(split / "joint_data.mat", 0.3)
        with pytest.raises(InputError, match="joint_data.mat"):
            player.NyuSource(root)
        return
    target = split / "depth_1_0000002.png"
    if damage == "truncated_depth":
        _truncate(target)
    elif damage == "missing_depth":
        target.unlink()
    else:
        target.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    src = player.NyuSource(root)
    src.frame(0)
    with pytest.raises(InputError, match="depth_1_0000002.png"):
        src.frame(1)


# ------------------------------------------------------------------------------------ interruption


def _many_frames_bop(root: Path, n: int) -> Path:
    """A BOP dataset of ``n`` 640x480 frames, cheaply: frame 0's files hard-linked ``n`` times."""
    make_bop(root, n=1, w=640, h=480)
    scene = root / "test" / "000001"
    for name in ("scene_camera.json", "scene_gt.json", "scene_gt_info.json"):
        d = json.loads((scene / name).read_text())
        (scene / name).write_text(json.dumps({str(i): d["0"] for i in range(n)}))
    for folder in ("rgb", "depth"):
        for i in range(1, n):
            os.link(scene / folder / "000000.png", scene / folder / f"{i:06d}.png")
    return root


def _kill_when(proc: subprocess.Popen, ready, timeout_s: float = 60.0) -> bool:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        if proc.poll() is not None:
            return False
        if ready():
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.02)
    proc.kill()
    return False


def test_killed_bag_conversion_leaves_no_whole_looking_bag(tmp_path):
    from rosbags.rosbag2 import Reader

    root = _many_frames_bop(tmp_path / "lm", 400)
    out = tmp_path / "out_bag"
    assert featmap(["bag", "bop", str(root), "--out", str(out), "--range", "0:2", "--no-progress"]) == 0  # an old, complete bag
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    for storage in ("sqlite3", "mcap"):
        proc = subprocess.Popen([sys.executable, "-m", "featmap_ros.cli", "bag", "bop", str(root), "--out", str(out),
                                 "--storage", storage, "--no-progress"], env=env, cwd=str(tmp_path),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def size(f) -> int:  # sqlite's journal comes and goes while the writer runs
            try:
                return f.stat().st_size
            except FileNotFoundError:
                return 0

        def mid_write():
            files = [f for d in tmp_path.glob(".out_bag.*.partial") for f in d.rglob("out_bag.*")]
            return any(size(f) > 2_000_000 for f in files)

        assert _kill_when(proc, mid_write), f"{storage}: the conversion ended before it could be killed mid-write"
        with Reader(out) as r:  # still the old, complete bag
            assert r.message_count == 1 + 2 * 5
        leftovers = [p.name for p in tmp_path.iterdir() if p.name not in ("lm", "out_bag")]
        assert leftovers and all(n.startswith(".out_bag.") and n.endswith(".partial") for n in leftovers)
        for d in tmp_path.glob(".out_bag.*.partial"):  # a killed run's folder never has metadata: not a bag
            assert not list(d.rglob("metadata.yaml"))


_CHECKPOINT_WRITER = r"""
import sys, numpy as np, torch
from featmap_ros.checkpoint import save_checkpoint
k = 0
while True:
    save_checkpoint(sys.argv[1], {"step": k, "weights": torch.full((6_000_000,), float(k)), "config": {"k": k}})
    print(k, flush=True)
    k += 1
"""


def test_killed_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    import torch

    path = tmp_path / "ck.pt"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    for delay_lines in (1, 2):
        proc = subprocess.Popen([sys.executable, "-c", _CHECKPOINT_WRITER, str(path)], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(delay_lines):  # wait for whole checkpoints, then kill during the next write
            assert proc.stdout.readline().strip() != ""

        def writing():
            return any(p.name.startswith(".ck.pt.") for p in tmp_path.iterdir())

        _kill_when(proc, writing, 30.0)
        ck = torch.load(path, weights_only=False)
        assert torch.all(ck["weights"] == float(ck["step"])) and ck["config"]["k"] == ck["step"]


# ------------------------------------------------------------------------------------ long replay


@pytest.mark.parametrize("task", ["object", "hand"])
def test_long_replay_memory_is_flat(tmp_path, task):
    from featmap_ros.commands import bench_replay

    if task == "object":
        root = make_bop(tmp_path / "lm", n=4, w=160, h=120)
        src = player.BopSource(root)
    else:
        root = make_nyu(tmp_path / "nyu", n=4, w=160, h=120)
        src = player.NyuSource(root)
    est, _ = bench_replay.load_estimator(task, "", src)
    ev = online_eval.make_evaluator(task, "lm", root, max_pending=20)
    r = bench_replay.run_replay(task, src, est, REPLAY_FRAMES, ev, warmup=REPLAY_FRAMES // 3, sample_every=10, trace=True,
                                progress=False)
    per_frame = r["traced_growth_bytes"] / (REPLAY_FRAMES - r["baseline_frame"])
    print(f"\n{task}: {REPLAY_FRAMES} frames at {r['fps']:.0f} frames/s (tracemalloc on); traced growth "
          f"{r['traced_growth_bytes'] / 1024:.1f} KiB after frame {r['baseline_frame']} = {per_frame:.0f} B/frame; "
          f"RSS {r['rss_baseline_mb']:.0f} -> {r['rss_end_mb']:.0f} MiB")
    assert r["summary"]["frames"] == REPLAY_FRAMES and r["rejected"] == {}
    # one frame's image alone is 57 KiB (colour) / 38 KiB (depth): keeping anything per frame
    # beyond the evaluator's error row (a few hundred bytes) shows here
    assert per_frame < 1500


def test_bench_replay_command_writes_its_report(tmp_path, capsys):
    root = make_nyu(tmp_path / "nyu", n=3)
    out = tmp_path / "bench"
    assert featmap(["bench", "replay", "--task", "hand", "--frames", "30", "--dataset-root", str(root), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "replayed 30 hand frames" in text and "growth" in text
    rep = json.loads((out / "replay.json").read_text())
    assert rep["frames"] == 30 and rep["summary"]["frames"] == 30 and len(rep["samples"]) >= 2
    assert (out / "replay_memory.png").read_bytes()[:4] == b"\x89PNG"
    assert featmap(["bench", "replay", "--frames", "0", "--task", "hand", "--dataset-root", str(root), "--out", str(out)]) == 2
