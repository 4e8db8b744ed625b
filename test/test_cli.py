"""featmap_ros/cli.py: every command group registers; a missing group or part module is an error
listing the valid names (never silently skipped); InputError and OSError exit 2 naming the path."""
from __future__ import annotations

import pytest

from featmap_ros import cli


def test_every_group_registers():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(cli.GROUPS) <= set(sub.choices)


def test_missing_group_module_lists_the_valid_names(monkeypatch):
    monkeypatch.setattr(cli, "GROUPS", cli.GROUPS + ("teleport",))
    with pytest.raises(ImportError, match=r"featmap_ros\.commands\.teleport is missing.*demo, eval"):
        cli.build_parser()


def test_missing_part_module_lists_the_parts():
    import argparse

    sub = argparse.ArgumentParser().add_subparsers()
    with pytest.raises(ImportError, match=r"parts of bench: bench_render, bench_nowhere"):
        cli.register_parts(sub, "bench", ("bench_render", "bench_nowhere"))


@pytest.mark.parametrize("argv", [
    ["render", "hand", "--count", "1", "--no-preview", "--out", "{bad}"],
    ["eval", "hands", "{pred}", "{pred}", "--dataset", "nyu", "--json", "{bad}/report.json"],
])
def test_output_path_that_cannot_be_created_exits_2_naming_it(tmp_path, capsys, argv):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    pred = tmp_path / "pred.txt"
    pred.write_text(" ".join(["100 100 500"] * 14) + "\n")
    bad = blocker / "sub"
    rc = cli.main([a.format(bad=bad, pred=pred) for a in argv])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and str(bad) in err, err


def test_demo_out_that_cannot_be_created_exits_2(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = cli.main(["demo", "--out", str(blocker / "demo")])
    err = capsys.readouterr().err
    assert rc == 2 and str(blocker / "demo") in err
