"""Train/val/test splits by reference image (KADID-10K protocol of VisualQuality-R1),
and the protocols a training run picks its split by.

VisualQuality-R1 and Tool-IQA train on 60% of KADID-10K, split by reference
image so that no scene appears in two splits. The original script shuffles
``list(set(...))`` of reference names, whose order depends on string hashing
and so changes from run to run; here the unique names are sorted first, then
shuffled with ``random.Random(seed)``, which gives the same split on every run
and every Python 3 version. Cut points are rounded cumulative fractions: for
KADID-10K's 81 references and 60/20/20 that is 49/16/16, as in the original --
the counts match, the references need not (no seed reproduces a hash order).

Protocols (:func:`split_dataset`; what a run reports is a :class:`SplitProtocol`):

* ``given``: the label file's own ``split`` column, used as is;
* ``seeded``: :func:`split_by_reference` with fractions and seed;
* ``file``: a published split list -- e.g. VisualQuality-R1's KADID-10K train
  list, ``name mos`` lines -- names the training images, matched by file name
  against the label file; every other image is ``rest``;
* ``whole``: every image, no split;
* ``auto``: ``file`` when a split file is given, else ``given`` when the labels
  carry a split column, else ``seeded``.

A list that is already a split is never split again: ``seeded`` refuses a label
file that has a split column, or that holds fewer than ``SUBSET_SHARE`` of the
images of its registry benchmark (VisualQuality-R1's KADID-10K train list:
6,125 of 10,125, 49 of 81 references -- re-split it would train on 3,675); the
message says to pass it as ``split_file`` or train on it ``whole``.
"""

from __future__ import annotations

import hashlib
import math
import posixpath
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .datasets import Dataset, DatasetError, Sample, read_rows
from .registry import find

__all__ = [
    "PROTOCOLS",
    "SUBSET_SHARE",
    "SplitError",
    "SplitProtocol",
    "kadid_reference_name",
    "read_split_list",
    "reference_of",
    "split_by_file",
    "split_by_reference",
    "split_dataset",
]

PROTOCOLS = ("auto", "given", "seeded", "file", "whole")
SUBSET_SHARE = 0.9
"""A label file with fewer than this share of its registry benchmark's images is
taken for a split list, and ``seeded`` refuses to split it again."""

_KADID_NAME = re.compile(r"^(?P<ref>.+?)_\d+_\d+(?P<ext>\.[^./]+)$")


def kadid_reference_name(image: str) -> str:
    """The reference image of a KADID-10K distorted image: ``I01_01_01.png`` -> ``I01.png``.

    A folder prefix is kept (``images/I01_01_01.png`` -> ``images/I01.png``).
    Raises ``ValueError`` for names not shaped ``REF_TYPE_LEVEL.ext``.
    """
    folder, _, base = image.replace("\\", "/").rpartition("/")
    match = _KADID_NAME.match(base)
    if not match:
        raise ValueError(f"{image!r} is not a KADID-10K distorted image name (REF_TYPE_LEVEL.ext)")
    ref = match["ref"] + match["ext"]
    return f"{folder}/{ref}" if folder else ref


def reference_of(sample: Sample) -> str:
    """The sample's reference: its ``ref`` field, else derived from a KADID-style name."""
    return sample.ref if sample.ref else kadid_reference_name(sample.image)


def _check_fractions(fractions: Sequence[float], names: Sequence[str]) -> None:
    """Raise ``ValueError`` unless the fractions are non-negative, sum to 1 and match names."""
    if len(fractions) != len(names):
        raise ValueError(f"{len(fractions)} fractions for {len(names)} split names")
    if len(set(names)) != len(names):
        raise ValueError(f"split names must be distinct, got {list(names)}")
    if any(f < 0 or not math.isfinite(f) for f in fractions):
        raise ValueError(f"fractions must be finite and non-negative, got {list(fractions)}")
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
        raise ValueError(f"fractions must sum to 1, got {sum(fractions)}")


def _cut(refs: Sequence[str], fractions: Sequence[float]) -> list[list[str]]:
    """Cut ``refs`` into consecutive groups at the rounded cumulative fractions."""
    groups, start, total = [], 0, 0.0
    for i, frac in enumerate(fractions):
        total += frac
        end = len(refs) if i == len(fractions) - 1 else min(len(refs), round(len(refs) * total))
        groups.append(list(refs[start:end]))
        start = max(start, end)
    return groups


def split_by_reference(
    samples: Iterable[Sample],
    fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 42,
    names: Sequence[str] = ("train", "val", "test"),
) -> dict[str, list[Sample]]:
    """Split samples so that all images of one reference land in the same split.

    Unique reference names (see :func:`reference_of`) are sorted, shuffled with
    ``random.Random(seed)`` and cut at the fractions. Returns one list per name,
    samples in their input order with ``split`` set to that name.
    """
    _check_fractions(fractions, names)
    items = [(reference_of(s), s) for s in samples]
    refs = sorted({ref for ref, _ in items})
    random.Random(seed).shuffle(refs)
    owner = {
        ref: name for name, group in zip(names, _cut(refs, fractions), strict=True) for ref in group
    }
    out: dict[str, list[Sample]] = {name: [] for name in names}
    for ref, sample in items:
        out[owner[ref]].append(replace(sample, split=owner[ref]))
    return out


# ----------------------------------------------------------------------------- protocols


class SplitError(ValueError):
    """A split that cannot be made as asked; the message says what to change."""


def _content(sample: Sample) -> str:
    """The sample's reference, or the image itself where it has none (authentic datasets)."""
    if sample.ref:
        return sample.ref
    try:
        return kadid_reference_name(sample.image)
    except ValueError:
        return sample.image


@dataclass(frozen=True)
class SplitProtocol:
    """How a dataset was split, as a run reports it.

    ``counts`` maps each split to ``(images, references)``; ``seed`` and
    ``fractions`` belong to ``seeded``, ``file`` (the split file's name) and
    ``sha256`` (its first 12 hex digits) to ``file``.
    """

    name: str
    counts: dict[str, tuple[int, int]]
    seed: int | None = None
    fractions: tuple[float, ...] | None = None
    file: str | None = None
    sha256: str | None = None
    notes: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        """One line: the protocol and its images / references per split.

        >>> SplitProtocol("seeded", {"train": (6125, 49), "val": (2000, 16)}, 42, (0.6, 0.4)).describe()
        'seeded (by reference, 60/40, seed 42): train 6,125 images / 49 references, val 2,000 / 16'
        """
        if self.name == "seeded":
            cut = "/".join(f"{100 * f:g}" for f in self.fractions or ())
            how = f"seeded (by reference, {cut}, seed {self.seed})"
        elif self.name == "file":
            how = f"file ({self.file}, sha256 {self.sha256}; the images it names train)"
        elif self.name == "given":
            how = "given (the label file's split column)"
        else:
            how = "whole (every image, no split)"
        parts = [
            f"{name} {n:,} images / {refs} references" if i == 0 else f"{name} {n:,} / {refs}"
            for i, (name, (n, refs)) in enumerate(self.counts.items())
        ]
        return f"{how}: {', '.join(parts)}" + "".join(f"; {note}" for note in self.notes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "protocol": self.name,
            "seed": self.seed,
            "fractions": list(self.fractions) if self.fractions is not None else None,
            "split_file": self.file,
            "split_file_sha256": self.sha256,
            "counts": {k: {"images": n, "references": r} for k, (n, r) in self.counts.items()},
            "notes": list(self.notes),
        }


def read_split_list(path: Path | str) -> tuple[list[str], str]:
    """The image names of a published split list, and the file's sha256 (hex).

    Any label format :func:`~tooliqa.eval.datasets.read_rows` reads; VisualQuality-R1
    publishes ``name mos`` lines. Unreadable lines raise :class:`SplitError`.
    """
    path = Path(path)
    try:
        rows = read_rows(path)
    except DatasetError as exc:
        raise SplitError(f"split file: {exc}") from exc
    bad = [f"{r.where}: {r.error}" for r in rows if r.error]
    if bad:
        raise SplitError(f"split file {path}: {len(bad)} unreadable line(s), e.g. {bad[0]}")
    names = [r.image.strip() for r in rows if r.image.strip()]
    if not names:
        raise SplitError(f"split file {path}: no image names")
    return names, hashlib.sha256(path.read_bytes()).hexdigest()


def split_by_file(
    samples: Sequence[Sample], names: Iterable[str], *, source: str = "split file"
) -> dict[str, list[Sample]]:
    """``train``: the samples ``names`` lists, ``rest``: the others (input order kept).

    A name matches a sample's path relative to the image root, else its file
    name (``kadid10k/images/I01_01_01.png`` matches ``I01_01_01.png``). Names
    that match nothing, or more than one sample, raise :class:`SplitError`
    naming a few.
    """
    by_path = {s.image: s for s in samples}
    by_base: dict[str, list[str]] = {}
    for s in samples:
        by_base.setdefault(posixpath.basename(s.image), []).append(s.image)
    chosen: set[str] = set()
    missing: list[str] = []
    ambiguous: list[str] = []
    names = list(names)
    for name in names:
        key = posixpath.normpath(name.strip().replace("\\", "/"))
        if key in by_path:
            chosen.add(key)
            continue
        hits = by_base.get(posixpath.basename(key), [])
        if len(hits) == 1:
            chosen.add(hits[0])
        else:
            (ambiguous if hits else missing).append(name)
    if missing:
        raise SplitError(
            f"{source}: {len(missing):,} of its {len(names):,} images are not in the label "
            f"file, e.g. {', '.join(missing[:3])}; the dataset must be the full label file "
            "that the list was cut from"
        )
    if ambiguous:
        raise SplitError(
            f"{source}: {len(ambiguous):,} file name(s) match several images of the label "
            f"file, e.g. {', '.join(ambiguous[:3])}; give their paths relative to the image root"
        )
    return {
        "train": [replace(s, split="train") for s in samples if s.image in chosen],
        "rest": [replace(s, split="rest") for s in samples if s.image not in chosen],
    }


def _counts(parts: dict[str, list[Sample]]) -> dict[str, tuple[int, int]]:
    return {k: (len(v), len({_content(s) for s in v})) for k, v in parts.items()}


def _subset_of_benchmark(ds: Dataset) -> str | None:
    """Why ``ds`` looks like a split list of a registry benchmark, or ``None``."""
    bench = find(ds.name)
    if bench is None or not bench.n_images or len(ds) >= SUBSET_SHARE * bench.n_images:
        return None
    refs = len({_content(s) for s in ds.samples})
    return (
        f"{ds.name}: the label file holds {len(ds):,} of the benchmark's {bench.n_images:,} "
        f"images ({refs} references), so it looks like a published split list, not the whole "
        "database; splitting it again would train on part of a split"
    )


def split_dataset(
    ds: Dataset,
    *,
    protocol: str = "auto",
    fractions: Sequence[float] | None = (0.6, 0.2, 0.2),
    seed: int = 42,
    split_file: Path | str | None = None,
) -> tuple[dict[str, list[Sample]], SplitProtocol]:
    """The dataset's splits under ``protocol`` (see the module docstring), and the record.

    ``auto`` with empty ``fractions`` is ``whole``. Raises :class:`SplitError`
    when the protocol does not fit the data: ``seeded`` on labels that are
    already a split, ``given`` without a split column, ``file`` without a split
    file or with a split column, names missing from the label file.
    """
    if protocol not in PROTOCOLS:
        raise SplitError(f"split protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}")
    given = ds.splits()
    if protocol == "auto":
        protocol = (
            "file" if split_file else "given" if given else "seeded" if fractions else "whole"
        )
    if split_file and protocol != "file":
        raise SplitError(f"split_file is set but the split protocol is {protocol!r}")
    if protocol == "given":
        if not given:
            raise SplitError(f"{ds.name}: the label file has no split column (protocol 'given')")
        parts = {name: [s for s in ds.samples if s.split == name] for name in given}
        return parts, SplitProtocol("given", _counts(parts))
    if protocol == "whole":
        parts = {"all": list(ds.samples)}
        return parts, SplitProtocol("whole", _counts(parts))
    if given:
        raise SplitError(
            f"{ds.name}: the label file already carries a split column "
            f"({', '.join(given)}); it is not split again -- use split protocol 'given'"
        )
    if protocol == "file":
        if not split_file:
            raise SplitError("split protocol 'file' needs a split file (split_file)")
        names, digest = read_split_list(split_file)
        parts = split_by_file(ds.samples, names, source=f"split file {Path(split_file).name}")
        train_refs = {_content(s) for s in parts["train"]}
        shared = len(train_refs & {_content(s) for s in parts["rest"]})
        notes = (f"{shared} references have images in both train and rest",) if shared else ()
        record = SplitProtocol(
            "file", _counts(parts), file=Path(split_file).name, sha256=digest[:12], notes=notes
        )
        return parts, record
    reason = _subset_of_benchmark(ds)
    if reason:
        raise SplitError(
            f"{reason}. Refused. Pass the full label file as the dataset and this list as "
            "split_file, or train on this list as it is with split protocol 'whole'."
        )
    if not fractions:
        raise SplitError("split protocol 'seeded' needs split fractions (train/val/test)")
    fractions = tuple(fractions)
    samples = [s if s.ref else replace(s, ref=_content(s)) for s in ds.samples]
    parts = split_by_reference(samples, fractions, seed=seed)
    return parts, SplitProtocol("seeded", _counts(parts), seed=seed, fractions=fractions)
