"""Training prompts from the evaluation manifests.

A dataset is named as for ``tooliqa eval`` (``NAME=LABELS[:ROOT]``, read by
:func:`tooliqa.eval.datasets.load_dataset`). The training split comes from a
protocol (:func:`tooliqa.eval.splits.split_dataset`): the label file's own
split column when it has one; else a published split list (``split_file``,
e.g. VisualQuality-R1's KADID-10K train list), whose images are the training
split; else the paper's split, images grouped by reference, 60/20/20, seed 42.
A label file that is itself a split list is not split again (an error says
what to pass instead). :class:`TrainingData` carries the protocol record, which
the run prints and saves.

Each row: ``prompt`` (a rollout request naming the image file), ``mos`` (the
human score mapped onto 1–5, higher better), ``group`` (the image's path,
identifying it across processes) and ``image_path``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from tooliqa.eval.datasets import Dataset, load_dataset
from tooliqa.eval.splits import SplitError, SplitProtocol, split_dataset

from .rollout import rollout_request

__all__ = ["TrainingData", "load_training_rows", "select_split", "to_hf_dataset"]


def select_split(
    ds: Dataset,
    split: str | None,
    *,
    protocol: str = "auto",
    fractions: Sequence[float] | None = (0.6, 0.2, 0.2),
    seed: int = 42,
    split_file: Path | str | None = None,
) -> tuple[Dataset, SplitProtocol]:
    """The samples of ``split`` under ``protocol``, and the protocol record.

    ``split=None`` (or the ``whole`` protocol) keeps every sample. With the
    label file's own split column, ``train`` also matches ``training`` and
    ``val`` ``validation``. Raises :class:`~tooliqa.eval.splits.SplitError`
    when the protocol does not fit the data, or ``split`` is not one it makes.
    """
    if split is None:
        protocol = "whole"
    parts, record = split_dataset(
        ds, protocol=protocol, fractions=fractions, seed=seed, split_file=split_file
    )
    if record.name == "whole":
        return ds, record
    if record.name == "given":
        return ds.select(split or ""), record
    if split not in parts:
        raise SplitError(
            f"split must be one of {', '.join(parts)} under the {record.name!r} protocol, "
            f"not {split!r}"
        )
    return replace(ds, samples=parts[split], problems=list(ds.problems)), record


@dataclass(frozen=True)
class TrainingData:
    """The rows to train on, the (split) dataset they came from and how it was split."""

    rows: list[dict[str, Any]]
    dataset: Dataset
    protocol: SplitProtocol
    split: str | None

    def summary_lines(self) -> list[str]:
        """What the run prints about its data."""
        used = f"{len(self.rows):,} of {len(self.dataset):,}" if self.rows else "0"
        return [
            f"data                      {self.dataset.name} [{self.split or 'all'}]: {used} images",
            f"split                     {self.protocol.describe()}",
        ]

    def record(self) -> dict[str, Any]:
        """JSON-ready: dataset, split, image count and the protocol."""
        return {
            "dataset": self.dataset.name,
            "split": self.split,
            "images": len(self.rows),
            **self.protocol.to_dict(),
        }


def load_training_rows(
    spec: str,
    *,
    split: str | None = "train",
    protocol: str = "auto",
    fractions: Sequence[float] | None = (0.6, 0.2, 0.2),
    seed: int = 42,
    split_file: Path | str | None = None,
    limit: int | None = None,
    query: str | None = None,
) -> TrainingData:
    """Rows for :func:`to_hf_dataset`, the split dataset and its protocol record."""
    ds, record = select_split(
        load_dataset(spec),
        split,
        protocol=protocol,
        fractions=fractions,
        seed=seed,
        split_file=split_file,
    )
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
    return TrainingData(rows, ds, record, split)


def to_hf_dataset(rows: list[dict[str, Any]]) -> Any:
    """A ``datasets.Dataset`` (what ``GRPOTrainer`` takes)."""
    from datasets import Dataset as HFDataset

    return HFDataset.from_list(rows)
