"""The ``tooliqa ui`` subcommand and the page's construction (no server, no browser)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tooliqa.cli import main


def test_ui_help(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["ui", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--server", "--model", "--port", "--host", "--allow-remote"):
        assert flag in out


def test_ui_help_from_the_console_script():
    out = subprocess.run(
        [sys.executable, "-m", "tooliqa.cli", "ui", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--port" in out.stdout


def test_build_app_builds_blocks_without_launching():
    gr = pytest.importorskip("gradio", reason="gradio is not installed (the 'ui' extra)")
    from tooliqa.ui.app import build_app, gauge_html

    demo = build_app()
    assert isinstance(demo, gr.Blocks)
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    assert {"upload", "run", "score", "gauge", "rubric-table", "steps", "status", "download"} <= ids
    assert {"extras", "regions", "uncertainty", "query-answer", "question"} <= ids
    assert not getattr(demo, "is_running", False)
    served = build_app(server="http://127.0.0.1:9/v1", model="m")
    assert isinstance(served, gr.Blocks)
    assert 'data-score="3.50"' in gauge_html(3.5) and "<svg" in gauge_html(None)
