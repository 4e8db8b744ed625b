"""Command groups of the ``featmap`` command line, one module per group (see cli.py)."""
