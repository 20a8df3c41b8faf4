"""IQA datasets as manifests: label files read into validated samples.

A dataset is a label file (image name, MOS, optional std/split/reference) and
an image root. Readers accept the formats people already have:

* ``pyiqa``: IQA-PyTorch ``meta_info_*.csv`` files, no-reference
  (``img_name,mos,std,split,...`` for KonIQ-10k) or full-reference
  (``ref_name,dist_name,dmos,std`` for KADID-10K, ``hq_name,dist_name,elo_score``
  for PIPAL), and their older header-less tab-separated ``.txt`` variants;
* ``text``: VisualQuality-R1 label files, whitespace separated, one image a
  line: ``name mos``, ``name mos std``, ``ref dis mos`` or ``ref dis mos std``;
* ``csv``: any delimited file with a header naming an image column
  (image/name/path/...) and a score column (mos/score/dmos/...), optionally
  std, split and ref;
* ``json`` (a list of objects, or ``{"samples": [...]}``) and ``jsonl``;
* ``agiqa3k``: the AGIQA-3K labels (``name,mos,std,generator,prompt,split``).

The format is detected from the extension and the first line unless given.

Nothing is dropped silently: unparsable rows, rows with more or fewer fields
than the header or the file's layout (never truncated: ``name,3,5`` under
``image,mos`` is a decimal comma, not MOS 3), non-numeric or non-finite MOS,
duplicates (the first is kept), missing images, names the file system refuses
(too long, a symlink loop) and paths that escape the image root (``../x.jpg``,
absolute paths elsewhere, symlinks pointing out) are excluded and reported in
:attr:`Dataset.problems`, one line each; with ``strict=True`` they raise
:class:`DatasetError` instead. Escaping paths are never opened.

Attribute labels
----------------
Label files may also carry human scores per quality attribute, one column (or
JSON key) each, read by every reader with named columns (``csv``, ``pyiqa``
CSVs, headed whitespace tables, ``json``, ``jsonl``, ``agiqa3k``). They become
:attr:`Sample.attributes` (attribute key -> score) and are compared with the
per-attribute predictions (``Assessment.attribute_scores``) in the report.
Column names are matched after :func:`_norm_key` (case, spaces and dashes do
not matter):

==============================  ==============  ======================================
column                          attribute key   where it comes from
==============================  ==============  ======================================
``attr_sharpness``              ``sharpness``   this project's convention
``attr_noise``                  ``noise``
``attr_artifacts``              ``artifacts``   also ``attr_artefacts``
``attr_exposure``               ``exposure``
``attr_colour``                 ``colour``      also ``attr_color``
``attr_visibility``             ``visibility``  also ``attr_saliency_visibility``
``attr_<other>``                ``<other>``     free-form: kept and reported, but no
                                                rubric attribute predicts it
``Sharpness``                   ``sharpness``   SPAQ attribute MOS (Fang et al., 2020)
``Noisiness``                   ``noise``       SPAQ
``Brightness``                  ``exposure``    SPAQ
``Colorfulness``                ``colour``      SPAQ (also ``Colourfulness``)
``Contrast``                    ``contrast``    SPAQ; free-form, the rubric has no
                                                contrast attribute
==============================  ==============  ======================================

SPAQ's ``MOS and Image attribute scores`` sheet, saved as CSV
(``Image name,MOS,Brightness,Colorfulness,Contrast,Noisiness,Sharpness``), reads
as is. Of the registry's other benchmarks none is known to release human
scores per quality attribute (KADID-10K has one DMOS per image, the distortion
type only in the file name; AGIQA-3K's second MOS, ``mos_align``, rates
text-image alignment), so no other names are mapped; add such scores as
``attr_<key>`` columns. A column with one of the bare names above that holds a
computed measure rather than human scores should be renamed.

Direction: every attribute label must be **higher = better quality** on that
attribute, as SPAQ's are (a high ``Noisiness`` score means little visible
noise), the same orientation as the predicted 1-5 attribute scores. Each
attribute keeps its own scale (SPAQ: 0-100); labels are never normalised, as
SRCC and the logistic-fitted PLCC do not depend on the scale. Empty cells mean
"no label"; a value that is not a finite number is dropped and reported.
"""

from __future__ import annotations

import csv
import io
import json
import math
import posixpath
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path

from tooliqa.tools import JSONLimitError, load_json

from .registry import Benchmark, find, suggest

__all__ = [
    "ATTRIBUTE_KEYS",
    "FORMATS",
    "KNOWN_ATTRIBUTE_COLUMNS",
    "Dataset",
    "DatasetError",
    "Row",
    "Sample",
    "attribute_key",
    "choose_scale",
    "default_root",
    "detect_format",
    "load_dataset",
    "load_labels",
    "order_attributes",
    "parse_spec",
    "read_agiqa3k",
    "read_csv_labels",
    "read_json",
    "read_jsonl",
    "read_label_txt",
    "read_pyiqa",
    "read_rows",
    "validate_rows",
]


class DatasetError(ValueError):
    """A label file that cannot be read, a bad spec, or (``strict=True``) invalid rows."""


@dataclass(frozen=True)
class Sample:
    """One image of a dataset: its path relative to the root (POSIX) and raw MOS.

    ``attributes`` maps attribute keys to their human scores, each on its own
    scale, higher better (see the module docstring); empty without labels.
    """

    image: str
    mos: float
    std: float | None = None
    split: str | None = None
    ref: str | None = None
    attributes: dict[str, float] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class Row:
    """One label record as read, before validation.

    ``where`` locates it for messages (``labels.csv:12``); values are kept as
    read (text, or JSON numbers) so that validation can report bad ones.
    ``error`` is set when the record could not be split into fields at all.
    ``attributes`` maps attribute keys to their values as read.
    """

    where: str
    image: str = ""
    mos: object = None
    std: object = None
    split: object = None
    ref: object = None
    error: str | None = None
    attributes: Mapping[str, object] = field(default_factory=dict, hash=False)


@dataclass
class Dataset:
    """Validated samples, their image root and the score scale.

    ``mos_range`` and ``higher_better`` describe the raw scores (from the
    registry, or inferred); ``problems`` lists everything dropped or suspicious.
    """

    name: str
    root: Path
    samples: list[Sample]
    mos_range: tuple[float, float]
    higher_better: bool = True
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def path(self, sample: Sample) -> Path:
        """The image file of ``sample``."""
        return self.root / sample.image

    def normalized(self, mos: float) -> float:
        """Map a raw score linearly onto [1, 5], higher better, clipped to the range."""
        lo, hi = self.mos_range
        if hi == lo:
            return 3.0
        t = (float(mos) - lo) / (hi - lo)
        if not self.higher_better:
            t = 1.0 - t
        return 1.0 + 4.0 * min(1.0, max(0.0, t))

    def attribute_keys(self) -> list[str]:
        """The attribute keys with at least one label: rubric order, then the others sorted."""
        return order_attributes({k for s in self.samples for k in s.attributes})

    def splits(self) -> list[str]:
        """The split labels present, sorted."""
        return sorted({s.split for s in self.samples if s.split is not None})

    def select(self, split: str) -> Dataset:
        """The samples of one split (``train`` also matches ``training``, ``val`` ``validation``)."""
        wanted = _split_aliases(split)
        samples = [s for s in self.samples if s.split is not None and s.split.lower() in wanted]
        if not samples:
            have = ", ".join(self.splits()) or "none"
            raise DatasetError(
                f"{self.name}: no samples in split {split!r} (splits present: {have})"
            )
        return replace(self, samples=samples, problems=list(self.problems))


_SPLIT_GROUPS = (
    {"train", "training"},
    {"val", "valid", "validation"},
    {"test", "testing"},
)


def _split_aliases(split: str) -> set[str]:
    """The split labels treated as ``split`` (case-insensitive)."""
    key = split.strip().lower()
    for group in _SPLIT_GROUPS:
        if key in group:
            return group
    return {key}


# ----------------------------------------------------------------------------- reading text


def _read_text(path: Path) -> str:
    """The file's text (UTF-8 with or without BOM, or UTF-16 with BOM)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read label file ({exc.strerror or exc})") from exc
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16")
    if b"\x00" in data:
        line = data[: data.index(b"\x00")].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: binary data (NUL byte); not a label file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(f"{path}:{line}: not UTF-8 text ({exc.reason})") from exc


def _data_lines(text: str) -> list[tuple[int, str]]:
    """Non-blank, non-comment lines with their 1-based line numbers."""
    out = []
    for no, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            out.append((no, stripped))
    return out


def _is_number(text: object) -> bool:
    """Whether ``text`` parses as a float."""
    try:
        float(str(text))
    except ValueError:
        return False
    return True


def _looks_like_header(line: str) -> bool:
    """A header has no numeric field; every data line has at least its MOS."""
    tokens = [t.strip().strip("\"'") for t in re.split(r"[,;\t]|\s+", line)]
    return not any(_is_number(t) for t in tokens if t)


def _norm_key(name: str) -> str:
    """Normalize a column name: no BOM, lower case, separators as underscores."""
    key = name.replace("\ufeff", "").strip().strip("\"'").lower()
    return re.sub(r"[\s\-.]+", "_", key).strip("_")


_COLUMNS: dict[str, tuple[str, ...]] = {
    "image": (
        "image",
        "image_name",
        "img_name",
        "name",
        "dist_name",
        "dis_name",
        "distorted",
        "dist_img",
        "distorted_image",
        "image_path",
        "img_path",
        "path",
        "filename",
        "file_name",
        "file",
        "img",
    ),
    "mos": ("mos", "dmos", "score", "mos_quality", "elo_score", "quality", "mos_zscore"),
    "std": ("std", "mos_std", "std_quality", "sd", "stdev", "std_dev", "dmos_std"),
    "split": ("split", "set", "subset", "phase", "partition"),
    "ref": (
        "ref",
        "ref_name",
        "reference",
        "ref_img",
        "ref_image",
        "reference_image",
        "hq_name",
        "ref_path",
    ),
}


#: The rubric attribute keys, in the rubric's order (``Assessment.attribute_scores``).
ATTRIBUTE_KEYS = ("sharpness", "noise", "artifacts", "exposure", "colour", "visibility")

#: Other spellings of a rubric key after ``attr_``.
_ATTRIBUTE_ALIASES = {
    "color": "colour",
    "artefacts": "artifacts",
    "saliency_visibility": "visibility",
}

#: Bare column names (normalised) of released datasets' attribute scores: SPAQ's.
KNOWN_ATTRIBUTE_COLUMNS: dict[str, str] = {
    "sharpness": "sharpness",
    "noisiness": "noise",
    "brightness": "exposure",
    "colorfulness": "colour",
    "colourfulness": "colour",
    "contrast": "contrast",
}


def attribute_key(name: str) -> str | None:
    """The attribute key a column name stands for, or ``None`` (see the module docstring).

    >>> attribute_key("attr_Color"), attribute_key("Noisiness"), attribute_key("mos")
    ('colour', 'noise', None)
    """
    key = _norm_key(name)
    if key.startswith("attr_") and len(key) > len("attr_"):
        rest = key[len("attr_") :]
        return _ATTRIBUTE_ALIASES.get(rest, rest)
    return KNOWN_ATTRIBUTE_COLUMNS.get(key)


def order_attributes(keys: Iterable[str]) -> list[str]:
    """Attribute keys in the rubric's order, then any others sorted."""
    keys = set(keys)
    return [k for k in ATTRIBUTE_KEYS if k in keys] + sorted(keys - set(ATTRIBUTE_KEYS))


def _attribute_columns(names: Sequence[str], taken: Iterable[int] = ()) -> dict[str, int]:
    """Column index of each attribute label among ``names`` (the first column of a key wins)."""
    skip = set(taken)
    found: dict[str, int] = {}
    for i, name in enumerate(names):
        key = attribute_key(str(name)) if i not in skip else None
        if key is not None and key not in found:
            found[key] = i
    return found


def _map_columns(names: Sequence[str]) -> dict[str, int]:
    """Column index of each role (image, mos, std, split, ref) found among ``names``."""
    keys = [_norm_key(n) for n in names]
    found: dict[str, int] = {}
    for role, aliases in _COLUMNS.items():
        for alias in aliases:
            if alias in keys and keys.index(alias) not in found.values():
                found[role] = keys.index(alias)
                break
    return found


def _require(path: Path, cols: dict[str, int], header: Sequence[str], line: int = 1) -> None:
    """Raise unless the header has an image and a score column."""
    for role in ("image", "mos"):
        if role not in cols:
            raise DatasetError(
                f"{path}:{line}: no {role} column in header {list(header)!r} "
                f"(looked for {', '.join(_COLUMNS[role])})"
            )


def _header_width(header: Sequence[str]) -> int:
    """The number of header fields up to the last named one (trailing empty names dropped)."""
    named = [i for i, name in enumerate(header) if name.strip()]
    return named[-1] + 1 if named else 0


_INTEGER = re.compile(r"[+-]?\d+")
_DIGITS = re.compile(r"\d+")


def _split_decimal(fields: Sequence[str]) -> bool:
    """Whether two neighbouring fields look like one number split at a decimal comma (3,5)."""
    return any(
        _INTEGER.fullmatch(a.strip()) and _DIGITS.fullmatch(b.strip()) for a, b in pairwise(fields)
    )


def _width_error(fields: Sequence[str], width: int, delim: str | None) -> str | None:
    """Why a record does not have the header's ``width`` fields, or ``None`` when it does.

    Extra fields that are all empty (a trailing delimiter) lose nothing and pass.
    """
    if len(fields) == width or (len(fields) > width and not any(f.strip() for f in fields[width:])):
        return None
    why = f"expected {width} fields like the header, got {len(fields)}"
    if delim == "," and len(fields) > width and _split_decimal(fields):
        why += "; a decimal comma (3,5 for 3.5) may be the cause: write 3.5 or quote the value"
    return why


def _row_from_fields(
    where: str,
    fields: Sequence[str],
    cols: dict[str, int],
    attrs: dict[str, int] | None = None,
    *,
    width: int | None = None,
    delim: str | None = None,
) -> Row:
    """A :class:`Row` from one record's fields, or an error row if it has the wrong width.

    With ``width`` (the header's) a record with fewer fields, or with more
    non-empty ones, is an error row: nothing is truncated or guessed.
    """
    why = _width_error(fields, width, delim) if width is not None else None
    if why is not None:
        return Row(where, error=why)
    need = max(cols[r] for r in ("image", "mos")) + 1
    if len(fields) < need:
        return Row(where, error=f"expected at least {need} fields, got {len(fields)}")
    get = {role: (fields[i].strip() if i < len(fields) else None) for role, i in cols.items()}
    labels = {key: fields[i].strip() for key, i in (attrs or {}).items() if i < len(fields)}
    return Row(
        where,
        get["image"] or "",
        get["mos"],
        get.get("std"),
        get.get("split"),
        get.get("ref"),
        attributes=labels,
    )


def _delimiter(line: str) -> str | None:
    """The delimiter of a header line: comma, tab, semicolon, or ``None`` (whitespace)."""
    for delim in (",", "\t", ";"):
        if delim in line:
            return delim
    return None


# ----------------------------------------------------------------------------- readers


def read_csv_labels(path: Path | str) -> list[Row]:
    """Read a delimited label file with a header (comma, tab, semicolon or whitespace).

    Quoted fields may contain delimiters and newlines; blank lines and lines
    starting with ``#`` are skipped.
    """
    path = Path(path)
    text = _read_text(path)
    lines = _data_lines(text)
    if not lines:
        raise DatasetError(f"{path}:1: empty label file")
    delim = _delimiter(lines[0][1])
    if delim is None:
        return _read_whitespace_table(path, lines)
    reader = csv.reader(io.StringIO(text), delimiter=delim)
    header: list[str] | None = None
    cols: dict[str, int] = {}
    attrs: dict[str, int] = {}
    width = 0
    rows: list[Row] = []
    try:
        for fields in reader:
            if not any(f.strip() for f in fields) or fields[0].lstrip().startswith("#"):
                continue
            if header is None:
                header = fields
                cols = _map_columns(header)
                _require(path, cols, header, reader.line_num)
                attrs = _attribute_columns(header, cols.values())
                width = _header_width(header)
                continue
            where = f"{path.name}:{reader.line_num}"
            rows.append(_row_from_fields(where, fields, cols, attrs, width=width, delim=delim))
    except csv.Error as exc:
        raise DatasetError(f"{path}:{reader.line_num}: malformed CSV ({exc})") from exc
    return rows


def _read_whitespace_table(path: Path, lines: list[tuple[int, str]]) -> list[Row]:
    """A whitespace-separated table whose first line is a header."""
    (head_no, head), body = lines[0], lines[1:]
    header = head.split()
    cols = _map_columns(header)
    _require(path, cols, header, head_no)
    attrs = _attribute_columns(header, cols.values())
    return [
        _row_from_fields(f"{path.name}:{no}", line.split(), cols, attrs, width=len(header))
        for no, line in body
    ]


_TEXT_LAYOUTS: dict[tuple[int, bool], dict[str, int]] = {
    (2, True): {"image": 0, "mos": 1},
    (3, True): {"image": 0, "mos": 1, "std": 2},
    (3, False): {"ref": 0, "image": 1, "mos": 2},
    (4, False): {"ref": 0, "image": 1, "mos": 2, "std": 3},
}


def _text_layout(lines: list[tuple[int, str]]) -> tuple[int, bool]:
    """The most common (field count, second-field-numeric) shape among the lines."""
    shapes: Counter[tuple[int, bool]] = Counter()
    for _, line in lines:
        tokens = line.split()
        shape = (len(tokens), len(tokens) > 1 and _is_number(tokens[1]))
        if shape in _TEXT_LAYOUTS:
            shapes[shape] += 1
    if not shapes:
        raise ValueError("no line has 2-4 whitespace-separated fields")
    return shapes.most_common(1)[0][0]


def read_label_txt(path: Path | str) -> list[Row]:
    """Read a VisualQuality-R1 style label file (``name mos [std]`` or ``ref dis mos [std]``).

    Header-less pyiqa ``meta_info_*.txt`` files (tab separated) share these
    layouts. A first line without any number is taken as a header.
    """
    path = Path(path)
    lines = _data_lines(_read_text(path))
    if not lines:
        raise DatasetError(f"{path}:1: empty label file")
    if _looks_like_header(lines[0][1]):
        return _read_whitespace_table(path, lines)
    try:
        count, numeric = _text_layout(lines)
    except ValueError as exc:
        raise DatasetError(f"{path}:{lines[0][0]}: {exc}") from exc
    cols = _TEXT_LAYOUTS[(count, numeric)]
    rows = []
    for no, line in lines:
        tokens = line.split()
        where = f"{path.name}:{no}"
        if len(tokens) != count:
            rows.append(
                Row(where, error=f"expected {count} fields like the rest, got {len(tokens)}")
            )
        else:
            rows.append(_row_from_fields(where, tokens, cols))
    return rows


def read_pyiqa(path: Path | str) -> list[Row]:
    """Read an IQA-PyTorch meta-info file (CSV with a header, or the older header-less .txt)."""
    path = Path(path)
    lines = _data_lines(_read_text(path))
    if lines and _looks_like_header(lines[0][1]):
        return read_csv_labels(path)
    return read_label_txt(path)


def read_agiqa3k(path: Path | str) -> list[Row]:
    """Read AGIQA-3K labels: ``name,mos,std,generator,prompt,split`` (or the original data.csv)."""
    path = Path(path)
    text = _read_text(path)
    first = next((line for _, line in _data_lines(text)), "")
    keys = {_norm_key(k) for k in next(csv.reader([first]), [])}
    if "name" not in keys or not keys & {"mos", "mos_quality"}:
        raise DatasetError(f"{path}:1: not an AGIQA-3K label file (needs name and mos columns)")
    return read_csv_labels(path)


def _row_from_object(where: str, obj: object) -> Row:
    """A :class:`Row` from one JSON object, mapping its keys like CSV column names."""
    if not isinstance(obj, dict):
        return Row(where, error=f"expected an object, got {type(obj).__name__}")
    keys = list(obj)
    cols = _map_columns([str(k) for k in keys])
    if "image" not in cols or "mos" not in cols:
        return Row(where, error=f"no image or mos field among {keys!r}")
    value = {role: obj[keys[i]] for role, i in cols.items()}
    image = value["image"]
    if isinstance(image, list) and len(image) == 1:
        image = image[0]
    if not isinstance(image, str):
        return Row(where, error=f"image must be a string, got {image!r}")
    attrs = _attribute_columns([str(k) for k in keys], cols.values())
    return Row(
        where,
        image,
        value["mos"],
        value.get("std"),
        value.get("split"),
        value.get("ref"),
        attributes={key: obj[keys[i]] for key, i in attrs.items()},
    )


def read_json(path: Path | str) -> list[Row]:
    """Read a JSON list of objects, or an object with a ``samples`` list."""
    path = Path(path)
    try:
        data = load_json(_read_text(path))
    except JSONLimitError as exc:  # a number too long, nesting too deep
        raise DatasetError(f"{path}: unreadable JSON ({exc.msg})") from exc
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from exc
    if isinstance(data, dict) and isinstance(data.get("samples"), list):
        data = data["samples"]
    if not isinstance(data, list):
        raise DatasetError(f"{path}:1: expected a list of samples or {{'samples': [...]}}")
    return [_row_from_object(f"{path.name} item {i}", obj) for i, obj in enumerate(data, 1)]


def read_jsonl(path: Path | str) -> list[Row]:
    """Read JSON Lines, one object a line; a line that is not JSON becomes an error row."""
    path = Path(path)
    rows = []
    for no, line in _data_lines(_read_text(path)):
        where = f"{path.name}:{no}"
        try:
            rows.append(_row_from_object(where, load_json(line)))
        except JSONLimitError as exc:
            rows.append(Row(where, error=f"unreadable JSON ({exc.msg})"))
        except json.JSONDecodeError as exc:
            rows.append(Row(where, error=f"invalid JSON ({exc.msg})"))
    return rows


FORMATS: dict[str, Callable[[Path], list[Row]]] = {
    "pyiqa": read_pyiqa,
    "text": read_label_txt,
    "vqr1": read_label_txt,
    "csv": read_csv_labels,
    "json": read_json,
    "jsonl": read_jsonl,
    "agiqa3k": read_agiqa3k,
}

_PYIQA_COLUMNS = {"img_name", "dist_name", "dis_name", "ref_name", "hq_name", "elo_score"}


def detect_format(path: Path | str) -> str:
    """Guess the format of a label file from its extension and first line."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return "json"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    lines = _data_lines(_read_text(path))
    if not lines:
        raise DatasetError(f"{path}:1: empty label file")
    first = lines[0][1]
    if first.startswith("{"):
        return "jsonl"
    if first.startswith("["):
        return "json"
    if not _looks_like_header(first):
        return "text"
    keys = {_norm_key(k) for k in re.split(r"[,;\t]|\s+", first) if k}
    if {"generator", "prompt"} <= keys:
        return "agiqa3k"
    return "pyiqa" if keys & _PYIQA_COLUMNS else "csv"


def read_rows(path: Path | str, fmt: str | None = None) -> list[Row]:
    """Read a label file in ``fmt`` (one of :data:`FORMATS`), detected when ``None``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: label file not found")
    name = (fmt or detect_format(path)).lower()
    if name not in FORMATS:
        raise DatasetError(f"unknown label format {fmt!r} (known: {', '.join(FORMATS)})")
    return FORMATS[name](path)


# ----------------------------------------------------------------------------- validation


def _number(value: object) -> float | None:
    """``value`` as a finite float, or ``None``."""
    if value is None or isinstance(value, bool):
        return None
    try:
        out = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):  # OverflowError: a JSON integer past 1e308
        return None
    return out if math.isfinite(out) else None


def _inside(path: Path, root: Path) -> bool:
    """Whether ``path`` lies in ``root`` (both already absolute)."""
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _shown(value: object, limit: int = 80) -> str:
    """``repr(value)`` for a message, its middle elided when it is long."""
    text = repr(value)
    if len(text) > limit:
        text = f"{text[: limit // 2]}...{text[-limit // 2 :]}"
    return text


def _fs_error(exc: BaseException) -> str:
    """A short reason for a file-system error (``OSError``, symlink loop, unencodable name)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    if isinstance(exc, RuntimeError):  # pathlib's "Symlink loop from ..." (Python < 3.13)
        return "symlink loop"
    if isinstance(exc, UnicodeError):
        return "name not encodable on this file system"
    return type(exc).__name__


def _relative(raw: str, root: Path, root_real: Path) -> tuple[str | None, str | None]:
    """``raw`` as a POSIX path relative to the root, or ``(None, reason)`` if it escapes.

    A name the file system refuses (too long, a symlink loop, not encodable)
    is a reason too, never an exception.
    """
    text = raw.strip().replace("\\", "/")
    if not text or "\x00" in text:
        return None, "empty or invalid image name"
    if posixpath.isabs(text):
        norm = Path(posixpath.normpath(text))
        base = next((b for b in (root.absolute(), root_real) if _inside(norm, b)), None)
        if base is None:
            return None, f"absolute path {raw!r} lies outside the dataset root"
        text = norm.relative_to(base).as_posix()
    norm_rel = posixpath.normpath(text)
    if norm_rel in (".", "..") or norm_rel.startswith("../"):
        return None, f"path {raw!r} points outside the dataset root"
    try:
        real = (root / norm_rel).resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        return None, f"path {_shown(raw)} cannot be resolved ({_fs_error(exc)})"
    if not _inside(real, root_real):
        return None, f"path {raw!r} resolves outside the dataset root (symlink)"
    return norm_rel, None


def _is_file(path: Path) -> tuple[bool, str | None]:
    """Whether ``path`` is a file, and why it could not be checked (``None`` if it could)."""
    try:
        return path.is_file(), None
    except (OSError, RuntimeError, ValueError) as exc:
        return False, _fs_error(exc)


def _check_row(
    row: Row, root: Path, root_real: Path, check_files: bool
) -> tuple[Sample | None, list[str]]:
    """Validate one row: the sample (or ``None`` if dropped) and its problem lines."""
    if row.error:
        return None, [f"{row.where}: {row.error}; skipped"]
    mos = _number(row.mos)
    if mos is None:
        hint = _comma_hint(row.mos)
        return None, [f"{row.where}: MOS {_shown(row.mos)} is not a finite number{hint}; skipped"]
    image, why = _relative(row.image, root, root_real)
    if image is None:
        return None, [f"{row.where}: {why}; skipped"]
    if check_files:
        found, why = _is_file(root / image)
        if why is not None:
            return None, [f"{row.where}: image {_shown(image)} cannot be read ({why}); skipped"]
        if not found:
            return None, [f"{row.where}: image not found: {image}; skipped"]
    notes: list[str] = []
    std = _number(row.std)
    if row.std not in (None, "") and (std is None or std < 0):
        notes.append(
            f"{row.where}: std {_shown(row.std)} is not a finite non-negative number; std dropped"
        )
        std = None
    ref = None
    if row.ref not in (None, ""):
        ref, why = _relative(str(row.ref), root, root_real)
        if ref is None:
            notes.append(f"{row.where}: reference {why}; reference dropped")
    split = (str(row.split).strip() or None) if row.split is not None else None
    labels = _check_attributes(row, notes)
    return Sample(image=image, mos=mos, std=std, split=split, ref=ref, attributes=labels), notes


def _comma_hint(value: object) -> str:
    """A hint when ``value`` is a number written with a decimal comma (``"3,5"``)."""
    if isinstance(value, str) and "," in value and _number(value.replace(",", ".")) is not None:
        return " (a decimal comma? write it with a decimal point)"
    return ""


def _check_attributes(row: Row, notes: list[str]) -> dict[str, float]:
    """The row's attribute labels as floats; empty values are no label, bad ones are noted."""
    labels: dict[str, float] = {}
    for key, raw in row.attributes.items():
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            continue
        value = _number(raw)
        if value is None:
            notes.append(
                f"{row.where}: {key} label {_shown(raw)} is not a finite number; label dropped"
            )
        else:
            labels[key] = value
    return labels


def _attribute_notes(samples: Sequence[Sample]) -> list[str]:
    """One note per attribute label key that no rubric attribute predicts."""
    keys = {k for s in samples for k in s.attributes} - set(ATTRIBUTE_KEYS)
    return [
        f"attribute label {key!r} is not a rubric attribute ({', '.join(ATTRIBUTE_KEYS)}): "
        "kept, but no prediction can match it"
        for key in sorted(keys)
    ]


def validate_rows(
    rows: Sequence[Row], root: Path, *, check_files: bool = True
) -> tuple[list[Sample], list[str]]:
    """Turn rows into samples, dropping and reporting invalid and duplicate ones."""
    try:
        root_real = root.resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise DatasetError(f"{root}: image root cannot be resolved ({_fs_error(exc)})") from exc
    samples: list[Sample] = []
    problems: list[str] = []
    first_seen: dict[str, str] = {}
    for row in rows:
        sample, notes = _check_row(row, root, root_real, check_files)
        if sample is not None and sample.image in first_seen:
            notes = [
                f"{row.where}: duplicate of {first_seen[sample.image]} ({sample.image}); kept the first"
            ]
            sample = None
        problems.extend(notes)
        if sample is not None:
            first_seen[sample.image] = row.where
            samples.append(sample)
    return samples, problems


# ----------------------------------------------------------------------------- scale


def _fits(values: Sequence[float], rng: tuple[float, float]) -> bool:
    """Whether every value lies in ``rng`` (with a little slack for rounding)."""
    eps = 1e-6 * max(1.0, abs(rng[1] - rng[0]))
    return all(rng[0] - eps <= v <= rng[1] + eps for v in values)


def _fmt_range(rng: tuple[float, float]) -> str:
    return f"[{rng[0]:g}, {rng[1]:g}]"


def _alt_scale_note(
    bench: Benchmark, rng: tuple[float, float], data_range: tuple[float, float]
) -> list[str]:
    """A note when the data needed an alternative registry scale (none for the nominal one)."""
    if rng == bench.mos_range or bench.mos_range is None:
        return []
    return [
        f"{bench.display_name}: MOS values reach {data_range[1]:g}, beyond the nominal "
        f"{_fmt_range(bench.mos_range)}; using the {_fmt_range(rng)} scale some label files use"
    ]


def choose_scale(
    name: str, bench: Benchmark | None, values: Sequence[float]
) -> tuple[tuple[float, float], bool, list[str], list[str]]:
    """The MOS range and direction for the data, with (notes, suspicious) problem lines.

    Known benchmarks use the first registry range containing all values; an
    unknown name or an unconfirmed scale uses the data's min/max and higher-is-
    better. Values outside every registry range are reported as suspicious.
    """
    data_range = (min(values), max(values))
    if bench is None:
        close = suggest(name)
        hint = f" (did you mean {close!r}?)" if close else ""
        note = (
            f"{name!r} is not in the benchmark registry{hint}: MOS range {_fmt_range(data_range)} "
            "inferred from the data, higher is better assumed"
        )
        return data_range, True, [note], []
    if bench.mos_range is None:
        note = (
            f"{bench.display_name}: MOS scale not confirmed; range {_fmt_range(data_range)} "
            "inferred from the data"
        )
        return data_range, bench.higher_better, [note], []
    for rng in bench.ranges():
        if _fits(values, rng):
            return rng, bench.higher_better, _alt_scale_note(bench, rng, data_range), []
    outside = sum(not _fits([v], bench.mos_range) for v in values)
    bad = (
        f"{bench.display_name}: {outside} of {len(values)} MOS values lie outside "
        f"{_fmt_range(bench.mos_range)} (data {_fmt_range(data_range)}); they normalize to the ends"
    )
    return bench.mos_range, bench.higher_better, [], [bad]


# ----------------------------------------------------------------------------- loading


def parse_spec(spec: str) -> tuple[str, Path, Path]:
    """Split ``NAME=LABELS[:ROOT]`` into name, label file and image root.

    ROOT defaults to the label file's folder, or its ``images/`` subfolder when
    that exists.
    """
    name, sep, rest = spec.partition("=")
    if not sep or not name.strip() or not rest.strip():
        raise DatasetError(f"bad dataset spec {spec!r}: expected NAME=LABELS[:ROOT]")
    if Path(rest).is_file() or ":" not in rest:
        labels, root_text = rest, ""
    else:
        labels, _, root_text = rest.partition(":")
    labels_path = Path(labels).expanduser()
    root = Path(root_text).expanduser() if root_text else default_root(labels_path)
    return name.strip(), labels_path, root


def default_root(labels: Path) -> Path:
    """The label file's folder, or its ``images/`` subfolder when that exists."""
    images = labels.parent / "images"
    return images if images.is_dir() else labels.parent


def _strict_error(labels: Path, problems: list[str]) -> DatasetError:
    """A :class:`DatasetError` listing (at most 50 of) the problems."""
    shown = problems[:50]
    more = f"\n  ... and {len(problems) - 50} more" if len(problems) > 50 else ""
    return DatasetError(f"{labels}: {len(problems)} problem(s):\n  " + "\n  ".join(shown) + more)


def load_labels(
    name: str,
    labels: Path | str,
    root: Path | str | None = None,
    *,
    fmt: str | None = None,
    split: str | None = None,
    strict: bool = False,
    check_files: bool = True,
) -> Dataset:
    """Read and validate a label file as dataset ``name`` (looked up in the registry).

    ``root`` defaults as in :func:`parse_spec`. With ``strict=True`` any dropped
    row or out-of-range score raises :class:`DatasetError`; notes about the
    scale (unknown name, inferred range) never do. ``check_files=False`` skips
    the existence check (labels only).
    """
    labels = Path(labels)
    root = default_root(labels) if root is None else Path(root)
    if check_files and not root.is_dir():
        raise DatasetError(f"{root}: image root is not a folder")
    samples, problems = validate_rows(read_rows(labels, fmt), root, check_files=check_files)
    if not samples:
        raise _strict_error(labels, problems or ["no samples"])
    bench = find(name)
    rng, higher, notes, suspicious = choose_scale(name, bench, [s.mos for s in samples])
    if strict and (problems or suspicious):
        raise _strict_error(labels, problems + suspicious)
    display = bench.display_name if bench else name
    notes += _attribute_notes(samples)
    ds = Dataset(display, root, samples, rng, higher, notes + suspicious + problems)
    return ds.select(split) if split else ds


def load_dataset(
    spec: str,
    *,
    split: str | None = None,
    strict: bool = False,
    fmt: str | None = None,
    check_files: bool = True,
) -> Dataset:
    """Load ``NAME=LABELS[:ROOT]`` (see :func:`parse_spec` and :func:`load_labels`)."""
    name, labels, root = parse_spec(spec)
    return load_labels(
        name, labels, root, fmt=fmt, split=split, strict=strict, check_files=check_files
    )
