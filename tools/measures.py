"""Hand-crafted, no-reference image quality measures (numpy/scipy only).

Every measure works on an RGB image given as an ``H x W x 3`` array on the 0–255
scale (``uint8`` expected; greyscale ``H x W`` and RGBA inputs are accepted and
converted). All measures are finite for any non-empty input, including tiny
(e.g. 8 x 8) and constant images.

Luminance is Rec. ITU-R BT.601 luma, ``Y = 0.299 R + 0.587 G + 0.114 B`` on the
0–255 scale. The gradient is the Sobel operator divided by 8, i.e. grey levels
per pixel; the Laplacian is the 4-neighbour kernel ``[[0,1,0],[1,-4,1],[0,1,0]]``.
Borders are handled by mirror reflection.

Entry points:

* :func:`measure` – compute all measures and return a frozen :class:`Measurements`;
* :func:`feature_vector` – the fixed-order, transformed feature vector used by the
  calibrated classic scorer (names in :data:`FEATURE_NAMES`);
* :func:`most_detailed_region` – the grid tile with the most detail, in pixels;
* single measures of an RGB image, the classic tools a model may call
  (:mod:`tooliqa.tools.iqa_tools`): :func:`sharpness_index`, :func:`noise_level`,
  :func:`blockiness_level`, :func:`rms_contrast`, :func:`colourfulness`,
  :func:`exposure_error`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, fields

import numpy as np
from scipy import fft as sfft
from scipy import special

__all__ = [
    "FEATURE_NAMES",
    "NSS_NAMES",
    "Measurements",
    "blockiness_level",
    "colourfulness",
    "exposure_error",
    "feature_vector",
    "luminance",
    "measure",
    "most_detailed_region",
    "noise_level",
    "rms_contrast",
    "sharpness_index",
]

_EPS = 1e-12
_BLOCK = 8

# ---------------------------------------------------------------------------
# basic helpers
# ---------------------------------------------------------------------------


def _as_rgb_float(rgb: np.ndarray) -> np.ndarray:
    """Return the image as a float32 ``H x W x 3`` array clipped to [0, 255]."""
    a = np.asarray(rgb)
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[0] == 0 or a.shape[1] == 0 or a.shape[2] == 0:
        raise ValueError(f"expected a non-empty H x W x 3 image, got shape {a.shape}")
    a = np.repeat(a[:, :, :1], 3, axis=2) if a.shape[2] < 3 else a[:, :, :3]
    if a.dtype == np.uint8:
        return a.astype(np.float32)
    a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(a, 0.0, 255.0)


def _luma(a: np.ndarray) -> np.ndarray:
    return (
        a[:, :, 0] * np.float32(0.299)
        + a[:, :, 1] * np.float32(0.587)
        + a[:, :, 2] * np.float32(0.114)
    )


def luminance(rgb: np.ndarray) -> np.ndarray:
    """BT.601 luma ``Y = 0.299 R + 0.587 G + 0.114 B`` (float32, 0–255)."""
    return _luma(_as_rgb_float(rgb))


def _pad(y: np.ndarray, r: int) -> np.ndarray:
    """Mirror padding that repeats the edge sample (``d c b a | a b c d``)."""
    return np.pad(y, r, mode="symmetric")


def _gradient_magnitude(y: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude in grey levels per pixel (Sobel / 8)."""
    p = _pad(y, 1)
    sv = p[:-2, :] + 2.0 * p[1:-1, :] + p[2:, :]
    sh = p[:, :-2] + 2.0 * p[:, 1:-1] + p[:, 2:]
    gx = sv[:, 2:] - sv[:, :-2]
    gy = sh[2:, :] - sh[:-2, :]
    return np.sqrt(gx * gx + gy * gy) * np.float32(0.125)


def _laplacian(y: np.ndarray) -> np.ndarray:
    """4-neighbour Laplacian ``[[0, 1, 0], [1, -4, 1], [0, 1, 0]]``."""
    p = _pad(y, 1)
    return p[:-2, 1:-1] + p[2:, 1:-1] + p[1:-1, :-2] + p[1:-1, 2:] - 4.0 * y


def _gauss7(y: np.ndarray) -> np.ndarray:
    """Separable 7 x 7 Gaussian blur, sigma 7/6 (weights normalised to sum 1)."""
    k = np.exp(-0.5 * (np.arange(-3, 4) / (7.0 / 6.0)) ** 2)
    k = (k / k.sum()).astype(np.float32)
    p = _pad(y, 3)
    h, w = y.shape
    t = k[0] * p[0:h, :]
    for i in range(1, 7):
        t = t + k[i] * p[i : i + h, :]
    out = k[0] * t[:, 0:w]
    for i in range(1, 7):
        out = out + k[i] * t[:, i : i + w]
    return out


def _ratio(a: float, b: float, eps: float = 1e-6) -> float:
    """``(a + eps) / (b + eps)``: a ratio that is 1 when both terms vanish."""
    return float((a + eps) / (b + eps))


def _downsample2(y: np.ndarray) -> np.ndarray:
    """2 x 2 box average (odd trailing row/column dropped)."""
    h, w = (y.shape[0] // 2) * 2, (y.shape[1] // 2) * 2
    if h == 0 or w == 0:
        return y.copy()
    c = y[:h, :w]
    return 0.25 * (c[0::2, 0::2] + c[1::2, 0::2] + c[0::2, 1::2] + c[1::2, 1::2])


def _tile_edges(n: int, g: int) -> np.ndarray:
    return np.linspace(0, n, g + 1).round().astype(int)


def _tile_means(x: np.ndarray, grid: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean of ``x`` over a ``g x g`` grid of tiles (``g`` clipped to the image size).

    Returns ``(means[g, g], row_edges, col_edges)``.
    """
    h, w = x.shape
    g = max(1, min(int(grid), h, w))
    re, ce = _tile_edges(h, g), _tile_edges(w, g)
    s = np.add.reduceat(np.add.reduceat(x.astype(np.float64), re[:-1], axis=0), ce[:-1], axis=1)
    area = np.outer(np.diff(re), np.diff(ce)).astype(np.float64)
    return s / area, re, ce


# ---------------------------------------------------------------------------
# individual measures
# ---------------------------------------------------------------------------


def noise_sigma(y: np.ndarray) -> float:
    """Immerkær's fast noise estimate (grey levels).

    ``sigma = sqrt(pi / 2) / (6 (W - 2)(H - 2)) * sum |Y * N|`` with the mask
    ``N = [[1, -2, 1], [-2, 4, -2], [1, -2, 1]]`` (the difference of two Laplacians,
    which annihilates locally linear image structure), evaluated on interior pixels.
    Source: J. Immerkær, "Fast Noise Variance Estimation", CVIU 64(2), 1996.
    """
    h, w = y.shape
    if h < 3 or w < 3:
        return 0.0
    c = y[1:-1, 1:-1]
    r = (
        y[:-2, :-2]
        + y[:-2, 2:]
        + y[2:, :-2]
        + y[2:, 2:]
        - 2.0 * (y[:-2, 1:-1] + y[2:, 1:-1] + y[1:-1, :-2] + y[1:-1, 2:])
        + 4.0 * c
    )
    return float(
        math.sqrt(math.pi / 2.0) * np.abs(r).sum(dtype=np.float64) / (6.0 * (w - 2) * (h - 2))
    )


def blockiness(y: np.ndarray, block: int = _BLOCK) -> float:
    """8 x 8 block-boundary discontinuity ratio (1 = no blocking).

    Horizontal term: the mean absolute luminance step ``|Y[:, j+1] - Y[:, j]|`` across
    block boundaries (``(j + 1) mod 8 = 0``) divided by the same mean inside blocks;
    the vertical term likewise; the result is their average. Both means get 0.1 grey
    level added so flat images give 1. A blocking (JPEG/DCT) artefact measure in the
    spirit of Wang, Bovik & Evans, "Blind measurement of blocking artifacts in
    images", ICIP 2000.
    """

    def one(d: np.ndarray) -> float:
        n = d.shape[1]
        idx = np.arange(n)
        at = (idx + 1) % block == 0
        if not at.any() or at.all():
            return 1.0
        return _ratio(float(d[:, at].mean()), float(d[:, ~at].mean()), eps=0.1)

    terms = []
    if y.shape[1] > 1:
        terms.append(one(np.abs(np.diff(y, axis=1))))
    if y.shape[0] > 1:
        terms.append(one(np.abs(np.diff(y, axis=0)).T))
    return float(np.mean(terms)) if terms else 1.0


def _dilate(mask: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation with a ``(2r + 1)`` square (separable shifted ORs)."""
    out = mask.copy()
    for axis in (0, 1):
        src = out.copy()
        n = src.shape[axis]
        for k in range(1, min(r, n - 1) + 1):
            if axis == 0:
                out[k:, :] |= src[:-k, :]
                out[:-k, :] |= src[k:, :]
            else:
                out[:, k:] |= src[:, :-k]
                out[:, :-k] |= src[:, k:]
    return out


def ringing(grad: np.ndarray, lap: np.ndarray) -> float:
    """Edge-halo (ringing) ratio.

    Strong edges are pixels whose gradient magnitude is at or above
    ``max(P95(|grad|), 8)``. The halo band is the ring 2–4 pixels away from them
    (``dilate(E, 4) & ~dilate(E, 1)``, square structuring elements). The measure is the
    mean absolute Laplacian in the band divided by the mean over all pixels outside
    the dilated edges; overshoot/oscillation next to edges (ringing, over-sharpening
    halos) raises it. Returns 1 when there are no strong edges.
    """
    k = int(0.95 * (grad.size - 1))
    thr = max(float(np.partition(grad.ravel(), k)[k]), 8.0)
    edges = grad >= thr
    if not edges.any():
        return 1.0
    near = _dilate(edges, 1)
    wide = _dilate(edges, 4)
    band = wide & ~near
    far = ~wide
    if not band.any():
        return 1.0
    a = np.abs(lap)
    ref = float(a[far].mean()) if far.any() else float(a.mean())
    return _ratio(float(a[band].mean()), ref, eps=0.1)


def colourfulness(rgb: np.ndarray) -> float:
    """Hasler–Süsstrunk colourfulness (0–255 scale; 0 for grey images).

    ``rg = R - G``, ``yb = (R + G) / 2 - B``;
    ``M = sqrt(s_rg^2 + s_yb^2) + 0.3 sqrt(m_rg^2 + m_yb^2)`` with ``s`` the standard
    deviation and ``m`` the mean. Source: D. Hasler & S. Süsstrunk, "Measuring
    colourfulness in natural images", SPIE HVEI 2003.
    """
    return _colourfulness(_as_rgb_float(rgb))


def _colourfulness(a: np.ndarray) -> float:
    rg = a[:, :, 0] - a[:, :, 1]
    yb = 0.5 * (a[:, :, 0] + a[:, :, 1]) - a[:, :, 2]
    m_rg, m_yb = float(rg.mean(dtype=np.float64)), float(yb.mean(dtype=np.float64))
    v = float(rg.var(dtype=np.float64)) + float(yb.var(dtype=np.float64))
    return float(math.sqrt(max(v, 0.0)) + 0.3 * math.sqrt(m_rg**2 + m_yb**2))


def _mean_saturation(a: np.ndarray) -> float:
    """Mean HSV saturation ``(max - min) / max`` (0 where max = 0)."""
    r, g, b = a[:, :, 0], a[:, :, 1], a[:, :, 2]
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    # where max = 0 also min = 0, so dividing by max(mx, 1) gives 0 there
    return float(np.mean((mx - mn) / np.maximum(mx, 1.0), dtype=np.float64))


def _histogram(y: np.ndarray) -> np.ndarray:
    """256-bin histogram of the rounded luminance."""
    return np.bincount(np.clip(np.rint(y), 0, 255).astype(np.int64).ravel(), minlength=256)


def _entropy(hist: np.ndarray) -> float:
    """Shannon entropy ``-sum p log2 p`` (bits) of a luminance histogram."""
    p = hist[hist > 0] / hist.sum()
    return float(max(0.0, -(p * np.log2(p)).sum()))


def _hist_percentile(hist: np.ndarray, q: float) -> float:
    """Smallest grey level whose cumulative histogram share reaches ``q`` percent."""
    c = np.cumsum(hist)
    return float(np.searchsorted(c, q / 100.0 * c[-1]))


def _spectrum(y: np.ndarray) -> tuple[float, float]:
    """Spectral slope and high-frequency energy fraction.

    The mean-removed luminance is Hann-windowed, its power spectrum is averaged in
    12 log-spaced radial frequency bands between ``2 / min(H, W)`` and 0.5
    cycles/pixel, and the slope of ``log P`` against ``log f`` is fitted by least
    squares (natural images: about -2, Field 1987 / van der Schaaf & van Hateren
    1996; blur steepens it, noise flattens it). The second value is the fraction
    of the (0.02–0.5 cycles/pixel) power above 0.25 cycles/pixel.
    Degenerate (constant or tiny) images give ``(0, 0)``.
    """
    h, w = y.shape
    n = min(h, w)
    if n < 8:
        return 0.0, 0.0
    win, idx, cnt, fc, band_idx = _spectrum_layout(h, w)
    z = (y - np.float32(y.mean(dtype=np.float64))) * win
    p = sfft.rfft2(z)
    p = (p.real * p.real + p.imag * p.imag).ravel()
    if float(p.sum(dtype=np.float64)) <= _EPS:
        return 0.0, 0.0
    pw = np.bincount(idx, weights=p, minlength=14)
    slope = 0.0
    good = cnt[1:13] > 0
    if good.sum() >= 3:
        lp = np.log(pw[1:13][good] / cnt[1:13][good] + _EPS)
        slope = float(np.polyfit(np.log(fc[good]), lp, 1)[0])
    bw = np.bincount(band_idx, weights=p, minlength=3)
    denom = float(bw[1] + bw[2])
    hf = float(bw[2] / denom) if denom > _EPS else 0.0
    return slope, hf


#: Largest image whose :func:`_spectrum_layout` is kept between calls (it costs about
#: 12 bytes per pixel; larger sizes are rare and recomputing is cheap next to the FFT).
_LAYOUT_CACHE_PIXELS = 4_000_000


def _spectrum_layout(h: int, w: int):
    """Per-size constants of :func:`_spectrum`: window, radial bin indices, counts."""
    if h * w <= _LAYOUT_CACHE_PIXELS:
        return _cached_spectrum_layout(h, w)
    return _new_spectrum_layout(h, w)


@functools.lru_cache(maxsize=8)
def _cached_spectrum_layout(h: int, w: int):
    return _new_spectrum_layout(h, w)


def _new_spectrum_layout(h: int, w: int):
    n = min(h, w)
    win = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fy**2 + fx**2).ravel()
    edges = np.geomspace(2.0 / n, 0.5, 13)
    # bin 0: below the first edge, 1..12: the log bands, 13: above 0.5
    idx = np.digitize(f, edges)
    idx[f > 0.5] = 13
    cnt = np.bincount(idx, minlength=14)
    fc = np.sqrt(edges[:-1] * edges[1:])
    band_idx = np.where(f < 0.02, 0, np.where(f <= 0.25, 1, 2))
    band_idx[f > 0.5] = 0
    return win, idx, cnt, fc, band_idx


# --- natural scene statistics (BRISQUE-style) ------------------------------

_ALPHA_GRID = np.arange(0.2, 10.0, 0.001)
_LG1 = special.gammaln(1.0 / _ALPHA_GRID)
_LG2 = special.gammaln(2.0 / _ALPHA_GRID)
_LG3 = special.gammaln(3.0 / _ALPHA_GRID)
# GGD: E[x^2] / E[|x|]^2 = G(1/a) G(3/a) / G(2/a)^2 (decreasing in a)
_GGD_RATIO = np.exp(_LG1 + _LG3 - 2.0 * _LG2)


def _fit_ggd(x: np.ndarray) -> tuple[float, float]:
    """Moment-matching fit of a zero-mean generalised Gaussian: ``(shape, variance)``.

    The shape ``a`` solves ``E[x^2] / E[|x|]^2 = G(1/a) G(3/a) / G(2/a)^2`` on a
    0.001 grid in [0.2, 10) (Sharifi & Leon-Garcia 1995, as used by BRISQUE).
    """
    m2 = float(np.mean(x * x, dtype=np.float64))
    m1 = float(np.mean(np.abs(x), dtype=np.float64))
    if m2 <= _EPS or m1 <= _EPS:
        return 2.0, 0.0
    rho = m2 / (m1 * m1)
    a = float(_ALPHA_GRID[np.argmin(np.abs(_GGD_RATIO - rho))])
    return a, m2


def _fit_aggd(x: np.ndarray) -> tuple[float, float, float, float]:
    """Asymmetric GGD fit: ``(shape, mean, left variance, right variance)``.

    Following Lasmar, Stitou & Berthoumieu (2009) / BRISQUE: ``s_l^2 = E[x^2 | x<0]``,
    ``s_r^2 = E[x^2 | x>0]``, ``g = s_l / s_r``, ``r = E|x|^2 / E[x^2]``,
    ``R = r (g^3 + 1)(g + 1) / (g^2 + 1)^2``; the shape ``a`` solves
    ``G(2/a)^2 / (G(1/a) G(3/a)) = R`` and the mean is
    ``(s_r - s_l) G(2/a) / G(1/a) * sqrt(G(1/a) / G(3/a))``.
    """
    n_neg = int(np.count_nonzero(x < 0))
    n_pos = int(np.count_nonzero(x > 0))
    xn = np.minimum(x, 0.0)
    s_neg = float(np.sum(xn * xn, dtype=np.float64))
    s_all = float(np.sum(x * x, dtype=np.float64))
    sl2 = s_neg / n_neg if n_neg else 0.0
    sr2 = (s_all - s_neg) / n_pos if n_pos else 0.0
    m2 = s_all / x.size
    m1 = float(np.mean(np.abs(x), dtype=np.float64))
    if m2 <= _EPS or sl2 <= _EPS or sr2 <= _EPS:
        return 2.0, 0.0, sl2, sr2
    sl, sr = math.sqrt(sl2), math.sqrt(sr2)
    g = sl / sr
    r_hat = m1 * m1 / m2
    big_r = r_hat * (g**3 + 1.0) * (g + 1.0) / (g * g + 1.0) ** 2
    i = int(np.argmin(np.abs(1.0 / _GGD_RATIO - big_r)))
    a = float(_ALPHA_GRID[i])
    mean = (sr - sl) * math.exp(_LG2[i] - _LG1[i]) * math.exp(0.5 * (_LG1[i] - _LG3[i]))
    return a, float(mean), sl2, sr2


def _mscn(y: np.ndarray) -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients.

    ``(Y - mu) / (sigma + 1)`` with ``mu`` and ``sigma`` the local mean and standard
    deviation under a 7 x 7 Gaussian window (sigma 7/6), as in BRISQUE (Mittal,
    Moorthy & Bovik, IEEE TIP 21(12), 2012).
    """
    mu = _gauss7(y)
    var = _gauss7(y * y) - mu * mu
    return (y - mu) / (np.sqrt(np.maximum(var, 0.0)) + 1.0)


_NSS_PER_SCALE = [
    "shape",
    "var",
    *[f"{o}_{k}" for o in ("h", "v", "d1", "d2") for k in ("shape", "mean", "lvar", "rvar")],
]
NSS_NAMES: tuple[str, ...] = tuple(f"nss{s}_{n}" for s in (1, 2) for n in _NSS_PER_SCALE)


def _nss_features(y: np.ndarray) -> tuple[float, ...]:
    """BRISQUE's 36 features: GGD of MSCN and AGGD of its 4 pairwise products, 2 scales.

    Products are with the right, lower, lower-right and lower-left neighbour
    (``h, v, d1, d2``). Scale 2 is the 2 x 2 box-downsampled luminance.
    """
    out: list[float] = []
    img = y
    for _ in range(2):
        if min(img.shape) < 2:
            out.extend([2.0, 0.0] + [2.0, 0.0, 0.0, 0.0] * 4)
        else:
            m = _mscn(img)
            out.extend(_fit_ggd(m))
            for p in (
                m[:, :-1] * m[:, 1:],
                m[:-1, :] * m[1:, :],
                m[:-1, :-1] * m[1:, 1:],
                m[:-1, 1:] * m[1:, :-1],
            ):
                out.extend(_fit_aggd(p))
        img = _downsample2(img)
    return tuple(float(v) for v in out)


# ---------------------------------------------------------------------------
# region of interest
# ---------------------------------------------------------------------------


def most_detailed_region(rgb: np.ndarray, grid: int = 4) -> tuple[int, int, int, int]:
    """Pixel box ``(x1, y1, x2, y2)`` (exclusive ends) of the most detailed grid tile.

    The image is split into a ``grid x grid`` array of tiles (fewer when the image is
    smaller than the grid) and the tile with the highest mean Sobel gradient
    magnitude of the luminance wins; ties go to the first tile in row-major order.
    """
    y = luminance(rgb)
    means, re, ce = _tile_means(_gradient_magnitude(y), grid)
    i, j = np.unravel_index(int(np.argmax(means)), means.shape)
    return int(ce[j]), int(re[i]), int(ce[j + 1]), int(re[i + 1])


# ---------------------------------------------------------------------------
# single measures of an RGB image (the classic tools the model may call)
# ---------------------------------------------------------------------------


def sharpness_index(rgb: np.ndarray) -> float:
    """The ``sharpness`` measure of :func:`measure` on its own (higher is sharper).

    >>> flat = np.full((32, 32, 3), 128, np.uint8)
    >>> sharpness_index(flat)
    0.0
    """
    y = luminance(rgb)
    return _sharpness_index(_gradient_magnitude(y), _laplacian(y))


def noise_level(rgb: np.ndarray) -> float:
    """Immerkær's noise sigma of the luma (grey levels, :func:`noise_sigma`)."""
    return noise_sigma(luminance(rgb))


def blockiness_level(rgb: np.ndarray) -> float:
    """8 x 8 blocking ratio of the luma (:func:`blockiness`; 1 = no blocking)."""
    return blockiness(luminance(rgb))


def rms_contrast(rgb: np.ndarray) -> float:
    """RMS contrast ``std(Y) / 255`` (Peli 1990)."""
    return float(luminance(rgb).std(dtype=np.float64) / 255.0)


def exposure_error(rgb: np.ndarray) -> float:
    """Distance from a balanced exposure: ``|mean(Y)/255 - 0.45| + shadow_clip +
    highlight_clip`` (clipped fractions as in :func:`measure`); 0 for a mid-toned
    image without clipping, up to about 1.5 for a black or white frame.

    >>> round(exposure_error(np.zeros((16, 16, 3), np.uint8)), 2)
    1.45
    """
    y = luminance(rgb)
    mean = float(y.mean(dtype=np.float64)) / 255.0
    return abs(mean - 0.45) + float(np.mean(y <= 4.0)) + float(np.mean(y >= 251.0))


# ---------------------------------------------------------------------------
# the bundle
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Measurements:
    """All hand-crafted measures of one image (see :func:`measure` for definitions)."""

    width: int
    height: int
    # sharpness / detail
    sharpness: float
    laplacian_var: float
    gradient_energy: float
    edge_density: float
    detail_l0: float
    detail_l1: float
    detail_l2: float
    detail_l3: float
    fine_detail_ratio: float
    spectral_slope: float
    hf_energy_ratio: float
    # distortions
    noise_sigma: float
    blockiness: float
    ringing: float
    # exposure / tone
    mean_luminance: float
    shadow_clip: float
    highlight_clip: float
    rms_contrast: float
    dynamic_range: float
    entropy: float
    # colour
    colourfulness: float
    mean_saturation: float
    # main region visibility
    main_region_detail_ratio: float
    main_region_sharpness: float
    main_region_contrast: float
    centre_contrast_ratio: float
    detail_spread: float
    # natural scene statistics (BRISQUE features, order of NSS_NAMES)
    nss: tuple[float, ...]

    def to_dict(self) -> dict[str, float]:
        """Flat ``name -> value`` mapping; the NSS tuple is expanded to ``NSS_NAMES``."""
        d: dict[str, float] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "nss":
                d.update({n: float(x) for n, x in zip(NSS_NAMES, v, strict=True)})
            elif f.name in ("width", "height"):
                d[f.name] = int(v)
            else:
                d[f.name] = float(v)
        return d


def _sharpness_index(grad: np.ndarray, lap: np.ndarray) -> float:
    """``RMS(Laplacian) / (mean |grad| + 0.1)``: contrast-invariant sharpness.

    The Laplacian (second derivative) falls faster under blur than the gradient
    (first derivative), so the ratio measures how fine the image's edges are,
    independently of their contrast. 0 for flat images.
    """
    return float(
        math.sqrt(float(np.mean(lap * lap, dtype=np.float64)))
        / (float(grad.mean(dtype=np.float64)) + 0.1)
    )


def measure(rgb: np.ndarray) -> Measurements:
    """Compute all measures of an RGB image.

    Definitions (``Y`` luma 0–255, ``grad`` Sobel magnitude / 8, ``L`` Laplacian):

    * ``sharpness`` – ``RMS(L) / (mean grad + 0.1)`` (contrast-normalised, see
      :func:`_sharpness_index`); ``laplacian_var`` – ``var(L)``, the classic
      variance-of-Laplacian focus measure (Pech-Pacheco et al., ICPR 2000);
      ``gradient_energy`` – mean ``grad`` (grey levels/pixel);
      ``edge_density`` – fraction of pixels with ``grad >= 10``.
    * ``detail_l0..l3`` – ``RMS(L)`` on a 2 x 2 box-average pyramid (levels 0–3),
      a multi-scale detail profile; ``fine_detail_ratio`` – ``detail_l0 / detail_l1``
      (low for upscaled or over-smoothed images).
    * ``spectral_slope`` and ``hf_energy_ratio`` – see :func:`_spectrum`.
    * ``noise_sigma`` (:func:`noise_sigma`), ``blockiness`` (:func:`blockiness`),
      ``ringing`` (:func:`ringing`).
    * ``mean_luminance`` – ``mean(Y) / 255``; ``shadow_clip`` / ``highlight_clip`` –
      fraction of pixels with ``Y <= 4`` / ``Y >= 251``; ``rms_contrast`` –
      ``std(Y) / 255`` (Peli 1990); ``dynamic_range`` – ``(P99(Y) - P1(Y)) / 255``;
      ``entropy`` – :func:`_entropy`.
    * ``colourfulness`` (:func:`colourfulness`); ``mean_saturation`` – mean HSV
      saturation.
    * Main-region visibility on a 4 x 4 tile grid of mean ``grad``:
      ``main_region_detail_ratio`` – max tile / mean tile;
      ``main_region_sharpness`` – ``sharpness`` inside the most detailed tile;
      ``main_region_contrast`` – ``std(Y) / 255`` inside that tile;
      ``centre_contrast_ratio`` – ``std(Y)`` of the central half-size window over the
      whole image's; ``detail_spread`` – coefficient of variation of the tile means
      (a sharp subject on a soft background raises it).
    * ``nss`` – BRISQUE's 36 MSCN statistics, :func:`_nss_features`.
    """
    a = _as_rgb_float(rgb)
    colour = _colourfulness(a), _mean_saturation(a)
    y = _luma(a)
    del a  # the float RGB copy is the largest array: free it before the luma measures
    h, w = y.shape
    edges = _edge_measures(y)  # gradient and Laplacian are freed on return

    # multi-scale detail profile
    details = []
    level = y
    for k in range(4):
        if k > 0:
            level = _downsample2(level) if min(level.shape) >= 2 else level
        ll = _laplacian(level)
        details.append(math.sqrt(float(np.mean(ll * ll, dtype=np.float64))))
    del level, ll

    slope, hf = _spectrum(y)
    y_std = float(y.std(dtype=np.float64))
    ch0, ch1 = h // 4, h - h // 4
    cw0, cw1 = w // 4, w - w // 4
    centre = y[ch0:ch1, cw0:cw1] if ch1 > ch0 and cw1 > cw0 else y
    hist = _histogram(y)
    p1, p99 = _hist_percentile(hist, 1.0), _hist_percentile(hist, 99.0)
    return Measurements(
        width=int(w),
        height=int(h),
        **edges,
        detail_l0=details[0],
        detail_l1=details[1],
        detail_l2=details[2],
        detail_l3=details[3],
        fine_detail_ratio=_ratio(details[0], details[1], eps=0.01),
        spectral_slope=slope,
        hf_energy_ratio=hf,
        noise_sigma=noise_sigma(y),
        blockiness=blockiness(y),
        mean_luminance=float(y.mean(dtype=np.float64) / 255.0),
        shadow_clip=float(np.mean(y <= 4.0)),
        highlight_clip=float(np.mean(y >= 251.0)),
        rms_contrast=y_std / 255.0,
        dynamic_range=float((p99 - p1) / 255.0),
        entropy=_entropy(hist),
        colourfulness=colour[0],
        mean_saturation=colour[1],
        centre_contrast_ratio=_ratio(float(centre.std(dtype=np.float64)), y_std, eps=0.01),
        nss=_nss_features(y),
    )


def _edge_measures(y: np.ndarray) -> dict[str, float]:
    """The measures of :func:`measure` read from the gradient and the Laplacian of ``y``
    (sharpness, edges, ringing, the main region), so both are freed together."""
    grad = _gradient_magnitude(y)
    lap = _laplacian(y)
    tiles, re, ce = _tile_means(grad, 4)
    ti, tj = np.unravel_index(int(np.argmax(tiles)), tiles.shape)
    r0, r1, c0, c1 = re[ti], re[ti + 1], ce[tj], ce[tj + 1]
    tile_mean = float(tiles.mean())
    return {
        "sharpness": _sharpness_index(grad, lap),
        "laplacian_var": float(lap.var(dtype=np.float64)),
        "gradient_energy": float(grad.mean(dtype=np.float64)),
        "edge_density": float(np.mean(grad >= 10.0)),
        "ringing": ringing(grad, lap),
        "main_region_detail_ratio": _ratio(float(tiles.max()), tile_mean, eps=0.01),
        "main_region_sharpness": _sharpness_index(grad[r0:r1, c0:c1], lap[r0:r1, c0:c1]),
        "main_region_contrast": float(y[r0:r1, c0:c1].std(dtype=np.float64) / 255.0),
        "detail_spread": float(tiles.std() / (tile_mean + 0.01)),
    }


# ---------------------------------------------------------------------------
# feature vector for the calibrated scorer
# ---------------------------------------------------------------------------

# name -> transform applied before standardisation ("log": log(1e-3 + x) for
# non-negative, heavy-tailed measures; "id": unchanged).
_FEATURES: tuple[tuple[str, str], ...] = (
    ("sharpness", "log"),
    ("laplacian_var", "log"),
    ("gradient_energy", "log"),
    ("edge_density", "id"),
    ("detail_l0", "log"),
    ("detail_l1", "log"),
    ("detail_l2", "log"),
    ("detail_l3", "log"),
    ("fine_detail_ratio", "log"),
    ("spectral_slope", "id"),
    ("hf_energy_ratio", "log"),
    ("noise_sigma", "log"),
    ("blockiness", "log"),
    ("ringing", "log"),
    ("mean_luminance", "id"),
    ("shadow_clip", "id"),
    ("highlight_clip", "id"),
    ("rms_contrast", "id"),
    ("dynamic_range", "id"),
    ("entropy", "id"),
    ("colourfulness", "log"),
    ("mean_saturation", "id"),
    ("main_region_detail_ratio", "log"),
    ("main_region_sharpness", "log"),
    ("main_region_contrast", "id"),
    ("centre_contrast_ratio", "log"),
    ("detail_spread", "id"),
    *((n, "log" if n.endswith("var") else "id") for n in NSS_NAMES),
)

FEATURE_NAMES: tuple[str, ...] = tuple(n for n, _ in _FEATURES)
FEATURE_TRANSFORMS: dict[str, str] = dict(_FEATURES)


def feature_vector(m: Measurements) -> np.ndarray:
    """Fixed-order feature vector (order :data:`FEATURE_NAMES`), transformed.

    Non-negative heavy-tailed measures enter as ``log(1e-3 + x)``, the rest as-is
    (see ``FEATURE_TRANSFORMS``). Always finite.
    """
    d = m.to_dict()
    v = np.empty(len(_FEATURES), dtype=np.float64)
    for i, (name, tr) in enumerate(_FEATURES):
        x = float(d[name])
        v[i] = math.log(1e-3 + max(x, 0.0)) if tr == "log" else x
    return np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0)
