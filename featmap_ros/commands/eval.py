"""``featmap eval ...``: scoring published predictions and BOP results (eval_published.py), and
trained models on datasets (eval_models.py)."""
from featmap_ros.cli import register_parts


def register(sub) -> None:
    p = sub.add_parser("eval", help="evaluate predictions or trained models")
    parts = p.add_subparsers(dest="eval_command", metavar="WHAT")
    parts.required = True
    register_parts(parts, "eval", ("eval_published", "eval_models", "eval_pseudo_labels"))
