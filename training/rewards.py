"""Reward functions for TRL GRPO on the assessment graph's trajectories.

Three rewards, combined by ``GRPOConfig(reward_weights=list(REWARD_WEIGHTS_PAPER))``
as in Tool-IQA §4.1 ("a combination of BATE, the rank reward and a format constraint"):

* :class:`FidelityReward` (``"fidelity"``): the Thurstone rank reward of VisualQuality-R1
  (Wu et al. 2025), computed over the images of the batch, with VisualQuality-R1's
  ε = :data:`FIDELITY_EPS` = 1e-6; pure function :func:`fidelity_scores`.
* :class:`BATEReward` (``"bate"``): Tool-IQA's Batch-Aware Tool-Efficiency reward (§3.4,
  eq. 2-3): tool-free duels inside each generation group plus a shaping term driven by the
  tool-use rate ρ of the whole batch across processes; pure functions :func:`bate_base`,
  :func:`tool_rate_shaping`, :func:`tool_rate`. By default the duels are
  two-sided and zero-sum at a fidelity margin (``base="duel"``: a tool call gains over the
  tool-free answers only when its fidelity is higher by the margin, and pays them when it is
  not; a failed call earns nothing), the paper's stated intent; eq. 2 as printed rewards any
  call, failed ones included, and is kept as ``base="literal"`` (see :data:`BATEBase`).
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

"The batch" for fidelity, the BATE duels and BATE's rank modulation is, by default
(``scope="global"``), the generation batch of ALL processes: TRL calls the rewards on each
process with that process's slice only, so the rewards first gather the columns they read
(one ``(pred_score, mos, group[, tool_calls, tool_successes])`` row per completion) from
every process through ``gather`` (default :func:`all_gather_rows`), compute on the
concatenation and return this process's slice. The result is what a single process holding
the whole batch would compute, so a process may hold a single image, or a part of a
generation group (TRL may split a group across processes). For this, ``group`` must identify
the image globally (an image path, a dataset index; not a per-process counter): rows of
different processes with equal ``group`` are one image. ρ is always the rate over all
processes. ``scope="local"`` restores the per-process comparison set (then keep every
generation group on one process and give each process at least two images, or fidelity has no
comparison partner and returns ``None``); ρ stays global.

Collectives: a call makes at most one, always an ``all_gather_object`` inside ``gather``:
:class:`FidelityReward` one with ``scope="global"`` and none with ``"local"``,
:class:`BATEReward` one in both scopes (ρ comes from the gathered rows), :class:`FormatReward`
none. The collective comes right after the columns are read, before any computation, so
every process reaches it whatever its slice holds; errors in the computation then happen on
every process alike. Build the rewards with the same settings on every process and call them
in the same order (TRL calls synchronous reward functions in list order), or the gathers
pair up wrongly or deadlock; do not wrap them in async functions, which TRL runs concurrently.

All classes are module-level with plain-data attributes, so they pickle; nothing imports
torch at import time (:func:`all_gather_rows` and :func:`all_reduce_counts` use
``torch.distributed`` only when something else already imported it).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy import special, stats

__all__ = [
    "BATE_MARGIN",
    "COLUMN_SOURCES",
    "FIDELITY_EPS",
    "FORMAT_CHECKS",
    "REWARD_WEIGHTS_PAPER",
    "SHAPING_STRENGTH",
    "BATEBase",
    "BATEReward",
    "CountsGather",
    "FidelityReward",
    "FormatReward",
    "MissingColumnError",
    "Row",
    "RowsGather",
    "Scope",
    "all_gather_rows",
    "all_reduce_counts",
    "bate_base",
    "default_rewards",
    "fidelity_scores",
    "format_scores",
    "global_tool_rate",
    "tool_rate",
    "tool_rate_shaping",
]

REWARD_WEIGHTS_PAPER = (1.0, 1.0, 1.0)
"""Weights for ``default_rewards()`` (fidelity, bate, format), for GRPOConfig ``reward_weights``.

The paper says the objective combines the three but publishes no weights; equal weights are
this project's choice.
"""

FORMAT_CHECKS = (
    "rubric_ok",
    "thinking",
    "single_action",
    "tool_calls_valid",
    "answer_tagged",
    "score_in_range",
)
"""The protocol checks :class:`FormatReward` counts, keys of the ``protocol`` column (the
rollout reads them from the graph's typed per-turn record, see
:func:`tooliqa.training.trajectory.protocol_checks`)."""

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

Row = tuple[Any, ...]
"""One completion's columns, as a reward sends them to the other processes."""

RowsGather = Callable[[list[Row]], tuple[Sequence[Row], int]]
"""Maps this process's rows to ``(rows of all processes in rank order, offset)``.

``offset`` is the index of this process's first row in the gathered list; the process's own
rows must sit at ``[offset : offset + len(rows)]``. Every process must call it (a collective).
"""

Scope = Literal["global", "local"]
"""Comparison set of fidelity and BATE: the batch of all processes, or this process's slice."""

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


# -- across processes -----------------------------------------------------------------


def _dist() -> Any:
    """``torch.distributed`` when a process group with several processes is up, else None.

    Looked up in ``sys.modules``: if nothing imported it, no process group can exist, and
    this never pays the torch import.
    """
    dist = sys.modules.get("torch.distributed")
    if dist is None or not (dist.is_available() and dist.is_initialized()):
        return None
    return dist if dist.get_world_size() > 1 else None


def all_gather_rows(rows: list[Row]) -> tuple[list[Row], int]:
    """Rows of every process, concatenated in rank order, and this process's offset in them.

    Uses ``torch.distributed.all_gather_object`` on the default process group when
    ``torch.distributed`` is already imported and initialised with more than one process;
    otherwise returns ``rows`` itself and offset 0. Every process must call it (a collective).
    Rows must pickle. With the NCCL backend the objects travel through
    ``torch.cuda.current_device()``, which must be this process's GPU (Accelerate and
    ``torchrun`` scripts set it).

    >>> all_gather_rows([(0.5, 3.0, "img/a.png")])
    ([(0.5, 3.0, 'img/a.png')], 0)
    """
    dist = _dist()
    if dist is None:
        return rows, 0
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, rows)
    offset = sum(len(part) for part in parts[: dist.get_rank()])
    return [row for part in parts for row in part], offset


def _exchange(
    reward: str, gather: RowsGather | None, columns: Sequence[list[Any]]
) -> tuple[list[list[Any]], int]:
    """Gather equal-length columns over all processes; returns them and this process's offset."""
    rows = list(zip(*columns, strict=True))
    gathered, offset = (gather or all_gather_rows)(rows)
    if gathered is rows and offset == 0:  # one process: nothing to transpose back
        return list(columns), 0
    offset = int(offset)
    if not 0 <= offset <= len(gathered) - len(rows):
        raise ValueError(
            f"reward {reward!r}: gather returned {len(gathered)} rows and offset {offset} "
            f"for {len(rows)} rows of this process"
        )
    if not gathered:
        return [[] for _ in columns], 0
    out = [list(column) for column in zip(*gathered, strict=True)]
    if len(out) != len(columns):
        raise ValueError(
            f"reward {reward!r}: gather returned rows of {len(out)} columns, expected {len(columns)}"
        )
    return out, offset


def _check_scope(scope: str) -> None:
    if scope not in ("global", "local"):
        raise ValueError(f"scope must be 'global' or 'local', got {scope!r}")


# -- fidelity (VisualQuality-R1) ---------------------------------------------------

FIDELITY_EPS = 1e-6
"""Default ε of the fidelity reward (and of the fidelity scores inside BATE).

VisualQuality-R1's code (``fidelity_reward`` in ``open-r1-multimodal/src/open_r1/
grpo_jsonl.py``) uses ``esp = 1e-6``, both under the square root of the variances and inside
the two fidelity square roots; its paper does not state it. At a given p, ε = 1e-8 instead
moves a sample's reward by at most 0.0018; when both images' samples agree exactly (σ² = 0 on
both sides) ε alone scales z, and a pair's term can move by far more.
"""


def fidelity_scores(
    pred: Scores,
    mos: Sequence[float] | np.ndarray,
    group: Sequence[Hashable],
    *,
    eps: float = FIDELITY_EPS,
    invalid_value: float = 0.0,
    subset: slice | None = None,
) -> np.ndarray:
    """VisualQuality-R1's rank (fidelity) reward for every trajectory of a batch.

    For sample k of image i and every other image j with at least one valid score::

        p   = Φ((s_ik − μ_j) / sqrt(σ²_i + σ²_j + eps))
        g   = 1 if MOS_i > MOS_j, 0 if MOS_i < MOS_j, 0.5 if equal
        r_ik = mean_j [ sqrt(p·g + eps) + sqrt((1 − p)(1 − g) + eps) ]

    μ and σ² are the mean and unbiased variance (ddof=1; 0 below two samples) of an image's
    valid scores; ``eps`` defaults to VisualQuality-R1's 1e-6 (:data:`FIDELITY_EPS`). Invalid scores (``None``, NaN, ±inf) get ``invalid_value`` and are left out
    of μ and σ². A valid sample whose image has no valid partner image gets NaN (the reward
    classes turn it into ``None``). Groups must carry one MOS each (ValueError otherwise).

    ``subset`` (a contiguous slice) computes only those trajectories, still comparing with
    the whole batch: ``fidelity_scores(...)[subset]``, at a fraction of the cost.

    >>> fidelity_scores([0.8, 0.6, 0.2, None], [4.0, 4.0, 1.0, 1.0], ["a", "a", "b", "b"]).round(4)
    array([1.001 , 0.9998, 1.0009, 0.    ])
    >>> fidelity_scores([0.8, 0.6, 0.2, None], [4.0, 4.0, 1.0, 1.0], ["a", "a", "b", "b"],
    ...                 subset=slice(2, 4)).round(4)
    array([1.0009, 0.    ])
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

    start, stop = 0, s.size
    if subset is not None:
        start, stop, step = subset.indices(s.size)
        if step != 1:
            raise ValueError(f"subset must be a contiguous slice, got {subset}")
        stop = max(start, stop)
    out = np.full(stop - start, float(invalid_value))
    vi = start + np.flatnonzero(valid[start:stop])  # valid samples to score
    cols = np.flatnonzero(count > 0)  # images that can be comparison partners
    if cols.size < 2:  # at most one image with valid scores: no sample has a partner
        out[vi - start] = np.nan
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
    out[vi - start] = q.sum(axis=1) / (cols.size - 1) + root_eps
    return out


@dataclass
class FidelityReward:
    """Rank (fidelity) reward of VisualQuality-R1 (Wu et al. 2025, arXiv:2505.14460).

    Its reinforcement-learning-to-rank reward: a Thurstone comparison of each sample with the
    mean prediction of every other image of the batch, scored by the fidelity measure,
    ``r_ik = mean_{j≠i} [sqrt(p·g + ε) + sqrt((1 − p)(1 − g) + ε)]`` with
    ``p = Φ((s_ik − μ_j) / sqrt(σ²_i + σ²_j + ε))`` and ``g`` = 1, 0.5 or 0 as MOS_i is
    above, equal to or below MOS_j, and ε = 1e-6 as in VisualQuality-R1's code
    (:data:`FIDELITY_EPS`); see :func:`fidelity_scores`. Reads ``pred_score``,
    ``mos`` and ``group``. Unparseable scores get ``invalid_value``. Samples of an image that
    has no other image with a valid score in the batch get ``None`` (no signal).

    The batch is that of all processes with ``scope="global"`` (default): the rows of every
    process are collected by ``gather`` (default :func:`all_gather_rows`, one collective per
    call; ``group`` must identify the image globally) and this process's slice of the result
    is returned. ``scope="local"`` compares within this process's slice and makes no
    collective.

    >>> r = FidelityReward()
    >>> r.__name__
    'fidelity'
    >>> [round(x, 4) for x in r(prompts=["p"] * 4, completions=["c"] * 4,
    ...     pred_score=[0.8, 0.6, 0.2, 0.4], mos=[4.0, 4.0, 1.0, 1.0], group=[1, 1, 2, 2])]
    [0.9979, 0.967, 0.9979, 0.967]
    >>> r(pred_score=[0.8, None], mos=[4.0, 4.0], group=[1, 1])
    [None, 0.0]

    A process holding only image 1, while another holds image 2 (faked here by ``gather``):

    >>> other = [(0.2, 1.0, 2), (0.4, 1.0, 2)]  # (pred_score, mos, group) rows of rank 1
    >>> r = FidelityReward(gather=lambda rows: (rows + other, 0))
    >>> [round(x, 4) for x in r(pred_score=[0.8, 0.6], mos=[4.0, 4.0], group=[1, 1])]
    [0.9979, 0.967]
    >>> FidelityReward(scope="local", gather=lambda rows: (rows + other, 0))(
    ...     pred_score=[0.8, 0.6], mos=[4.0, 4.0], group=[1, 1])
    [None, None]
    """

    eps: float = FIDELITY_EPS
    invalid_value: float = 0.0
    scope: Scope = "global"
    gather: RowsGather | None = None

    def __post_init__(self) -> None:
        self.__name__ = "fidelity"
        _check_scope(self.scope)

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
        mine = slice(0, len(pred))
        if self.scope == "global":
            (pred, mos, group), offset = _exchange(self.__name__, self.gather, (pred, mos, group))
            mine = slice(offset, offset + mine.stop)
        scores = fidelity_scores(
            pred, mos, group, eps=self.eps, invalid_value=self.invalid_value, subset=mine
        )
        return _as_list(scores, np.isnan(scores))


# -- BATE (Tool-IQA §3.4) ------------------------------------------------------------

BATEBase = Literal["duel", "literal", "centred"]
"""How :func:`bate_base` scores the duels between a group's tool-invoked and tool-free cohorts.

``"duel"`` (default): two-sided (zero-sum) duels at a margin; a successful call's trajectory
gets ``mean_{n in N} v(s_t − s_n − m)``, each tool-free one ``−mean_{t in T} v(s_t − s_n − m)``,
with ``v(d) = (sqrt(Φ(d/τ)) − sqrt(Φ(−d/τ))) / 2`` (odd); a failed call gets 0.
``"literal"``: eq. 2 as printed, ``mean_{n in N} sqrt(Φ((s_t − s_n) / τ))`` for every
tool-invoked trajectory, tool-free ones 0. ``"centred"``: eq. 2 minus its tie value sqrt(0.5),
for successful calls only, tool-free ones 0 (kept for comparison: it still raises the tool
rate of a useless tool under GRPO's group-std scaling). Why ``"duel"``: see :func:`bate_base`.
"""

BATE_MARGIN = 0.002
"""Default fidelity margin ``m`` of ``base="duel"`` (:func:`bate_base`): the tie tolerance.

A call must beat a tool-free answer's fidelity by more than ``m`` to win their duel, so a call
that only ties loses a little (the paper: BATE reinforces tool use "only when it brings a
positive accuracy margin over tool-free scoring"; it gives no value). 0.002 is the resolution
of :func:`fidelity_scores`: its ε moves a score by up to 0.0018 (:data:`FIDELITY_EPS`), so
smaller differences are ties. Not larger: in ``bench/bench_bate_bandit.py`` a tool that halves
the MOS error raises a trajectory's fidelity by 0.023 on average but by only 0.001 at the
median (fidelity saturates), and under GRPO's group-std scaling a margin acts in every
near-tied group whatever its size; m = 0.01 already stops that helpful tool from rising (0.51
from 0.5 with shaping strength 0.1, 0.07 without shaping), m = τ/2 = 0.05 sends it to 0.02.
"""

_TIE = math.sqrt(0.5)  # sqrt(Φ(0)): eq. 2's duel value for equal fidelity


def _duel_payoff(d: np.ndarray, tau: float) -> np.ndarray:
    """``v(d) = (sqrt(Φ(d/τ)) − sqrt(Φ(−d/τ))) / 2``: half of eq. 2's duel value of one side
    minus that of the other, odd in ``d``, in (−1/2, 1/2), with eq. 2's slope at a tie."""
    x = d / tau
    return 0.5 * (np.sqrt(special.ndtr(x)) - np.sqrt(special.ndtr(-x)))


def bate_base(
    fidelity: Sequence[float] | np.ndarray,
    tool_calls: Sequence[int] | np.ndarray,
    group: Sequence[Hashable],
    *,
    tau: float = 0.1,
    no_cohort_value: float = 0.0,
    base: BATEBase = "duel",
    margin: float = BATE_MARGIN,
    tool_successes: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """Tool-free duels, Tool-IQA eq. 2: base reward of every trajectory.

    In each group the trajectories with a finite fidelity score s split into tool-invoked
    (``tool_calls > 0``) and tool-free N (``tool_calls == 0``). Eq. 2 as printed
    (``base="literal"``), for every tool-invoked t::

        R_base(t) = mean_{n in N} sqrt(Φ((s_t − s_n) / τ))

    is never negative, and a tie earns sqrt(Φ(0)) = sqrt(0.5) ≈ 0.707: a call no better than
    the tool-free answers, or one that failed, still gains about 0.7 over them, more than the
    largest shaping penalty (0.3 with :func:`tool_rate_shaping`'s defaults). That pays for
    calling as such, the opposite of the paper's stated intent (BATE "reinforces tool usage
    only when it brings a positive accuracy margin over tool-free scoring") and of its
    result (fewer calls with BATE: 1.77 → 0.39 per image). Eq. 2 is stated up to "∝"; the
    default ``base="duel"`` reads the intent. The cohorts are T, the trajectories with at
    least one successful call (``tool_successes > 0``), and N; the "pairwise duels between
    these two cohorts" pay both sides, zero-sum, at a margin ``m`` (``margin``)::

        v(d)      = (sqrt(Φ(d / τ)) − sqrt(Φ(−d / τ))) / 2          odd, in (−1/2, 1/2)
        R_base(t) =  mean_{n in N} v(s_t − s_n − m)                 t in T
        R_base(n) = −mean_{t in T} v(s_t − s_n − m)                 n in N
        R_base    = 0                                               every call failed

    v is half the gap between the two sides' eq. 2 duel values, so within a duel the two
    rewards differ by exactly that gap and eq. 2's slope at a tie is kept. Why two-sided:
    with ``m = 0`` the rule does not depend on which cohort is called which (relabelling the
    tool-invoked trajectories as tool-free and back, fidelities kept, gives the same rewards),
    so when a tool does not change fidelity the two arms' rewards are exchangeable and GRPO's
    normalisation and the skew of fidelity cannot favour either; a one-sided rule
    (``"centred"``: eq. 2 minus sqrt(0.5), tool-free 0) let the group-std scaling turn a
    useless call's spread into a gain. Why the margin: a call that only ties should not be
    reinforced; with ``m > 0`` a tie costs the call v(−m) and pays each tool-free peer as
    much. The default :data:`BATE_MARGIN` = 0.002 is fidelity's resolution (see there). A
    failed or invalid call earns nothing and duels no one (it is in neither cohort).

    ``bench/bench_bate_bandit.py`` (a bandit whose tool arm halves, keeps or raises the MOS
    error; 3 images x 4 generations, TRL's group scaling; tool rate after 680 steps, 16
    seeds; helps / no help / hurts). Fidelity + BATE with the default shaping
    (:data:`SHAPING_STRENGTH` 0.02): duel 0.74 / 0.45 / 0.14 from 0.5, 0.75 / 0.46 / 0.16
    from 0.89; literal 1.00 / 1.00 / 1.00 from both. Shaping off: duel 0.78 / 0.10 / 0.03
    (m = 0: 0.97 / 0.54 / 0.05 with 32 seeds, no drift), literal 1.00 everywhere. A strong
    shaping holds ρ near ρ̂ whatever the duels say: at strength 0.1 (32 seeds) a useless tool
    stays at ρ̂ for the default m (0.60 / 0.51 / 0.41) and settles below it only as m grows
    into a per-call cost (m = 0.005: 0.56 / 0.47 / 0.38; m = 0.01: 0.51 / 0.42 / 0.32).

    A duelling trajectory with no opponent gets ``no_cohort_value`` in T and 0 in N;
    trajectories with NaN fidelity (invalid) get 0. ``margin`` is used by ``"duel"`` only;
    ``tool_successes`` by ``"duel"`` and ``"centred"`` (``None`` counts every call as
    successful).

    >>> s, calls, group = [0.9, 0.5, 0.7, 0.7, 0.7], [1, 1, 1, 0, 0], ["a"] * 5
    >>> bate_base(s, calls, group, tool_successes=[1, 1, 1, 0, 0]).round(4)  # 3rd ties
    array([ 0.4168, -0.4209, -0.0056,  0.0033,  0.0033])
    >>> bate_base(s, calls, group, tool_successes=[1, 1, 0, 0, 0]).round(4)  # 3rd call failed
    array([ 0.4168, -0.4209,  0.    ,  0.0021,  0.0021])
    >>> bate_base([0.8, 0.7], [1, 0], "aa", margin=0).round(4)  # the labels do not matter
    array([ 0.2595, -0.2595])
    >>> bate_base([0.8, 0.7], [0, 1], "aa", margin=0).round(4)
    array([ 0.2595, -0.2595])
    >>> bate_base(s, calls, group, base="literal").round(4)  # failed or not
    array([0.9886, 0.1508, 0.7071, 0.    , 0.    ])
    >>> bate_base(s, calls, group, base="centred", tool_successes=[1, 1, 1, 0, 0]).round(4)
    array([ 0.2815, -0.5563,  0.    ,  0.    ,  0.    ])
    """
    if not tau > 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    if base not in ("duel", "literal", "centred"):
        raise ValueError(f"base must be 'duel', 'literal' or 'centred', got {base!r}")
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be finite and >= 0, got {margin}")
    s = np.asarray(fidelity, dtype=float).ravel()
    calls = np.asarray(tool_calls).ravel()
    succ = calls if tool_successes is None else np.asarray(tool_successes).ravel()
    gid, n_groups = _group_index(group)
    if not s.size == calls.size == succ.size == gid.size:
        raise ValueError(
            f"fidelity, tool_calls, tool_successes and group differ in length "
            f"({s.size}, {calls.size}, {succ.size}, {gid.size})"
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
    invoked = valid & (calls[table] > 0)
    free = valid & ~invoked
    tool = invoked if base == "literal" else invoked & (succ[table] > 0)  # the duelling ones
    st = np.where(valid, st, 0.0)
    diff = st[:, :, None] - st[:, None, :]  # [g, i, j] = s_i − s_j
    if base == "duel":
        duel = _duel_payoff(diff - margin, tau)
    else:
        duel = np.sqrt(special.ndtr(diff / tau)) - (_TIE if base == "centred" else 0.0)
    # pair[g, t, n]: the duel of t in T with n in N; 0 elsewhere
    pair = np.where(tool[:, :, None] & free[:, None, :], duel, 0.0)
    n_free = free.sum(axis=1)[:, None]
    as_tool = np.divide(
        pair.sum(axis=2), n_free, out=np.full(st.shape, float(no_cohort_value)), where=n_free > 0
    )
    value = np.where(tool, as_tool, 0.0)
    if base == "duel":  # the tool-free side of each duel: the other half of a zero-sum game
        n_tool = tool.sum(axis=1)[:, None]
        as_free = np.divide(-pair.sum(axis=1), n_tool, out=np.zeros(st.shape), where=n_tool > 0)
        value = np.where(free, as_free, value)
    out[table[present]] = value[present]
    return out


SHAPING_STRENGTH = 0.02
"""Default in-band strength of the eq. 3 shaping (:func:`tool_rate_shaping`); 3x outside the band.

The paper gives none. The shaping is a regulator that keeps ρ near ρ̂. It must not outweigh
the duels that judge whether a call helped, or it holds every tool at ρ̂, useful or not.
The paper's trained model made 0.39 calls per image against ρ̂ = 0.5 (1.77 without BATE),
which suggests the duels dominate in its setup. In ``bench/bench_bate_bandit.py`` (GRPO,
3 images x 4 generations, 680 steps, fidelity + BATE, duel m = 0.002, 16 seeds), end tool
rates for a helpful / useless / harmful tool:

* strength 0.02, from 0.5: 0.74 / 0.45 / 0.14; from 0.89 (the paper's untrained rate):
  0.75 / 0.46 / 0.16;
* strength 0.05: 0.64 / 0.50 / 0.32;
* strength 0.1 (this project's earlier default): 0.60 / 0.51 / 0.41.

So 0.02 is the largest of these that still lets a useless tool fall below ρ̂. The literal
eq. 2 goes to 1.00 in every case at any of these strengths.
"""


def tool_rate_shaping(
    rho: float,
    rank: float | Sequence[float] | np.ndarray,
    *,
    target: float = 0.50,
    band_low: float = 0.35,
    band_high: float = 0.65,
    outside_multiplier: float = 3.0,
    strength: float = SHAPING_STRENGTH,
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
    trajectories with a successful tool call. ``strength`` (:data:`SHAPING_STRENGTH`, 0.02,
    and why) and ``sharpness`` (4: 96 % of the in-band strength is reached at the band edge)
    are not in the paper. Returns an array shaped like ``rank``.

    >>> tool_rate_shaping(0.45, [0.0, 1.0], strength=0.1).round(4)
    array([0.    , 0.0583])
    >>> tool_rate_shaping(0.70, [0.0, 1.0], strength=0.1).round(4)
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

    Returns them unchanged when torch.distributed was never imported (no process group can
    exist then; checked through ``sys.modules``, so this never pays the torch import), when
    it is unavailable or uninitialised, or with a single process. Every process must call it
    (it is a collective). A standalone helper for ρ alone: :class:`BATEReward` takes ρ from
    its gathered rows instead, so that a call makes a single collective.

    >>> all_reduce_counts(3, 8)
    (3, 8)
    """
    dist = _dist()
    if dist is None:
        return tool_used_valid, valid
    import torch

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
    :class:`BATEReward` computes the same ratio from its gathered rows (see
    :func:`tool_rate`).

    >>> global_tool_rate(3, 8)
    0.375
    >>> global_tool_rate(3, 8, gather=lambda a, b: (a + 5, b + 8))  # another rank: 5 of 8
    0.5
    """
    used, total = (gather or all_reduce_counts)(int(tool_used_valid_count), int(valid_count))
    return None if total <= 0 else used / total


def tool_rate(pred: Scores, tool_calls: Sequence[int] | np.ndarray) -> float | None:
    """ρ of the given trajectories: valid tool-invoked / valid (``None`` if none is valid).

    >>> tool_rate([3.0, None, 2.5, 4.0], [1, 2, 0, 0])
    0.3333333333333333
    """
    valid = np.isfinite(_scores(pred))
    calls = np.asarray(tool_calls).ravel()
    if valid.size != calls.size:
        raise ValueError(f"pred and tool_calls differ in length ({valid.size}, {calls.size})")
    total = int(valid.sum())
    return None if total == 0 else int(np.sum(valid & (calls > 0))) / total


def _normalised_rank(values: np.ndarray) -> np.ndarray:
    """Average ranks scaled to [0, 1] (1 = highest); a single value gets 0.5."""
    if values.size == 1:
        return np.full(1, 0.5)
    return (stats.rankdata(values) - 1.0) / (values.size - 1)


@dataclass
class BATEReward:
    """Batch-Aware Tool-Efficiency reward, Tool-IQA §3.4 eq. 2-3.

    ``R(t) = R_base(t) + S(ρ, rank_t)`` where

    * ``R_base`` (eq. 2, :func:`bate_base`): duels of the group's tool-invoked trajectories
      with its tool-free ones, on the fidelity scores s of :func:`fidelity_scores` (same
      ``eps``). Default ``base="duel"``: two-sided, zero-sum duels at a ``margin`` m
      (:data:`BATE_MARGIN` = 0.002) between T (a call succeeded) and N (tool-free),
      ``v(d) = (sqrt(Φ(d/τ)) − sqrt(Φ(−d/τ))) / 2``; t in T gets
      ``mean_{n in N} v(s_t − s_n − m)``, n in N gets ``−mean_{t in T} v(s_t − s_n − m)``, a
      failed call 0. A call gains over the tool-free answers only when its fidelity is higher
      by more than m, and both cohorts are scored alike, so a useless tool gains nothing
      whatever GRPO's scaling, as the paper intends. ``base="literal"``: eq. 2 as printed, ``mean_{n in N} sqrt(Φ((s_t −
      s_n) / τ))`` for every tool-invoked t, which pays ≈ 0.707 for a tie and any call, even
      a failed one (tool rate → 1 in ``bench/bench_bate_bandit.py``); ``base="centred"``:
      that minus sqrt(0.5) for successful calls only. See :func:`bate_base`. τ = 0.1 is this
      project's default (the paper gives none). No opponent: ``no_cohort_value`` in T, 0 in N.
    * ``S`` (eq. 3, :func:`tool_rate_shaping`): incentive when ρ < ρ̂, penalty when ρ > ρ̂,
      added only to trajectories with ``tool_successes > 0``; ``rank_t`` is the fidelity
      rank among those trajectories in the batch. The sigmoid shapes and their ``strength``
      (:data:`SHAPING_STRENGTH` = 0.02, small enough that the duels, not the regulator,
      decide whether a tool is used) are this project's reading; the paper gives target,
      bands and the threefold factor only.
    * ρ (:func:`tool_rate`): valid tool-invoked / valid trajectories over all processes.

    Every call gathers the rows ``(pred_score, mos, group, tool_calls, tool_successes)`` of all
    processes through ``gather`` (default :func:`all_gather_rows`; inject a picklable
    function in tests): exactly one collective per call, in either scope. With
    ``scope="global"`` (default) the batch above (fidelity partners, groups, rank) is that of
    all processes and this process's slice is returned; ``group`` must identify the image
    globally. With ``scope="local"`` it is this process's slice, and the gathered rows only
    give ρ. In the global scope every process computes the fidelity of the whole batch (the
    rank needs all of it), O(trajectories × images) over all processes: about 20 ms for
    1,024 trajectories of 256 images on one CPU core, 1 s for 8 × 1,024.

    Tool-free trajectories get their side of the duels (``"duel"``) or 0 (``"literal"``,
    ``"centred"``), and never shaping; invalid ones (``pred_score`` unparseable) get 0: the
    fidelity and format rewards already penalise those, BATE only judges tool use. When no other image has a valid score (fidelity undefined), valid trajectories
    get ``None``. With ``log_metric`` it logs ``tools/rate`` (ρ) and ``bate/shaping`` (mean
    shaping over the batch's trajectories with a successful call, 0 when none; with
    ``scope="global"`` every process logs the same global values).

    >>> cols = dict(pred_score=[0.9, 0.2, 0.5, 0.5, 0.1, 0.8], mos=[5, 5, 5, 5, 1, 1],
    ...             group=["a", "a", "a", "a", "b", "b"], tool_calls=[1, 1, 0, 0, 0, 0],
    ...             tool_successes=[1, 1, 0, 0, 0, 0])
    >>> [round(x, 4) for x in BATEReward()(**cols)]  # ρ = 2/6: incentive (threefold)
    [0.4159, -0.3659, 0.0043, 0.0043, 0.0, 0.0]
    >>> [round(x, 4) for x in BATEReward(base="literal")(**cols)]
    [1.0274, 0.244, 0.0, 0.0, 0.0, 0.0]

    The same batch split over two processes (group "a" on both), as seen by rank 0; rank 1's
    rows ``(pred_score, mos, group, tool_calls, tool_successes)`` are faked by ``gather``:

    >>> rank1 = [(0.5, 5, "a", 0, 0), (0.1, 1, "b", 0, 0), (0.8, 1, "b", 0, 0)]
    >>> r = BATEReward(gather=lambda rows: (rows + rank1, 0))
    >>> [round(x, 4) for x in r(pred_score=[0.9, 0.2, 0.5], mos=[5, 5, 5], group=["a"] * 3,
    ...                         tool_calls=[1, 1, 0], tool_successes=[1, 1, 0])]
    [0.4159, -0.3659, 0.0043]
    """

    tau: float = 0.1
    no_cohort_value: float = 0.0
    base: BATEBase = "duel"
    margin: float = BATE_MARGIN
    target: float = 0.50
    band_low: float = 0.35
    band_high: float = 0.65
    outside_multiplier: float = 3.0
    strength: float = SHAPING_STRENGTH
    sharpness: float = 4.0
    eps: float = FIDELITY_EPS
    gather: RowsGather | None = None
    scope: Scope = "global"

    def __post_init__(self) -> None:
        self.__name__ = "bate"
        if not 0.0 <= self.band_low < self.target < self.band_high <= 1.0:
            raise ValueError("need 0 <= band_low < target < band_high <= 1")
        if not self.tau > 0:
            raise ValueError(f"tau must be > 0, got {self.tau}")
        if self.base not in ("duel", "literal", "centred"):
            raise ValueError(f"base must be 'duel', 'literal' or 'centred', got {self.base!r}")
        if not (math.isfinite(self.margin) and self.margin >= 0):
            raise ValueError(f"margin must be finite and >= 0, got {self.margin}")
        _check_scope(self.scope)

    def __call__(
        self,
        prompts: Sequence[Any] | None = None,
        completions: Sequence[Any] | None = None,
        **kwargs: Any,
    ) -> list[float | None]:
        n = _batch_size(completions)
        name = self.__name__
        local = [
            _column(name, kwargs, column, n)
            for column in ("pred_score", "mos", "group", "tool_calls", "tool_successes")
        ]
        # The collective comes first so that every process calls it whatever its batch holds.
        gathered, offset = _exchange(name, self.gather, local)
        rho = tool_rate(gathered[0], gathered[3])
        mine = slice(offset, offset + len(local[0]))
        if self.scope == "local":
            gathered, mine = local, slice(0, mine.stop - mine.start)
        raw_pred, mos, group, raw_calls, raw_successes = gathered
        pred = _scores(raw_pred)
        calls = np.asarray(raw_calls, dtype=np.int64)
        successes = np.asarray(raw_successes, dtype=np.int64)
        valid = np.isfinite(pred)

        s = fidelity_scores(pred, mos, group, eps=self.eps, invalid_value=np.nan)
        total = bate_base(
            s,
            calls,
            group,
            tau=self.tau,
            no_cohort_value=self.no_cohort_value,
            base=self.base,
            margin=self.margin,
            tool_successes=successes,
        )
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
        return _as_list(total[mine], (valid & ~np.isfinite(s))[mine])


# -- format ---------------------------------------------------------------------------


def format_scores(
    protocol: Sequence[Mapping[str, bool]],
    pred: Scores,
    *,
    repair_penalty: float = 0.25,
) -> np.ndarray:
    """Format reward per trajectory: ``max(0, passed / 6 − repair_penalty · repaired)``.

    ``passed`` counts the true checks among :data:`FORMAT_CHECKS` (the rubric parsed; every
    reply thought first; one action per turn, never a tool call and an answer together;
    every tool call readable; the score tagged; the score in range); ``score_in_range``
    counts as false when the predicted score is unparseable. ``repaired`` (optional key,
    default false) marks a trajectory that needed a repair prompt. So 1.0 exactly when all
    six hold without repair. A missing check key raises ``KeyError``.

    >>> ok = dict.fromkeys(FORMAT_CHECKS, True)
    >>> format_scores([ok, ok, {**ok, "repaired": True}, {**ok, "single_action": False}],
    ...               [3.0, None, 3.0, 3.0]).round(4)
    array([1.    , 0.8333, 0.75  , 0.8333])
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

    ``r = max(0, passed / 6 − repair_penalty · repaired)`` over the checks of
    :data:`FORMAT_CHECKS` in the ``protocol`` column (``rubric_ok``, ``thinking``,
    ``single_action``, ``tool_calls_valid``, ``answer_tagged``, ``score_in_range``), with
    ``score_in_range`` false whenever ``pred_score`` is unparseable; see
    :func:`format_scores`. 1.0 exactly for a trajectory that followed the protocol without
    a repair prompt: a reply with both a tool call and an answer (Appendix A's gate forbids
    it) or without a thinking block loses a sixth.

    >>> ok = dict.fromkeys(FORMAT_CHECKS, True)
    >>> [round(r, 4) for r in FormatReward()(
    ...     protocol=[ok, {**ok, "thinking": False, "repaired": True}], pred_score=[4.2, 3.0])]
    [1.0, 0.5833]
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
    *,
    gather: RowsGather | None = None,
    tau: float = 0.1,
    scope: Scope = "global",
    base: BATEBase = "duel",
    margin: float = BATE_MARGIN,
) -> list[FidelityReward | BATEReward | FormatReward]:
    """The paper's three rewards with default settings, in :data:`REWARD_WEIGHTS_PAPER` order.

    ``gather`` and ``scope`` go to the fidelity and BATE rewards (see :func:`all_gather_rows`);
    ``tau``, ``base`` (:data:`BATEBase`) and ``margin`` (:data:`BATE_MARGIN`) to BATE.

    >>> [r.__name__ for r in default_rewards()]
    ['fidelity', 'bate', 'format']
    """
    return [
        FidelityReward(scope=scope, gather=gather),
        BATEReward(tau=tau, base=base, margin=margin, gather=gather, scope=scope),
        FormatReward(),
    ]
