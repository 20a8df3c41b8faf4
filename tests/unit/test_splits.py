"""Split protocols: a published split file, the label file's own split, the seeded
split by reference, and the refusal to split a list that is already a split."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tooliqa.eval.datasets import Dataset, Sample, load_dataset
from tooliqa.eval.splits import (
    SplitError,
    SplitProtocol,
    read_split_list,
    split_by_file,
    split_dataset,
)
from tooliqa.training.data import load_training_rows, select_split

N_REFS, N_TYPES, N_LEVELS = 81, 25, 5
TRAIN_REFS = 49  # VisualQuality-R1's KADID-10K train list: 49 references, 6,125 images


def _name(ref: int, kind: int, level: int) -> str:
    return f"I{ref:02d}_{kind:02d}_{level:02d}.png"


@pytest.fixture(scope="module")
def kadid(tmp_path_factory) -> Path:
    """A KADID-10K-shaped folder: dmos.csv (81 x 25 x 5 rows), empty image files, and
    a VisualQuality-R1-style train list (``name mos`` lines) naming 49 references."""
    root = tmp_path_factory.mktemp("kadid")
    images = root / "images"
    images.mkdir()
    rng = random.Random(0)
    train_refs = set(rng.sample(range(1, N_REFS + 1), TRAIN_REFS))
    rows = ["dist_img,ref_img,dmos,var"]
    listed = []
    for ref in range(1, N_REFS + 1):
        for kind in range(1, N_TYPES + 1):
            for level in range(1, N_LEVELS + 1):
                name = _name(ref, kind, level)
                (images / name).touch()
                mos = f"{rng.uniform(1, 5):.3f}"
                rows.append(f"{name},I{ref:02d}.png,{mos},0.1")
                if ref in train_refs:
                    listed.append(f"{name} {mos}")
    (root / "dmos.csv").write_text("\n".join(rows) + "\n")
    (root / "train_list.txt").write_text("\n".join(listed) + "\n")
    return root


def _spec(root: Path, labels: str = "dmos.csv") -> str:
    return f"KADID-10k={root / labels}:{root / 'images'}"


def _listed(root: Path) -> set[str]:
    names, _ = read_split_list(root / "train_list.txt")
    return set(names)


def test_the_split_file_is_the_train_split(kadid: Path) -> None:
    data = load_training_rows(_spec(kadid), split_file=kadid / "train_list.txt")
    assert {Path(r["image_path"]).name for r in data.rows} == _listed(kadid)
    assert len(data.rows) == TRAIN_REFS * N_TYPES * N_LEVELS == 6125
    p = data.protocol
    assert p.name == "file" and p.file == "train_list.txt" and len(p.sha256 or "") == 12
    assert p.counts == {"train": (6125, 49), "rest": (4000, 32)}
    assert p.notes == ()
    line = "\n".join(data.summary_lines())
    assert "file (train_list.txt, sha256" in line and "train 6,125 images / 49 references" in line
    record = json.loads(json.dumps(data.record()))
    assert record["protocol"] == "file" and record["images"] == 6125
    assert record["counts"]["train"] == {"images": 6125, "references": 49}


def test_the_rest_of_a_split_file_is_its_own_split(kadid: Path) -> None:
    data = load_training_rows(_spec(kadid), split="rest", split_file=kadid / "train_list.txt")
    assert len(data.rows) == 4000
    assert not {Path(r["image_path"]).name for r in data.rows} & _listed(kadid)
    with pytest.raises(SplitError, match="train, rest"):
        load_training_rows(_spec(kadid), split="val", split_file=kadid / "train_list.txt")


def test_a_train_list_given_as_the_labels_is_not_split_again(kadid: Path) -> None:
    with pytest.raises(SplitError) as err:
        load_training_rows(_spec(kadid, "train_list.txt"))  # default protocol: auto -> seeded
    text = str(err.value)
    assert "6,125 of the benchmark's 10,125 images (49 references)" in text
    assert "split_file" in text and "'whole'" in text
    with pytest.raises(SplitError, match="published split list"):
        load_training_rows(_spec(kadid, "train_list.txt"), protocol="seeded")
    whole = load_training_rows(_spec(kadid, "train_list.txt"), protocol="whole")
    assert len(whole.rows) == 6125 and whole.protocol.counts == {"all": (6125, 49)}


def test_the_default_split_is_seeded_by_reference(kadid: Path) -> None:
    data = load_training_rows(_spec(kadid))
    p = data.protocol
    assert (p.name, p.seed, p.fractions) == ("seeded", 42, (0.6, 0.2, 0.2))
    assert p.counts == {"train": (6125, 49), "val": (2000, 16), "test": (2000, 16)}
    assert "seeded (by reference, 60/20/20, seed 42)" in data.summary_lines()[1]


def test_names_missing_from_the_labels_are_an_error_naming_a_few(kadid: Path, tmp_path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("I01_01_01.png 4.0\nI99_01_01.png 3.0\nI98_02_03.png 2.0\n")
    with pytest.raises(SplitError, match=r"2 of its 3 images .* I99_01_01\.png, I98_02_03\.png"):
        load_training_rows(_spec(kadid), split_file=listing)


def _toy(split: bool) -> Dataset:
    samples = [
        Sample(_name(r, k, 1), 3.0, split=("train" if r < 3 else "test") if split else None)
        for r in range(1, 5)
        for k in range(1, 3)
    ]
    return Dataset("toy", Path("."), samples, (1.0, 5.0))


def test_a_split_column_is_used_as_given_and_never_re_split() -> None:
    ds = _toy(split=True)
    train, p = select_split(ds, "train")
    assert p.name == "given" and p.counts == {"test": (4, 2), "train": (4, 2)}
    assert [s.image for s in train.samples] == [_name(r, k, 1) for r in (1, 2) for k in (1, 2)]
    with pytest.raises(SplitError, match="already carries a split column"):
        select_split(ds, "train", protocol="seeded")
    with pytest.raises(SplitError, match="already carries a split column"):
        split_dataset(ds, split_file="any.txt")
    with pytest.raises(SplitError, match="no split column"):
        select_split(_toy(split=False), "train", protocol="given")


def test_split_by_file_matches_paths_then_file_names() -> None:
    samples = [Sample("a/x.png", 1.0), Sample("b/x.png", 2.0), Sample("c/y.png", 3.0)]
    parts = split_by_file(samples, ["a/x.png", "other/y.png"])
    assert [s.image for s in parts["train"]] == ["a/x.png", "c/y.png"]
    assert [s.image for s in parts["rest"]] == ["b/x.png"]
    assert {s.split for s in parts["train"]} == {"train"}
    with pytest.raises(SplitError, match="match several images"):
        split_by_file(samples, ["x.png"])


def test_protocol_options_are_checked() -> None:
    ds = _toy(split=False)
    with pytest.raises(SplitError, match="one of auto, given, seeded, file, whole"):
        split_dataset(ds, protocol="random")
    with pytest.raises(SplitError, match="needs a split file"):
        split_dataset(ds, protocol="file")
    with pytest.raises(SplitError, match="split_file is set"):
        split_dataset(ds, protocol="seeded", split_file="x.txt")
    _, p = split_dataset(ds, fractions=())
    assert p.name == "whole"


def test_a_partial_registry_dataset_is_refused_only_for_seeded(kadid: Path) -> None:
    ds = load_dataset(_spec(kadid, "train_list.txt"))
    assert isinstance(split_dataset(ds, protocol="whole")[1], SplitProtocol)
    with pytest.raises(SplitError, match="Refused"):
        split_dataset(ds)
