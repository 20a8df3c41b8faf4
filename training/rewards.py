"""Reward functions for TRL GRPO on the assessment graph's trajectories.

Three rewards, combined by ``GRPOConfig(reward_weights=list(REWARD_WEIGHTS_PAPER))``
as in Tool-IQA §4.1 ("a combination of BATE, the rank reward and a format constraint"):

* :class:`FidelityReward` (``"fidelity"``): the Thurstone rank reward of VisualQuality-R1
  (Wu et al. 2025), computed over the images of the batch; pure function
  :func:`fidelity_scores`.
* :class:`BATEReward` (``"bate"``): Tool-IQA's Batch-Aware Tool-Efficiency reward (§3.4,
  eq. 2-3): tool-free duels inside each generation group plus a shaping term driven by the
  tool-use rate ρ of the whole batch across processes; pure functions :func:`bate_base`,
  :func:`tool_rate_shaping`, :func:`global_tool_rate`.
* :class:`FormatReward` (``"format"``): protocol compliance of the trajectory.

TRL 1.16 contract: ``reward(prompts, completions, **kwargs) -> list[float | None]``. TRL
passes every dataset column (repeated per generation) and the rollout's extra fields as
keyword lists, one entry per completion, plus ``completion_ids``, ``trainer_state``,
``log_extra`` and ``log_metric``. The rewards read these columns and ignore every other
keyword:

=================  ==========================  =====================================================
column             provided by                 meaning
=================  ==========================  =====================================================
``mos``            training dataset            human score of the image (any scale, higher = better)
``group``          training dataset            hashable image id shared by the image's K generations
``pred_score``     rollout (extra field)       final predicted score; ``None``/NaN = unparseable
``tool_calls``     rollout (extra field)       tool rounds used (successful or failed)
``tool_successes`` rollout (extra field)       tool rounds that produced a view
``protocol``       rollout (extra field)       dict of bool checks, see :class:`FormatReward`
=================  ==========================  =====================================================

A missing column raises :class:`MissingColumnError` (a ``KeyError``) naming the column and
its provider. ``None`` in a returned list means "no signal" (TRL turns it into NaN and the
weighted sum over rewards skips it).

"The batch" for fidelity, the BATE duels and the rank modulation is what this process sees
(TRL calls rewards on each process's slice). Keep every generation group on one process
(``per_device_train_batch_size`` a multiple of ``num_generations``) and give each process at
least two images, or fidelity has no comparison partner and returns ``None``. Only ρ is
reduced across processes.

All classes are module-level with plain-data attributes, so they pickle; nothing imports
torch at import time (:func:`all_reduce_counts` imports it lazily).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special, stats

__all__ = [
    "COLUMN_SOURCES",
    "FORMAT_CHECKS",
    "REWARD_WEIGHTS_PAPER",
    "BATEReward",
    "CountsGather",
    "FidelityReward",
    "FormatReward",
    "MissingColumnError",
    "all_reduce_counts",
    "bate_base",
    "default_rewards",
    "fidelity_scores",
    "format_scores",
    "global_tool_rate",
    "tool_rate_shaping",
]

REWARD_WEIGHTS_PAPER = (1.0, 1.0, 1.0)
"""Weights for ``default_rewards()`` (fidelity, bate, format), for GRPOConfig ``reward_weights``.

The paper says the objective combines the three but publishes no weights; equal weights are
this project's choice.
"""

FORMAT_CHECKS = ("rubric_ok", "single_action", "answer_tagged", "score_in_range")
"""The protocol checks :class:`FormatReward` counts, keys of the ``protocol`` column."""

_DATASET = "the training dataset (TRL repeats each image's row once per generation)"
_ROLLOUT = "the rollout function (an extra field per trajectory, forwarded by TRL)"
COLUMN_SOURCES: Mapping[str, str] = {
    "mos": _DATASET,
    "group": _DATASET,
    "pred_score": _ROLLOUT,
    "tool_calls": _ROLLOUT,
    "tool_successes": _ROLLOUT,
    "protocol": _ROLLOUT,
}
"""Which side of the pipeline provides each column a reward reads."""

CountsGather = Callable[[int, int], tuple[int, int]]
"""Maps this process's (tool-invoked valid, valid) counts to the counts over all processes."""

Scores = Sequence[float | None] | np.ndarray


class MissingColumnError(KeyError):
    """A reward needs a column that neither the dataset nor the rollout passed."""

    def __str__(self) -> str:  # KeyError would show the repr of the message
        return str(self.args[0])


# -- column access ---------------------------------------------------------------


def _column(reward: str, kwargs: Mapping[str, Any], name: str, n: int | None) -> list[Any]:
    if name not in kwargs or kwargs[name] is None:
        given = sorted(k for k in kwargs if k not in ("trainer_state", "log_extra", "log_metric"))
        raise MissingColumnError(
            f"reward {reward!r} needs column {name!r} (one entry per completion), which "
            f"{COLUMN_SOURCES.get(name, 'the caller')} provides; got columns {given}"
        )
    values = list(kwargs[name])
    if n is not None and len(values) != n:
        raise ValueError(
            f"reward {reward!r}: column {name!r} has {len(values)} entries for {n} completions"
        )
    return values


def _batch_size(completions: Sequence[Any] | None) -> int | None:
    return None if completions is None else len(completions)


def _scores(pred: Scores) -> np.ndarray:
    """Predicted scores as floats; ``None`` and non-finite values become NaN (= invalid)."""
    out = np.array([np.nan if p is None else float(p) for p in pred], dtype=float)
    out[~np.isfinite(out)] = np.nan
    return out


def _group_index(group: Sequence[Hashable]) -> tuple[np.ndarray, int]:
    """Dense ids 0..G-1 in order of first appearance."""
    index: dict[Hashable, int] = {}
    gid = np.fromiter((index.setdefault(g, len(index)) for g in group), dtype=np.intp)
    return gid, len(index)


def _as_list(values: np.ndarray, undefined: np.ndarray | None = None) -> list[float | None]:
    out: list[float | None] = [float(v) for v in values]
    if undefined is not None:
        for i in np.flatnonzero(undefined):
            out[i] = None
    return out


# -- fidelity (VisualQuality-R1) ---------------------------------------------------


def fidelity_scores(
    pred: Scores,
    mos: Sequence[float] | np.ndarray,
    group: Sequence[Hashable],
    *,
    eps: float = 1e-8,
    invalid_value: float = 0.0,
) -> np.ndarray:
    """VisualQuality-R1's rank (fidelity) reward for every trajectory of a batch.

    For sample k of image i and every other image j with at least one valid score::

        p   = Φ((s_ik − μ_j) / sqrt(σ²_i + σ²_j + eps))
        g   = 1 if MOS_i > MOS_j, 0 if MOS_i < MOS_j, 0.5 if equal
        r_ik = mean_j [ sqrt(p·g + eps) + sqrt((1 − p)(1 − g) + eps) ]

    μ and σ² are the mean and unbiased variance (ddof=1; 0 below two samples) of an image's
    valid scores. Invalid scores (``None``, NaN, ±inf) get ``invalid_value`` and are left out
    of μ and σ². A valid sample whose image has no valid partner image gets NaN (the reward
    classes turn it into ``None``). Groups must carry one MOS each (ValueError otherwise).

    >>> fidelity_scores([0.8, 0.6, 0.2, None], [4.0, 4.0, 1.0, 1.0], ["a", "a", "b", "b"]).round(4)
    array([1.0001, 0.9989, 1.    , 0.    ])
    """
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    s = _scores(pred)
    m = np.asarray(mos, dtype=float).ravel()
    gid, n_groups = _group_index(group)
    if not s.size == m.size == gid.size:
        raise ValueError(f"pred, mos and group differ in length ({s.size}, {m.size}, {gid.size})")
    if not np.all(np.isfinite(m)):
        raise ValueError("mos must be finite for every completion")
    mos_g = np.empty(n_groups)
    mos_g[gid] = m
    if not np.array_equal(mos_g[gid], m):
        raise ValueError("each group must have a single MOS (group = one image)")

    valid = np.isfinite(s)
    count = np.bincount(gid, weights=valid, minlength=n_groups)
    total = np.bincount(gid, weights=np.where(valid, s, 0.0), minlength=n_groups)
    mu = np.divide(total, count, out=np.zeros(n_groups), where=count > 0)
    sq = np.bincount(gid, weights=np.where(valid, s - mu[gid], 0.0) ** 2, minlength=n_groups)
    var = np.divide(sq, count - 1, out=np.zeros(n_groups), where=count >= 2)

    out = np.full(s.size, float(invalid_value))
    vi = np.flatnonzero(valid)
    cols = np.flatnonzero(count > 0)  # images that can be comparison partners
    if cols.size < 2:  # at most one image with valid scores: no sample has a partner
        out[vi] = np.nan
        return out
    col_of = np.full(n_groups, -1, dtype=np.intp)
    col_of[cols] = np.arange(cols.size)
    row = col_of[gid[vi]]  # each valid sample's own image among cols
    # Image-pair tables expanded to samples by row. For g in {0, 1} the term is
    # sqrt(q + eps) + sqrt(eps) with q = Φ(±z) (1 − Φ(z) = Φ(−z)), so the sign of MOS_i − MOS_j
    # folds into the scale; ties (g = 0.5) are patched afterwards.
    order = np.sign(mos_g[cols, None] - mos_g[None, cols])
    scale = np.where(order < 0, -1.0, 1.0) / np.sqrt(var[cols, None] + var[None, cols] + eps)
    q = (s[vi, None] - mu[None, cols]) * scale[row]
    special.ndtr(q, out=q)
    tie_pair = order == 0
    np.fill_diagonal(tie_pair, False)
    ties = np.nonzero(tie_pair[row])  # (sample, partner) positions with equal MOS
    p_tie = q[ties]  # scale sign is + there, so q = p
    q += eps
    np.sqrt(q, out=q)
    root_eps = math.sqrt(eps)
    q[ties] = np.sqrt(0.5 * p_tie + eps) + np.sqrt(0.5 * (1.0 - p_tie) + eps) - root_eps
    q[np.arange(vi.size), row] = 0.0  # an image is not its own partner
    out[vi] = q.sum(axis=1) / (cols.size - 1) + root_eps
    return out


@dataclass
class FidelityReward:
    """Rank (fidelity) reward of VisualQuality-R1 (Wu et al. 2025, arXiv:2505.14460).

    Its reinforcement-learning-to-rank reward: a Thurstone comparison of each sample with the
    mean prediction of every other image of the batch, scored by the fidelity measure,
    ``r_ik = mean_{j≠i} [sqrt(p·g + ε) + sqrt((1 − p)(1 − g) + ε)]`` with
    ``p = Φ((s_ik − μ_j) / sqrt(σ²_i + σ²_j + ε))`` and ``g`` = 1, 0.5 or 0 as MOS_i is
    above, equal to or below MOS_j; see :func:`fidelity_scores`. Reads ``pred_score``,
    ``mos`` and ``group``. Unparseable scores get ``invalid_value``. Samples of an image that
    has no other image with a valid score in the batch get ``None`` (no signal).

    >>> r = FidelityReward()
    >>> r.__name__
    'fidelity'
    >>> [round(x, 4) for x in r(prompts=["p"] * 4, completions=["c"] * 4,
    ...     pred_score=[0.8, 0.6, 0.2, 0.4], mos=[4.0, 4.0, 1.0, 1.0], group=[1, 1, 2, 2])]
    [0.997, 0.9661, 0.997, 0.9661]
    >>> r(pred_score=[0.8, None], mos=[4.0, 4.0], group=[1, 1])
    [None, 0.0]
    """

    eps: float = 1e-8
    invalid_value: float = 0.0

    def __post_init__(self) -> None:
        self.__name__ = "fidelity"

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        n = _batch_size(completions)
        pred = _column(self.__name__, kwargs, "pred_score", n)
        mos = _column(self.__name__, kwargs, "mos", n)
        group = _column(self.__name__, kwargs, "group", n)
        scores = fidelity_scores(pred, mos, group, eps=self.eps, invalid_value=self.invalid_value)
        return _as_list(scores, np.isnan(scores))


# -- BATE (Tool-IQA §3.4) ------------------------------------------------------------


def bate_base(
    fidelity: Sequence[float] | np.ndarray,
    tool_calls: Sequence[int] | np.ndarray,
    group: Sequence[Hashable],
    *,
    tau: float = 0.1,
    no_cohort_value: float = 0.0,
) -> np.ndarray:
    """Tool-free duels, Tool-IQA eq. 2: base reward of every trajectory.

    In each group the trajectories with a finite fidelity score s split into tool-invoked
    T (``tool_calls > 0``) and tool-free N. For t in T::

        R_base(t) = mean_{n in N} sqrt(Φ((s_t − s_n) / τ))

    A tool-invoked trajectory with no tool-free peer gets ``no_cohort_value``; tool-free
    trajectories and those with NaN fidelity (invalid) get 0.

    >>> bate_base([0.9, 0.5, 0.7, 0.7], [1, 1, 0, 0], ["a"] * 4, tau=0.1).round(4)
    array([0.9886, 0.1508, 0.    , 0.    ])
    """
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    s = np.asarray(fidelity, dtype=float).ravel()
    calls = np.asarray(tool_calls).ravel()
    gid, n_groups = _group_index(group)
    if not s.size == calls.size == gid.size:
        raise ValueError(
            f"fidelity, tool_calls and group differ in length ({s.size}, {calls.size}, {gid.size})"
        )
    out = np.zeros(s.size)
    if s.size == 0:
        return out
    # Pad groups into a (G, K) table of trajectory indices (-1 = empty slot).
    order = np.argsort(gid, kind="stable")
    sizes = np.bincount(gid, minlength=n_groups)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    slot = np.arange(s.size) - starts[gid[order]]
    table = np.full((n_groups, int(sizes.max())), -1, dtype=np.intp)
    table[gid[order], slot] = order
    present = table >= 0
    st = np.where(present, s[table], np.nan)
    valid = np.isfinite(st)
    tool = valid & (calls[table] > 0)
    free = valid & ~tool
    st = np.where(valid, st, 0.0)

    duel = np.sqrt(special.ndtr((st[:, :, None] - st[:, None, :]) / tau))
    n_free = free.sum(axis=1, keepdims=True)
    mean_duel = np.divide(
        np.where(free[:, None, :], duel, 0.0).sum(axis=2),
        n_free,
        out=np.full(st.shape, float(no_cohort_value)),
        where=n_free > 0,
    )
    out[table[present]] = np.where(tool, mean_duel, 0.0)[present]
    return out


def tool_rate_shaping(
    rho: float,
    rank: float | Sequence[float] | np.ndarray,
    *,
    target: float = 0.50,
    band_low: float = 0.35,
    band_high: float = 0.65,
    outside_multiplier: float = 3.0,
    strength: float = 0.1,
    sharpness: float = 4.0,
) -> np.ndarray:
    """Global adaptive shaping, Tool-IQA eq. 3 (the S_inc / S_pen shapes are this project's).

    The paper fixes the target (ρ̂ = 0.50), the incentive band [0.35, 0.50), the penalty band
    (0.50, 0.65] and threefold strength outside [0.35, 0.65], and says the signals are
    sigmoid-smoothed and rank-modulated; it gives no formula. This project's reading, with
    ``w`` the half-width of the band on that side (ρ̂ − band_low or band_high − ρ̂)::

        m(ρ)  = strength · c · (2·sigmoid(sharpness · |ρ − ρ̂| / w) − 1)
                c = 1 inside the band, outside_multiplier beyond it
        ρ < ρ̂:  S = +m(ρ) · rank           (incentive; better-ranked calls gain most)
        ρ > ρ̂:  S = −m(ρ) · (1 − rank)     (penalty; low-margin calls lose most)
        ρ = ρ̂:  S = 0

    ``rank`` is the trajectory's fidelity rank in [0, 1] (1 = best) among the batch's
    trajectories with a successful tool call. ``strength`` (0.1) and ``sharpness`` (4: 96 %
    of the in-band strength is reached at the band edge) are not in the paper. Returns an
    array shaped like ``rank``.

    >>> tool_rate_shaping(0.45, [0.0, 1.0]).round(4)
    array([0.    , 0.0583])
    >>> tool_rate_shaping(0.70, [0.0, 1.0]).round(4)
    array([-0.2971, -0.    ])
    """
    if not 0.0 <= band_low < target < band_high <= 1.0:
        raise ValueError(
            f"need 0 <= band_low < target < band_high <= 1, got {band_low}, {target}, {band_high}"
        )
    if not 0.0 <= rho <= 1.0:
        raise ValueError(f"rho must be in [0, 1], got {rho}")
    r = np.asarray(rank, dtype=float)
    if np.any((r < 0) | (r > 1)):
        raise ValueError("rank must be in [0, 1]")
    if rho == target:
        return np.zeros_like(r)
    incentive = rho < target
    half_width = target - band_low if incentive else band_high - target
    inside = band_low <= rho if incentive else rho <= band_high
    scale = strength * (1.0 if inside else outside_multiplier)
    magnitude = scale * (2.0 * special.expit(sharpness * abs(rho - target) / half_width) - 1.0)
    return magnitude * r if incentive else -magnitude * (1.0 - r)


def all_reduce_counts(tool_used_valid: int, valid: int) -> tuple[int, int]:
    """Sum the two counts over all processes with ``torch.distributed.all_reduce``.

    Returns them unchanged when torch was never imported (no process group can exist then;
    checked through ``sys.modules``, so this never pays the torch import), when
    torch.distributed is unavailable or uninitialised, or with a single process. Every
    process must call it (it is a collective).

    >>> all_reduce_counts(3, 8)
    (3, 8)
    """
    if "torch" not in sys.modules:
        return tool_used_valid, valid
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() <= 1:
        return tool_used_valid, valid
    on_gpu = "nccl" in str(dist.get_backend()) and torch.cuda.is_available()
    device = torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")
    counts = torch.tensor([tool_used_valid, valid], dtype=torch.int64, device=device)
    dist.all_reduce(counts, op=dist.ReduceOp.SUM)
    return int(counts[0].item()), int(counts[1].item())


def global_tool_rate(
    tool_used_valid_count: int, valid_count: int, gather: CountsGather | None = None
) -> float | None:
    """ρ = (# valid tool-invoked trajectories) / (# valid trajectories) over all processes.

    ``gather`` maps this process's counts to the global counts (default
    :func:`all_reduce_counts`). ``None`` when no process has a valid trajectory.

    >>> global_tool_rate(3, 8)
    0.375
    >>> global_tool_rate(3, 8, gather=lambda a, b: (a + 5, b + 8))  # another rank: 5 of 8
    0.5
    """
    used, total = (gather or all_reduce_counts)(int(tool_used_valid_count), int(valid_count))
    return None if total <= 0 else used / total


def _normalised_rank(values: np.ndarray) -> np.ndarray:
    """Average ranks scaled to [0, 1] (1 = highest); a single value gets 0.5."""
    if values.size == 1:
        return np.full(1, 0.5)
    return (stats.rankdata(values) - 1.0) / (values.size - 1)


@dataclass
class BATEReward:
    """Batch-Aware Tool-Efficiency reward, Tool-IQA §3.4 eq. 2-3.

    ``R(t) = R_base(t) + S(ρ, rank_t)`` where

    * ``R_base`` (eq. 2, :func:`bate_base`): for a tool-invoked trajectory t,
      ``mean_{n in N} sqrt(Φ((s_t − s_n) / τ))`` over the tool-free trajectories n of the same
      group, s being the fidelity scores of :func:`fidelity_scores` (same ``eps``). τ = 0.1 is
      this project's default (the paper gives none). No tool-free peer: ``no_cohort_value``.
    * ``S`` (eq. 3, :func:`tool_rate_shaping`): incentive when ρ < ρ̂, penalty when ρ > ρ̂,
      added only to trajectories with ``tool_successes > 0``; ``rank_t`` is the fidelity
      rank among those trajectories in this process's batch. The sigmoid shapes are this
      project's reading; the paper gives target, bands and the threefold factor only.
    * ρ (:func:`global_tool_rate`): valid tool-invoked / valid trajectories, summed over all
      processes through ``gather`` (default :func:`all_reduce_counts`; inject a picklable
      function in tests).

    Tool-free trajectories get 0 (plus nothing), and so do invalid ones (``pred_score``
    unparseable): the fidelity and format rewards already penalise those, BATE only judges
    tool use. When no other image has a valid score (fidelity undefined), valid trajectories
    get ``None``. With ``log_metric`` it logs ``tools/rate`` (ρ) and ``bate/shaping`` (mean
    shaping over trajectories with a successful call, 0 when none).

    >>> r = BATEReward(gather=None)
    >>> out = r(pred_score=[0.9, 0.2, 0.5, 0.5, 0.1, 0.8], mos=[5, 5, 5, 5, 1, 1],
    ...         group=["a", "a", "a", "a", "b", "b"], tool_calls=[1, 1, 0, 0, 0, 0],
    ...         tool_successes=[1, 1, 0, 0, 0, 0])
    >>> [round(x, 4) for x in out]  # ρ = 2/6: incentive (outside the band: threefold)
    [1.2618, 0.244, 0.0, 0.0, 0.0, 0.0]
    """

    tau: float = 0.1
    no_cohort_value: float = 0.0
    target: float = 0.50
    band_low: float = 0.35
    band_high: float = 0.65
    outside_multiplier: float = 3.0
    strength: float = 0.1
    sharpness: float = 4.0
    eps: float = 1e-8
    gather: CountsGather | None = None

    def __post_init__(self) -> None:
        self.__name__ = "bate"
        if not 0.0 <= self.band_low < self.target < self.band_high <= 1.0:
            raise ValueError("need 0 <= band_low < target < band_high <= 1")
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        n = _batch_size(completions)
        name = self.__name__
        pred = _scores(_column(name, kwargs, "pred_score", n))
        mos = _column(name, kwargs, "mos", n)
        group = _column(name, kwargs, "group", n)
        calls = np.asarray(_column(name, kwargs, "tool_calls", n), dtype=np.int64)
        successes = np.asarray(_column(name, kwargs, "tool_successes", n), dtype=np.int64)
        valid = np.isfinite(pred)
        # The collective comes first so that every process calls it whatever its batch holds.
        rho = global_tool_rate(int(np.sum(valid & (calls > 0))), int(valid.sum()), self.gather)

        s = fidelity_scores(pred, mos, group, eps=self.eps, invalid_value=np.nan)
        total = bate_base(s, calls, group, tau=self.tau, no_cohort_value=self.no_cohort_value)
        shaped = valid & np.isfinite(s) & (successes > 0)
        shaping = np.zeros(pred.size)
        if rho is not None and shaped.any():
            shaping[shaped] = tool_rate_shaping(
                rho,
                _normalised_rank(s[shaped]),
                target=self.target,
                band_low=self.band_low,
                band_high=self.band_high,
                outside_multiplier=self.outside_multiplier,
                strength=self.strength,
                sharpness=self.sharpness,
            )
        total += shaping
        log_metric = kwargs.get("log_metric")
        if callable(log_metric):
            if rho is not None:
                log_metric("tools/rate", rho)
            log_metric("bate/shaping", float(shaping[shaped].mean()) if shaped.any() else 0.0)
        return _as_list(total, valid & ~np.isfinite(s))


# -- format ---------------------------------------------------------------------------


def format_scores(
    protocol: Sequence[Mapping[str, bool]],
    pred: Scores,
    *,
    repair_penalty: float = 0.25,
) -> np.ndarray:
    """Format reward per trajectory: ``max(0, passed / 4 − repair_penalty · repaired)``.

    ``passed`` counts the true checks among :data:`FORMAT_CHECKS`; ``score_in_range`` counts
    as false when the predicted score is unparseable. ``repaired`` (optional key, default
    false) marks a trajectory that needed a repair prompt. So 1.0 exactly when all four hold
    without repair. A missing check key raises ``KeyError``.

    >>> ok = dict(rubric_ok=True, single_action=True, answer_tagged=True, score_in_range=True)
    >>> format_scores([ok, ok, {**ok, "repaired": True}, {**ok, "answer_tagged": False}],
    ...               [3.0, None, 3.0, 3.0])
    array([1.  , 0.75, 0.75, 0.75])
    """
    s = _scores(pred)
    if len(protocol) != s.size:
        raise ValueError(f"protocol and pred differ in length ({len(protocol)} vs {s.size})")
    passed = np.zeros(s.size)
    repaired = np.zeros(s.size, dtype=bool)
    for i, checks in enumerate(protocol):
        try:
            passed[i] = sum(bool(checks[k]) for k in FORMAT_CHECKS)
            repaired[i] = bool(checks.get("repaired", False))
        except (KeyError, TypeError, AttributeError):
            missing = [k for k in FORMAT_CHECKS if not hasattr(checks, "keys") or k not in checks]
            raise KeyError(
                f"protocol entry {i} ({checks!r}) lacks {missing}: the rollout must give a dict "
                f"with {list(FORMAT_CHECKS)} for every trajectory"
            ) from None
    # score_in_range cannot hold without a parsed score
    passed -= np.array([bool(c["score_in_range"]) for c in protocol]) & ~np.isfinite(s)
    return np.maximum(0.0, passed / len(FORMAT_CHECKS) - repair_penalty * repaired)


@dataclass
class FormatReward:
    """Protocol compliance ("format constraint" of Tool-IQA §4.1; formula is this project's).

    ``r = max(0, passed / 4 − repair_penalty · repaired)`` over the checks ``rubric_ok``,
    ``single_action``, ``answer_tagged``, ``score_in_range`` of the ``protocol`` column, with
    ``score_in_range`` false whenever ``pred_score`` is unparseable; see
    :func:`format_scores`. 1.0 exactly for a trajectory that followed the protocol without
    a repair prompt.

    >>> ok = dict(rubric_ok=True, single_action=True, answer_tagged=True, score_in_range=True)
    >>> FormatReward()(protocol=[ok, {**ok, "rubric_ok": False, "repaired": True}],
    ...                pred_score=[4.2, 3.0])
    [1.0, 0.5]
    """

    repair_penalty: float = 0.25

    def __post_init__(self) -> None:
        self.__name__ = "format"

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        n = _batch_size(completions)
        protocol = _column(self.__name__, kwargs, "protocol", n)
        pred = _column(self.__name__, kwargs, "pred_score", n)
        return _as_list(format_scores(protocol, pred, repair_penalty=self.repair_penalty))


def default_rewards(
    *, gather: CountsGather | None = None, tau: float = 0.1
) -> list[FidelityReward | BATEReward | FormatReward]:
    """The paper's three rewards with default settings, in :data:`REWARD_WEIGHTS_PAPER` order.

    >>> [r.__name__ for r in default_rewards()]
    ['fidelity', 'bate', 'format']
    """
    return [FidelityReward(), BATEReward(tau=tau, gather=gather), FormatReward()]
