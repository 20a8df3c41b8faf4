r"""BRISQUE, the Blind/Referenceless Image Spatial Quality Evaluator.

Mittal, Moorthy & Bovik, "No-reference image quality assessment in the spatial
domain", IEEE Trans. Image Processing 21(12), 4695–4708, 2012. Written from the
paper; the SVR parameters are data (``data/brisque_*.npz``, provenance and
licences in ``data/NOTICE.md``). Lower scores mean better quality (about 0–100).

On the grey image ``I`` at two scales (full, then halved):

* MSCN coefficients ``Î = (I - μ) / (σ + C)``, with ``μ`` and ``σ`` the local mean
  and standard deviation under a 7×7 Gaussian window (σ_w = 7/6), ``C = 1`` on
  the 0–255 scale;
* a generalised Gaussian fit of ``Î``: shape ``α`` and variance (2 features);
* an asymmetric GGD fit of each pairwise product ``Î(i,j) Î(i+di,j+dj)`` for the
  horizontal, vertical and both diagonal neighbours: shape ``ν``, mean
  ``η = (σ_r - σ_l) Γ(2/ν)/Γ(1/ν) · sqrt(Γ(1/ν)/Γ(3/ν))``, left and right
  variances ``σ_l², σ_r²`` (4 × 4 features).

Shapes come from moment matching on the grid 0.2, 0.201, …, 10:
``E[x²]/E|x|² = Γ(1/α)Γ(3/α)/Γ(2/α)²`` for the GGD and
``r̂ (γ̂³+1)(γ̂+1)/(γ̂²+1)² = Γ(2/ν)²/(Γ(1/ν)Γ(3/ν))`` with
``γ̂ = σ_l/σ_r``, ``r̂ = E|x|²/E[x²]`` for the AGGD. The 36 features are scaled
linearly to [-1, 1] with the training ranges and fed to an ε-SVR with the RBF
kernel ``exp(-γ |x - sv|²)``: ``score = Σ_i a_i K(x, sv_i) - ρ``, evaluated as
one matrix product against all support vectors.

Two variants, each a published model with the feature details it was trained with:

* ``"live"`` (default): the LIVE release (the authors' MATLAB features and libsvm
  model). Grey ``Y = round(0.298936 R + 0.587043 G + 0.114021 B)`` (MATLAB
  ``rgb2gray``), zero-padded Gaussian filtering, pairwise products with
  wrap-around (``circshift``), scale 2 by MATLAB ``imresize(·, 0.5)`` (bicubic,
  anti-aliased), no clamping. Flat 7×7 neighbourhoods get an MSCN of exactly 0
  (see ``_mscn``). Reproduces the ``brisque`` (Python/libsvm) row of the
  IQA-PyTorch calibration table to 0.002 on images without flat regions
  (``tests/unit/test_brisque.py`` gives the per-image tolerances).
* ``"opencv"``: OpenCV contrib's ``quality::QualityBRISQUE`` and its model
  retrained on LIVE R2. Grey as ``cv::cvtColor`` (rounded BT.601), replicated
  borders, products with zero fill, the MSCN fit by the AGGD routine (variance
  ``(σ_l² + σ_r²)/2``), scale 2 by bicubic interpolation (a = -0.75, no
  anti-aliasing, size floored), float32 arithmetic, score clamped to [0, 100].

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ramp = np.add.outer(np.arange(96.0), np.arange(128.0))
>>> def noisy(s):
...     return np.clip(ramp + rng.normal(0.0, s, ramp.shape), 0, 255).astype(np.uint8)
>>> brisque(noisy(40.0)) > brisque(noisy(2.0))
True
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
from scipy import ndimage, special

__all__ = [
    "MIN_SIDE",
    "VARIANTS",
    "BrisqueModel",
    "Variant",
    "brisque",
    "brisque_features",
    "load_model",
]

Variant = Literal["live", "opencv"]
VARIANTS: tuple[str, ...] = get_args(Variant)
MIN_SIDE = 16
"""Smallest image side accepted: scale 2 is then at least 8 × 8."""

DATA_DIR = Path(__file__).resolve().parent / "data"
_N_FEATURES = 36

# Shape grid and moment ratios shared by both fits. GGD: G(1/a) G(3/a) / G(2/a)^2,
# decreasing in a; the AGGD ratio is its reciprocal.
_GRID = 0.2 + 0.001 * np.arange(9801)
_LG1, _LG2, _LG3 = (special.gammaln(k / _GRID) for k in (1.0, 2.0, 3.0))
_GGD_RATIO = np.exp(_LG1 + _LG3 - 2.0 * _LG2)
_AGGD_RATIO = 1.0 / _GGD_RATIO
# Mean factor of the AGGD: G(2/a)/G(1/a) * sqrt(G(1/a)/G(3/a)).
_MEAN_FACTOR = np.exp(_LG2 - 0.5 * (_LG1 + _LG3))

# Grey weights: MATLAB rgb2gray (first row of the inverse NTSC matrix), and OpenCV's
# fixed-point BT.601 weights scaled by 2^15.
_RGB2GRAY_MATLAB = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
_RGB2GRAY_OPENCV = np.array([9798.0, 19235.0, 3735.0])

# |I - mu| at or below this (0-255 scale) is a flat neighbourhood's round-off: see _mscn.
_SNAP = 1e-9

# Work on blocks of about this many pixels per array (L2-sized) where it pays.
_BLOCK_ELEMENTS = 32768

# Pairwise-product neighbours (row, col): horizontal, vertical, main and anti diagonal.
_SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))


def _gauss_taps() -> np.ndarray:
    k = np.exp(-0.5 * (np.arange(-3, 4) / (7.0 / 6.0)) ** 2)
    return k / k.sum()


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic convolution kernel with parameter ``a``."""
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return np.where(x <= 1.0, near, np.where(x < 2.0, far, 0.0))


# MATLAB imresize(., 0.5, 'bicubic') with anti-aliasing: the kernel is stretched by 2,
# output j is centred on input 2j + 0.5 (0-based), taps 2j-3 .. 2j+4, mirrored borders.
_HALF_TAPS_LIVE = _cubic(np.arange(-3.5, 4.0) / 2.0, -0.5)
_HALF_TAPS_LIVE /= _HALF_TAPS_LIVE.sum()
# OpenCV INTER_CUBIC at scale 0.5: centred on 2j + 0.5, taps 2j-1 .. 2j+2, a = -0.75.
_HALF_TAPS_OPENCV = _cubic(np.arange(-1.5, 2.0), -0.75)


@dataclass(frozen=True)
class BrisqueModel:
    """An ε-SVR with an RBF kernel over the 36 scaled features."""

    support_vectors: np.ndarray  # (n, 36), on the scaled [-1, 1] axis
    dual_coef: np.ndarray  # (n,)
    rho: float
    gamma: float
    feature_range: np.ndarray  # (2, 36): min, max of each feature in training

    def predict(self, features: np.ndarray) -> float:
        """``Σ a_i exp(-γ |x - sv_i|²) - ρ`` for the raw (unscaled) features."""
        lo, hi = self.feature_range
        x = -1.0 + 2.0 * (np.asarray(features, dtype=np.float64) - lo) / (hi - lo)
        d2 = self._sv_sq - 2.0 * (self._sv @ x) + x @ x
        return float(self.dual_coef @ np.exp(-self.gamma * np.maximum(d2, 0.0)) - self.rho)

    @functools.cached_property
    def _sv(self) -> np.ndarray:
        return self.support_vectors.astype(np.float64)

    @functools.cached_property
    def _sv_sq(self) -> np.ndarray:
        return np.einsum("ij,ij->i", self._sv, self._sv)


@functools.cache
def load_model(variant: Variant = "live") -> BrisqueModel:
    """The stored SVR model of ``variant`` (``data/brisque_<variant>.npz``)."""
    _check_variant(variant)
    with np.load(DATA_DIR / f"brisque_{variant}.npz") as z:
        model = BrisqueModel(
            support_vectors=z["support_vectors"],
            dual_coef=z["dual_coef"].astype(np.float64),
            rho=float(z["rho"]),
            gamma=float(z["gamma"]),
            feature_range=z["feature_range"].astype(np.float64),
        )
    if model.support_vectors.shape[1:] != (_N_FEATURES,) or model.feature_range.shape != (
        2,
        _N_FEATURES,
    ):
        raise ValueError(f"brisque_{variant}.npz: unexpected shapes")
    return model


def _check_variant(variant: str) -> None:
    if variant not in VARIANTS:
        raise ValueError(f"unknown BRISQUE variant {variant!r}; choose one of {VARIANTS}")


# ---------------------------------------------------------------------------
# grey image
# ---------------------------------------------------------------------------


def _grey(image: np.ndarray, variant: Variant) -> np.ndarray:
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"expected an H x W grey or H x W x 3 RGB image, got shape {a.shape}")
    if min(a.shape[:2]) < MIN_SIDE:
        raise ValueError(
            f"BRISQUE needs an image of at least {MIN_SIDE} x {MIN_SIDE} pixels, got "
            f"{a.shape[1]} x {a.shape[0]}"
        )
    if a.dtype != np.uint8:
        a = np.clip(np.nan_to_num(a.astype(np.float64), nan=0.0), 0.0, 255.0)
    if a.ndim == 2:
        return a.astype(np.float64 if variant == "live" else np.float32)
    rgb = a[:, :, :3]
    if variant == "live":  # MATLAB rgb2gray, rounded back to 8 bits
        return np.round(rgb @ _RGB2GRAY_MATLAB)
    # cv::cvtColor RGB -> GRAY: 15-bit fixed-point BT.601 weights, rounded (exact in float64)
    return np.floor((rgb @ _RGB2GRAY_OPENCV + 16384.0) / 32768.0).astype(np.float32)


# ---------------------------------------------------------------------------
# MSCN and the pairwise products
# ---------------------------------------------------------------------------


def _mscn(y: np.ndarray, mode: str, c: float, snap: float = 0.0) -> np.ndarray:
    """``(y - μ) / (σ + c)`` under the 7×7 Gaussian window; ``|y - μ| <= snap`` is set to 0.

    ``mode`` is the border: "constant" (zeros) or "edge" (replicate). In exact
    arithmetic a flat 7×7 neighbourhood gives ``y - μ = 0``; floating-point filtering
    leaves ±1e-14 there instead, whose random signs would decide on which side of the
    AGGD fits those samples fall. ``snap`` restores the exact zeros.
    """
    k = _gauss_taps().astype(y.dtype)
    h, w = y.shape
    # y and y² filtered along rows (scipy, contiguous), with 3 border rows either side
    rows = np.zeros((2, h + 6, w), dtype=y.dtype)
    scipy_mode = "constant" if mode == "constant" else "nearest"
    ndimage.correlate1d(y, k, axis=-1, output=rows[0, 3 : 3 + h], mode=scipy_mode)
    ndimage.correlate1d(y * y, k, axis=-1, output=rows[1, 3 : 3 + h], mode=scipy_mode)
    if mode == "edge":
        rows[:, :3] = rows[:, 3:4]
        rows[:, h + 3 :] = rows[:, h + 2 : h + 3]
    # then along columns and on to the MSCN, in blocks of rows that stay in cache
    out = np.empty_like(y)
    step = max(8, _BLOCK_ELEMENTS // w)
    acc = np.empty((2, step, w), dtype=y.dtype)
    tmp = np.empty_like(acc)
    cc = y.dtype.type(c)
    for r in range(0, h, step):
        e = min(h, r + step)
        a, t = acc[:, : e - r], tmp[:, : e - r]
        np.multiply(rows[:, r + 3 : e + 3], k[3], out=a)
        for d in (1, 2, 3):  # symmetric kernel: pair the rows d above and below
            np.add(rows[:, r + 3 - d : e + 3 - d], rows[:, r + 3 + d : e + 3 + d], out=t)
            t *= k[3 - d]
            a += t
        mu, sigma = a[0], a[1]
        np.multiply(mu, mu, out=t[0])
        sigma -= t[0]
        np.abs(sigma, out=sigma)
        np.sqrt(sigma, out=sigma)
        sigma += cc
        diff = out[r:e]
        np.subtract(y[r:e], mu, out=diff)
        if snap:
            np.abs(diff, out=t[0])
            np.multiply(diff, t[0] > snap, out=diff)
        diff /= sigma
    return out


def _pairs(m: np.ndarray, wrap: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Aligned operands (views) of the 4 pairwise products of ``m``.

    ``wrap``: MATLAB ``circshift``, every pixel times ``m(i - di, j - dj)`` cyclically.
    Otherwise OpenCV's: ``m(i, j) m(i + di, j + dj)`` where that neighbour exists (the
    products OpenCV sets to 0 elsewhere are left out; the caller counts them).
    """
    h, w = m.shape
    if wrap:
        p = np.pad(m, 1, mode="wrap")
        return [(m, p[1 - di : 1 - di + h, 1 - dj : 1 - dj + w]) for di, dj in _SHIFTS]
    out = []
    for di, dj in _SHIFTS:
        r0, r1 = max(0, -di), h - max(0, di)
        out.append((m[r0:r1, : w - dj], m[r0 + di : r1 + di, dj:]))
    return out


# ---------------------------------------------------------------------------
# distribution fits
# ---------------------------------------------------------------------------


def _nearest(table: np.ndarray, values: np.ndarray) -> np.ndarray:
    return np.abs(table[None, :] - values[:, None]).argmin(axis=1)


def _aggd_moments(
    a: np.ndarray, b: np.ndarray | None, n: int, n_neg: int, n_pos: int
) -> tuple[float, float, float, float]:
    """Moments of ``x = a * b`` (or ``a``) padded with zeros to ``n`` samples, of which
    ``n_neg`` are negative and ``n_pos`` positive.

    Returns the left and right variance (mean square of the negatives / positives),
    ``r̂ = E|x|² / E[x²]`` and ``E[x²]``, accumulated in float64 over blocks of rows.
    """
    h, w = a.shape
    step = max(8, _BLOCK_ELEMENTS // max(w, 1))
    x_buf = np.empty((min(step, h), w))
    neg_buf = np.empty_like(x_buf)
    s_all = s_neg = s_sum = s_neg_sum = 0.0
    for r in range(0, h, step):
        e = min(h, r + step)
        x, neg = x_buf[: e - r], neg_buf[: e - r]
        if b is None:
            x[...] = a[r:e]
        else:  # in the operands' precision, like the references, then widened
            np.multiply(a[r:e], b[r:e], out=x)
        np.minimum(x, 0.0, out=neg)
        xf, nf = x.reshape(-1), neg.reshape(-1)
        s_all += float(xf @ xf)
        s_neg += float(nf @ nf)
        s_sum += float(xf.sum())
        s_neg_sum += float(nf.sum())
    s_abs = s_sum - 2.0 * s_neg_sum
    # a side without samples (a constant image) has variance 0
    l2 = s_neg / n_neg if n_neg else 0.0
    r2 = (s_all - s_neg) / n_pos if n_pos else 0.0
    r_hat = (s_abs / n) ** 2 / (s_all / n) if s_all > 0 else 0.0
    return l2, r2, r_hat, s_all / n


def _aggd_shape(l2: np.ndarray, r2: np.ndarray, r_hat: np.ndarray) -> np.ndarray:
    """Grid index of the AGGD shape matching ``r̂`` and ``γ̂ = σ_l / σ_r``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        g = np.sqrt(l2 / r2)
        r_norm = r_hat * (g**3 + 1.0) * (g + 1.0) / (g * g + 1.0) ** 2
    return _nearest(_AGGD_RATIO, np.nan_to_num(r_norm, nan=0.0))


def _scale_features(m: np.ndarray, variant: Variant) -> list[float]:
    """The 18 features of one scale from its MSCN map ``m``."""
    n = m.size
    wrap = variant == "live"
    neg, nonzero = m < 0, m != 0
    stats = []
    for (a, b), (neg_a, neg_b), (nz_a, nz_b) in zip(
        _pairs(m, wrap), _pairs(neg, wrap), _pairs(nonzero, wrap), strict=True
    ):
        both = nz_a & nz_b  # the product is nonzero, and negative where the signs differ
        n_nonzero = int(np.count_nonzero(both))
        n_neg = int(np.count_nonzero(np.logical_and(neg_a ^ neg_b, both, out=both)))
        stats.append(_aggd_moments(a, b, n, n_neg, n_nonzero - n_neg))
    l2, r2, r_hat = (np.array([s[i] for s in stats]) for i in range(3))
    idx = _aggd_shape(l2, r2, r_hat)
    mean = (np.sqrt(r2) - np.sqrt(l2)) * _MEAN_FACTOR[idx]
    m_neg = int(np.count_nonzero(neg))
    ml2, mr2, mr_hat, m2 = _aggd_moments(m, None, n, m_neg, int(np.count_nonzero(nonzero)) - m_neg)
    if variant == "live":  # GGD by moment matching: E[x²]/E|x|² = 1/r̂, and E[x²]
        rho = 1.0 / mr_hat if mr_hat > 0 else 0.0  # constant image: the flattest shape
        out = [float(_GRID[_nearest(_GGD_RATIO, np.array([rho]))[0]]), m2]
    else:  # OpenCV fits the MSCN map with its AGGD routine; variance (σ_l² + σ_r²)/2
        shape = _aggd_shape(np.array([ml2]), np.array([mr2]), np.array([mr_hat]))[0]
        out = [float(_GRID[shape]), (ml2 + mr2) / 2.0]
    for k in range(4):
        out += [float(_GRID[idx[k]]), float(mean[k]), float(l2[k]), float(r2[k])]
    return out


# ---------------------------------------------------------------------------
# scale 2
# ---------------------------------------------------------------------------


def _halve_axis(x: np.ndarray, axis: int, variant: Variant) -> np.ndarray:
    """Halve ``x`` along ``axis`` (0 or 1) with the variant's bicubic kernel at stride 2."""
    n = x.shape[axis]
    if variant == "live":
        taps, first, n_out, mode = _HALF_TAPS_LIVE, -3, (n + 1) // 2, "symmetric"
    else:
        taps, first, n_out, mode = _HALF_TAPS_OPENCV, -1, n // 2, "edge"
    pad = [(0, 0), (0, 0)]
    pad[axis] = (-first, max(0, 2 * n_out + len(taps) - 2 - n + first))
    p = np.pad(x, pad, mode=mode)  # type: ignore[call-overload]

    def tap(t: int) -> np.ndarray:
        return p[t : t + 2 * n_out : 2] if axis == 0 else p[:, t : t + 2 * n_out : 2]

    out = taps[0] * tap(0)
    for t in range(1, len(taps)):
        out += taps[t] * tap(t)
    return out.astype(x.dtype, copy=False)


def _halve(y: np.ndarray, variant: Variant) -> np.ndarray:
    """Scale 2: rows then columns for MATLAB, columns then rows for OpenCV (its order)."""
    if variant == "live":
        return _halve_axis(_halve_axis(y, 0, variant), 1, variant)
    return _halve_axis(_halve_axis(y, 1, variant), 0, variant)


# ---------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------


def brisque_features(image: np.ndarray, *, variant: Variant = "live") -> np.ndarray:
    """The 36 raw BRISQUE features (scale 1 then scale 2, 18 each).

    Order per scale: MSCN shape, MSCN variance, then for the horizontal, vertical,
    main-diagonal and anti-diagonal products: shape, mean, left variance, right
    variance. ``image`` is ``H x W`` grey or ``H x W x 3`` RGB on the 0–255 scale
    (``uint8`` expected; an alpha channel is ignored). Raises ``ValueError`` for a
    side under :data:`MIN_SIDE` or an unknown ``variant``.
    """
    _check_variant(variant)
    y = _grey(image, variant)
    if variant == "live":
        mode, c, snap = "constant", 1.0, _SNAP
    else:  # OpenCV works on [0, 1]; C = 1/255 there is C = 1 on 0-255
        y, mode, c, snap = y / np.float32(255.0), "edge", 1.0 / 255.0, 0.0
    feats = _scale_features(_mscn(y, mode, c, snap), variant)
    feats += _scale_features(_mscn(_halve(y, variant), mode, c, snap), variant)
    return np.asarray(feats, dtype=np.float64)


def brisque(image: np.ndarray, *, variant: Variant = "live") -> float:
    """BRISQUE score of ``image`` (lower is better, about 0–100).

    ``variant`` picks the published model and its feature details (see the module
    docstring): ``"live"`` (default, the authors' release) or ``"opencv"``
    (clamped to [0, 100]).
    """
    feats = brisque_features(image, variant=variant)
    if variant == "opencv":
        feats = feats.astype(np.float32).astype(np.float64)
    score = load_model(variant).predict(feats)
    return min(max(score, 0.0), 100.0) if variant == "opencv" else score
