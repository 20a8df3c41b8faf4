"""Train/val/test splits by reference image (KADID-10K protocol of VisualQuality-R1).

VisualQuality-R1 and Tool-IQA train on 60% of KADID-10K, split by reference
image so that no scene appears in two splits. The original script shuffles
``list(set(...))`` of reference names, whose order depends on string hashing
and so changes from run to run; here the unique names are sorted first, then
shuffled with ``random.Random(seed)``, which gives the same split on every run
and every Python 3 version. Cut points are rounded cumulative fractions: for
KADID-10K's 81 references and 60/20/20 that is 49/16/16, as in the original.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import replace

from .datasets import Sample

__all__ = ["kadid_reference_name", "reference_of", "split_by_reference"]

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
