"""``featmap render ...``: synthetic and real-like data sets and ground-truth overlays, for objects
(render_object.py: ``object``, ``gt``) and hands (render_hand.py: ``hand``)."""
from featmap_ros.cli import register_parts


def register(sub) -> None:
    p = sub.add_parser("render", help="render data sets and overlays")
    parts = p.add_subparsers(dest="render_command", metavar="WHAT")
    parts.required = True
    register_parts(parts, "render", ("render_object", "render_hand"))
