"""PIQE, the Perception based Image Quality Evaluator (numpy/scipy only).

Venkatanath N, Praneeth D, Maruthi Chandrasekhar Bh, S. S. Channappayya and
S. S. Medasani, "Blind image quality evaluation using perception based
features", NCC 2015. Opinion-unaware and training-free: lower is better; near 0
(``100 / (n_active + 1)``) when no active block is distorted, 100 when every
active block is fully distorted or when no block is active.

The steps, with the constants of the published algorithm (MATLAB ``piqe``):

1. Grey levels: RGB uint8 input becomes ``round(0.2989 R + 0.5870 G + 0.1140 B)``
   (MATLAB ``rgb2gray`` weights and rounding); the grey image is then stretched so
   its maximum is 255, ``g = round(255 g / max g)``. Float input may be on a
   0–1 or a 0–255 scale: the stretch makes the score scale-free.
2. Partial blocks: the image is padded at the bottom and right, by mirror
   reflection (``d c b a | a b c d``), to a multiple of 16 pixels.
3. MSCN coefficients ``z = (g - mu) / (sigma + C)``, ``C = 1``, with ``mu`` and
   ``sigma`` the local mean and standard deviation under a 7 x 7 Gaussian window,
   sigma 7/6 (borders replicated).
4. 16 x 16 non-overlapping blocks; a block is *active* when the (unbiased)
   variance ``v`` of its MSCN coefficients exceeds 0.1.
5. Noticeable artifacts: each of the four block edges is cut into 11 segments of
   6 consecutive pixels; the block has noticeable artifacts when any segment's
   standard deviation is below 0.1 (a flat stretch on an active block: blocking).
6. Noise: ``sigma_blk = sqrt(v)``; ``r = std(centre) / std(surround)`` with the
   centre the two middle columns (7 and 8, 0-based) and the surround the block
   without columns 7 and 9 (the reference code deletes column 8 after column 7
   has shifted it, and the published scores depend on it);
   ``beta = |sigma_blk - r| / max(sigma_blk, r)``; the block is noisy when
   ``sigma_blk > 2 beta``.
7. Block distortion ``D = A (1 - v) + N v`` (``A``, ``N`` the two criteria, so 1
   when both hold) and ``PIQE = 100 (sum D + C) / (n_active + C)``, ``C = 1``.

An image with no active block (flat, or blurred beyond the activity threshold)
therefore scores exactly 100. The score is not clipped, as in the reference: ``D``
leaves [0, 1] when ``v > 1`` (a noise-only block adds ``v``, an artifact-only block
``1 - v``), so [0, 100] holds in practice rather than by construction (AGIQA-3K
images span 7.5–100).

All block statistics are computed at once on ``(rows, cols, 16, 16)`` views; there
is no Python loop over blocks.

Entry points: :func:`piqe` (the score), :func:`piqe_maps` (score plus per-block
masks, as a :class:`PIQEResult`) and :func:`distortion_boxes` (distorted blocks as
pixel boxes).

>>> import numpy as np
>>> piqe(np.full((32, 32), 128, dtype=np.uint8))  # flat: no active block
100.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from scipy import ndimage

__all__ = [
    "BLOCK",
    "DistortionBox",
    "PIQEResult",
    "distortion_boxes",
    "piqe",
    "piqe_blockwise",
    "piqe_maps",
]

BLOCK = 16  #: block side, pixels
_ACTIVITY = 0.1  # block MSCN variance above which a block is analysed
_SEGMENT_STD = 0.1  # edge-segment std below which a block has noticeable artifacts
_SEGMENT = 6  # edge-segment length, pixels
_C = 1.0  # stabilising constant of the MSCN denominator and of the pooling
_RGB2GRAY = (0.298936021293775, 0.587043074451121, 0.114020904255103)  # MATLAB rgb2gray

Kind = Literal["artifact", "noise"]


def _gauss_kernel() -> np.ndarray:
    k = np.exp(-0.5 * (np.arange(-3, 4) / (7.0 / 6.0)) ** 2)
    return k / k.sum()


_KERNEL = _gauss_kernel()


class DistortionBox(NamedTuple):
    """A distorted region in pixels of the input image (``x2``, ``y2`` exclusive)."""

    x1: int
    y1: int
    x2: int
    y2: int
    kind: Kind
    severity: float


@dataclass(frozen=True, eq=False)
class PIQEResult:
    """PIQE score with its block-level evidence.

    Block arrays have shape ``(rows, cols) = (ceil(H / 16), ceil(W / 16))``; block
    ``(i, j)`` covers pixels ``[16 i, 16 i + 16) x [16 j, 16 j + 16)``, clipped to the
    image for the last row/column when the size is not a multiple of 16.

    Attributes:
        score: PIQE, lower is better (100 when no block is active).
        shape: ``(H, W)`` of the input image.
        variance: MSCN variance of each block.
        active: blocks with ``variance > 0.1`` (the only ones scored).
        artifact: active blocks meeting the noticeable-artifact criterion.
        noise: active blocks meeting the noise criterion.
        distortion: each block's share ``D`` of the score (0 for inactive blocks).
    """

    score: float
    shape: tuple[int, int]
    variance: np.ndarray
    active: np.ndarray
    artifact: np.ndarray
    noise: np.ndarray
    distortion: np.ndarray

    @property
    def n_active(self) -> int:
        return int(self.active.sum())

    def pixel_mask(self, which: Literal["active", "artifact", "noise"]) -> np.ndarray:
        """An ``H x W`` boolean mask of the chosen blocks (like MATLAB's masks)."""
        blocks = {"active": self.active, "artifact": self.artifact, "noise": self.noise}[which]
        full = np.repeat(np.repeat(blocks, BLOCK, axis=0), BLOCK, axis=1)
        return full[: self.shape[0], : self.shape[1]]

    def boxes(self, **kwargs) -> list[DistortionBox]:
        """Shortcut for :func:`distortion_boxes` on this result."""
        return distortion_boxes(self, **kwargs)


# ---------------------------------------------------------------------------
# input and MSCN
# ---------------------------------------------------------------------------


def _grey(image: np.ndarray) -> tuple[np.ndarray, bool]:
    """Validated float64 grey levels (before padding and stretching), and whether
    they are whole numbers."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
        raise ValueError(f"expected an H x W grey or H x W x 3 RGB image, got shape {a.shape}")
    if a.shape[0] < BLOCK or a.shape[1] < BLOCK:
        raise ValueError(
            f"PIQE needs an image of at least {BLOCK} x {BLOCK} pixels (one block), "
            f"got {a.shape[0]} x {a.shape[1]}"
        )
    if a.dtype == np.bool_ or not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"expected a numeric image, got dtype {a.dtype}")
    integer = np.issubdtype(a.dtype, np.integer)
    if not integer and not np.isfinite(a).all():
        raise ValueError("the image contains NaN or infinite values")
    if not integer:
        a = a.astype(np.float64, copy=False)
    if a.ndim == 2:
        return a.astype(np.float64), integer
    y = a[:, :, 0] * _RGB2GRAY[0]
    y += a[:, :, 1] * _RGB2GRAY[1]
    y += a[:, :, 2] * _RGB2GRAY[2]
    if integer:
        np.round(y, out=y)
    return y, integer


def _stretch(y: np.ndarray, integral: bool) -> np.ndarray:
    """``round(255 y / max y)`` in place (negative levels clipped); all-zero stays zero."""
    np.maximum(y, 0.0, out=y)
    top = float(y.max())
    if top > 0 and not (integral and top == 255.0):  # else the stretch is the identity
        y *= 255.0 / top
        np.round(y, out=y)
    return y


def _vertical_blur(p: np.ndarray, h: int, out: np.ndarray, tmp: np.ndarray) -> np.ndarray:
    """7-tap symmetric filter down the rows of the 3-row-padded ``p`` (contiguous slices)."""
    k = _KERNEL
    np.multiply(p[3 : 3 + h], k[3], out=out)
    for i in range(3):
        np.add(p[i : i + h], p[6 - i : 6 - i + h], out=tmp)
        tmp *= k[i]
        out += tmp
    return out


def _mscn(y: np.ndarray) -> np.ndarray:
    """``(y - mu) / (sigma + 1)`` under the 7 x 7 Gaussian window, borders replicated.

    The vertical pass runs on whole rows (scipy's column-wise pass is several times
    slower); the horizontal pass is ``scipy.ndimage.correlate1d``. Four work
    buffers are reused throughout.
    """
    h, w = y.shape
    p = np.empty((h + 6, w))
    p[3 : 3 + h] = y
    p[:3] = y[0]
    p[3 + h :] = y[-1]
    a, b, c = np.empty((h, w)), np.empty((h, w)), np.empty((h, w))
    _vertical_blur(p, h, a, c)
    np.multiply(p, p, out=p)
    _vertical_blur(p, h, b, c)
    mu = ndimage.correlate1d(a, _KERNEL, axis=1, mode="nearest", output=c)
    m2 = ndimage.correlate1d(b, _KERNEL, axis=1, mode="nearest", output=a)
    np.multiply(mu, mu, out=b)
    m2 -= b
    np.abs(m2, out=m2)
    np.sqrt(m2, out=m2)
    m2 += _C
    z = np.subtract(y, mu, out=b)
    z /= m2
    return z


# ---------------------------------------------------------------------------
# block criteria (all blocks at once)
# ---------------------------------------------------------------------------


def _unbiased_var(s1: np.ndarray, s2: np.ndarray, n: int) -> np.ndarray:
    return np.maximum(s2 - s1 * s1 / n, 0.0) / (n - 1)


def _artifact_criterion(z4: np.ndarray) -> np.ndarray:
    """Any 6-pixel segment of the four block edges with std < 0.1 (ddof 1).

    Segment sums come from cumulative sums along each 16-pixel edge.
    """
    edges = np.stack(
        [
            z4[:, 0, :, :],
            z4[:, -1, :, :],
            z4[:, :, :, 0].transpose(0, 2, 1),
            z4[:, :, :, -1].transpose(0, 2, 1),
        ],
        axis=-2,
    )  # (rows, cols, 4, 16): top, bottom, left, right
    n = _SEGMENT
    zero = np.zeros((*edges.shape[:-1], 1))
    c1 = np.concatenate([zero, np.cumsum(edges, axis=-1)], axis=-1)
    c2 = np.concatenate([zero, np.cumsum(edges * edges, axis=-1)], axis=-1)
    var = _unbiased_var(c1[..., n:] - c1[..., :-n], c2[..., n:] - c2[..., :-n], n)
    return np.asarray((np.sqrt(var) < _SEGMENT_STD).any(axis=(-1, -2)))


def _noise_criterion(colsum: np.ndarray, colsq: np.ndarray, var: np.ndarray) -> np.ndarray:
    """Centre-surround test ``sqrt(v) > 2 beta`` from per-block column sums."""
    n_col = BLOCK
    c_s1 = colsum[..., 7] + colsum[..., 8]
    c_s2 = colsq[..., 7] + colsq[..., 8]
    s_s1 = colsum.sum(axis=-1) - colsum[..., 7] - colsum[..., 9]
    s_s2 = colsq.sum(axis=-1) - colsq[..., 7] - colsq[..., 9]
    centre = np.sqrt(_unbiased_var(c_s1, c_s2, 2 * n_col))
    surround = np.sqrt(_unbiased_var(s_s1, s_s2, (BLOCK - 2) * n_col))
    sigma = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = centre / surround
        ratio = np.where(np.isnan(ratio), 0.0, ratio)  # 0/0, as the reference does
        beta = np.abs(sigma - ratio) / np.maximum(sigma, ratio)
        return sigma > 2.0 * beta  # NaN beta (flat block, or r = inf) -> False


def piqe_maps(image: np.ndarray) -> PIQEResult:
    """PIQE of ``image`` with its per-block activity, artifact and noise masks.

    ``image``: ``H x W`` grey or ``H x W x 3`` RGB (RGBA: alpha ignored), uint8 on
    0–255 or float on 0–1 / 0–255, at least 16 x 16 pixels. Raises ``ValueError``
    for other shapes, smaller images and non-finite values.
    """
    y, integral = _grey(image)
    h, w = y.shape
    rows, cols = -(-h // BLOCK), -(-w // BLOCK)
    if (rows * BLOCK, cols * BLOCK) != (h, w):
        y = np.pad(y, ((0, rows * BLOCK - h), (0, cols * BLOCK - w)), mode="symmetric")
    z = _mscn(_stretch(y, integral))

    z4 = z.reshape(rows, BLOCK, cols, BLOCK)
    colsum = z4.sum(axis=1)  # (rows, cols, 16): per-block column sums
    colsq = (z4 * z4).sum(axis=1)
    n = BLOCK * BLOCK
    var = _unbiased_var(colsum.sum(axis=-1), colsq.sum(axis=-1), n)

    active = var > _ACTIVITY
    artifact = active & _artifact_criterion(z4)
    noise = active & _noise_criterion(colsum, colsq, var)
    distortion = np.where(artifact, 1.0 - var, 0.0) + np.where(noise, var, 0.0)
    score = 100.0 * (float(distortion.sum()) + _C) / (int(active.sum()) + _C)
    return PIQEResult(
        score=score,
        shape=(h, w),
        variance=var,
        active=active,
        artifact=artifact,
        noise=noise,
        distortion=distortion,
    )


def piqe_blockwise(image: np.ndarray) -> float:
    """PIQE computed block by block in a plain loop, straight from the algorithm's
    description: a slow cross-check of the vectorised :func:`piqe` (the tests and
    ``bench/bench_classic_metrics.py --piqe-loop`` compare the two)."""
    y, integral = _grey(image)
    h, w = y.shape
    rows, cols = -(-h // BLOCK), -(-w // BLOCK)
    y = np.pad(y, ((0, rows * BLOCK - h), (0, cols * BLOCK - w)), mode="symmetric")
    z = _mscn(_stretch(y, integral))
    total, active = 0.0, 0
    for i in range(rows):
        for j in range(cols):
            b = z[BLOCK * i : BLOCK * (i + 1), BLOCK * j : BLOCK * (j + 1)]
            v = b.var(ddof=1)
            if v <= _ACTIVITY:
                continue
            active += 1
            edges = (b[0], b[-1], b[:, 0], b[:, -1])
            segments = range(BLOCK - _SEGMENT + 1)
            art = any(
                e[k : k + _SEGMENT].std(ddof=1) < _SEGMENT_STD for e in edges for k in segments
            )
            surround = np.delete(b, [7, 9], axis=1).std(ddof=1)
            ratio = b[:, 7:9].std(ddof=1) / surround if surround > 0 else 0.0
            sig = np.sqrt(v)
            noisy = sig > 2 * abs(sig - ratio) / max(sig, ratio)
            total += art * (1 - v) + noisy * v
    return 100.0 * (total + 1) / (active + 1)


def piqe(image: np.ndarray) -> float:
    """PIQE score of ``image`` (lower is better; see :func:`piqe_maps`)."""
    return piqe_maps(image).score


# ---------------------------------------------------------------------------
# distortion boxes
# ---------------------------------------------------------------------------


def _block_box(result: PIQEResult, r0: int, c0: int, r1: int, c1: int) -> tuple[int, int, int, int]:
    h, w = result.shape
    return (c0 * BLOCK, r0 * BLOCK, min(c1 * BLOCK, w), min(r1 * BLOCK, h))


def distortion_boxes(
    result: PIQEResult,
    *,
    kinds: tuple[Kind, ...] = ("artifact", "noise"),
    min_severity: float = 0.0,
    merge: bool = False,
) -> list[DistortionBox]:
    """Distorted blocks as pixel boxes ``(x1, y1, x2, y2, kind, severity)``.

    ``kind`` is ``"artifact"`` (noticeable artifacts: a flat edge segment on an
    active block, typically blocking) or ``"noise"``; a block meeting both criteria
    yields one box of each kind. ``severity`` is the block's share of the score for
    that kind, clipped to [0, 1]: ``1 - v`` for artifacts, ``v`` for noise (``v`` the
    block's MSCN variance). Boxes with severity below ``min_severity`` are dropped.

    With ``merge=True`` 4-connected blocks of one kind become a single box around
    them, whose severity is the mean of its blocks. Boxes are sorted by decreasing
    severity, then position; coordinates are clipped to the image.
    """
    masks = {"artifact": result.artifact, "noise": result.noise}
    weights = {
        "artifact": np.clip(1.0 - result.variance, 0.0, 1.0),
        "noise": np.clip(result.variance, 0.0, 1.0),
    }
    out: list[DistortionBox] = []
    for kind in kinds:
        if kind not in masks:
            raise ValueError(f"unknown distortion kind {kind!r}; use 'artifact' or 'noise'")
        mask, sev = masks[kind], weights[kind]
        if merge:
            labels, _ = ndimage.label(mask)
            for lab, sl in enumerate(ndimage.find_objects(labels), start=1):
                s = float(sev[labels == lab].mean())
                box = _block_box(result, sl[0].start, sl[1].start, sl[0].stop, sl[1].stop)
                out.append(DistortionBox(*box, kind, s))
        else:
            for r, c in zip(*np.nonzero(mask), strict=True):
                box = _block_box(result, int(r), int(c), int(r) + 1, int(c) + 1)
                out.append(DistortionBox(*box, kind, float(sev[r, c])))
    out = [b for b in out if b.severity >= min_severity]
    out.sort(key=lambda b: (-b.severity, b.y1, b.x1, b.kind))
    return out
