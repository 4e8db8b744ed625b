"""Exceptions the command line and the nodes turn into clear messages."""


class InputError(ValueError):
    """Bad user input: a file, field, topic or parameter that cannot be used as given.

    The message must name the thing at fault (path and line, field name, topic), so that
    the command line can print it as is and exit non-zero.
    """


def read_text(path) -> str:
    """The text of a user's input file, or an InputError naming it (missing, unreadable, not UTF-8)."""
    from pathlib import Path

    p = Path(path)
    try:
        return p.read_text()
    except FileNotFoundError:
        raise InputError(f"{p}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{p}: cannot read: {e}") from None
