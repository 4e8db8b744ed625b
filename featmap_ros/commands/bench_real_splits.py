"""``featmap bench real-splits``: Feature Mapping from a few real frames, scored on held-out frames.

    featmap bench real-splits --stage1 runs/lmo_stage1/last.pt --dataset-root <lmo> \\
        --folds 3,8,17,27,36 38,39,41,47,58 --seeds 0 1 2 --work runs/lmo_splits --json splits.json

Each fold trains stage 2 (synthetic_only / no_mapping / mapping, from the one stage-1 checkpoint)
on the listed real frames and scores every other frame of the split; the logic, the metrics and
the paired bootstrap: :mod:`featmap_ros.evaluation.real_splits`. Prints a Markdown table; run
the same command again to continue an interrupted bench.

``featmap bench real-splits-compare --works lite0=runs/splits_lite0 small=runs/splits_small`` compares
one variant across benches of different stage-1 checkpoints (backbones, training ingredients),
paired over the held-out instances.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from featmap_ros import atomic
from featmap_ros.errors import InputError
from featmap_ros.evaluation import real_splits


def register(sub) -> None:
    p = sub.add_parser("real-splits", help="stage-2 variants from one stage-1 checkpoint, trained on some real frames, scored on the others")
    p.add_argument("--stage1", required=True, type=Path, help="last.pt at the end of stage 1 (featmap train object ... --stop-after STEPS_STAGE1)")
    p.add_argument("--dataset-root", required=True, type=Path, help="BOP dataset folder with the real frames (models/, <split>/, test_targets_bop19.json)")
    p.add_argument("--split", default="test")
    p.add_argument("--folds", nargs="+", default=None, metavar="IDS",
                   help="per fold, the comma-separated image ids stage 2 trains on; the other frames with an image are scored")
    p.add_argument("--holdout", choices=("folds", "viewpoint"), default="folds",
                   help="folds: as --folds gives them; viewpoint: frames grouped by camera viewpoint, one group held out per "
                        "fold, training only on frames --min-gap-deg or more from every held-out frame (predicts unseen frames)")
    p.add_argument("--n-folds", type=int, default=3, help="--holdout viewpoint: the number of viewpoint groups (folds)")
    p.add_argument("--min-gap-deg", type=float, default=30.0, help="--holdout viewpoint: smallest train/held-out viewpoint change, degrees")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="stage-2 seeds (default 0)")
    p.add_argument("--variants", nargs="+", choices=real_splits.VARIANTS, default=list(real_splits.VARIANTS))
    p.add_argument("--work", required=True, type=Path, help="folder of the runs (resumable)")
    p.add_argument("--json", type=Path, default=None, help="write the report (updated after every run)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config changes for every variant (e.g. steps_stage2=300)")
    p.set_defaults(func=run)
    c = sub.add_parser("real-splits-compare", help="one stage-2 variant across real-splits benches of different stage-1 checkpoints, paired")
    c.add_argument("--works", nargs="+", required=True, metavar="LABEL=WORK",
                   help="work folders of real-splits benches, e.g. lite0=runs/splits_lite0 small=runs/splits_small (the first is the reference)")
    c.add_argument("--variant", default="mapping", choices=real_splits.VARIANTS)
    c.add_argument("--json", type=Path, default=None, help="write the report")
    c.set_defaults(func=run_compare)


def run(args: argparse.Namespace) -> int:
    if args.holdout == "viewpoint":
        if args.folds:
            raise InputError("--folds: not with --holdout viewpoint (the folds come from the viewpoints)")
        train_sets = real_splits.viewpoint_folds(args.dataset_root, args.split, args.n_folds, args.min_gap_deg)
        gaps = real_splits.fold_gaps_deg(args.dataset_root, args.split, train_sets)
        for k, (f, g) in enumerate(zip(train_sets, gaps)):
            print(f"fold {k}: train {list(f.train)}, held out {list(f.test)}, nearest train/held-out viewpoints {g:.1f} deg")
    else:
        if not args.folds:
            raise InputError("--folds: give the training frames of each fold, or --holdout viewpoint")
        train_sets = [real_splits.parse_id_list(f, f"--folds[{k}]") for k, f in enumerate(args.folds)]
    done = []

    def on_run_done(res: dict) -> None:
        done.append({k: res[k] for k in ("fold", "seed", "variant", "train_seconds", "summary", "bop")})
        s = res["summary"]
        print(f"fold {res['fold']} seed {res['seed']} {res['variant']}: {s['instances']} instances, "
              f"2D proj <= 5 px {100 * s['proj2d_5px']:.1f} %, ADD(-S) <= 10 % {100 * s['add_10']:.1f} %, "
              f"corner {s['corner_px']:.1f} px, AR_MSPD {s['ar_mspd']:.3f}, AR_MSSD {s['ar_mssd']:.3f} "
              f"(stage 2 {res['train_seconds']:.0f} s)", flush=True)
        if args.json is not None:
            atomic.write_json(args.json, {"partial": True, "runs": done})

    report = real_splits.run_real_splits(args.stage1, args.dataset_root, train_sets, args.seeds, args.work, args.variants,
                                         args.split, args.overrides, on_run_done=on_run_done)
    print(real_splits.format_markdown(report))
    if args.json is not None:
        atomic.write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0


def run_compare(args: argparse.Namespace) -> int:
    works = {}
    for item in args.works:
        label, sep, work = item.partition("=")
        if not sep or not label or not work:
            raise InputError(f"--works: expected LABEL=WORK, got {item!r}")
        if label in works:
            raise InputError(f"--works: label {label!r} given twice")
        works[label] = Path(work)
    report = real_splits.compare_works(works, args.variant)
    print(f"stage 2 variant {args.variant!r}; rows: the benches (stage 1)")
    print(real_splits.format_markdown(report))
    if args.json is not None:
        atomic.write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0
