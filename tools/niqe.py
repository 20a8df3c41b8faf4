"""NIQE, the Natural Image Quality Evaluator (numpy/scipy only).

Mittal, Soundararajan & Bovik, "Making a completely blind image quality analyzer",
IEEE Signal Processing Letters 20(3), 2013. Lower is better: the score is the
distance between a multivariate Gaussian (MVG) fitted to natural-scene-statistics
features of the image's patches and one fitted to patches of pristine photographs.

Algorithm (the authors' released MATLAB code, ``computequality.m``, reproduced):

1. Grey levels ``Y = round(0.2989 R + 0.5870 G + 0.1140 B)`` (MATLAB ``rgb2gray``
   on 8-bit data; the weights are the first row of the inverse NTSC YIQ matrix).
   The image is cropped to whole 96 x 96 patches (top-left kept).
2. At two scales (the image, then the image halved by MATLAB ``imresize``: bicubic
   with antialiasing) the MSCN coefficients
   ``I' = (I - mu) / (sigma + 1)`` with ``mu``, ``sigma`` the local mean and
   standard deviation under a 7 x 7 Gaussian window (sigma 7/6, replicated borders).
3. Per patch (96 x 96 at scale 1, the same area, 48 x 48, at scale 2), 18 features:
   an asymmetric generalised Gaussian (AGGD) fit of the coefficients
   (shape ``alpha`` and mean scale ``(beta_l + beta_r) / 2``) and, for the products of
   each coefficient with its right, lower, lower-right and lower-left neighbour
   (wrapping around inside the patch), ``alpha``, the mean
   ``eta = (beta_r - beta_l) Gamma(2/alpha) / Gamma(1/alpha)``, ``beta_l`` and ``beta_r``.
   The AGGD is fitted by moment matching: ``alpha`` is the point of the grid
   0.2 : 0.001 : 10 whose ``rho(alpha) = Gamma(2/alpha)^2 / (Gamma(1/alpha) Gamma(3/alpha))``
   is nearest the normalised estimate ``r_hat (g^3 + 1)(g + 1) / (g^2 + 1)^2`` with
   ``g = sigma_l / sigma_r`` and ``r_hat = E|x|^2 / E[x^2]``.
4. With ``nu_1, Sigma_1`` the pristine model and ``nu_2, Sigma_2`` the mean and
   covariance of the image's 36-d patch features::

       NIQE = sqrt((nu_1 - nu_2)^T ((Sigma_1 + Sigma_2) / 2)^+ (nu_1 - nu_2))

   with ``^+`` the pseudo-inverse. No patch selection happens here: the authors'
   sharpness threshold (0.75 x the largest patch sharpness) is applied only when the
   pristine model is fitted.

Two deliberate choices where MATLAB's result depends on floating-point round-off:
an MSCN coefficient whose pixel equals its local mean to within 1e-8 grey levels
(a flat neighbourhood) is exactly 0, so it joins neither side of the AGGD fit; and a
patch with an undefined feature (a side of a fit without any sample, e.g. a flat
patch) is left out of both the mean and the covariance (MATLAB's ``nanmean`` would
still average the other columns of that patch).

The pristine model is ``data/niqe_pristine.npz`` (see ``data/NOTICE.md``).

>>> rng = np.random.default_rng(0)
>>> noise = rng.integers(0, 256, size=(192, 192, 3), dtype=np.uint8)
>>> niqe(noise) > 10.0
True
>>> niqe(noise[:64])
Traceback (most recent call last):
...
ValueError: NIQE needs an image of at least 96 x 96 pixels (one 96 x 96 patch), got 64 x 192
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import numpy as np
from scipy import ndimage, special

__all__ = [
    "NIQE_MIN_SIDE",
    "NIQE_PATCH",
    "NiqeModel",
    "load_niqe_model",
    "niqe",
    "niqe_features",
    "niqe_grey",
]

#: Patch side at full scale, in pixels (the authors' choice; the model is fitted at it).
NIQE_PATCH = 96
#: Smallest image side NIQE accepts: one whole patch.
NIQE_MIN_SIDE = NIQE_PATCH

_RESOURCE = "niqe_pristine.npz"
_N_SCALES = 2
_N_FEATURES = 18  # per scale
_FLAT_TOL = 1e-8  # grey levels: |I - mu| below this is a flat neighbourhood
# MATLAB rgb2gray: the first row of inv([[1, .956, .621], [1, -.272, -.647], [1, -1.106, 1.703]]).
_GREY_WEIGHTS = np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
# Shifts (rows, columns) of the neighbour in each pairwise product: right, down, down-right,
# down-left (numpy.roll by +1 brings the previous sample; the set of products is the same).
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))


@dataclass(frozen=True)
class NiqeModel:
    """A multivariate Gaussian over the 36 patch features: ``mean`` (36,), ``cov`` (36, 36)."""

    mean: np.ndarray
    cov: np.ndarray

    def __post_init__(self) -> None:
        n = 2 * _N_FEATURES
        if self.mean.shape != (n,) or self.cov.shape != (n, n):
            raise ValueError(
                f"a NIQE model needs a ({n},) mean and a ({n}, {n}) covariance, "
                f"got {self.mean.shape} and {self.cov.shape}"
            )


@functools.lru_cache(maxsize=1)
def load_niqe_model() -> NiqeModel:
    """The pristine model of Mittal et al., read from the packaged ``data/niqe_pristine.npz``."""
    ref = resources.files("tooliqa.tools").joinpath("data").joinpath(_RESOURCE)
    with ref.open("rb") as fh, np.load(fh, allow_pickle=False) as z:
        mean = np.asarray(z["mu_pris_param"], dtype=np.float64).reshape(-1)
        cov = np.asarray(z["cov_pris_param"], dtype=np.float64)
    mean.setflags(write=False)
    cov.setflags(write=False)
    return NiqeModel(mean=mean, cov=cov)


# ---------------------------------------------------------------------------
# image preparation
# ---------------------------------------------------------------------------


def niqe_grey(image: np.ndarray) -> np.ndarray:
    """Grey levels (float64, 0–255) as MATLAB ``rgb2gray`` gives them.

    ``H x W`` and ``H x W x 1`` are taken as grey already; ``H x W x 3`` and
    ``H x W x 4`` (alpha ignored) are weighted by :data:`_GREY_WEIGHTS`. Integer input is
    rounded half up after weighting, as ``rgb2gray`` does for ``uint8``; float input is
    taken on the 0–255 scale and not rounded.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim == 3 and a.shape[2] in (3, 4):
        grey = a[:, :, :3].astype(np.float64) @ _GREY_WEIGHTS
        if np.issubdtype(a.dtype, np.integer):
            grey = np.floor(grey + 0.5)
    elif a.ndim == 2:
        grey = a.astype(np.float64)
    else:
        raise ValueError(f"expected an H x W or H x W x 3 image, got shape {a.shape}")
    if not np.all(np.isfinite(grey)):
        raise ValueError("NIQE needs finite pixel values")
    return grey


def _gauss_kernel() -> np.ndarray:
    """The 1-D factor of MATLAB ``fspecial('gaussian', 7, 7/6)`` (normalised to sum 1)."""
    x = np.arange(-3, 4, dtype=np.float64)
    k = np.exp(-(x * x) / (2.0 * (7.0 / 6.0) ** 2))
    return k / k.sum()


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (MATLAB's ``cubic``)."""
    a = np.abs(x)
    a2, a3 = a * a, a * a * a
    near = 1.5 * a3 - 2.5 * a2 + 1.0
    far = -0.5 * a3 + 2.5 * a2 - 4.0 * a + 2.0
    return np.where(a <= 1.0, near, np.where(a <= 2.0, far, 0.0))


def _half_kernel() -> np.ndarray:
    """MATLAB ``imresize(..., 0.5)`` bicubic weights with antialiasing.

    Shrinking by 2 stretches the cubic to a support of 8 input samples; output ``i``
    (0-based) sits at input position ``2 i + 0.5``, so its taps lie at offsets
    ±0.5, ±1.5, ±2.5, ±3.5 with weights ``cubic(d / 2)``, normalised to sum 1.
    """
    d = np.arange(-3.5, 4.0, 1.0)
    w = _cubic(d / 2.0)
    return w / w.sum()


_GAUSS = _gauss_kernel()
_HALF = _half_kernel()


def _blur(x: np.ndarray) -> np.ndarray:
    t = ndimage.correlate1d(x, _GAUSS, axis=0, mode="nearest")
    return ndimage.correlate1d(t, _GAUSS, axis=1, mode="nearest")


def _halve(x: np.ndarray) -> np.ndarray:
    """Halve both (even) sides like MATLAB ``imresize(x, 0.5)`` (bicubic, antialiased).

    MATLAB mirrors out-of-range taps (``... b a | a b ...``), which is scipy's ``reflect``.
    With an even kernel scipy centres tap 4 on the output sample, so sample ``2 i + 1``
    of the full-rate result covers inputs ``2 i - 3 ... 2 i + 4``.
    """
    t = ndimage.correlate1d(x, _HALF, axis=0, mode="reflect")[1::2]
    return ndimage.correlate1d(t, _HALF, axis=1, mode="reflect")[:, 1::2]


def _mscn(x: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients ``(I - mu) / (sigma + 1)``."""
    mu = _blur(x)
    sigma = np.sqrt(np.abs(_blur(x * x) - mu * mu))
    diff = x - mu
    diff[np.abs(diff) < _FLAT_TOL] = 0.0
    return diff / (sigma + 1.0)


# ---------------------------------------------------------------------------
# features
# ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _alpha_table() -> tuple[np.ndarray, np.ndarray]:
    """The shape grid 0.2 : 0.001 : 10 and ``rho(alpha)`` on it (strictly increasing)."""
    alpha = np.arange(200, 10001, dtype=np.float64) / 1000.0
    rho = special.gamma(2.0 / alpha) ** 2 / (
        special.gamma(1.0 / alpha) * special.gamma(3.0 / alpha)
    )
    if not np.all(np.diff(rho) > 0):  # pragma: no cover - a property of the Gamma function
        raise AssertionError("rho(alpha) is expected to increase on the grid")
    alpha.setflags(write=False)
    rho.setflags(write=False)
    return alpha, rho


def _lookup_alpha(r: np.ndarray) -> np.ndarray:
    """The grid ``alpha`` whose ``rho`` is nearest ``r`` (the lower one on a tie); NaN stays NaN."""
    alpha, rho = _alpha_table()
    flat = r.reshape(-1)
    hi = np.clip(np.searchsorted(rho, flat), 1, rho.size - 1)
    lo = hi - 1
    pick = np.where((rho[hi] - flat) ** 2 < (rho[lo] - flat) ** 2, hi, lo)
    out = alpha[pick]
    out[np.isnan(flat)] = np.nan
    return out.reshape(r.shape)


def _sum_sq(x: np.ndarray) -> np.ndarray:
    """Sum of squares along the last axis (as a batched dot product)."""
    return (x[..., None, :] @ x[..., :, None])[..., 0, 0]


def _aggd_fit(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Moment-matching AGGD fit along the last axis: ``(alpha, beta_l, beta_r)``.

    ``sigma_l`` (``sigma_r``) is the root mean square of the negative (positive) samples;
    zeros belong to neither side. A side without samples leaves the fit undefined (all NaN).
    """
    m = x.shape[-1]
    buf = np.empty_like(x)
    np.minimum(x, 0.0, out=buf)
    ss_neg, s_neg = _sum_sq(buf), buf.sum(axis=-1)
    np.maximum(x, 0.0, out=buf)
    ss_pos, s_pos = _sum_sq(buf), buf.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma_l = np.sqrt(ss_neg / np.count_nonzero(x < 0, axis=-1))
        sigma_r = np.sqrt(ss_pos / np.count_nonzero(x > 0, axis=-1))
        g = sigma_l / sigma_r
        r_hat = ((s_pos - s_neg) / m) ** 2 / ((ss_neg + ss_pos) / m)
        r_norm = r_hat * (g**3 + 1.0) * (g + 1.0) / (g**2 + 1.0) ** 2
        alpha = _lookup_alpha(r_norm)
        scale = np.sqrt(special.gamma(1.0 / alpha) / special.gamma(3.0 / alpha))
    return alpha, sigma_l * scale, sigma_r * scale


def _patches(x: np.ndarray, side: int) -> np.ndarray:
    """``(n_patches, side, side)`` view-copy of an image whose sides are multiples of ``side``."""
    rows, cols = x.shape[0] // side, x.shape[1] // side
    return x.reshape(rows, side, cols, side).swapaxes(1, 2).reshape(rows * cols, side, side)


def _scale_features(coeffs: np.ndarray, side: int) -> np.ndarray:
    """The 18 features of every ``side x side`` patch of the MSCN map: ``(n_patches, 18)``."""
    p = _patches(coeffs, side)
    n = p.shape[0]
    samples = np.empty((1 + len(_SHIFTS), n, side * side))
    samples[0] = p.reshape(n, -1)
    for i, shift in enumerate(_SHIFTS, start=1):
        samples[i] = (p * np.roll(p, shift, axis=(1, 2))).reshape(n, -1)
    alpha, beta_l, beta_r = _aggd_fit(samples)  # each (5, n)
    with np.errstate(invalid="ignore"):
        eta = (
            (beta_r[1:] - beta_l[1:])
            * special.gamma(2.0 / alpha[1:])
            / special.gamma(1.0 / alpha[1:])
        )
    pairs = np.stack([alpha[1:], eta, beta_l[1:], beta_r[1:]], axis=-1)  # (4, n, 4)
    first = np.stack([alpha[0], (beta_l[0] + beta_r[0]) / 2.0], axis=-1)  # (n, 2)
    return np.concatenate([first, pairs.transpose(1, 0, 2).reshape(n, 16)], axis=1)


def niqe_features(image: np.ndarray) -> np.ndarray:
    """The 36 NIQE features of each whole 96 x 96 patch: ``(n_patches, 36)``, float64.

    Columns 0–17 come from the full-scale image, 18–35 from the halved one (same
    patch area). Patches are in row-major order. A row holds NaN where a fit was
    undefined (e.g. a flat patch).
    """
    grey = niqe_grey(image)
    h, w = grey.shape
    if h < NIQE_MIN_SIDE or w < NIQE_MIN_SIDE:
        raise ValueError(
            f"NIQE needs an image of at least {NIQE_MIN_SIDE} x {NIQE_MIN_SIDE} pixels "
            f"(one {NIQE_PATCH} x {NIQE_PATCH} patch), got {h} x {w}"
        )
    x = np.ascontiguousarray(grey[: h - h % NIQE_PATCH, : w - w % NIQE_PATCH])
    per_scale = []
    for scale in range(_N_SCALES):
        per_scale.append(_scale_features(_mscn(x), NIQE_PATCH >> scale))
        if scale + 1 < _N_SCALES:
            x = _halve(x)
    return np.concatenate(per_scale, axis=1)


# ---------------------------------------------------------------------------
# score
# ---------------------------------------------------------------------------


def niqe(image: np.ndarray, *, model: NiqeModel | None = None) -> float:
    """NIQE of an image (lower is better; about 2–4 for pristine photographs).

    ``image``: ``H x W x 3`` RGB (``uint8``, 0–255) or ``H x W`` grey, at least
    96 x 96 pixels. ``model``: the pristine MVG; by default the authors' model
    (:func:`load_niqe_model`).

    Raises ``ValueError`` for a smaller image and for one without a single textured
    96 x 96 patch (e.g. a constant image), where NIQE is undefined.
    """
    m = load_niqe_model() if model is None else model
    feats = niqe_features(image)
    feats = feats[np.all(np.isfinite(feats), axis=1)]
    if feats.shape[0] == 0:
        raise ValueError(
            f"NIQE is undefined for this image: no {NIQE_PATCH} x {NIQE_PATCH} patch has "
            "texture on both sides of its local mean (is the image flat?)"
        )
    mean = feats.mean(axis=0)
    # MATLAB's cov of a single observation is the zero matrix.
    cov = np.cov(feats, rowvar=False) if feats.shape[0] > 1 else np.zeros_like(m.cov)
    pooled = (m.cov + cov) / 2.0
    inv = np.linalg.pinv(pooled, rcond=max(pooled.shape) * np.finfo(np.float64).eps)
    d = m.mean - mean
    return float(np.sqrt(max(float(d @ inv @ d), 0.0)))
