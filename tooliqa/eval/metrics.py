"""Correlation metrics for IQA predictions against mean opinion scores.

SRCC (Spearman), KRCC (Kendall tau-b), PLCC (Pearson) and RMSE, plus the VQEG
monotonic logistic mappings used before PLCC/RMSE:

* 4-parameter: ``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``
* 5-parameter: ``f(x) = b1 * (0.5 - 1 / (1 + exp(b2 * (x - b3)))) + b4 * x + b5``

Both fits range over the whole monotone family, rising or falling as asked
(``fit_logistic(direction=...)``): the 4PL is monotone for any parameters; the
5PL is monotone over the data range, which takes in S shapes (``b1 b2 > 0``,
``b4 >= 0``), inverse S shapes (``b1 b2 < 0``: steep tails, flat middle, the
linear term outweighing the logistic) and any other sign pattern whose slope
keeps one sign over the predictions (see ``_fit_5pl_up``). By default the
mapping is non-decreasing: predictions are on the same orientation as MOS
(higher is better), so a decreasing mapping would silently turn anti-correlated
predictions into a positive PLCC; with the constraint the sign survives, and
:func:`evaluate` keeps it. Correlations are never passed through ``abs()`` for
the same reason. Fits use ``scipy.optimize.least_squares`` (trust-region
reflective, analytic Jacobian, at most ``DEFAULT_MAX_NFEV`` evaluations per
start) within bounds that keep the curve from degenerating into a step or
drifting to its linear limit (see ``_fit_4pl_up`` and ``_fit_5pl_up``);
initial values are described in ``_starts``.

Degenerate inputs (too few points, constant values, NaNs) give ``None`` values
with a message from :func:`evaluate`; only mismatched lengths raise.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import optimize, special, stats

__all__ = [
    "FIT_NAMES",
    "LogisticFit",
    "Metrics",
    "evaluate",
    "fit_logistic",
    "krcc",
    "logistic_4pl",
    "logistic_5pl",
    "plcc",
    "rmse",
    "srcc",
]

FIT_NAMES = ("5pl", "4pl", "none")
CI_LEVEL = 0.95
DEFAULT_MAX_NFEV = 4000
"""Bound on model evaluations per curve_fit start (trust-region reflective)."""
MAX_STEEPNESS = 20.0
"""Steepest logistic allowed: scale >= (prediction spread) / MAX_STEEPNESS, the spread
being the 5th-95th percentile range of the distinct predictions (see ``_spread``)."""
MAX_SPAN = 3.0
"""Largest 4PL span (b1 - b2) or 5PL amplitude b1, in units of the MOS range."""

ArrayLike = Sequence[float] | np.ndarray


# -- plain metrics -------------------------------------------------------------


def _pair(pred: ArrayLike, mos: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=float).ravel()
    m = np.asarray(mos, dtype=float).ravel()
    if p.shape != m.shape:
        raise ValueError(f"pred and mos differ in length ({p.size} vs {m.size})")
    return p, m


def _undefined(p: np.ndarray, m: np.ndarray, min_n: int = 3) -> bool:
    """True where a correlation is not defined: too few points, non-finite or constant input."""
    return (
        p.size < min_n
        or not (np.all(np.isfinite(p)) and np.all(np.isfinite(m)))
        or np.ptp(p) == 0
        or np.ptp(m) == 0
    )


def _clip_corr(r: float) -> float | None:
    if not math.isfinite(r):
        return None
    return float(min(1.0, max(-1.0, r)))


def srcc(pred: ArrayLike, mos: ArrayLike) -> float | None:
    """Spearman rank-order correlation; ``None`` when undefined (n < 3, constant, NaN)."""
    p, m = _pair(pred, mos)
    if _undefined(p, m):
        return None
    return _clip_corr(stats.spearmanr(p, m).statistic)


def krcc(pred: ArrayLike, mos: ArrayLike) -> float | None:
    """Kendall rank correlation (tau-b, tie-corrected); ``None`` when undefined."""
    p, m = _pair(pred, mos)
    if _undefined(p, m):
        return None
    return _clip_corr(stats.kendalltau(p, m).statistic)


def plcc(pred: ArrayLike, mos: ArrayLike) -> float | None:
    """Pearson linear correlation of the values as given (no fit); ``None`` when undefined."""
    p, m = _pair(pred, mos)
    if _undefined(p, m):
        return None
    pc = p - p.mean()
    mc = m - m.mean()
    return _clip_corr(float(np.dot(pc, mc) / math.sqrt(np.dot(pc, pc) * np.dot(mc, mc))))


def rmse(pred: ArrayLike, mos: ArrayLike) -> float | None:
    """Root-mean-square error; ``None`` for empty or non-finite input."""
    p, m = _pair(pred, mos)
    if p.size == 0 or not (np.all(np.isfinite(p)) and np.all(np.isfinite(m))):
        return None
    return float(np.sqrt(np.mean((p - m) ** 2)))


# -- logistic mappings -----------------------------------------------------------


def logistic_4pl(x: ArrayLike, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """``(b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2`` (overflow-safe)."""
    x = np.asarray(x, dtype=float)
    return (b1 - b2) * special.expit((x - b3) / abs(b4)) + b2


def logistic_5pl(x: ArrayLike, b1: float, b2: float, b3: float, b4: float, b5: float) -> np.ndarray:
    """``b1 * (0.5 - 1 / (1 + exp(b2 (x - b3)))) + b4 x + b5`` (overflow-safe)."""
    x = np.asarray(x, dtype=float)
    # 0.5 - 1 / (1 + exp(t)) == expit(t) - 0.5
    return b1 * (special.expit(b2 * (x - b3)) - 0.5) + b4 * x + b5


def _model_4pl(x: np.ndarray, lo: float, span: float, b3: float, b4: float) -> np.ndarray:
    # Internal parametrisation: b2 = lo, b1 = lo + span with span >= 0 (monotone).
    return span * special.expit((x - b3) / b4) + lo


def _jac_4pl(x: np.ndarray, lo: float, span: float, b3: float, b4: float) -> np.ndarray:
    sig = special.expit((x - b3) / b4)
    d = span * sig * (1.0 - sig)
    return np.column_stack([np.ones_like(x), sig, -d / b4, -d * (x - b3) / b4**2])


def _jac_5pl(x: np.ndarray, b1: float, b2: float, b3: float, b4: float, b5: float) -> np.ndarray:
    sig = special.expit(b2 * (x - b3))
    d = b1 * sig * (1.0 - sig)
    return np.column_stack([sig - 0.5, d * (x - b3), -d * b2, x, np.ones_like(x)])


def _model_inv(z: np.ndarray, a: float, k: float, c: float, e: float, v: float) -> np.ndarray:
    # Inverse-S branch: b1 = -a <= 0 and b4 = a k / 4 + e, so the slope at the
    # centre (the flattest point) is e >= 0 and the curve is monotone everywhere.
    return logistic_5pl(z, -a, k, c, a * k / 4.0 + e, v)


def _jac_inv(z: np.ndarray, a: float, k: float, c: float, e: float, v: float) -> np.ndarray:
    sig = special.expit(k * (z - c))
    d = a * sig * (1.0 - sig)
    return np.column_stack(
        [0.5 - sig + k * z / 4.0, a * z / 4.0 - d * (z - c), d * k, z, np.ones_like(z)]
    )


Direction = Literal["increasing", "decreasing"]
DIRECTIONS = ("increasing", "decreasing", "auto")


@dataclass(frozen=True)
class LogisticFit:
    """A fitted monotone logistic mapping from predictions to the MOS scale.

    ``params`` are ``(b1, b2, b3, b4)`` or ``(b1, b2, b3, b4, b5)`` in the
    formulas of the module docstring; ``direction`` says whether the curve
    rises or falls over the fitted predictions. When ``ok`` is false the fit
    failed, ``params`` is ``None`` and :meth:`predict` returns its input
    unchanged (identity), so callers fall back to raw values.
    """

    kind: str
    params: tuple[float, ...] | None
    ok: bool
    message: str = ""
    direction: Direction = "increasing"

    def predict(self, x: ArrayLike) -> np.ndarray:
        x = np.asarray(x, dtype=float)
        if not self.ok or self.params is None:
            return x.copy()
        if self.kind == "4pl":
            return logistic_4pl(x, *self.params)
        if self.kind == "5pl":
            return logistic_5pl(x, *self.params)
        raise ValueError(f"unknown logistic kind {self.kind!r}")


def _negated(params: Sequence[float], k: int) -> list[float]:
    """Parameters of ``-f`` given those of ``f`` (a decreasing fit to ``mos`` is an
    increasing fit to ``-mos``, negated)."""
    b = [float(v) for v in params]
    if k == 4:
        return [-b[0], -b[1], b[2], b[3]]
    return [-b[0], b[1], b[2], -b[3], -b[4]]


@dataclass(frozen=True)
class _Frame:
    """Standardised coordinates of a 5PL fit: ``z = (x - mx) / sx``, ``t = (y - my) / sy``.

    In them the 5PL is ``g(z) = a (expit(k (z - c)) - 0.5) + w z + v`` with
    ``f(x) = my + sy g(z)``; fitting there keeps the linear and constant terms
    uncorrelated and every parameter of order one, whatever the units of the
    predictions. The 5PL's symmetry ``(b1, b2) -> (-b1, -b2)`` is used to keep
    ``k >= 0``.
    """

    mx: float
    sx: float
    my: float
    sy: float

    @classmethod
    def of(cls, p: np.ndarray, m: np.ndarray) -> _Frame:
        return cls(float(p.mean()), float(p.std()) or 1.0, float(m.mean()), float(m.std()) or 1.0)

    def inner(self, b: Sequence[float]) -> np.ndarray:
        b1, b2, b3, b4, b5 = (float(v) for v in b)
        if b2 < 0:
            b1, b2 = -b1, -b2
        return np.array(
            [
                b1 / self.sy,
                b2 * self.sx,
                (b3 - self.mx) / self.sx,
                b4 * self.sx / self.sy,
                (b5 - self.my + b4 * self.mx) / self.sy,
            ]
        )

    def outer(self, q: Sequence[float] | np.ndarray) -> tuple[float, ...]:
        a, k, c, w, v = (float(u) for u in q)
        b4 = self.sy * w / self.sx
        return (
            self.sy * a,
            k / self.sx,
            self.mx + self.sx * c,
            b4,
            self.my + self.sy * v - b4 * self.mx,
        )


def _min_slope(q: Sequence[float] | np.ndarray, z_lo: float, z_hi: float) -> float:
    """Smallest slope of ``g`` (see :class:`_Frame`) on ``[z_lo, z_hi]``.

    ``g'(z) = w + a k s (1 - s)`` with ``s = expit(k (z - c))``: the bump
    ``s (1 - s)`` peaks at ``c`` and falls off on both sides, so the extremes on
    the interval are at its ends or at ``c`` clipped into it.
    """
    a, k, c, w, _ = q
    zs = np.array([z_lo, z_hi, min(max(c, z_lo), z_hi)])
    s = special.expit(k * (zs - c))
    return float(np.min(w + a * k * s * (1.0 - s)))


def _spread(x: np.ndarray) -> float:
    """5th-95th percentile range of the distinct values of ``x`` (> 0 for non-constant ``x``).

    The steepness bound is relative to it: distinct values, so that a cluster of
    tied scores does not shrink it (a step there is what the bound prevents);
    percentiles, so that a few far outliers (heavy-tailed predictions) do not
    widen it and flatten every logistic the bulk of the data needs.
    """
    lo, hi = np.percentile(np.unique(x), [5.0, 95.0])
    return float(hi - lo) or float(np.ptp(x)) or 1.0


def _starts(p: np.ndarray, m: np.ndarray, k: int) -> list[list[float]]:
    """Initial values for an increasing fit ``p -> m`` (the first is the primary one).

    * Asymptotes / amplitude from the MOS range: 4PL ``b2 = min(mos)``,
      ``b1 = max(mos)``; 5PL ``b1 = max(mos) - min(mos)``.
    * Centre ``b3`` at the median prediction.
    * Scale from the spread of predictions: 4PL ``b4 = std(pred)``; 5PL slope
      ``b2 = 1 / std(pred)``. A unit of std keeps the start close to linear over
      the data, so the first iterate is about as good as a straight line.
    * 5PL linear term ``b4 = 0`` and offset ``b5 = mean(mos)`` (the curve value
      at the centre).

    Two alternative starts (steeper, and centred on the mean) are tried too and
    the lowest residual wins; this rescues fits where the primary start sits on
    a flat region. The 5PL also gets two inverse-S starts (``b1 < 0``, steep
    tails and a flat middle): the least-squares line's slope at the tails, a
    quarter of it at the median, with the logistic one and three standard
    deviations wide.
    """
    lo, hi = float(m.min()), float(m.max())
    span = hi - lo
    sd = float(p.std()) or 1.0
    med, mean = float(np.median(p)), float(p.mean())
    scales = [(med, sd), (med, sd / 4.0), (mean, sd / 2.0)]
    if k == 4:
        return [[hi, lo, c, s] for c, s in scales]
    starts = [[span, 1.0 / s, c, 0.0, float(m.mean())] for c, s in scales]
    fr = _Frame.of(p, m)
    r = max(float(np.mean((p - fr.mx) * (m - fr.my))) / (fr.sx * fr.sy), 0.0)
    c = (med - fr.mx) / fr.sx
    for kz in (1.0, 1.0 / 3.0):  # inner units: w = r at the tails, r / 4 at c
        a = 3.0 * r / kz
        starts.append(list(fr.outer([-a, kz, c, r, -r * c])))
    return starts


def _solve(
    fun: Callable[..., np.ndarray],
    jac: Callable[..., np.ndarray],
    x: np.ndarray,
    y: np.ndarray,
    x0: np.ndarray,
    bounds: tuple[list[float], list[float]],
    max_nfev: int,
) -> tuple[float, np.ndarray] | str:
    """Bounded least squares from ``x0``: ``(sse, params)`` or why it failed.

    A start that runs out of evaluations keeps its last iterate (it is still a
    valid curve; the lowest residual over the starts decides).
    """
    lower, upper = bounds
    x0 = np.clip(x0, lower, upper)
    try:
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            res = optimize.least_squares(
                lambda b: fun(x, *b) - y,
                x0,
                jac=lambda b: jac(x, *b),
                bounds=(lower, upper),
                method="trf",
                max_nfev=max_nfev,
                x_scale="jac",
            )
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    popt = np.asarray(res.x, dtype=float)
    if not np.all(np.isfinite(popt)):
        return "non-finite parameters"
    sse = float(np.sum((fun(x, *popt) - y) ** 2))
    return (sse, popt) if math.isfinite(sse) else "non-finite residuals"


def _fit_4pl_up(
    p: np.ndarray, m: np.ndarray, starts: list[list[float]], max_nfev: int
) -> tuple[tuple[float, ...] | None, list[str]]:
    # Bounds keep the problem compact (and cheap to solve):
    # * the logistic's scale is >= 1/MAX_STEEPNESS of the prediction spread --
    #   clusters of tied scores (e.g. many 5.0s) otherwise pull the fit towards a
    #   step whose slope runs off to infinity;
    # * asymptotes stay within MAX_SPAN MOS ranges and the centre within one
    #   prediction range of the data -- on nearly linear data the 4PL otherwise
    #   drifts towards its linear limit (span and scale -> inf).
    xr = float(np.ptp(p)) or 1.0
    yr = float(np.ptp(m)) or 1.0
    lower = [float(m.min()) - MAX_SPAN * yr, 0.0, float(p.min()) - xr, _spread(p) / MAX_STEEPNESS]
    upper = [float(m.max()), MAX_SPAN * yr, float(p.max()) + xr, np.inf]
    best: tuple[float, np.ndarray] | None = None
    errors: list[str] = []
    for b1, b2, b3, b4 in starts:  # public (b1, b2, b3, b4) -> internal (lo, span, b3, |b4|)
        x0 = np.array([b2, b1 - b2, b3, abs(b4)], dtype=float)
        out = _solve(_model_4pl, _jac_4pl, p, m, x0, (lower, upper), max_nfev)
        if isinstance(out, str):
            errors.append(out)
        elif best is None or out[0] < best[0]:
            best = out
    if best is None:
        return None, errors
    lo, span, b3, b4 = (float(v) for v in best[1])
    return (lo + span, lo, b3, b4), errors


def _fit_5pl_up(
    p: np.ndarray, m: np.ndarray, starts: list[list[float]], max_nfev: int
) -> tuple[tuple[float, ...] | None, list[str]]:
    """Least-squares non-decreasing 5PL over the data range, in three families.

    In the standardised coordinates of :class:`_Frame` (``k >= 0``):

    * S-shaped: ``a >= 0, w >= 0`` -- monotone everywhere;
    * inverse S: ``a < 0`` with ``w = |a| k / 4 + e, e >= 0`` -- the slope at the
      centre, the flattest point, is ``e``, so monotone everywhere;
    * free signs, started from the best of the above when its monotonicity bound
      is active, kept only if the slope is >= 0 over the data range.

    A start with ``b1 >= 0`` (after ``b2 >= 0``) starts the S family, one with
    ``b1 < 0`` the inverse-S family. Bounds: ``|a|`` within MAX_SPAN MOS ranges,
    ``k`` at most MAX_STEEPNESS per prediction spread (clusters of tied scores
    otherwise pull the fit towards a step), the centre within one prediction
    range of the data. Data on a straight line are answered in closed form.
    """
    fr = _Frame.of(p, m)
    z, t = (p - fr.mx) / fr.sx, (m - fr.my) / fr.sy
    z_lo, z_hi = float(z.min()), float(z.max())
    zr = z_hi - z_lo
    amp, k_max = MAX_SPAN * float(np.ptp(t)), MAX_STEEPNESS / _spread(z)
    c_lo, c_hi = z_lo - zr, z_hi + zr
    inf = np.inf
    s_bounds = ([0.0, 0.0, c_lo, 0.0, -inf], [amp, k_max, c_hi, inf, inf])
    free_bounds = ([-amp, 0.0, c_lo, -inf, -inf], [amp, k_max, c_hi, inf, inf])
    best: tuple[float, np.ndarray] | None = None
    r = float(np.mean(z * t))  # least-squares line t = r z (both standardised)
    if r >= 0.0:
        line = np.array([0.0, min(1.0, k_max), 0.0, r, 0.0])
        best = (float(np.sum((t - r * z) ** 2)), line)
        if best[0] <= 1e-12 * t.size:
            return fr.outer(line), []
    errors: list[str] = []
    active = False
    for start in starts:
        q0 = fr.inner(start)
        if q0[0] >= 0.0:
            out = _solve(logistic_5pl, _jac_5pl, z, t, q0, s_bounds, max_nfev)
            bound_at = 3  # w
        else:
            a0, k0, c0, w0, v0 = q0
            x0 = np.array([-a0, k0, c0, max(w0 + a0 * k0 / 4.0, 0.0), v0])
            out = _solve(_model_inv, _jac_inv, z, t, x0, s_bounds, max_nfev)
            if not isinstance(out, str):
                a, k, c, e, v = out[1]
                out = (out[0], np.array([-a, k, c, a * k / 4.0 + e, v]))
            bound_at = -1
        if isinstance(out, str):
            errors.append(out)
            continue
        if best is None or out[0] < best[0]:
            slope_bound = out[1][3] if bound_at == 3 else out[1][3] + out[1][0] * out[1][1] / 4.0
            active = slope_bound <= 1e-3
            best = out
    if best is None:
        return None, errors
    if active:
        out = _solve(logistic_5pl, _jac_5pl, z, t, best[1], free_bounds, max_nfev)
        if not isinstance(out, str) and out[0] < best[0] and _min_slope(out[1], z_lo, z_hi) >= 0:
            best = out
    return fr.outer(best[1]), errors


def _fit(
    p: np.ndarray,
    m: np.ndarray,
    k: int,
    starts: list[list[float]] | None,
    max_nfev: int,
    direction: Direction = "increasing",
) -> LogisticFit:
    """Fit ``p -> m`` monotone in ``direction``; ``starts`` are parameters of
    candidate curves for ``m`` (``None``: :func:`_starts`).

    A decreasing fit is the increasing fit to ``-m``, negated.
    """
    kind = f"{k}pl"
    up = direction == "increasing"
    y = m if up else -m
    if starts is None:
        starts = _starts(p, y, k)
    elif not up:
        starts = [_negated(s, k) for s in starts]
    fitter = _fit_4pl_up if k == 4 else _fit_5pl_up
    params, errors = fitter(p, y, starts, max_nfev)
    if params is None:
        reason = errors[-1] if errors else "no start converged"
        return LogisticFit(kind, None, False, f"{k}-parameter logistic fit failed: {reason}")
    if not up:
        params = tuple(_negated(params, k))
    fitted = LogisticFit(kind, params, True, "", direction)
    if np.ptp(fitted.predict(p)) <= 1e-12 * max(1.0, float(np.abs(m).max())):
        return LogisticFit(
            kind,
            None,
            False,
            f"{k}-parameter logistic fit collapsed to a constant "
            f"(MOS does not {'increase' if up else 'decrease'} with the predictions)",
        )
    return fitted


def fit_logistic(
    pred: ArrayLike,
    mos: ArrayLike,
    params: int = 5,
    *,
    direction: str = "increasing",
    max_nfev: int = DEFAULT_MAX_NFEV,
) -> LogisticFit:
    """Fit the monotone 4- or 5-parameter logistic mapping ``pred -> mos``.

    ``direction``: ``"increasing"`` (the default: predictions on the MOS
    orientation, so anti-correlated ones collapse to a failed fit instead of
    being flipped), ``"decreasing"`` (e.g. a lower-is-better measure), or
    ``"auto"`` (the sign of the Spearman correlation; increasing on a tie).
    Never raises for bad data (only for mismatched lengths, ``params`` not in
    {4, 5} or an unknown ``direction``); a failed fit has ``ok=False`` and a
    ``message``.

    >>> x = np.linspace(0.0, 1.0, 50)
    >>> fit = fit_logistic(x, 5.0 - 4.0 * x**3, direction="auto")
    >>> fit.direction, bool(np.all(np.diff(fit.predict(x)) <= 0))
    ('decreasing', True)
    """
    if params not in (4, 5):
        raise ValueError(f"params must be 4 or 5, not {params!r}")
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, not {direction!r}")
    p, m = _pair(pred, mos)
    kind = f"{params}pl"
    if not (np.all(np.isfinite(p)) and np.all(np.isfinite(m))):
        return LogisticFit(kind, None, False, "input contains NaN or infinite values")
    if p.size < params:
        return LogisticFit(
            kind, None, False, f"too few points for a {params}-parameter fit (n={p.size})"
        )
    if np.ptp(p) == 0:
        return LogisticFit(kind, None, False, "predictions are constant")
    if np.ptp(m) == 0:
        return LogisticFit(kind, None, False, "MOS values are constant")
    way: Direction = "decreasing" if direction == "decreasing" else "increasing"
    if direction == "auto" and stats.spearmanr(p, m).statistic < 0:
        way = "decreasing"
    return _fit(p, m, params, None, max_nfev, way)


# -- evaluate ------------------------------------------------------------------------


@dataclass(frozen=True)
class Metrics:
    """Metrics of one prediction set against MOS.

    ``plcc`` and ``rmse`` are computed after the logistic mapping named by
    ``fit`` (``"none"``: on raw values); ``plcc_basis`` says so in words.
    ``fit_requested`` is what the caller asked for: when a fit fails,
    ``fit == "none"`` and the raw PLCC/RMSE are reported with a ``message``.
    ``ci`` maps ``"srcc"``/``"plcc"`` to 95% percentile-bootstrap intervals.
    """

    n: int
    srcc: float | None
    krcc: float | None
    plcc: float | None
    rmse: float | None
    fit: str
    fit_params: tuple[float, ...] | None = None
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)
    message: str = ""
    fit_requested: str = "none"
    plcc_raw: float | None = None
    plcc_basis: str = ""

    @property
    def ok(self) -> bool:
        return self.srcc is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "srcc": self.srcc,
            "krcc": self.krcc,
            "plcc": self.plcc,
            "rmse": self.rmse,
            "fit": self.fit,
            "fit_requested": self.fit_requested,
            "fit_params": list(self.fit_params) if self.fit_params is not None else None,
            "plcc_basis": self.plcc_basis,
            "plcc_raw": self.plcc_raw,
            "ci": {k: [v[0], v[1]] for k, v in self.ci.items()},
            "message": self.message,
        }


FIT_DESCRIPTIONS = {
    "5pl": "after a 5-parameter logistic fit",
    "4pl": "after a 4-parameter logistic fit",
    "none": "on raw predictions (no fit)",
}


def _fit_k(fit: str) -> int:
    return {"5pl": 5, "4pl": 4, "none": 0}[fit]


def evaluate(
    pred: ArrayLike,
    mos: ArrayLike,
    *,
    fit: str = "5pl",
    bootstrap: int = 0,
    seed: int = 0,
) -> Metrics:
    """SRCC, KRCC, PLCC and RMSE of ``pred`` against ``mos``.

    ``fit``: ``"5pl"``, ``"4pl"`` or ``"none"`` -- the mapping applied before
    PLCC/RMSE. ``bootstrap``: number of resamples for 95% percentile CIs of
    SRCC and PLCC (0: none); each resample re-fits the mapping, started from the
    full-data parameters. Raises ``ValueError`` only for mismatched lengths or an
    unknown ``fit``.
    """
    if fit not in FIT_NAMES:
        raise ValueError(f"fit must be one of {FIT_NAMES}, not {fit!r}")
    p, m = _pair(pred, mos)
    n = int(p.size)

    def empty(message: str) -> Metrics:
        return Metrics(
            n, None, None, None, None, "none", message=message, fit_requested=fit, plcc_basis=""
        )

    bad = int(np.sum(~np.isfinite(p)) + np.sum(~np.isfinite(m)))
    if bad:
        return empty(f"input contains {bad} NaN or infinite value(s); nothing computed")
    if n < 3:
        return empty(f"too few points (n={n}; at least 3 needed)")
    if np.ptp(p) == 0:
        return empty(f"predictions are constant (all {p[0]:g}); correlations undefined")
    if np.ptp(m) == 0:
        return empty(f"MOS values are constant (all {m[0]:g}); correlations undefined")

    s = srcc(p, m)
    kr = krcc(p, m)
    raw = plcc(p, m)
    notes: list[str] = []
    k = _fit_k(fit)
    lf: LogisticFit | None = None
    used = "none"
    if k == 0:
        pl, rm = raw, rmse(p, m)
    elif n < k:
        pl = rm = None
        notes.append(f"too few points for a {k}-parameter logistic fit (n={n}); PLCC/RMSE omitted")
    else:
        lf = fit_logistic(p, m, k)
        if lf.ok:
            fitted = lf.predict(p)
            pl, rm, used = plcc(fitted, m), rmse(fitted, m), fit
            if pl is None:
                notes.append("fitted values are constant; PLCC undefined")
        else:
            pl, rm = raw, rmse(p, m)
            notes.append(f"{lf.message}; raw PLCC/RMSE reported instead")
            lf = None
    basis = FIT_DESCRIPTIONS[used] if pl is not None else ""

    ci: dict[str, tuple[float, float]] = {}
    if bootstrap > 0:
        ci, note = _bootstrap(p, m, used, lf, bootstrap, seed)
        if note:
            notes.append(note)

    return Metrics(
        n=n,
        srcc=s,
        krcc=kr,
        plcc=pl,
        rmse=rm,
        fit=used,
        fit_params=lf.params if lf is not None else None,
        ci=ci,
        message="; ".join(notes),
        fit_requested=fit,
        plcc_raw=raw,
        plcc_basis=basis,
    )


def _bootstrap(
    p: np.ndarray,
    m: np.ndarray,
    used: str,
    lf: LogisticFit | None,
    b: int,
    seed: int,
) -> tuple[dict[str, tuple[float, float]], str]:
    rng = np.random.default_rng(seed)
    n = p.size
    k = _fit_k(used)
    s_vals: list[float] = []
    p_vals: list[float] = []
    skipped_fit = 0
    skipped = 0
    for _ in range(b):
        idx = rng.integers(0, n, n)
        bp, bm = p[idx], m[idx]
        if _undefined(bp, bm):
            skipped += 1
            continue
        s_vals.append(float(stats.spearmanr(bp, bm).statistic))
        if k == 0:
            r = plcc(bp, bm)
        else:
            assert lf is not None and lf.params is not None
            nfev = DEFAULT_MAX_NFEV // 4
            bf = _fit(bp, bm, k, [list(lf.params)], nfev, lf.direction)
            if not bf.ok:  # retry from the data-driven starts before giving up
                bf = _fit(bp, bm, k, None, nfev, lf.direction)
            r = plcc(bf.predict(bp), bm) if bf.ok else None
            if r is None:
                skipped_fit += 1
        if r is not None:
            p_vals.append(r)
    alpha = (1.0 - CI_LEVEL) / 2.0 * 100.0
    ci: dict[str, tuple[float, float]] = {}
    for name, vals in (("srcc", s_vals), ("plcc", p_vals)):
        if len(vals) >= 2:
            lo, hi = np.percentile(vals, [alpha, 100.0 - alpha])
            ci[name] = (float(lo), float(hi))
    notes = []
    if skipped:
        notes.append(f"{skipped} degenerate resample(s) skipped")
    if skipped_fit:
        notes.append(f"{skipped_fit} resample fit(s) failed (left out of the PLCC CI)")
    if len(ci) < 2:
        notes.append("too few usable resamples for some CIs")
    note = f"bootstrap ({b} resamples): " + ", ".join(notes) if notes else ""
    return ci, note
