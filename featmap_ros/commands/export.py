"""``featmap export onnx``: the estimator's network (f, g, h) as an ONNX file.

``featmap export onnx --out FILE.onnx [--checkpoint CK] [--task object|hand]`` exports what the
estimator runs on its crops (``model(x, real=mapping)``; see :mod:`featmap_ros.onnx_export`),
checks it in ONNX Runtime against torch on random crops (batch 1 and 3), and prints the path
and the largest difference. Without ``--checkpoint``, the bundled demo weights of ``--task``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from featmap_ros.checkpoint import bundled_weights, load_checkpoint, model_from_checkpoint


def register(sub) -> None:
    p = sub.add_parser("export", help="export the networks for other runtimes (ONNX)")
    parts = p.add_subparsers(dest="export_command", metavar="FORMAT")
    parts.required = True
    o = parts.add_parser("onnx", help="f, g, h of an object or hand checkpoint as ONNX (dynamic batch), checked in ONNX Runtime")
    o.add_argument("--checkpoint", type=Path, default=None, help="checkpoint (default: the bundled demo weights of --task)")
    o.add_argument("--task", choices=("object", "hand"), default=None,
                   help="task of the checkpoint (default: read from it; object for the bundled weights)")
    o.add_argument("--out", type=Path, required=True, help="output .onnx file (written atomically)")
    o.add_argument("--no-mapping", action="store_true",
                   help="export h(f(x)) even if the checkpoint was trained with mapping (default: as the estimator runs it)")
    o.set_defaults(func=run_onnx_cmd)


def run_onnx_cmd(args: argparse.Namespace) -> int:
    from featmap_ros.onnx_export import INPUT_NAME, OUTPUT_NAME, check_onnx, export_onnx, require

    require("onnx")
    require("onnxruntime")
    path = args.checkpoint if args.checkpoint is not None else bundled_weights(args.task or "object")
    ck = load_checkpoint(path, task=args.task)
    model = model_from_checkpoint(ck, str(path))
    use_mapping = bool(ck.get("config", {}).get("mapping", True)) and not args.no_mapping
    out = export_onnx(model, args.out, use_mapping=use_mapping)
    diff = check_onnx(model, out, use_mapping=use_mapping)
    cfg = model.cfg
    shape_out = f"(N, {cfg.n_objects}, 8, 2) crop-normalised corners" if cfg.task == "object" else f"(N, {cfg.n_joints}, 3) crop-normalised joints"
    print(f"wrote {out}  ({out.stat().st_size / 1e6:.2f} MB, {cfg.task}, backbone {cfg.backbone}, map_level {cfg.map_level}, "
          f"{'h(g(f(x)))' if use_mapping else 'h(f(x))'})")
    print(f"  input  {INPUT_NAME!r}: (N, {cfg.in_channels}, {cfg.input_size}, {cfg.input_size}) float32; output {OUTPUT_NAME!r}: {shape_out}")
    print(f"  ONNX Runtime vs torch, random crops, batch 1 and 3: max abs difference {diff:.3g}")
    return 0
