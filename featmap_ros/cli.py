"""The ``featmap`` command.

Each command group lives in ``featmap_ros/commands/<group>.py`` and exposes
``register(subparsers)``; the group's handler is stored as ``func`` on its parser and called
with the parsed arguments. A group that fails to import because of a missing optional
dependency reports itself when used instead of breaking the others; a group module that is
missing from the package is a broken install and raises an error listing the valid names.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from featmap_ros.errors import InputError

GROUPS = ("demo", "eval", "render", "train", "bag", "bench", "export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="featmap",
        description="Feature Mapping pose estimation (Rad, Oberweger, Lepetit, CVPR 2018): "
        "render, train, evaluate, convert datasets to rosbag2, benchmark.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in GROUPS:
        try:
            module = importlib.import_module(f"featmap_ros.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"featmap_ros.commands.{name}":
                raise ImportError(f"featmap: command module {e.name} is missing (valid command groups: {', '.join(GROUPS)}); "
                                  "the installation is incomplete") from e
            _register_broken(sub, name, e)
            continue
        module.register(sub)
    return parser


def register_parts(sub, group: str, parts: tuple[str, ...]) -> None:
    """Register the subcommands of ``group`` from its part modules ``commands/<part>.py``.

    Each part module exposes ``register(subparsers)``. A missing part module raises an error
    listing the group's parts; a part whose optional dependency is missing is listed with the
    error instead of breaking the group.
    """
    for part in parts:
        try:
            module = importlib.import_module(f"featmap_ros.commands.{part}")
        except ModuleNotFoundError as e:
            if e.name == f"featmap_ros.commands.{part}":
                raise ImportError(f"featmap {group}: command module {e.name} is missing (parts of {group}: {', '.join(parts)}); "
                                  "the installation is incomplete") from e
            _register_broken(sub, f"{group}-{part}", e)
            continue
        module.register(sub)


def _register_broken(sub, name: str, err: Exception) -> None:
    p = sub.add_parser(name, help=f"(unavailable: {err})")

    def fail(_args):
        raise InputError(f"featmap {name} is unavailable: {err}")

    p.set_defaults(func=fail)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        rc = args.func(args)
    except InputError as e:
        print(f"featmap: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an output (or input) path the OS refused: name it, no traceback
        where = f"{e.filename}: " if e.filename else ""
        print(f"featmap: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("featmap: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
