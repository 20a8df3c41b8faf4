"""Graded-distortion benchmark (KADID-10K style): does a quality score fall as a
distortion grows?

Each natural reference photo is distorted with one *kind* of distortion at five
increasing *levels* (1 = mild ... 5 = severe); the clean reference is level 0.
A scorer (a plain callable ``rgb -> float``, higher = better) is read on the
six images of each (reference, kind) *group* and judged on how monotone it is:

* ``spearman``: Spearman's rho between the levels ``0..5`` and the negated
  scores, ``spearmanr(levels, -scores)`` -- 1 when the score falls at every
  step, -1 when it rises; ties ranked as scipy does; a constant score gives 0
  (no information), never NaN;
* ``fully_monotone``: the scores fall strictly at every step,
  ``s0 > s1 > ... > s5``.

A :class:`GradedReport` gives, per kind, the mean Spearman over groups and the
share of fully monotone groups, and the mean of both over kinds.

References (:data:`REFERENCES`), each resized so that its long side is
:data:`LONG_SIDE` px (LANCZOS), RGB uint8, grey photos stacked to 3 channels:

* photos bundled inside scikit-image (``skimage/data/*.png|jpg``, files of the
  installed package, read with Pillow -- never fetched, never through pooch);
* the five TID2013 references in ``../shared/data/calibration/ref`` (read in
  place, never copied; skipped with a reason when the folder is absent).

They are split into :data:`TUNING_REFERENCES` (for choosing a scorer's
parameters) and :data:`HELD_OUT_REFERENCES` (for reporting, the default of
:func:`evaluate`): tune on the first, report on the second, never the reverse.

Distortions (:data:`KINDS`), deterministic (seeded noise, fixed motion angle),
shape and dtype preserving; the ladders follow KADID-10K's (Lin, Hosu, Saupe,
QoMEX 2019) generator as re-implemented in ARNIQA's ``utils/utils_data.py``
(``distortion_range``, github.com/miccunifi/ARNIQA) where
that gives clearly separated levels, and are widened where KADID's first levels
are nearly invisible or nearly equal (its Gaussian-blur sigma 0.1, its JPEG
qualities 43/36/24); see each :class:`Kind`'s ``ladder`` and ``note``.

>>> spearman([5.0, 4.0, 3.0, 2.0, 1.0, 0.5]), fully_monotone([5.0, 4.0, 3.0, 2.0, 1.0, 0.5])
(1.0, True)
>>> spearman([3.0] * 6), fully_monotone([3.0] * 6)
(0.0, False)
"""

from __future__ import annotations

import asyncio
import importlib.util
import io
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage, signal, stats

__all__ = [
    "ALL_KINDS",
    "HELD_OUT_REFERENCES",
    "KINDS",
    "LEVELS",
    "LONG_SIDE",
    "REFERENCES",
    "TID2013_REF_DIR",
    "TUNING_REFERENCES",
    "AssessScorer",
    "GradedReport",
    "GradedSet",
    "GroupResult",
    "Kind",
    "KindSummary",
    "MetricScorer",
    "Reference",
    "ReferenceUnavailable",
    "Scorer",
    "comparison_table",
    "default_scorer",
    "evaluate",
    "fully_monotone",
    "group_scores",
    "load_reference",
    "metric_scorer",
    "motion_kernel",
    "spearman",
]

Scorer = Callable[[np.ndarray], float]
"""``rgb uint8 HxWx3 -> float``, higher = better quality."""

LONG_SIDE = 512
LEVELS = (1, 2, 3, 4, 5)
NOISE_SEED = 20261205
MOTION_ANGLE = 30.0  # degrees, counter-clockwise from the x axis
TID2013_REF_DIR = Path(
    os.environ.get("TOOLIQA_TID2013_REFS")
    or Path(__file__).resolve().parents[2].parent / "shared" / "data" / "calibration" / "ref"
)
"""Where the TID2013 references are read from: ``TOOLIQA_TID2013_REFS``, else
``../shared/data/calibration/ref`` of the checkout (absent in an installed copy: those
references are then skipped)."""


# -- references -------------------------------------------------------------------


class ReferenceUnavailable(LookupError):
    """A reference photo cannot be read here (package or folder missing); the message
    says why."""


@dataclass(frozen=True)
class Reference:
    """One reference photo: where it is read from, its source and licence."""

    name: str
    file: str  # file name inside skimage/data, or inside TID2013_REF_DIR
    origin: str  # "skimage" or "tid2013"
    grey: bool
    source: str
    licence: str

    def path(self, tid_dir: Path | None = None) -> Path:
        """The file, or :class:`ReferenceUnavailable` with the reason."""
        if self.origin == "skimage":
            spec = importlib.util.find_spec("skimage")
            if spec is None or spec.origin is None:
                raise ReferenceUnavailable(
                    f"{self.name}: scikit-image is not installed (pip install 'scikit-image>=0.24')"
                )
            folder = Path(spec.origin).parent / "data"
        else:
            folder = tid_dir or TID2013_REF_DIR
        path = folder / self.file
        if not path.is_file():
            raise ReferenceUnavailable(f"{self.name}: {path} is absent")
        return path


_SKIMAGE = "skimage/data/{} (bundled with scikit-image)"
_CC0 = "CC0 1.0 (public-domain dedication)"
_TID_SOURCE = (
    "TID2013 reference {} (Ponomarenko et al., Signal Processing: Image Communication "
    "30, 2015): a Kodak Lossless True Color Image Suite photo cropped to 512x384"
)
_TID_LICENCE = (
    "TID2013 readme terms (as TID2008's): educational and research use, without fee, with the copyright "
    "notice and authors' names kept; read in place from ../shared/data, never copied"
)


def _sk(name: str, file: str, source: str, licence: str, grey: bool = False) -> Reference:
    return Reference(name, file, "skimage", grey, f"{_SKIMAGE.format(file)}: {source}", licence)


def _tid(name: str) -> Reference:
    return Reference(
        f"tid2013_{name}", f"{name}.bmp", "tid2013", False, _TID_SOURCE.format(name), _TID_LICENCE
    )


REFERENCES: dict[str, Reference] = {
    r.name: r
    for r in (
        _sk(
            "astronaut",
            "astronaut.png",
            "Eileen Collins, NASA Great Images database",
            "public domain (NASA; no known copyright restrictions)",
        ),
        _sk("chelsea", "chelsea.png", "Chelsea the cat, photo by Stefan van der Walt", _CC0),
        _sk("coffee", "coffee.png", "coffee cup, photo by Rachel Michetti", _CC0),
        _sk(
            "rocket",
            "rocket.jpg",
            "Falcon 9 / DSCOVR launch, SpaceX Photos on Flickr",
            "public domain (released by SpaceX)",
        ),
        _sk("grass", "grass.png", "grass texture, DeviantArt 'Grass-01' by linolafett", _CC0, True),
        _sk("brick", "brick.png", "brick wall, CC0Textures 'Bricks25'", _CC0, True),
        _sk("camera", "camera.png", "photographer with camera, photo by Lav Varshney", _CC0, True),
        _sk(
            "motorcycle_left",
            "motorcycle_left.png",
            "left view of skimage.data.stereo_motorcycle(): Middlebury 2014 stereo "
            "benchmark (Scharstein et al., GCPR 2014), down-sampled x4",
            "no licence stated in scikit-image's docstring, which credits Scharstein et al. "
            "2014; distributed inside scikit-image's BSD-3 package",
        ),
        _sk("gravel", "gravel.png", "gravel texture, CC0Textures 'Gravel04'", _CC0, True),
        *(_tid(n) for n in ("I03", "I04", "I06", "I08", "I19")),
    )
}
"""Every reference this benchmark knows, by name."""

TUNING_REFERENCES: tuple[str, ...] = ("astronaut", "chelsea", "coffee", "rocket", "grass", "brick")
"""References on which a scorer may be tuned (4 colour photos, 2 grey textures)."""

HELD_OUT_REFERENCES: tuple[str, ...] = (
    "tid2013_I03",
    "tid2013_I04",
    "tid2013_I06",
    "tid2013_I08",
    "tid2013_I19",
    "camera",
    "motorcycle_left",
    "gravel",
)
"""References to report on, never to tune on (6 colour photos, 2 grey)."""


def load_reference(name: str, *, tid_dir: Path | None = None) -> np.ndarray:
    """Reference ``name`` as RGB uint8 with its long side :data:`LONG_SIDE` (LANCZOS);
    :class:`ReferenceUnavailable` when it cannot be read here."""
    if name not in REFERENCES:
        raise KeyError(f"unknown reference {name!r}; known: {', '.join(REFERENCES)}")
    with Image.open(REFERENCES[name].path(tid_dir)) as im:
        rgb = im.convert("RGB")
    w, h = rgb.size
    if max(w, h) != LONG_SIDE:
        scale = LONG_SIDE / max(w, h)
        rgb = rgb.resize((round(w * scale), round(h * scale)), Image.Resampling.LANCZOS)
    return np.asarray(rgb, dtype=np.uint8)


# -- distortions ------------------------------------------------------------------


def _to_uint8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _luma(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma, float, HxWx1."""
    return (rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]))[..., None]


def _gaussian_blur(rgb: np.ndarray, sigma: float) -> np.ndarray:
    out = ndimage.gaussian_filter(rgb.astype(np.float64), sigma=(sigma, sigma, 0), mode="reflect")
    return _to_uint8(out)


def motion_kernel(length: int, angle: float = MOTION_ANGLE) -> np.ndarray:
    """A normalised line kernel ``length`` px long at ``angle`` degrees (counter-clockwise),
    drawn with bilinear splats; square, odd-sized."""
    size = length + 3 - length % 2  # odd, with a pixel of margin for the splats
    c = size // 2
    t = np.linspace(-(length - 1) / 2, (length - 1) / 2, 8 * length)
    x = c + t * math.cos(math.radians(angle))
    y = c - t * math.sin(math.radians(angle))
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    k = np.zeros((size, size))
    for dy, dx, w in (
        (0, 0, (1 - fx) * (1 - fy)),
        (0, 1, fx * (1 - fy)),
        (1, 0, (1 - fx) * fy),
        (1, 1, fx * fy),
    ):
        np.add.at(k, (y0 + dy, x0 + dx), w)
    return k / k.sum()


def _motion_blur(rgb: np.ndarray, length: float) -> np.ndarray:
    k = motion_kernel(int(length))
    r = k.shape[0] // 2
    padded = np.pad(rgb.astype(np.float64), ((r, r), (r, r), (0, 0)), mode="reflect")
    out = signal.fftconvolve(padded, k[..., None], mode="valid", axes=(0, 1))
    return _to_uint8(out)


def _white_noise(rgb: np.ndarray, sigma: float) -> np.ndarray:
    rng = np.random.default_rng([NOISE_SEED, round(sigma * 1000)])
    return _to_uint8(rgb + rng.normal(0.0, sigma, rgb.shape))


def _codec(rgb: np.ndarray, fmt: str, quality: float) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _jpeg(rgb: np.ndarray, quality: float) -> np.ndarray:
    return _codec(rgb, "JPEG", quality)


def _webp(rgb: np.ndarray, quality: float) -> np.ndarray:
    return _codec(rgb, "WEBP", quality)


def _darken(rgb: np.ndarray, gamma: float) -> np.ndarray:
    return _to_uint8(255.0 * (rgb / 255.0) ** gamma)


def _brighten(rgb: np.ndarray, stops: float) -> np.ndarray:
    """Over-exposure by ``stops`` EV: linear light (sRGB ~ gamma 2.2) times ``2**stops``,
    clipped, re-encoded -- the highlights burn out first."""
    linear = (rgb / 255.0) ** 2.2 * 2.0**stops
    return _to_uint8(255.0 * np.minimum(linear, 1.0) ** (1 / 2.2))


def _contrast(rgb: np.ndarray, keep: float) -> np.ndarray:
    mean = float(_luma(rgb).mean())
    return _to_uint8(mean + keep * (rgb - mean))


def _saturation(rgb: np.ndarray, keep: float) -> np.ndarray:
    grey = _luma(rgb)
    return _to_uint8(grey + keep * (rgb - grey))


def _resample(rgb: np.ndarray, factor: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    small = Image.fromarray(rgb).resize(
        (max(1, round(w / factor)), max(1, round(h / factor))), Image.Resampling.BILINEAR
    )
    return np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), dtype=np.uint8)


@dataclass(frozen=True)
class Kind:
    """One distortion kind: ``kind(rgb, level)`` applies ``fn(rgb, ladder[level - 1])``.

    ``colour_only``: the kind changes nothing a grey photo has (saturation), so it is
    not applied to grey references.
    """

    name: str
    fn: Callable[[np.ndarray, float], np.ndarray]
    ladder: tuple[float, ...]
    unit: str
    note: str = ""
    colour_only: bool = False

    def __call__(self, rgb: np.ndarray, level: int) -> np.ndarray:
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB uint8 HxWx3 array, got {rgb.dtype} {rgb.shape}")
        return self.fn(rgb, self.ladder[level - 1])


KINDS: dict[str, Kind] = {
    k.name: k
    for k in (
        Kind(
            "gaussian_blur",
            _gaussian_blur,
            (0.6, 1.2, 2.0, 3.2, 5.0),
            "sigma (px)",
            "KADID: 0.1, 0.5, 1, 2, 5; its first levels are barely visible, widened",
        ),
        Kind(
            "motion_blur",
            _motion_blur,
            (3, 5, 9, 13, 21),
            f"line length (px) at {MOTION_ANGLE:g} degrees",
            "KADID: radius 1, 2, 4, 6, 10 at a random angle; here length 2r+1, fixed angle",
        ),
        Kind(
            "white_noise",
            _white_noise,
            (4.0, 8.0, 14.0, 22.0, 35.0),
            "Gaussian sigma on 0-255, per RGB channel, seeded",
            "KADID: variance 0.001-0.01 on [0, 1], i.e. sigma 8-25.5 on 0-255; widened",
        ),
        Kind(
            "jpeg",
            _jpeg,
            (43, 12, 7, 4, 2),
            "Pillow JPEG quality (4:2:0)",
            "KADID: 43, 36, 24, 7, 4; its first three levels are close, spread out",
        ),
        Kind(
            "webp",
            _webp,
            (50, 20, 10, 5, 1),
            "Pillow WebP quality (lossy)",
            "not in KADID; chosen to grade like the JPEG ladder",
        ),
        Kind(
            "darken",
            _darken,
            (1.4, 1.9, 2.5, 3.1, 3.6),
            "gamma g of I**g on [0, 1]",
            "KADID darkens with a tone curve; a power law graded the same way",
        ),
        Kind(
            "brighten",
            _brighten,
            (0.5, 1.0, 1.5, 2.0, 3.0),
            "exposure stops (EV) in linear light, clipped: x1.17 ... x2.57 on sRGB values",
            "KADID brightens with a tone curve; here over-exposure that clips highlights",
        ),
        Kind(
            "contrast",
            _contrast,
            (0.75, 0.55, 0.40, 0.28, 0.18),
            "share of contrast kept (blend towards the mean grey)",
            "KADID's linear contrast change, reductions only",
        ),
        Kind(
            "saturation",
            _saturation,
            (0.7, 0.5, 0.3, 0.15, 0.0),
            "share of colour kept (blend towards BT.601 luma)",
            "KADID colour saturation 1 (HSV S x 0.4 ... 0)",
            colour_only=True,
        ),
        Kind(
            "resample",
            _resample,
            (1.5, 2.0, 3.0, 4.0, 6.0),
            "factor: bilinear down, bicubic back up",
            "KADID's pixelate uses nearest neighbour; this is the smooth kind",
        ),
    )
}
"""Distortion kinds by name, in report order."""

ALL_KINDS: tuple[str, ...] = tuple(KINDS)


# -- the image set ----------------------------------------------------------------


class GradedSet:
    """References and their distorted images for one run, generated once and kept in
    memory (a reference is ~0.6-0.8 MB; 9 references x 10 kinds x 5 levels ~ 0.4 GB).

    ``image(ref, kind, 0)`` is the reference itself.
    """

    def __init__(self, *, tid_dir: Path | None = None) -> None:
        self.tid_dir = tid_dir
        self._refs: dict[str, np.ndarray] = {}
        self._images: dict[tuple[str, str, int], np.ndarray] = {}

    def reference(self, name: str) -> np.ndarray:
        if name not in self._refs:
            ref = load_reference(name, tid_dir=self.tid_dir)
            ref.setflags(write=False)
            self._refs[name] = ref
        return self._refs[name]

    def image(self, reference: str, kind: str, level: int) -> np.ndarray:
        if level == 0:
            return self.reference(reference)
        key = (reference, kind, level)
        if key not in self._images:
            img = _kind(kind)(self.reference(reference), level)
            img.setflags(write=False)
            self._images[key] = img
        return self._images[key]

    def group(self, reference: str, kind: str) -> list[np.ndarray]:
        """The six images of a group: the reference, then levels 1..5."""
        return [self.image(reference, kind, level) for level in (0, *LEVELS)]

    def applies(self, reference: str, kind: str) -> bool:
        """False where the kind means nothing for the reference (saturation on grey)."""
        return not (_kind(kind).colour_only and REFERENCES[reference].grey)


def _kind(name: str) -> Kind:
    if name not in KINDS:
        raise KeyError(f"unknown distortion kind {name!r}; known: {', '.join(KINDS)}")
    return KINDS[name]


# -- metrics ----------------------------------------------------------------------


def _finite_or_worst(scores: Sequence[float]) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64)
    return np.where(np.isnan(s), -np.inf, s)  # an undefined score ranks worst


def spearman(scores: Sequence[float]) -> float:
    """Spearman's rho between the levels ``0..n-1`` and ``-scores`` (1 = falls at every
    step); 0.0 for a constant list. A NaN score ranks worst.

    >>> spearman([1.0, 2.0, 3.0])
    -1.0
    """
    s = _finite_or_worst(scores)
    if s.size < 2 or np.all(s == s[0]):
        return 0.0
    rho = float(stats.spearmanr(np.arange(s.size), -s).statistic)
    return 0.0 if math.isnan(rho) else rho


def fully_monotone(scores: Sequence[float]) -> bool:
    """True when every score is strictly below the one before (``s0 > s1 > ...``)."""
    s = _finite_or_worst(scores)
    return bool(s.size >= 2 and np.all(s[:-1] > s[1:]))


@dataclass(frozen=True)
class GroupResult:
    """The scores of one (reference, kind) group, level 0 (clean) first."""

    reference: str
    kind: str
    scores: tuple[float, ...]

    @property
    def spearman(self) -> float:
        return spearman(self.scores)

    @property
    def fully_monotone(self) -> bool:
        return fully_monotone(self.scores)


@dataclass(frozen=True)
class KindSummary:
    kind: str
    groups: int
    mean_spearman: float
    monotone_share: float


@dataclass
class GradedReport:
    """Per-group scores of one scorer and their summary per kind.

    ``skipped``: reference (or ``reference/kind``) -> why it was not evaluated.
    ``score_seconds`` / ``images``: time spent inside the scorer, images scored.
    """

    scorer: str
    references: tuple[str, ...]
    kinds: tuple[str, ...]
    groups: list[GroupResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    score_seconds: float = 0.0
    images: int = 0

    @property
    def per_kind(self) -> dict[str, KindSummary]:
        out = {}
        for kind in self.kinds:
            gs = [g for g in self.groups if g.kind == kind]
            if gs:
                out[kind] = KindSummary(
                    kind,
                    len(gs),
                    float(np.mean([g.spearman for g in gs])),
                    sum(g.fully_monotone for g in gs) / len(gs),
                )
        return out

    @property
    def mean_spearman(self) -> float:
        """Mean over kinds of the per-kind mean Spearman (NaN without groups)."""
        values = [k.mean_spearman for k in self.per_kind.values()]
        return float(np.mean(values)) if values else math.nan

    @property
    def monotone_share(self) -> float:
        """Mean over kinds of the per-kind share of fully monotone groups."""
        values = [k.monotone_share for k in self.per_kind.values()]
        return float(np.mean(values)) if values else math.nan

    @property
    def seconds_per_image(self) -> float:
        return self.score_seconds / self.images if self.images else math.nan

    def as_dict(self) -> dict[str, Any]:
        return {
            "scorer": self.scorer,
            "references": list(self.references),
            "kinds": list(self.kinds),
            "mean_spearman": self.mean_spearman,
            "monotone_share": self.monotone_share,
            "per_kind": {
                k: {
                    "groups": s.groups,
                    "mean_spearman": s.mean_spearman,
                    "monotone_share": s.monotone_share,
                }
                for k, s in self.per_kind.items()
            },
            "groups": [
                {
                    "reference": g.reference,
                    "kind": g.kind,
                    "scores": list(g.scores),
                    "spearman": g.spearman,
                    "fully_monotone": g.fully_monotone,
                }
                for g in self.groups
            ],
            "skipped": dict(self.skipped),
            "images": self.images,
            "seconds_per_image": self.seconds_per_image,
        }

    def as_table(self) -> str:
        return comparison_table({self.scorer: self})


def comparison_table(reports: Mapping[str, GradedReport]) -> str:
    """Rows: kinds, then the mean over kinds; one column per report, each cell
    ``mean Spearman / share fully monotone``."""
    kinds: list[str] = []
    for r in reports.values():
        kinds += [k for k in r.kinds if k not in kinds]
    width = max(16, *(len(name) + 2 for name in reports))
    head = f"{'kind':<14}" + "".join(f"{name:>{width}}" for name in reports)
    lines = [head, "-" * len(head)]

    def cell(rho: float, share: float) -> str:
        return f"{rho:+.3f} / {share:4.0%}" if not math.isnan(rho) else "—"

    for kind in kinds:
        row = f"{kind:<14}"
        for r in reports.values():
            s = r.per_kind.get(kind)
            row += f"{cell(s.mean_spearman, s.monotone_share) if s else '—':>{width}}"
        lines.append(row)
    lines.append("-" * len(head))
    lines.append(
        f"{'mean':<14}"
        + "".join(f"{cell(r.mean_spearman, r.monotone_share):>{width}}" for r in reports.values())
    )
    return "\n".join(lines)


# -- evaluation -------------------------------------------------------------------


def _scorer_name(scorer: Scorer) -> str:
    return str(getattr(scorer, "__name__", type(scorer).__name__))


def evaluate(
    scorer: Scorer,
    references: Iterable[str] = HELD_OUT_REFERENCES,
    kinds: Iterable[str] = ALL_KINDS,
    *,
    images: GradedSet | None = None,
) -> GradedReport:
    """Score every (reference, kind) group with ``scorer`` (pass one ``images`` set to
    several calls to generate the distorted images once). References that cannot be
    read here, and colour-only kinds on grey references, are skipped with a reason."""
    images = GradedSet() if images is None else images
    refs, kinds = tuple(references), tuple(kinds)
    for k in kinds:
        _kind(k)
    report = GradedReport(_scorer_name(scorer), refs, kinds)
    for ref in refs:
        try:
            images.reference(ref)
        except ReferenceUnavailable as exc:
            report.skipped[ref] = str(exc)
            continue
        for kind in kinds:
            if not images.applies(ref, kind):
                report.skipped[f"{ref}/{kind}"] = "grey photo: colour loss is no distortion"
                continue
            t0 = time.perf_counter()
            scores = tuple(float(scorer(img)) for img in images.group(ref, kind))
            report.score_seconds += time.perf_counter() - t0
            report.images += len(scores)
            report.groups.append(GroupResult(ref, kind, scores))
    return report


def group_scores(
    scorer: Scorer, reference: str, kind: str, *, images: GradedSet | None = None
) -> list[float]:
    """The scores of one group, level 0 (the clean reference) first: what a test of a
    product's monotonicity asserts on, e.g. ``spearman(group_scores(...)) > 0.9``."""
    images = GradedSet() if images is None else images
    return [float(scorer(img)) for img in images.group(reference, kind)]


# -- scorers ----------------------------------------------------------------------


class AssessScorer:
    """The project's offline default: :func:`tooliqa.api.aassess` with the classic
    backend (``make_context(max_rounds=...)``) on the PNG-encoded image; its score.

    Runs its own event loop per call: do not call it from inside a running loop.
    """

    def __init__(self, max_rounds: int = 2) -> None:
        self.__name__ = "ours"
        self.max_rounds = max_rounds
        self._context: Any = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_context": None}  # a context holds a model: rebuilt

    def __call__(self, rgb: np.ndarray) -> float:
        from tooliqa.api import aassess, make_context

        if self._context is None:
            self._context = make_context(max_rounds=self.max_rounds)
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
        result = asyncio.run(aassess(buf.getvalue(), context=self._context))
        if result.score is None:
            raise RuntimeError(f"the assessment gave no score: {result.error}")
        return float(result.score)


def default_scorer(max_rounds: int = 2) -> AssessScorer:
    """The offline default scorer (classic backend through the graph)."""
    return AssessScorer(max_rounds)


class MetricScorer:
    """A classic metric of :mod:`tooliqa.tools.iqa_tools` (``measure(rgb, metric).raw``)
    read so that higher = better: negated for NIQE, BRISQUE, PIQE (lower raw = better,
    ``IqaMetric.higher_is_better``). Where the metric is undefined (NIQE without a
    textured patch) the score is ``-inf``, ranked worst."""

    def __init__(self, metric: str) -> None:
        from tooliqa.tools.iqa_tools import IQA_METRICS

        if metric not in IQA_METRICS:
            raise KeyError(f"unknown metric {metric!r}; known: {', '.join(IQA_METRICS)}")
        self.metric = metric
        self.sign = 1.0 if IQA_METRICS[metric].higher_is_better else -1.0
        self.__name__ = metric

    def __call__(self, rgb: np.ndarray) -> float:
        from tooliqa.tools.iqa_tools import measure
        from tooliqa.tools.views import ToolArgumentError

        try:
            return self.sign * measure(rgb, self.metric).raw
        except ToolArgumentError:
            return -math.inf


def metric_scorer(metric: str) -> MetricScorer:
    """``niqe``, ``brisque``, ``piqe`` (or any :data:`~tooliqa.tools.iqa_tools.IQA_METRICS`
    name) as a higher-is-better scorer."""
    return MetricScorer(metric)
