"""Exceptions the command line and the nodes turn into clear messages."""


class InputError(ValueError):
    """Bad user input: a file, field, topic or parameter that cannot be used as given.

    The message must name the thing at fault (path and line, field name, topic), so that
    the command line can print it as is and exit non-zero.
    """
