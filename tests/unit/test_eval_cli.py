"""``tooliqa eval`` / ``tooliqa report``: two methods in one store, one report."""

from __future__ import annotations

import json

from tooliqa.cli import main

from _support import synthetic_dataset


def test_two_methods_in_one_store_and_a_rerendered_report(tmp_path, capsys, monkeypatch):
    images = tmp_path / "images"
    images.mkdir()
    ds = synthetic_dataset(images, 8, size=(48, 64))
    labels = tmp_path / "labels.csv"
    labels.write_text("name,mos\n" + "".join(f"{s.image},{s.mos}\n" for s in ds.samples))
    db = str(tmp_path / "runs.sqlite")
    base = ["eval", "--dataset", f"toy={labels}:{images}", "--db", db, "--no-progress"]
    assert main([*base, "--method", "classic-tools"]) == 0
    assert main([*base, "--method", "classic-no-tools", "--max-rounds", "0"]) == 0
    out = capsys.readouterr().out
    assert "classic-tools\ttoy\tn=8" in out and "classic-no-tools\ttoy\tn=8" in out

    monkeypatch.chdir(tmp_path)
    assert main(["report", "--db", db]) == 0  # default output folder: report/
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    md = (tmp_path / "report" / "report.md").read_text()
    assert "| classic-tools |" in md and "| classic-no-tools |" in md
    assert "PLCC after a 5-parameter logistic fit" in md
    assert len(list((tmp_path / "report").glob("scatter-*.png"))) == 2
    assert json.dumps(report)  # JSON for machines


def test_bad_dataset_spec_is_a_usage_error(tmp_path, capsys):
    assert (
        main(
            [
                "eval",
                "--dataset",
                f"toy={tmp_path / 'missing.csv'}",
                "--db",
                str(tmp_path / "x.sqlite"),
            ]
        )
        == 2
    )
    assert "error:" in capsys.readouterr().err


def test_report_without_a_store(tmp_path, capsys):
    assert (
        main(["report", "--db", str(tmp_path / "none.sqlite"), "--out", str(tmp_path / "r")]) == 2
    )
    assert "no result store" in capsys.readouterr().err
