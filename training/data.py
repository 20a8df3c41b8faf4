"""Training prompts from the evaluation manifests.

A dataset is named as for ``tooliqa eval`` (``NAME=LABELS[:ROOT]``, read by
:func:`tooliqa.eval.datasets.load_dataset`). When the label file carries no
split column, the paper's split is made: images grouped by reference, 60/20/20,
seed 42 (:func:`tooliqa.eval.splits.split_by_reference`).

Each row: ``prompt`` (a rollout request naming the image file), ``mos`` (the
human score mapped onto 1–5, higher better), ``group`` (the image's path,
identifying it across processes) and ``image_path``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from tooliqa.eval.datasets import Dataset, load_dataset
from tooliqa.eval.splits import kadid_reference_name, split_by_reference

from .rollout import rollout_request

__all__ = ["load_training_rows", "select_split", "to_hf_dataset"]


def _kadid_named(image: str) -> bool:
    try:
        kadid_reference_name(image)
    except ValueError:
        return False
    return True


def select_split(
    ds: Dataset,
    split: str,
    *,
    fractions: Sequence[float] | None = (0.6, 0.2, 0.2),
    seed: int = 42,
) -> Dataset:
    """The samples of ``split``: from the label file's own split column when it has
    one, else by reference with ``fractions`` (train/val/test) and ``seed``.

    The reference of an image is its ``ref`` column, else the reference in a
    KADID-style name (``I01_01_01.png`` → ``I01.png``), else the image itself
    (authentic-distortion datasets: every image is its own content).
    """
    if ds.splits():
        return ds.select(split)
    if not fractions:
        return ds
    samples = [s if s.ref or _kadid_named(s.image) else replace(s, ref=s.image) for s in ds.samples]
    parts = split_by_reference(samples, fractions, seed=seed)
    if split not in parts:
        raise ValueError(f"split must be one of {sorted(parts)}, not {split!r}")
    return Dataset(ds.name, ds.root, parts[split], ds.mos_range, ds.higher_better, ds.problems)


def load_training_rows(
    spec: str,
    *,
    split: str | None = "train",
    fractions: Sequence[float] | None = (0.6, 0.2, 0.2),
    seed: int = 42,
    limit: int | None = None,
    query: str | None = None,
) -> tuple[list[dict[str, Any]], Dataset]:
    """Rows for :func:`to_hf_dataset`, and the (split) dataset they came from."""
    ds = load_dataset(spec)
    if split:
        ds = select_split(ds, split, fractions=fractions, seed=seed)
    samples = ds.samples[:limit] if limit else ds.samples
    rows = []
    for sample in samples:
        path = str(ds.path(sample).resolve())
        rows.append(
            {
                "prompt": rollout_request(path, query),
                "mos": ds.normalized(sample.mos),
                "group": path,
                "image_path": path,
            }
        )
    return rows, ds


def to_hf_dataset(rows: list[dict[str, Any]]) -> Any:
    """A ``datasets.Dataset`` (what ``GRPOTrainer`` takes)."""
    from datasets import Dataset as HFDataset

    return HFDataset.from_list(rows)
