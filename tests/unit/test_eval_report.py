"""Reports from synthetic result rows: values checked by hand, files written."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tooliqa.eval.report import build_report, format_pair, slugify, write_report


def _row(
    method: str,
    dataset: str,
    image: str,
    mos_norm: float,
    score: float | None,
    *,
    tools: list[str] | None = None,
    ok: list[bool] | None = None,
    rubric: dict[str, str | None] | None = None,
    error: str | None = None,
    run_id: str | None = None,
    output_tokens: int = 100,
    seconds: float = 1.0,
) -> dict[str, Any]:
    tools = tools or []
    return {
        "run_id": run_id or f"{method}-{dataset}",
        "method": method,
        "dataset": dataset,
        "image": image,
        "mos": mos_norm * 20.0,
        "mos_norm": mos_norm,
        "score": score,
        "error": error,
        "tool_calls": len(tools),
        "tools": tools,
        "tools_ok": ok if ok is not None else [True] * len(tools),
        "rubric": rubric or {},
        "input_tokens": 1000,
        "output_tokens": output_tokens,
        "seconds": seconds,
        "backend": "openai",
    }


def _run(method: str, dataset: str, wall_s: float, started_at: float = 0.0) -> dict[str, Any]:
    return {
        "run_id": f"{method}-{dataset}",
        "method": method,
        "dataset": dataset,
        "started_at": started_at,
        "finished_at": started_at + wall_s,
        "wall_s": wall_s,
        "concurrency": 4,
        "endpoints": ["http://127.0.0.1:8000/v1"],
    }


# A / D1: six scored images, prediction a linear function of MOS (SRCC = PLCC = 1),
# three of them with tool calls, plus one failure that also called a tool.
# A / D2: x = 1..6 against y = (2, 1, 4, 3, 5, 6): SRCC = 1 - 6*4/(6*35) = 31/35 and
# PLCC = 15.5 / 17.5 = 31/35 as well (hand-computed).
# B / D1: every image failed.  B / D2: a noisy but positive prediction.
A_D2 = 31 / 35


@pytest.fixture
def rows() -> list[dict[str, Any]]:
    out = []
    tool_plan = [["gamma"], ["gamma", "magnifier"], [], [], ["magnifier"], []]
    ok_plan = [[True], [True, False], [], [], [True], []]
    exposure = ["poor", "poor", "poor", "good", "good", "good"]
    sharp = ["low", "low", "high", None, "high", "high"]
    for i in range(6):
        mos = 1.0 + 0.8 * i
        out.append(
            _row(
                "A",
                "D1",
                f"img{i}.jpg",
                mos,
                0.5 * mos + 1.5,
                tools=tool_plan[i],
                ok=ok_plan[i],
                rubric={"exposure": exposure[i], "sharpness": sharp[i]},
                output_tokens=100 + 50 * len(tool_plan[i]),
                seconds=1.0 + len(tool_plan[i]),
            )
        )
    out.append(
        _row(
            "A",
            "D1",
            "img6.jpg",
            3.0,
            None,
            tools=["gamma"],
            ok=[False],
            error="TimeoutError: no reply",
            output_tokens=0,
            seconds=9.0,
        )
    )
    for i, y in enumerate([2, 1, 4, 3, 5, 6]):
        out.append(_row("A", "D2", f"x{i}.png", 1 + 0.8 * (y - 1), 1 + 0.8 * i))
    for i in range(3):
        out.append(_row("B", "D1", f"img{i}.jpg", 2.0 + i, None, error="HTTP 500"))
    rng = np.random.default_rng(0)
    for i in range(8):
        mos = 1.0 + 0.5 * i
        out.append(
            _row(
                "B",
                "D2",
                f"x{i}.png",
                mos,
                float(np.clip(mos + rng.normal(0, 0.4), 1, 5)),
                tools=["gamma"] if i % 2 else [],
            )
        )
    return out


@pytest.fixture
def runs() -> list[dict[str, Any]]:
    return [
        _run("A", "D1", 14.0, 1.0),
        _run("A", "D2", 3.0, 2.0),
        _run("B", "D1", 6.0, 3.0),
        _run("B", "D2", 4.0, 4.0),
    ]


def _group(report: dict[str, Any], method: str, dataset: str) -> dict[str, Any]:
    (g,) = [g for g in report["groups"] if (g["method"], g["dataset"]) == (method, dataset)]
    return g


def test_helpers() -> None:
    assert format_pair(0.8281, 0.8419) == ".828/.842"
    assert format_pair(-0.1234, None) == "-.123/–"
    assert format_pair(1.0, 1.0) == "1.000/1.000"
    assert slugify("Tool-IQA (ours) / SPAQ") == "tool-iqa-ours-spaq"
    assert slugify("???") == "x"


def test_metrics_and_table(rows, runs) -> None:
    rep = build_report(rows, runs, fit="none")
    assert rep["methods"] == ["A", "B"]
    assert rep["datasets"] == ["D1", "D2"]
    a1 = _group(rep, "A", "D1")
    assert a1["n_rows"] == 7 and a1["n_scored"] == 6
    assert a1["metrics"]["srcc"] == pytest.approx(1.0)
    assert a1["metrics"]["plcc"] == pytest.approx(1.0)
    assert a1["failures"]["count"] == 1
    assert a1["failures"]["reasons"] == {"TimeoutError: no reply": 1}
    a2 = _group(rep, "A", "D2")
    assert a2["metrics"]["srcc"] == pytest.approx(A_D2)
    assert a2["metrics"]["plcc"] == pytest.approx(A_D2)

    table = rep["table"]
    assert table["columns"] == ["D1", "D2", "Avg"]
    row_a, row_b = table["rows"]
    assert row_a["method"] == "A"
    assert row_a["cells"]["D2"]["text"] == format_pair(A_D2, A_D2) == ".886/.886"
    assert row_a["avg"]["srcc"] == pytest.approx((1 + A_D2) / 2)
    assert row_a["avg"]["plcc"] == pytest.approx((1 + A_D2) / 2)
    assert row_a["avg"]["text"] == ".943/.943"
    assert row_a["avg"]["complete"]
    # B has no valid score on D1: the cell is empty, the average covers D2 only
    b1 = _group(rep, "B", "D1")
    assert b1["metrics"]["srcc"] is None
    assert "no valid scores" in b1["metrics"]["message"]
    assert "HTTP 500" in b1["metrics"]["message"]
    assert b1["plot"] is None
    assert row_b["cells"]["D1"]["text"] == "–/–"
    b2 = _group(rep, "B", "D2")
    assert row_b["avg"]["srcc"] == pytest.approx(b2["metrics"]["srcc"])
    assert not row_b["avg"]["complete"] and row_b["avg"]["text"].endswith("*")
    json.dumps(rep, allow_nan=False)


def test_tool_usage(rows, runs) -> None:
    rep = build_report(rows, runs, fit="none")
    tu = _group(rep, "A", "D1")["tool_usage"]
    # scored images only: 3 of 6 used a tool (the failed image is not counted)
    assert tu["n"] == 6
    assert tu["tool_rate"] == pytest.approx(0.5)
    mech = tu["mechanism"]
    assert mech["with_tools"]["n"] == 3 and mech["without_tools"]["n"] == 3
    assert mech["with_tools"]["srcc"] == pytest.approx(1.0)
    assert mech["all"]["n"] == 6
    gamma, mag = tu["per_tool"]["gamma"], tu["per_tool"]["magnifier"]
    assert (gamma["images"], gamma["calls"], gamma["success_rate"]) == (2, 2, 1.0)
    assert (mag["images"], mag["calls"], mag["success_rate"]) == (2, 2, 0.5)
    assert gamma["rate"] == pytest.approx(2 / 6)
    assert gamma["srcc"] is None and "too few" in gamma["message"]  # two images only
    # rubric levels: exposure poor = images 0,1,2 (tools on 0 and 1)
    poor = tu["rubric"]["exposure"]["poor"]
    assert poor["n"] == 3
    assert poor["tool_rate"] == pytest.approx(2 / 3)
    assert poor["tools"] == {"gamma": pytest.approx(2 / 3), "magnifier": pytest.approx(1 / 3)}
    good = tu["rubric"]["exposure"]["good"]
    assert good["tool_rate"] == pytest.approx(1 / 3)
    assert good["tools"]["magnifier"] == pytest.approx(1 / 3)
    # None levels are skipped: sharpness has 2 low + 3 high
    assert tu["rubric"]["sharpness"]["low"]["n"] == 2
    assert tu["rubric"]["sharpness"]["high"]["n"] == 3
    # top levels: at least 3 images; highest tool rate first
    top = tu["top_levels"]
    assert (top[0]["attribute"], top[0]["level"]) == ("exposure", "poor")
    assert all(e["n"] >= 3 for e in top)


def test_efficiency(rows, runs) -> None:
    rep = build_report(rows, runs, fit="none")
    e = _group(rep, "A", "D1")["efficiency"]
    assert e["images"] == 7
    assert e["wall_s"] == pytest.approx(14.0)
    assert e["images_per_s"] == pytest.approx(0.5)
    # tool calls 1+2+0+0+1+0 and the failed image's 1 -> 5 / 7
    assert e["tool_calls_per_image"] == pytest.approx(5 / 7)
    assert e["output_tokens_per_image"] == pytest.approx((150 + 200 + 100 + 100 + 150 + 100) / 7)
    assert e["seconds_per_image"] == pytest.approx((2 + 3 + 1 + 1 + 2 + 1 + 9) / 7)
    assert e["failures"] == 1
    assert e["concurrency"] == [4]
    per_method = rep["efficiency"]["A"]
    assert per_method["images"] == 13
    assert per_method["images_per_s"] == pytest.approx(13 / 17)


def test_run_without_rows_and_missing_wall_time(rows, runs) -> None:
    runs = [*runs, _run("C", "D1", 0.0, 5.0)]
    rep = build_report(rows, runs, fit="none")
    assert rep["methods"] == ["A", "B", "C"]
    c1 = _group(rep, "C", "D1")
    assert c1["metrics"]["message"] == "no results recorded"
    assert c1["efficiency"]["images_per_s"] is None
    assert "throughput unknown" in c1["efficiency"]["note"]
    assert rep["table"]["rows"][2]["cells"]["D2"]["note"] == "not run"


def test_duplicate_images_keep_the_scored_row(rows, runs) -> None:
    retry = _row("B", "D1", "img0.jpg", 2.0, 2.5, run_id="B-D1-retry")
    runs = [*runs, {**_run("B", "D1", 1.0, 10.0), "run_id": "B-D1-retry"}]
    rep = build_report([*rows, retry], runs, fit="none")
    b1 = _group(rep, "B", "D1")
    assert b1["n_rows"] == 3 and b1["n_scored"] == 1
    assert b1["failures"]["count"] == 2
    assert any("duplicate" in w for w in rep["warnings"])


def test_bootstrap_ci_in_report(rows, runs) -> None:
    rep = build_report(rows, runs, fit="none", bootstrap=50)
    ci = _group(rep, "B", "D2")["metrics"]["ci"]
    assert set(ci) == {"srcc", "plcc"}
    assert rep["ci_level"] == 0.95


def test_unknown_fit_rejected(rows, runs) -> None:
    with pytest.raises(ValueError):
        build_report(rows, runs, fit="linear")


def test_write_report(tmp_path, rows, runs) -> None:
    rep = build_report(rows, runs, fit="5pl")
    paths = write_report(rep, rows, tmp_path / "out")
    names = sorted(p.name for p in paths)
    assert names == [
        "report.json",
        "report.md",
        "scatter-a--d1.png",
        "scatter-a--d2.png",
        "scatter-b--d2.png",
    ]
    assert all(p.exists() for p in paths)

    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "PLCC after a 5-parameter logistic fit" in md
    assert "| Method | D1 | D2 | Avg |" in md
    row_a = next(line for line in md.splitlines() if line.startswith("| A | "))
    a1 = _group(rep, "A", "D1")["metrics"]
    assert format_pair(a1["srcc"], a1["plcc"]) in row_a
    assert "## Tool usage" in md and "## Efficiency" in md
    assert "(scatter-a--d1.png)" in md
    assert "no valid scores" in md  # B / D1 still listed, with the reason

    back = json.loads((tmp_path / "out" / "report.json").read_text(encoding="utf-8"))
    assert back["fit"] == "5pl"
    assert (
        back["table"]["rows"][0]["cells"]["D1"]["text"]
        == rep["table"]["rows"][0]["cells"]["D1"]["text"]
    )

    with Image.open(tmp_path / "out" / "scatter-b--d2.png") as im:
        assert im.size == (800, 600)
        arr = np.asarray(im.convert("RGB"))
    assert arr.std() > 10  # not blank
    assert len(np.unique(arr.reshape(-1, 3), axis=0)) > 20
    # the fitted curve (red) and the points (blue) are drawn
    red = (arr[..., 0] > 150) & (arr[..., 1] < 80) & (arr[..., 2] < 80)
    blue = (arr[..., 2] > 120) & (arr[..., 0] < 120)
    assert red.sum() > 200 and blue.sum() > 100
    assert not math.isnan(float(arr.mean()))


def test_untrusted_names_are_inert_in_report_md(tmp_path) -> None:
    evil = "<img src=x onerror=alert(1)>"
    method, dataset, tool = f"m{evil}", "d|**x**", "zoom\x1b[2J<script>"
    rows = [
        _row(method, dataset, f"i{i}.png", 1.0 + i, 1.0 + i, tools=[tool] if i % 2 else [])
        for i in range(4)
    ]
    rows.append(_row(method, dataset, "bad.png", 3.0, None, error=f"model said {evil}\n# H"))
    rep = build_report(rows, [_run(method, dataset, 5.0)], fit="none")
    write_report(rep, rows, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "<img" not in md and "<script>" not in md and "\x1b" not in md
    assert "&lt;img src=x onerror=alert(1)&gt;" in md
    assert "\n# H" not in md  # a reason cannot open a heading
    assert "d\\|\\*\\*x\\*\\*" in md  # table cells keep their columns


def test_report_doctests() -> None:
    import doctest

    from tooliqa.eval import report

    assert doctest.testmod(report).failed == 0


def test_warnings_naming_a_method_are_inert_too(tmp_path) -> None:
    method = "<i>m</i>"
    rows = [_row(method, "d", f"i{i}.png", 5.0 - i * 0.5, 1.0 + i) for i in range(8)]
    rep = build_report(rows, [_run(method, "d", 5.0)], fit="5pl")
    assert any(method in w for w in rep["warnings"])  # the fit note names the method
    write_report(rep, rows, tmp_path / "out")
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "## Warnings" in md and "<i>" not in md and "&lt;i&gt;m&lt;/i&gt;" in md
