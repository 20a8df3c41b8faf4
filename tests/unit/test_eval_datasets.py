"""Dataset manifests: readers, validation, normalization, registry and KADID splits."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from tooliqa.eval.datasets import (
    Dataset,
    DatasetError,
    Sample,
    detect_format,
    load_dataset,
    load_labels,
    parse_spec,
    read_agiqa3k,
    read_csv_labels,
    read_json,
    read_jsonl,
    read_label_txt,
    read_pyiqa,
    read_rows,
)
from tooliqa.eval.registry import BENCHMARKS, UnknownBenchmarkError, find, lookup, suggest
from tooliqa.eval.splits import kadid_reference_name, reference_of, split_by_reference

from _support import SHARED_DATA

AGIQA = SHARED_DATA / "agiqa3k"


def _write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"img")


def _fields(rows: list) -> list[tuple]:
    return [(r.image, r.mos, r.std, r.split, r.ref) for r in rows]


# ----------------------------------------------------------------------------- readers


def test_pyiqa_no_reference_csv_with_split_and_extra_columns(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "meta_info_KonIQ10kDataset.csv",
        "img_name,mos,std,split,c1,c2,c3,c4,c5,c_total\n"
        "10004473376.jpg,77.38,0.527,training,0.0,0.0,0.23,0.69,0.06,105\n"
        "10007357496.jpg,68.72,0.580,test,0.0,0.03,0.46,0.48,0.01,96\n",
    )
    assert detect_format(path) == "pyiqa"
    assert _fields(read_pyiqa(path)) == [
        ("10004473376.jpg", "77.38", "0.527", "training", None),
        ("10007357496.jpg", "68.72", "0.580", "test", None),
    ]


def test_pyiqa_full_reference_csvs(tmp_path: Path) -> None:
    kadid = _write(
        tmp_path / "kadid.csv", "ref_name,dist_name,dmos,std\nI01.png,I01_01_01.png,4.57,0.496\n"
    )
    pipal = _write(
        tmp_path / "pipal.csv", "hq_name,dist_name,elo_score\nA0001.bmp,A0001_00_00.bmp,1520.06\n"
    )
    assert _fields(read_rows(kadid)) == [("I01_01_01.png", "4.57", "0.496", None, "I01.png")]
    assert _fields(read_rows(pipal)) == [("A0001_00_00.bmp", "1520.06", None, None, "A0001.bmp")]


def test_pyiqa_headerless_tab_separated_txt(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "meta.txt", "I01.bmp        \tI01_01_1.bmp   \t5.51429        \t0.13013\n"
    )
    assert detect_format(path) == "text"
    assert _fields(read_pyiqa(path)) == [("I01_01_1.bmp", "5.51429", "0.13013", None, "I01.bmp")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a.jpg 3.5\n", [("a.jpg", "3.5", None, None, None)]),
        ("a.jpg 3.5 0.4\n", [("a.jpg", "3.5", "0.4", None, None)]),
        ("r.png d.png 4.1\n", [("d.png", "4.1", None, None, "r.png")]),
        ("r.png d.png 4.1 0.2\n", [("d.png", "4.1", "0.2", None, "r.png")]),
        ("name mos std\na.jpg 3.5 0.4\n", [("a.jpg", "3.5", "0.4", None, None)]),
    ],
)
def test_visualquality_r1_text_layouts(tmp_path: Path, text: str, expected: list) -> None:
    assert _fields(read_label_txt(_write(tmp_path / "mos.txt", text))) == expected


def test_text_reader_reports_malformed_lines_and_skips_comments(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "mos.txt", "# comment\n\na.jpg 3.5 0.1\nb.jpg\nc.jpg 2.0 0.3\nd.jpg abc 0.2\n"
    )
    rows = read_label_txt(path)
    assert [r.where for r in rows] == ["mos.txt:3", "mos.txt:4", "mos.txt:5", "mos.txt:6"]
    assert rows[1].error and "got 1" in rows[1].error
    assert rows[3].image == "d.jpg" and rows[3].mos == "abc"  # layout from the majority of lines


@pytest.mark.parametrize(
    ("text", "encoding"),
    [
        ("\ufeffImage Name;MOS;Std\nx.jpg;3.5;0.2\n", "utf-8"),
        ("path\tscore\tstd\nx.jpg\t3.5\t0.2\n", "utf-8"),
        ("  IMAGE , Mos , SD \r\n x.jpg , 3.5 , 0.2 \r\n", "utf-8"),
        ("image,mos,std\nx.jpg,3.5,0.2\n", "utf-16"),
        ("name mos std\nx.jpg 3.5 0.2\n", "utf-8"),
        ("image_path,dmos,dmos_std\nx.jpg,3.5,0.2\n", "utf-8"),
        ('"image_name","c1","MOS","SD","MOS_zscore"\n"x.jpg",0,3.5,0.2,61.2\n', "utf-8"),
    ],
)
def test_csv_header_variations(tmp_path: Path, text: str, encoding: str) -> None:
    path = _write(tmp_path / "labels.csv", text, encoding)
    assert _fields(read_csv_labels(path)) == [("x.jpg", "3.5", "0.2", None, None)]


def test_csv_quoted_fields_comments_and_short_rows(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "labels.csv",
        '# exported\nname,prompt,mos,split,ref\n\na.jpg,"a cat, sitting",3.0,test,r.jpg\nb.jpg,"x"\n',
    )
    rows = read_csv_labels(path)
    assert _fields(rows)[0] == ("a.jpg", "3.0", None, "test", "r.jpg")
    assert rows[0].where == "labels.csv:4"
    assert rows[1].where == "labels.csv:5" and "expected 5 fields like the header, got 2" in (
        rows[1].error or ""
    )


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"image,score_x\nx.jpg,3\n", r"labels\.csv:1: no mos column"),
        (b"", r"labels\.csv:1: empty label file"),
        (b"image,mos\nx.jpg,3\ny.jpg,\x00\n", r"labels\.csv:3: binary data"),
        (b"image,mos\nx.jpg,3\n\xff\xfe\xfa.jpg,2\n", r"labels\.csv:3: not UTF-8"),
    ],
)
def test_unreadable_csv_raises_with_file_and_line(
    tmp_path: Path, content: bytes, match: str
) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(content)
    with pytest.raises(DatasetError, match=match):
        read_csv_labels(path)


def test_json_list_and_samples_object(tmp_path: Path) -> None:
    items = [
        {"image": "a.jpg", "mos": 3.5, "std": 0.1, "split": "test"},
        {"path": ["b.jpg"], "score": "2"},
    ]
    plain = _write(tmp_path / "a.json", json.dumps(items))
    wrapped = _write(tmp_path / "b.json", json.dumps({"samples": items}))
    expected = [("a.jpg", 3.5, 0.1, "test", None), ("b.jpg", "2", None, None, None)]
    assert _fields(read_json(plain)) == expected
    assert _fields(read_json(wrapped)) == expected


def test_json_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"bad\.json:3: invalid JSON"):
        read_json(_write(tmp_path / "bad.json", '[\n{"image": "a.jpg",\n "mos": }\n]'))
    with pytest.raises(DatasetError, match="expected a list"):
        read_json(_write(tmp_path / "num.json", "42"))
    rows = read_json(
        _write(tmp_path / "mixed.json", '[1, {"image": "a.jpg"}, {"image": 5, "mos": 1}]')
    )
    assert [r.error is not None for r in rows] == [True, True, True]
    assert rows[0].where == "mixed.json item 1"


def test_jsonl_reports_bad_lines(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "l.jsonl",
        '{"image": "a.jpg", "mos": 3}\n\nnot json\n{"name": "b.jpg", "dmos": 2}\n',
    )
    rows = read_jsonl(path)
    assert [r.where for r in rows] == ["l.jsonl:1", "l.jsonl:3", "l.jsonl:4"]
    assert rows[1].error and "invalid JSON" in rows[1].error
    assert (rows[2].image, rows[2].mos) == ("b.jpg", 2)


def test_agiqa3k_reader_and_detection(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "labels.csv",
        "name,mos,std,generator,prompt,split\nAttnGAN_normal_000.jpg,0.96,0.22,AttnGAN,statue of a man,dev\n",
    )
    assert detect_format(path) == "agiqa3k"
    assert _fields(read_agiqa3k(path)) == [("AttnGAN_normal_000.jpg", "0.96", "0.22", "dev", None)]
    with pytest.raises(DatasetError, match="not an AGIQA-3K"):
        read_agiqa3k(_write(tmp_path / "other.csv", "image,score\na.jpg,1\n"))


def test_format_detection_and_override(tmp_path: Path) -> None:
    assert detect_format(_write(tmp_path / "x.json", "[]")) == "json"
    assert detect_format(_write(tmp_path / "x.ndjson", "{}")) == "jsonl"
    assert detect_format(_write(tmp_path / "x.txt", '{"image": "a", "mos": 1}\n')) == "jsonl"
    assert detect_format(_write(tmp_path / "y.csv", "image,mos\na.jpg,1\n")) == "csv"
    headerless = _write(tmp_path / "z.csv", "a.jpg 3.5\n")
    assert detect_format(headerless) == "text"
    assert _fields(read_rows(headerless)) == [("a.jpg", "3.5", None, None, None)]
    with pytest.raises(DatasetError, match=r"z\.csv:1: no image column"):
        read_rows(headerless, "csv")  # the override wins: the first line is taken as a header
    with pytest.raises(DatasetError, match="unknown label format"):
        read_rows(headerless, "xlsx")
    with pytest.raises(DatasetError, match="label file not found"):
        read_rows(tmp_path / "missing.csv")


# ----------------------------------------------------------------------------- validation


def _problem(ds: Dataset, text: str) -> str:
    hits = [p for p in ds.problems if text in p]
    assert hits, f"no problem containing {text!r} in {ds.problems}"
    return hits[0]


def test_validation_reports_and_excludes_bad_rows(tmp_path: Path) -> None:
    root = tmp_path / "data" / "images"
    outside = tmp_path / "secret.jpg"
    _touch(root, "ok.jpg", "dup.jpg", "sub/deep.jpg", "badstd.jpg", "inside_target.jpg")
    outside.write_bytes(b"secret")
    os.symlink(outside, root / "link_out.jpg")
    os.symlink(root / "inside_target.jpg", root / "link_in.jpg")
    labels = _write(
        tmp_path / "data" / "labels.csv",
        "image,mos,std,ref\n"
        "ok.jpg,3.0,0.1,\n"
        "dup.jpg,2.0,,\n"
        "dup.jpg,4.0,,\n"
        "nan.jpg,nan,,\n"
        "inf.jpg,inf,,\n"
        "word.jpg,good,,\n"
        "missing.jpg,3.0,,\n"
        "../secret.jpg,3.0,,\n"
        f"{outside},3.0,,\n"
        "link_out.jpg,3.0,,\n"
        "link_in.jpg,3.0,,../ref_out.png\n"
        f"{root / 'sub' / 'deep.jpg'},3.5,,\n"
        "badstd.jpg,2.5,-1,\n"
        "sub/../ok.jpg,1.0,,\n",
    )
    ds = load_labels("custom", labels)
    assert ds.root == root
    assert [s.image for s in ds.samples] == [
        "ok.jpg",
        "dup.jpg",
        "link_in.jpg",
        "sub/deep.jpg",
        "badstd.jpg",
    ]
    assert _problem(ds, "labels.csv:4").endswith(
        "duplicate of labels.csv:3 (dup.jpg); kept the first"
    )
    assert "not a finite number" in _problem(ds, "labels.csv:5")
    assert "not a finite number" in _problem(ds, "labels.csv:6")
    assert "'good' is not a finite number" in _problem(ds, "labels.csv:7")
    assert "image not found: missing.jpg" in _problem(ds, "labels.csv:8")
    assert "points outside the dataset root" in _problem(ds, "labels.csv:9")
    assert "absolute path" in _problem(ds, "labels.csv:10")
    assert "(symlink)" in _problem(ds, "labels.csv:11")
    assert "reference path '../ref_out.png' points outside" in _problem(ds, "labels.csv:12")
    assert ds.samples[2].ref is None
    assert "std '-1'" in _problem(ds, "labels.csv:14") and ds.samples[4].std is None
    assert "duplicate of labels.csv:2 (ok.jpg)" in _problem(ds, "labels.csv:15")
    with pytest.raises(DatasetError, match=r"problem\(s\)") as err:
        load_labels("custom", labels, strict=True)
    assert "labels.csv:11" in str(err.value) and "labels.csv:4" in str(err.value)


def test_strict_passes_clean_data_and_empty_data_raises(tmp_path: Path) -> None:
    _touch(tmp_path, "a.jpg", "b.jpg")
    labels = _write(tmp_path / "l.txt", "a.jpg 1.5\nb.jpg 4.5\n")
    ds = load_labels("kadid10k", labels, strict=True)
    assert len(ds) == 2 and ds.problems == []
    with pytest.raises(DatasetError, match="image not found"):
        load_labels("kadid10k", _write(tmp_path / "none.txt", "zz.jpg 1.0\n"))


def test_symlinked_root_is_followed_once(tmp_path: Path) -> None:
    real = tmp_path / "real"
    _touch(real, "a.jpg")
    os.symlink(real, tmp_path / "root")
    labels = _write(tmp_path / "l.txt", f"a.jpg 2.0\n{tmp_path / 'root' / 'a.jpg'} 3.0\n")
    ds = load_labels("bid", labels, tmp_path / "root")
    assert [s.image for s in ds] == ["a.jpg"]
    assert "duplicate of l.txt:1" in _problem(ds, "l.txt:2")


def test_check_files_false_reads_labels_only(tmp_path: Path) -> None:
    labels = _write(tmp_path / "l.txt", "a.jpg 1.5\n../b.jpg 2.0\n")
    ds = load_labels("kadid", labels, check_files=False)
    assert [s.image for s in ds] == ["a.jpg"]
    assert "points outside" in _problem(ds, "l.txt:2")


# ----------------------------------------------------------------------------- rows of the wrong width


def test_decimal_comma_row_is_reported_with_its_line_not_truncated(tmp_path: Path) -> None:
    _touch(tmp_path, "a.jpg", "b.jpg", "c.jpg")
    labels = _write(tmp_path / "labels.csv", "image,mos\na.jpg,3.5\nb.jpg,3,5\nc.jpg,2.0\n")
    rows = read_csv_labels(labels)
    assert rows[1].where == "labels.csv:3" and rows[1].error is not None
    assert "expected 2 fields like the header, got 3" in rows[1].error
    assert "decimal comma" in rows[1].error
    ds = load_labels("custom", labels)
    assert [(s.image, s.mos) for s in ds] == [("a.jpg", 3.5), ("c.jpg", 2.0)]
    assert "decimal comma" in _problem(ds, "labels.csv:3")
    with pytest.raises(DatasetError, match=r"labels\.csv:3: expected 2 fields"):
        load_labels("custom", labels, strict=True)


def test_short_rows_are_reported_in_csv_and_whitespace_tables(tmp_path: Path) -> None:
    _touch(tmp_path, "a.jpg", "b.jpg")
    csv_labels = _write(tmp_path / "l.csv", "image,mos,std\na.jpg,3.0,0.1\nb.jpg,2.0\n")
    ds = load_labels("custom", csv_labels)
    assert [s.image for s in ds] == ["a.jpg"]
    assert "expected 3 fields like the header, got 2" in _problem(ds, "l.csv:3")
    table = _write(tmp_path / "t.txt", "name mos std\na.jpg 3.0\nb.jpg 2.0 0.1 9\n")
    rows = read_label_txt(table)
    assert [r.error for r in rows] == [
        "expected 3 fields like the header, got 2",
        "expected 3 fields like the header, got 4",
    ]


def test_trailing_empty_fields_lose_nothing_and_pass(tmp_path: Path) -> None:
    path = _write(tmp_path / "l.csv", "image,mos,\na.jpg,3.0,,\nb.jpg,2.0,7\n")
    rows = read_csv_labels(path)
    assert _fields(rows)[0] == ("a.jpg", "3.0", None, None, None)
    assert rows[1].error == "expected 2 fields like the header, got 3"


def test_decimal_comma_in_a_semicolon_file_gets_a_hint(tmp_path: Path) -> None:
    _touch(tmp_path, "a.jpg")
    ds = load_labels("custom", _write(tmp_path / "l.csv", "image;mos\na.jpg;3,5\na.jpg;4\n"))
    assert "'3,5' is not a finite number (a decimal comma?" in _problem(ds, "l.csv:2")


# ----------------------------------------------------------------------------- hostile names


def test_symlink_loop_in_the_image_root_is_a_problem(tmp_path: Path) -> None:
    _touch(tmp_path, "ok.jpg")
    os.symlink("loop.jpg", tmp_path / "loop.jpg")
    os.symlink("pong.jpg", tmp_path / "ping.jpg")
    os.symlink("ping.jpg", tmp_path / "pong.jpg")
    labels = _write(tmp_path / "l.txt", "ok.jpg 3.0\nloop.jpg 2.0\nping.jpg 1.0\n")
    ds = load_labels("custom", labels, tmp_path)
    assert [s.image for s in ds] == ["ok.jpg"]
    assert "skipped" in _problem(ds, "l.txt:2") and "skipped" in _problem(ds, "l.txt:3")


def test_over_long_name_in_the_label_file_is_a_problem(tmp_path: Path) -> None:
    _touch(tmp_path, "ok.jpg")
    long = "x" * 5000 + ".jpg"
    labels = _write(
        tmp_path / "l.csv", f"image,mos\nok.jpg,3.0\n{long},2.0\nd/{'y' * 300}/z.jpg,1\n"
    )
    ds = load_labels("custom", labels, tmp_path)
    assert [s.image for s in ds] == ["ok.jpg"]
    line = _problem(ds, "l.csv:3")
    assert line.endswith("skipped") and len(line) < 300  # the name is elided
    assert "skipped" in _problem(ds, "l.csv:4")


def test_names_and_numbers_json_can_hold(tmp_path: Path) -> None:
    _touch(tmp_path, "ok.jpg")
    big = "1" + "0" * 400  # an integer past the float range
    items = f'{{"image": "ok.jpg", "mos": 3}}\n{{"image": "b.jpg", "mos": {big}}}\n'
    items += (
        '{"image": "\\ud800.jpg", "mos": 2}\n' + '{"image": "c.jpg", "mos": 1' + "0" * 5000 + "}\n"
    )
    ds = load_labels("custom", _write(tmp_path / "l.jsonl", items), tmp_path)
    assert [s.image for s in ds] == ["ok.jpg"]
    assert "not a finite number" in _problem(ds, "l.jsonl:2")
    assert "cannot be resolved" in _problem(ds, "l.jsonl:3")
    assert "unreadable JSON" in _problem(ds, "l.jsonl:4")
    with pytest.raises(DatasetError, match="nested too deeply"):
        read_json(_write(tmp_path / "deep.json", "[" * 100_000))


def test_eval_completes_on_a_dataset_with_hostile_rows(tmp_path: Path, capsys) -> None:
    from tooliqa.cli import main

    from _support import synthetic_dataset

    images = tmp_path / "images"
    images.mkdir()
    good = synthetic_dataset(images, 3, size=(32, 40))
    os.symlink("loop.png", images / "loop.png")
    body = "".join(f"{s.image},{s.mos}\n" for s in good.samples)
    body += "loop.png,2.0\n" + "x" * 5000 + ".png,2.0\nim0.png,3,5\nim1.png\n"
    labels = _write(tmp_path / "labels.csv", "name,mos\n" + body)
    db = str(tmp_path / "runs.sqlite")
    argv = ["eval", "--dataset", f"toy={labels}:{images}", "--db", db, "--no-progress"]
    assert main([*argv, "--max-rounds", "0"]) == 0
    out, err = capsys.readouterr()
    assert "toy\tn=3" in out
    for line in ("labels.csv:5", "labels.csv:6", "labels.csv:7", "labels.csv:8"):
        assert line in err


# ----------------------------------------------------------------------------- normalization


def _ds(rng: tuple[float, float], higher: bool = True) -> Dataset:
    return Dataset(name="t", root=Path("."), samples=[], mos_range=rng, higher_better=higher)


def test_normalized_higher_and_lower_better_and_clipping() -> None:
    mos = _ds((1.0, 5.0))
    assert [mos.normalized(v) for v in (1.0, 3.0, 5.0, 0.0, 7.0)] == [1.0, 3.0, 5.0, 1.0, 5.0]
    dmos = _ds((0.0, 100.0), higher=False)
    assert [dmos.normalized(v) for v in (0.0, 25.0, 100.0, -10.0, 140.0)] == [
        5.0,
        4.0,
        1.0,
        5.0,
        1.0,
    ]
    assert _ds((2.0, 2.0)).normalized(2.0) == 3.0


@pytest.mark.parametrize(
    ("name", "mid", "lo", "hi"),
    [
        ("TID2013", 4.5, 0.0, 9.0),
        ("spaq", 50.0, 0.0, 100.0),
        ("agiqa3k", 2.5, 0.0, 5.0),
        ("kadid", 3.0, 1.0, 5.0),
    ],
)
def test_normalized_with_registry_ranges(
    tmp_path: Path, name: str, mid: float, lo: float, hi: float
) -> None:
    _touch(tmp_path, "a.jpg", "b.jpg", "c.jpg")
    labels = _write(tmp_path / "l.txt", f"a.jpg {lo}\nb.jpg {mid}\nc.jpg {hi}\n")
    ds = load_labels(name, labels)
    assert ds.mos_range == (lo, hi) and ds.higher_better
    assert [ds.normalized(s.mos) for s in ds] == [1.0, 3.0, 5.0]


def test_alternative_scale_and_out_of_range_values(tmp_path: Path) -> None:
    _touch(tmp_path, "a.jpg", "b.jpg")
    koniq100 = _write(tmp_path / "k.txt", "a.jpg 12.5\nb.jpg 88.0\n")
    ds = load_labels("KonIQ-10k", koniq100, strict=True)
    assert ds.mos_range == (0.0, 100.0)
    assert "beyond the nominal [1, 5]" in _problem(ds, "KonIQ-10k")
    spaq_bad = _write(tmp_path / "s.txt", "a.jpg 50\nb.jpg 130\n")
    ds = load_labels("spaq", spaq_bad)
    assert ds.mos_range == (0.0, 100.0) and ds.normalized(130.0) == 5.0
    assert "1 of 2 MOS values lie outside [0, 100]" in _problem(ds, "SPAQ")
    with pytest.raises(DatasetError, match="lie outside"):
        load_labels("spaq", spaq_bad, strict=True)


def test_unknown_and_unconfirmed_names_infer_the_range(tmp_path: Path) -> None:
    _touch(tmp_path, "a.jpg", "b.jpg")
    labels = _write(tmp_path / "l.txt", "a.jpg 1200\nb.jpg 1600\n")
    ds = load_labels("my-benchmark", labels, strict=True)
    assert (ds.name, ds.mos_range, ds.higher_better) == ("my-benchmark", (1200.0, 1600.0), True)
    assert "not in the benchmark registry" in ds.problems[0]
    ds = load_labels("koniq10", labels)
    assert ds.name == "koniq10" and "(did you mean 'KonIQ-10k'?)" in ds.problems[0]
    pipal = load_labels("PIPAL", labels)
    assert pipal.mos_range == (1200.0, 1600.0) and "not confirmed" in pipal.problems[0]


# ----------------------------------------------------------------------------- spec and splits


def test_parse_spec_roots(tmp_path: Path) -> None:
    labels = _write(tmp_path / "d" / "labels.csv", "image,mos\n")
    assert parse_spec(f"koniq={labels}") == ("koniq", labels, labels.parent)
    (labels.parent / "images").mkdir()
    assert parse_spec(f"koniq={labels}")[2] == labels.parent / "images"
    assert parse_spec(f"koniq={labels}:{tmp_path}/imgs")[2] == tmp_path / "imgs"
    for bad in ("koniq", "=labels.csv", "koniq="):
        with pytest.raises(DatasetError, match="NAME=LABELS"):
            parse_spec(bad)


def test_load_dataset_with_split_and_select(tmp_path: Path) -> None:
    root = tmp_path / "imgs"
    _touch(root, "a.jpg", "b.jpg", "c.jpg")
    labels = _write(
        tmp_path / "meta.csv",
        "img_name,mos,std,split\na.jpg,70,1,training\nb.jpg,60,1,test\nc.jpg,50,1,validation\n",
    )
    ds = load_dataset(f"live_challenge={labels}:{root}")
    assert ds.name == "LIVE Challenge" and ds.splits() == ["test", "training", "validation"]
    assert [s.image for s in load_dataset(f"clive={labels}:{root}", split="test")] == ["b.jpg"]
    assert [s.image for s in ds.select("train")] == ["a.jpg"]
    assert [s.image for s in ds.select("VAL")] == ["c.jpg"]
    with pytest.raises(DatasetError, match="splits present: test, training, validation"):
        ds.select("dev")
    assert ds.path(ds.samples[0]) == root / "a.jpg"


def test_kadid_reference_names() -> None:
    assert kadid_reference_name("I01_01_01.png") == "I01.png"
    assert kadid_reference_name("images/I81_25_05.png") == "images/I81.png"
    assert reference_of(Sample("x.png", 1.0, ref="R.png")) == "R.png"
    with pytest.raises(ValueError, match="not a KADID-10K"):
        kadid_reference_name("I01.png")


def _kadid_samples() -> list[Sample]:
    return [
        Sample(f"I{r:02d}_{d:02d}_{lvl:02d}.png", 1.0 + (r + d + lvl) % 5)
        for r in range(1, 82)
        for d in range(1, 26)
        for lvl in range(1, 6)
    ]


def test_split_by_reference_kadid_protocol() -> None:
    samples = _kadid_samples()
    parts = split_by_reference(samples)
    refs = {name: {kadid_reference_name(s.image) for s in part} for name, part in parts.items()}
    assert [len(refs[n]) for n in ("train", "val", "test")] == [49, 16, 16]
    assert [len(parts[n]) for n in ("train", "val", "test")] == [49 * 125, 16 * 125, 16 * 125]
    assert not (
        refs["train"] & refs["val"] or refs["train"] & refs["test"] or refs["val"] & refs["test"]
    )
    assert all(s.split == name for name, part in parts.items() for s in part)
    assert sorted(refs["val"]) == [
        f"I{i:02d}.png" for i in (1, 11, 26, 27, 35, 38, 42, 45, 46, 49, 52, 61, 74, 76, 77, 81)
    ]  # pinned: random.Random(42) over the sorted names is stable across Python versions


def test_split_by_reference_is_deterministic_and_order_independent() -> None:
    samples = _kadid_samples()
    shuffled = samples[:]
    random.Random(7).shuffle(shuffled)
    first = split_by_reference(samples)
    again = split_by_reference(samples)
    other = split_by_reference(shuffled)
    assert first == again
    assert {n: {s.image for s in p} for n, p in first.items()} == {
        n: {s.image for s in p} for n, p in other.items()
    }
    assert split_by_reference(samples, seed=1)["test"] != first["test"]


def test_split_by_reference_uses_ref_column_and_custom_fractions() -> None:
    samples = [Sample(f"d{i}.png", 1.0, ref=f"r{i % 10}.png") for i in range(50)]
    parts = split_by_reference(samples, fractions=(0.5, 0.5), names=("a", "b"))
    assert sum(len(p) for p in parts.values()) == 50
    groups = {name: {s.ref for s in part} for name, part in parts.items()}
    assert len(groups["a"]) == 5 and not groups["a"] & groups["b"]
    for bad in ((0.5, 0.4, 0.2), (0.6, 0.4), (1.2, -0.2, 0.0)):
        with pytest.raises(ValueError):
            split_by_reference(samples, fractions=bad)


# ----------------------------------------------------------------------------- registry


@pytest.mark.parametrize(
    "name", ["livec", "CLIVE", "live_challenge", "LIVE Challenge", "live-challenge"]
)
def test_registry_aliases(name: str) -> None:
    assert lookup(name).display_name == "LIVE Challenge"


def test_registry_values_and_unique_aliases() -> None:
    assert len(BENCHMARKS) == 12
    for bench in BENCHMARKS:
        for alias in (bench.key, bench.display_name, *bench.aliases):
            assert find(alias) is bench, alias
        assert bench.source and bench.kind in {"synthetic", "authentic", "aigc", "algorithmic"}
        assert (bench.mos_range is None) == (not bench.confirmed)
    expected = {
        "KADID-10K": ((1.0, 5.0), True, True),
        "TID2013": ((0.0, 9.0), True, True),
        "SPAQ": ((0.0, 100.0), True, False),
        "KonIQ-10k": ((1.0, 5.0), True, False),
        "LIVE Challenge": ((0.0, 100.0), True, False),
        "BID": ((0.0, 5.0), True, False),
        "AGIQA-3K": ((0.0, 5.0), True, False),
        "PIPAL": (None, True, True),
    }
    for name, (rng, higher, fr) in expected.items():
        bench = lookup(name)
        assert (bench.mos_range, bench.higher_better, bench.full_reference) == (rng, higher, fr)


def test_registry_unknown_name_suggests() -> None:
    with pytest.raises(UnknownBenchmarkError, match="did you mean 'KADID-10K'") as err:
        lookup("kadid10")
    assert isinstance(err.value, ValueError) and isinstance(err.value, KeyError)
    assert suggest("spaqq") == "SPAQ"
    assert suggest("zzzzzzzz") is None
    with pytest.raises(UnknownBenchmarkError, match="unknown benchmark 'zzzzzzzz' \\(known"):
        lookup("zzzzzzzz")


# ----------------------------------------------------------------------------- real data


@pytest.mark.data
@pytest.mark.skipif(
    not (AGIQA / "labels.csv").exists(),
    reason="AGIQA-3K not found at ../shared/data/agiqa3k (relative to the repository root)",
)
def test_agiqa3k_shared_labels() -> None:
    ds = load_dataset(f"agiqa3k={AGIQA / 'labels.csv'}", strict=True)
    assert ds.name == "AGIQA-3K" and ds.root == AGIQA / "images"
    assert len(ds) == 2982 and ds.problems == []
    assert ds.mos_range == (0.0, 5.0) and ds.higher_better
    assert (len(ds.select("dev")), len(ds.select("test"))) == (1957, 1025)
    assert len(load_dataset(f"AGIQA-3K={AGIQA / 'labels.csv'}", split="test")) == 1025
    assert all(1.0 <= ds.normalized(s.mos) <= 5.0 for s in ds)
    assert all(ds.path(s).is_file() for s in ds.samples[:20])
