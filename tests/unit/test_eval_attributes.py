"""Attribute labels: read from label files, stored with each result, reported per attribute."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageFilter

from tooliqa.api import aassess, make_context
from tooliqa.cli import main
from tooliqa.eval.datasets import (
    ATTRIBUTE_KEYS,
    DatasetError,
    Sample,
    attribute_key,
    load_labels,
    order_attributes,
)
from tooliqa.eval.report import attribute_metrics, build_report
from tooliqa.eval.store import _SCHEMA, ResultStore
from tooliqa.graph import Assessment
from tooliqa.graph.prompts import ATTRIBUTE_NAMES

N_IMAGES = 8


# -- a small dataset with known attribute correlations -----------------------------------


def _image(i: int, rng: np.random.Generator) -> np.ndarray:
    """A textured image, blurrier, noisier and darker as ``i`` grows."""
    h, w = 48, 64
    y, x = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(x / 3.0) * np.cos(y / 4.0)
    rgb = np.clip(np.stack([base, base * 0.8 + 30, 255 - base], -1), 0, 255).astype(np.uint8)
    img = Image.fromarray(rgb).filter(ImageFilter.GaussianBlur(radius=0.4 * i))
    arr = np.asarray(img).astype(float) + rng.normal(0, 3.0 * i, (h, w, 3))
    return np.clip(arr * (1.0 - 0.09 * i), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> tuple[Path, dict[str, dict[str, float]]]:
    """The image folder and the classic backend's attribute scores (and ``score``) per image."""
    root = tmp_path_factory.mktemp("attr") / "images"
    root.mkdir()
    rng = np.random.default_rng(0)
    names = [f"im{i}.png" for i in range(N_IMAGES)]
    for i, name in enumerate(names):
        Image.fromarray(_image(i, rng)).save(root / name)

    async def predict() -> dict[str, dict[str, float]]:
        ctx = make_context(attribute_scores=True)
        out = {}
        for name in names:
            a = await aassess(root / name, context=ctx, name=name)
            out[name] = {**a.attribute_scores, "score": a.score}
        return out

    predicted = asyncio.run(predict())
    for key in ("sharpness", "noise", "exposure"):  # the constructed labels need variation
        assert len({p[key] for p in predicted.values()}) > 2, key
    return root, predicted


def _labels_csv(path: Path, predicted: dict[str, dict[str, float]]) -> Path:
    """Labels whose correlation with the classic backend's attribute scores is known:

    * ``Sharpness`` (SPAQ name, 0-100 scale): 4 x², one image unlabelled -> SRCC 1;
    * ``attr_noise``: 6 - x (the reverse order) -> SRCC -1;
    * ``Brightness`` (SPAQ name for exposure): x², ties kept -> SRCC 1;
    * ``Colorfulness`` and ``Contrast``: labels nothing predicts in the paper prompt style.

    (Monotone but not linear maps: a 5-parameter logistic converges in a few
    iterations on them, while on exactly linear data it creeps towards its
    linear limit for seconds.) The MOS is the overall score squared, for the same reason.
    """
    lines = ["name,mos,Sharpness,attr_noise,Brightness,Colorfulness,Contrast"]
    for i, (name, p) in enumerate(predicted.items()):
        sharp = "" if i == 0 else f"{4 * p['sharpness'] ** 2:g}"
        noise, exposure = 6 - p["noise"], p["exposure"] ** 2
        lines.append(f"{name},{p['score'] ** 2:g},{sharp},{noise:g},{exposure:g},{50 + i},{40 - i}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _eval(tmp_path: Path, labels: Path, root: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / "report"
    db = tmp_path / "runs.sqlite"
    args = ["eval", "--dataset", f"toy={labels}:{root}", "--db", str(db), "--no-progress"]
    assert main([*args, "--report", str(out), *extra]) == 0
    return json.loads((out / "report.json").read_text(encoding="utf-8"))


class TestHarness:
    def test_attribute_table_has_the_constructed_correlations(self, tmp_path, images, capsys):
        root, predicted = images
        labels = _labels_csv(tmp_path / "labels.csv", predicted)
        report = _eval(tmp_path, labels, root, "--attribute-scores")
        (group,) = report["groups"]
        attrs = group["attributes"]
        assert list(attrs) == ["sharpness", "noise", "exposure", "colour", "contrast"]

        sharp = attrs["sharpness"]
        assert (sharp["n"], sharp["labels"], sharp["predicted"]) == (7, 7, N_IMAGES)
        assert sharp["srcc"] == pytest.approx(1.0)
        assert sharp["plcc"] == pytest.approx(1.0, abs=1e-3)
        assert sharp["fit"] == "5pl" and sharp["plcc_basis"].startswith("after a 5-parameter")

        noise = attrs["noise"]
        assert noise["n"] == N_IMAGES and noise["srcc"] == pytest.approx(-1.0)
        # the monotone (non-decreasing) fit cannot follow a reversed order: raw PLCC, sign kept
        assert noise["plcc"] == pytest.approx(-1.0) and noise["fit"] == "none"
        assert "raw PLCC" in noise["message"]

        assert attrs["exposure"]["n"] == N_IMAGES
        assert attrs["exposure"]["srcc"] == pytest.approx(1.0)

        colour, contrast = attrs["colour"], attrs["contrast"]
        assert (colour["n"], colour["labels"], colour["predicted"]) == (0, N_IMAGES, 0)
        assert colour["srcc"] is None and "extended prompt style" in colour["message"]
        assert contrast["n"] == 0 and "not a rubric attribute" in contrast["message"]
        assert "visibility" not in attrs  # predicted, but not labelled

        assert report["attributes"]["keys"] == list(attrs)
        md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
        assert "## Attribute scores" in md
        assert "| classic | toy | sharpness | 7 | 7 | 8 | 1.000 | 1.000 |" in md
        assert "| classic | toy | noise | 8 | 8 | 8 | -1.000 | -1.000 |" in md
        out = capsys.readouterr().out
        assert "classic\ttoy\tsharpness\tn=7\tSRCC 1.0000" in out
        assert "classic\ttoy\tnoise\tn=8\tSRCC -1.0000" in out

        # the store keeps labels and predictions: a re-rendered report says the same
        again = tmp_path / "again"
        assert main(["report", "--db", str(tmp_path / "runs.sqlite"), "--out", str(again)]) == 0
        rerendered = json.loads((again / "report.json").read_text(encoding="utf-8"))
        assert rerendered["groups"][0]["attributes"] == attrs

    def test_extended_prompt_style_predicts_colour_for_its_labels(self, tmp_path, images):
        root, predicted = images
        labels = _labels_csv(tmp_path / "labels.csv", predicted)
        report = _eval(tmp_path, labels, root, "--attribute-scores", "--prompt-style", "extended")
        colour = report["groups"][0]["attributes"]["colour"]
        assert (colour["n"], colour["predicted"]) == (N_IMAGES, N_IMAGES)
        assert colour["srcc"] is not None
        with ResultStore(tmp_path / "runs.sqlite") as store:
            (run,) = store.runs()
        assert run.config["prompt_style"] == "extended"

    def test_labels_without_predicted_scores_say_how_to_get_them(self, tmp_path, images):
        root, predicted = images
        labels = _labels_csv(tmp_path / "labels.csv", predicted)
        report = _eval(tmp_path, labels, root)  # no --attribute-scores
        attrs = report["groups"][0]["attributes"]
        assert all(e["n"] == 0 and e["predicted"] == 0 for e in attrs.values())
        assert "--attribute-scores" in attrs["sharpness"]["message"]
        assert any("--attribute-scores" in w for w in report["warnings"])

    def test_no_attribute_labels_no_attribute_section(self, tmp_path, images):
        root, predicted = images
        labels = tmp_path / "labels.csv"
        labels.write_text(
            "name,mos\n" + "".join(f"{n},{p['score'] ** 2:g}\n" for n, p in predicted.items())
        )
        report = _eval(tmp_path, labels, root, "--attribute-scores")
        assert "attributes" not in report
        assert all("attributes" not in g for g in report["groups"])
        md = (tmp_path / "report" / "report.md").read_text(encoding="utf-8")
        assert "Attribute scores" not in md


# -- the report from rows ------------------------------------------------------------------


def _rows(with_attributes: bool) -> list[dict[str, Any]]:
    rows = []
    for i in range(6):
        row: dict[str, Any] = {
            "run_id": "r1", "method": "m", "dataset": "d", "image": f"{i}.png",
            "mos": float(i), "mos_norm": 1.0 + 0.5 * i, "score": 1.2 + 0.6 * i, "error": None,
            "tool_calls": i % 2, "tools": ["magnifier"] * (i % 2), "tools_ok": [True] * (i % 2),
            "rubric": {"sharpness": "high" if i > 2 else "low"}, "input_tokens": 10,
            "output_tokens": 5, "seconds": 0.1, "backend": "classic",
        }  # fmt: skip
        if with_attributes:  # predictions alone, no labels
            row["attribute_scores"] = {"sharpness": 1.0 + 0.5 * i}
            row["attr_labels"] = {}
        rows.append(row)
    return rows


RUNS = [{"run_id": "r1", "method": "m", "dataset": "d", "started_at": 1.0, "wall_s": 2.0}]


def test_report_without_labels_is_unchanged(tmp_path):
    from tooliqa.eval.report import _markdown

    plain = build_report(_rows(False), RUNS)
    with_predictions = build_report(_rows(True), RUNS)
    assert with_predictions == plain
    assert "attributes" not in plain and "attributes" not in plain["groups"][0]
    assert _markdown(with_predictions) == _markdown(plain)


def test_attribute_metrics_counts_pairs_and_keeps_zero_labels():
    rows = [
        {
            "attribute_scores": {"noise": 1.0 + i, "sharpness": 2.0},
            "attr_labels": {"noise": 10.0 * i},
        }
        for i in range(5)
    ]
    rows.append({"attribute_scores": {}, "attr_labels": {"noise": 99.0}})  # label, no prediction
    rows.append({"attribute_scores": {"noise": 3.0}, "attr_labels": None})  # prediction, no label
    m = attribute_metrics(rows, fit="none")
    assert list(m) == ["noise"]
    assert (m["noise"]["n"], m["noise"]["labels"], m["noise"]["predicted"]) == (5, 6, 6)
    assert m["noise"]["srcc"] == pytest.approx(1.0) and m["noise"]["plcc"] == pytest.approx(1.0)
    assert attribute_metrics([{"attribute_scores": {"noise": 2.0}}]) == {}


def test_attribute_ci_with_bootstrap():
    rng = np.random.default_rng(3)
    pred = rng.uniform(1, 5, 30)
    rows = [
        {"attribute_scores": {"exposure": float(p)}, "attr_labels": {"exposure": float(20 * p + e)}}
        for p, e in zip(pred, rng.normal(0, 5, 30), strict=True)
    ]
    e = attribute_metrics(rows, fit="4pl", bootstrap=50)["exposure"]
    assert e["n"] == 30 and set(e["ci"]) == {"srcc", "plcc"}
    assert e["ci"]["srcc"][0] <= e["srcc"] <= e["ci"]["srcc"][1]


# -- the store -----------------------------------------------------------------------------


def test_store_keeps_labels_and_predicted_attribute_scores(tmp_path):
    with ResultStore(tmp_path / "runs.sqlite") as store:
        store.start_run("r", method="m", dataset="d", backend="classic", model=None,
                        config={}, endpoints=["classic"], concurrency=1)  # fmt: skip
        a = Assessment(image="x.png", score=3.0, attribute_scores={"noise": 4.5, "sharpness": 2.0})
        store.add_result("r", "d", "x.png", a, mos=1.0, mos_norm=1.0, seconds=0.1,
                         attr_labels={"noise": 0.0, "contrast": 55.5})  # fmt: skip
        store.add_result("r", "d", "y.png", Assessment(image="y.png", score=2.0), mos=1.0,
                         mos_norm=1.0, seconds=0.1)  # fmt: skip
        rows = {r["image"]: r for r in store.rows()}
    assert rows["x.png"]["attr_labels"] == {"noise": 0.0, "contrast": 55.5}
    assert rows["x.png"]["attribute_scores"] == {"noise": 4.5, "sharpness": 2.0}
    assert rows["y.png"]["attr_labels"] == {} and rows["y.png"]["attribute_scores"] == {}


def test_store_from_before_attribute_labels_gains_the_column(tmp_path):
    db = tmp_path / "old.sqlite"
    old_schema = _SCHEMA.replace("    attr_labels   TEXT,\n", "")
    assert old_schema != _SCHEMA
    con = sqlite3.connect(db)
    con.executescript(old_schema)
    con.execute(
        "INSERT INTO runs (run_id, method, dataset, started_at) VALUES ('r', 'm', 'd', 1.0)"
    )
    con.execute(
        "INSERT INTO results (run_id, dataset, image, score, assessment, finished_at)"
        " VALUES ('r', 'd', 'x.png', 3.0, ?, 1.0)",
        (Assessment(image="x.png", score=3.0).to_json(),),
    )
    con.commit()
    con.close()
    with ResultStore(db) as store:
        (row,) = store.rows()
        assert row["attr_labels"] == {} and row["score"] == 3.0
        store.add_result("r", "d", "y.png", Assessment(score=1.0), mos=1.0, mos_norm=1.0,
                         seconds=0.0, attr_labels={"noise": 2.0})  # fmt: skip
        assert {r["image"]: r["attr_labels"] for r in store.rows()}["y.png"] == {"noise": 2.0}


# -- column mapping ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("column", "key"),
    [
        ("attr_sharpness", "sharpness"),
        ("ATTR-Noise", "noise"),
        ("attr_artefacts", "artifacts"),
        ("attr exposure", "exposure"),
        ("attr_color", "colour"),
        ("attr_colour", "colour"),
        ("attr_saliency_visibility", "visibility"),
        ("attr_visibility", "visibility"),
        ("attr_contrast", "contrast"),
        ("attr_", None),
        ("Sharpness", "sharpness"),
        ("Noisiness", "noise"),
        ("Brightness", "exposure"),
        ("Colorfulness", "colour"),
        ("Contrast", "contrast"),
        ("mos", None),
        ("noise", None),
        ("image_name", None),
    ],
)
def test_attribute_key(column, key):
    assert attribute_key(column) == key


def test_rubric_keys_match_the_graph():
    assert tuple(ATTRIBUTE_NAMES) == ATTRIBUTE_KEYS
    assert order_attributes({"zeta", "noise", "alpha", "sharpness"}) == [
        "sharpness",
        "noise",
        "alpha",
        "zeta",
    ]


def test_spaq_attribute_columns(tmp_path):
    labels = tmp_path / "spaq.csv"
    labels.write_text(
        "Image name,MOS,Brightness,Colorfulness,Contrast,Noisiness,Sharpness\n"
        "00001.jpg,48.86,47.43,55.57,55.71,37.86,42.57\n"
        "00002.jpg,62.5,55.38,67.13,53.13,57.5,0\n",
        encoding="utf-8",
    )
    ds = load_labels("SPAQ", labels, tmp_path, check_files=False)
    assert ds.name == "SPAQ" and ds.mos_range == (0.0, 100.0)
    first, second = ds.samples
    assert first.mos == 48.86
    assert first.attributes == {
        "exposure": 47.43,
        "colour": 55.57,
        "contrast": 55.71,
        "noise": 37.86,
        "sharpness": 42.57,
    }
    assert second.attributes["sharpness"] == 0.0
    assert ds.attribute_keys() == ["sharpness", "noise", "exposure", "colour", "contrast"]
    assert any("'contrast' is not a rubric attribute" in p for p in ds.problems)


def test_attr_columns_empty_and_bad_values(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "image,score,attr_noise,attr_sharpness,std\n"
        "a.png,3,4.5,,0.2\n"
        "b.png,2,oops,1.5,0.1\n"
        "c.png,1,nan,2,0.1\n",
        encoding="utf-8",
    )
    ds = load_labels("toy", labels, tmp_path, check_files=False)
    got = {s.image: s.attributes for s in ds.samples}
    assert got == {
        "a.png": {"noise": 4.5},
        "b.png": {"sharpness": 1.5},
        "c.png": {"sharpness": 2.0},
    }
    assert ds.samples[0].std == 0.2
    bad = [p for p in ds.problems if "label dropped" in p]
    assert len(bad) == 2 and "labels.csv:3: noise label 'oops'" in bad[0]
    with pytest.raises(DatasetError, match="noise label"):
        load_labels("toy", labels, tmp_path, check_files=False, strict=True)


def test_attr_keys_in_json_lines_and_whitespace_tables(tmp_path):
    jl = tmp_path / "labels.jsonl"
    jl.write_text(
        '{"image": "a.png", "mos": 3, "attr_exposure": 2.5, "attr_visibility": 0}\n'
        '{"image": "b.png", "mos": 4}\n',
        encoding="utf-8",
    )
    ds = load_labels("toy", jl, tmp_path, check_files=False)
    assert [s.attributes for s in ds.samples] == [{"exposure": 2.5, "visibility": 0.0}, {}]
    ws = tmp_path / "labels.txt"
    ws.write_text("name mos Noisiness\na.png 3 70\nb.png 4 20\n", encoding="utf-8")
    ds = load_labels("toy", ws, tmp_path, check_files=False)
    assert [s.attributes for s in ds.samples] == [{"noise": 70.0}, {"noise": 20.0}]


def test_files_without_attribute_columns_are_read_as_before(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("name,mos,split\na.png,3,test\nb.png,4,train\n", encoding="utf-8")
    ds = load_labels("toy", labels, tmp_path, check_files=False)
    assert all(s.attributes == {} for s in ds.samples)
    assert ds.attribute_keys() == []
    assert not any("attribute" in p for p in ds.problems)
    assert hash(Sample("x.png", 1.0, attributes={"noise": 2.0})) == hash(Sample("x.png", 1.0))
    assert ds.select("test").samples[0].attributes == {}


def test_eval_regions_option_reaches_the_graph_and_the_store(tmp_path, images):
    """``tooliqa eval --regions``: the run settings record it and every stored Assessment
    carries the classic backend's PIQE regions; without it, none are asked for."""
    root, predicted = images
    labels = tmp_path / "labels.csv"
    labels.write_text(
        "name,mos\n" + "".join(f"{n},{p['score']:g}\n" for n, p in predicted.items()),
        encoding="utf-8",
    )
    _eval(tmp_path, labels, root, "--regions")
    with ResultStore(tmp_path / "runs.sqlite") as store:
        (run,) = store.runs()
        rows = store.rows()
    assert run.config["report_regions"] is True
    stored = [r["assessment"] for r in rows]
    assert len(stored) == len(predicted)
    assert any(r["source"] == "piqe" for a in stored for r in a["regions"])
