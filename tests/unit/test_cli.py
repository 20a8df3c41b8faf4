"""The command line: JSON lines, directory expansion, failures, the serve command."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys

import pytest

from tooliqa.cli import main

from _support import REPO

EXAMPLES = REPO / "examples"


def run_cli(capsys, *argv: str) -> tuple[int, list[str], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [line for line in out.splitlines() if line.strip()], err


def test_assess_directory_as_json_lines(capsys):
    code, lines, err = run_cli(capsys, "assess", str(EXAMPLES), "--json")
    assert code == 0
    assert "classic backend" in err
    records = [json.loads(line) for line in lines]
    assert len(records) == len(list(EXAMPLES.glob("*.jpg")))
    for r in records:
        assert {"image", "score", "rubric", "steps", "backend", "error"} <= set(r)
        assert 1.0 <= r["score"] <= 5.0 and r["error"] is None and r["backend"] == "classic"
        assert all({"tool", "args", "ok"} <= set(s) for s in r["steps"])
        assert isinstance(r["rubric"], dict) and r["rubric"]
    assert any(r["steps"] for r in records), "at least one example should use a tool"


def test_one_bad_file_does_not_stop_the_others(capsys, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 definitely not a whole jpeg")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    good = EXAMPLES / "coffee_blurred.jpg"
    code, lines, err = run_cli(capsys, "assess", str(bad), str(good), str(empty), "--json")
    assert code == 1 and "2 of 3 image(s) failed" in err
    by_name = {json.loads(line)["image"]: json.loads(line) for line in lines}
    assert by_name[str(good)]["score"] is not None
    assert by_name[str(bad)]["score"] is None and by_name[str(bad)]["error"]
    assert "empty" in by_name[str(empty)]["error"]


def test_human_readable_output_and_no_tools(capsys):
    code, lines, _ = run_cli(
        capsys, "assess", str(EXAMPLES / "coffee_underexposed.jpg"), "--tools", ""
    )
    assert code == 0 and len(lines) == 1 and "no tools" in lines[0] and "classic" in lines[0]


def test_views_are_included_on_request(capsys):
    code, lines, _ = run_cli(
        capsys, "assess", str(EXAMPLES / "coffee_underexposed.jpg"), "--json", "--views"
    )
    step = json.loads(lines[0])["steps"][0]
    assert code == 0 and step["view"].startswith("data:image/png;base64,")


def test_unknown_tool_is_a_usage_error(capsys):
    code, _, err = run_cli(capsys, "assess", str(EXAMPLES), "--tools", "sharpen")
    assert code == 2 and "unknown tools" in err


def test_unreachable_server_is_a_clear_error(capsys):
    code, _, err = run_cli(capsys, "assess", str(EXAMPLES), "--server", "http://127.0.0.1:9/v1")
    assert code == 2 and "cannot reach a model server" in err


def test_serve_dry_run_prints_the_vllm_command(capsys):
    code, lines, _ = run_cli(capsys, "serve", "--dry-run", "--port", "8123", "--tp", "2")
    argv = shlex.split(lines[0])
    assert code == 0 and argv[:3] == ["vllm", "serve", "Qwen/Qwen3-VL-8B-Instruct"]
    flags = {argv[i]: argv[i + 1] if i + 1 < len(argv) else None for i in range(len(argv))}
    assert flags["--tool-call-parser"] == "hermes" and "--enable-auto-tool-choice" in argv
    assert json.loads(flags["--limit-mm-per-prompt"]) == {"image": 4, "video": 0}
    assert json.loads(flags["--mm-processor-kwargs"]) == {"max_pixels": 1003520}
    assert (
        "--enable-prefix-caching" in argv
        and flags["--port"] == "8123"
        and flags["--tensor-parallel-size"] == "2"
    )


def test_serve_tool_iqa_preset_defaults_to_the_released_checkpoint(capsys):
    code, lines, _ = run_cli(capsys, "serve", "--preset", "tool-iqa-8b", "--dry-run")
    argv = shlex.split(lines[0])
    assert code == 0 and argv[:3] == ["vllm", "serve", "guanq/Tool-IQA-8B"]
    assert "--served-model-name tool-iqa-8b" in lines[0]
    assert "--tool-call-parser hermes" in lines[0] and "--enable-auto-tool-choice" in argv
    # the client line: the paper's five-attribute prompt style is the default, so no flag
    assert lines[1] == (
        "# then: tooliqa assess IMAGES --server http://127.0.0.1:8000/v1 --model tool-iqa-8b"
    )
    code, lines, _ = run_cli(
        capsys, "serve", "--preset", "tool-iqa-8b", "--model", "/ckpt/tool-iqa-8b", "--dry-run"
    )
    assert code == 0 and shlex.split(lines[0])[2] == "/ckpt/tool-iqa-8b"
    assert "--served-model-name tool-iqa-8b" in lines[0]


def test_console_script_entry_point():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tooliqa.cli",
            "assess",
            str(EXAMPLES / "rocket_jpeg_q6.jpg"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rubric"]["artifacts"] == "severe"


@pytest.mark.parametrize("argv", [[], ["assess"], ["frobnicate"]])
def test_usage_errors(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
