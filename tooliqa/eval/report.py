"""Evaluation reports from stored result rows.

:func:`build_report` turns result rows and run records into a JSON-serialisable
dict: per (method, dataset) metrics against the MOS normalised to [1, 5], a
Table-1-style SRCC/PLCC table, tool usage (tool rate, metrics with and without
tool calls, per tool, per rubric attribute level) and efficiency figures.
:func:`write_report` writes it as ``report.md`` and ``report.json`` plus one
scatter plot per (method, dataset), drawn with Pillow.

Where a dataset has attribute labels (see :mod:`tooliqa.eval.datasets`), its
groups also get per-attribute metrics (:func:`attribute_metrics`): for each
labelled attribute, ``n`` (images with both a label and a predicted attribute
score), SRCC, and PLCC after the same logistic fit as the overall scores, here
mapping the 1-5 predictions onto that attribute's own label scale. Without
attribute labels the report has no attribute section at all.

Result row keys: ``run_id, method, dataset, image, mos, mos_norm, score, error,
tool_calls, tools, tools_ok, rubric, input_tokens, output_tokens, seconds,
backend``, and optionally ``attribute_scores`` and ``attr_labels`` (attribute
key -> predicted score / human label). Run keys: ``run_id, method, dataset,
started_at, finished_at, wall_s, concurrency, endpoints``.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tooliqa.tools import clean_text

from .datasets import ATTRIBUTE_KEYS, order_attributes
from .metrics import FIT_DESCRIPTIONS, FIT_NAMES, LogisticFit, Metrics, evaluate

__all__ = [
    "attribute_metrics",
    "build_report",
    "format_pair",
    "scatter_plot",
    "slugify",
    "write_report",
]

Row = Mapping[str, Any]
_T = TypeVar("_T")

PLOT_SIZE = (800, 600)
TOP_LEVELS = 6
MIN_LEVEL_IMAGES = 3


# -- small helpers ---------------------------------------------------------------


def slugify(text: str) -> str:
    """Lower-case ASCII slug: runs of other characters become ``-``."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
    return slug or "x"


def _num(value: Any) -> float | None:
    """A finite float or None."""
    if value is None or isinstance(value, bool):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _int(value: Any) -> int:
    v = _num(value)
    return int(v) if v is not None else 0


def _fmt3(v: float | None) -> str:
    """Paper style: ``.828``, ``-.123``; ``–`` for missing."""
    if v is None:
        return "–"
    s = f"{v:.3f}"
    if s.startswith("0."):
        return s[1:]
    if s.startswith("-0."):
        return "-" + s[2:]
    return s


def format_pair(srcc: float | None, plcc: float | None) -> str:
    """A Table-1 cell: ``SRCC/PLCC`` in paper style."""
    return f"{_fmt3(srcc)}/{_fmt3(plcc)}"


def _f(v: float | None, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100.0 * v:.1f}%"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|#!~])")


def _md(text: Any) -> str:
    """A value from outside (a method, model, dataset or tool name, a failure reason) as
    inert Markdown text: control characters and lone surrogates replaced, HTML escaped,
    Markdown's special characters backslash-escaped, new lines flattened. Safe in a table
    cell, a heading and a list item.

    >>> print(_md('<img src=x onerror=alert(1)> **bold** | `x`'))
    &lt;img src=x onerror=alert(1)&gt; \\*\\*bold\\*\\* \\| \\`x\\`
    """
    text = html.escape(clean_text(str(text)), quote=False)
    return _MD_SPECIAL.sub(r"\\\1", " ".join(text.splitlines()))


def _mdrow(cells: Iterable[Any]) -> str:
    return "| " + " | ".join(_md(c) for c in cells) + " |"


def _level_row(attr: str, level: str, e: Mapping[str, Any], tools: Sequence[str]) -> str:
    return _mdrow(
        [attr, level, e["n"], _pct(e["tool_rate"]), *(_pct(e["tools"].get(t)) for t in tools)]
    )


def _has_score(row: Row) -> bool:
    return _num(row.get("score")) is not None and _num(row.get("mos_norm")) is not None


def _failed(row: Row) -> bool:
    return row.get("error") is not None or _num(row.get("score")) is None


def _failure_reason(row: Row) -> str:
    err = row.get("error")
    if err is not None:
        text = " ".join(str(err).split())
        return text[:117] + "..." if len(text) > 120 else text
    return "no score"


def _tools(row: Row) -> list[str]:
    return [str(t) for t in (row.get("tools") or [])]


def _used_tools(row: Row) -> bool:
    return _int(row.get("tool_calls")) > 0 or bool(row.get("tools"))


def _ordered(values: Iterable[_T]) -> list[_T]:
    """Unique values in first-seen order."""
    seen: dict[_T, None] = {}
    for v in values:
        seen.setdefault(v, None)
    return list(seen)


# -- grouping ----------------------------------------------------------------------


def _group_rows(
    rows: Sequence[Row], runs: Sequence[Row]
) -> tuple[dict[tuple[str, str], list[Row]], dict[tuple[str, str], list[Row]], list[str]]:
    """Rows per (method, dataset): all rows, and one row per image.

    When an image appears in several runs of the same method and dataset, the
    kept row is the one with a valid score, then from the latest-started run,
    then the last one given.
    """
    started = {str(r.get("run_id")): _num(r.get("started_at")) or 0.0 for r in runs}
    raw: dict[tuple[str, str], list[Row]] = {}
    for row in rows:
        key = (str(row.get("method")), str(row.get("dataset")))
        raw.setdefault(key, []).append(row)
    unique: dict[tuple[str, str], list[Row]] = {}
    warnings: list[str] = []
    for key, group in raw.items():
        best: dict[str, tuple[tuple[int, float, int], Row]] = {}
        for i, row in enumerate(group):
            rank = (int(_has_score(row)), started.get(str(row.get("run_id")), 0.0), i)
            img = str(row.get("image"))
            if img not in best or rank > best[img][0]:
                best[img] = (rank, row)
        dupes = len(group) - len(best)
        if dupes:
            warnings.append(
                f"{key[0]} / {key[1]}: {dupes} duplicate image row(s) across runs; "
                "kept one per image (scored first, then latest run)"
            )
        unique[key] = [r for _, r in best.values()]
    return raw, unique, warnings


def _metrics(rows: Sequence[Row], fit: str, bootstrap: int = 0) -> Metrics | None:
    scored = [r for r in rows if _has_score(r)]
    if not scored:
        return None
    pred = [float(r["score"]) for r in scored]
    mos = [float(r["mos_norm"]) for r in scored]
    return evaluate(pred, mos, fit=fit, bootstrap=bootstrap)


def _metric_summary(rows: Sequence[Row], fit: str) -> dict[str, Any]:
    m = _metrics(rows, fit)
    if m is None:
        return {"n": 0, "srcc": None, "plcc": None, "message": "no scored images"}
    return {"n": m.n, "srcc": m.srcc, "plcc": m.plcc, "message": m.message}


def _attr_value(row: Row, field: str, key: str) -> float | None:
    """``row[field][key]`` as a finite float (``field``: attr_labels or attribute_scores)."""
    values = row.get(field) or {}
    return _num(values.get(key)) if isinstance(values, Mapping) else None


def _attr_column(rows: Sequence[Row], field: str, key: str) -> dict[int, float]:
    """Row index -> value of attribute ``key`` in ``field``, for the rows that have one."""
    values = ((i, _attr_value(r, field, key)) for i, r in enumerate(rows))
    return {i: v for i, v in values if v is not None}


def _no_pairs_reason(key: str, rows: Sequence[Row]) -> str:
    """Why a labelled attribute has no (label, prediction) pair."""
    if not any(r.get("attribute_scores") for r in rows):
        return "no attribute scores predicted (run with --attribute-scores)"
    if key not in ATTRIBUTE_KEYS:
        return f"{key} is not a rubric attribute; nothing predicts it"
    if key == "colour":
        return (
            "no colour scores predicted (asked for in the extended prompt style only: "
            "tooliqa eval --prompt-style extended)"
        )
    return f"no {key} scores predicted for the labelled images"


def attribute_metrics(
    rows: Sequence[Row], fit: str = "5pl", bootstrap: int = 0
) -> dict[str, dict[str, Any]]:
    """Per attribute with at least one label among ``rows``: metrics of the predicted
    attribute scores against the labels.

    Each entry is :meth:`Metrics.to_dict` (``n`` counts the images with both a
    label and a prediction; PLCC after the ``fit`` mapping of the 1-5 predictions
    onto the label's own scale) plus ``labels`` and ``predicted``, the images
    with a label and with a prediction. Keys in rubric order, then the others
    sorted; ``{}`` when no row has attribute labels.
    """
    labelled_keys = {k for r in rows for k in (r.get("attr_labels") or {})}
    out: dict[str, dict[str, Any]] = {}
    for key in order_attributes(labelled_keys):
        labels = _attr_column(rows, "attr_labels", key)
        if not labels:
            continue
        preds = _attr_column(rows, "attribute_scores", key)
        both = [i for i in labels if i in preds]
        if both:
            m = evaluate(
                [preds[i] for i in both], [labels[i] for i in both], fit=fit, bootstrap=bootstrap
            )
        else:
            reason = _no_pairs_reason(key, rows)
            m = Metrics(0, None, None, None, None, "none", message=reason, fit_requested=fit)
        entry = m.to_dict()
        out[key] = {**entry, "labels": len(labels), "predicted": len(preds)}
    return out


# -- sections ----------------------------------------------------------------------


def _failures(rows: Sequence[Row]) -> dict[str, Any]:
    failed = [r for r in rows if _failed(r)]
    reasons = Counter(_failure_reason(r) for r in failed)
    return {
        "count": len(failed),
        "rate": len(failed) / len(rows) if rows else None,
        "reasons": dict(reasons.most_common()),
    }


def _tool_usage(scored: Sequence[Row], fit: str) -> dict[str, Any]:
    """Tables 6-7 / Fig. 5 style statistics over the scored images."""
    n = len(scored)
    with_t = [r for r in scored if _used_tools(r)]
    without_t = [r for r in scored if not _used_tools(r)]
    out: dict[str, Any] = {
        "n": n,
        "tool_rate": len(with_t) / n if n else None,
        "mechanism": {
            "all": {"rate": 1.0 if n else None, **_metric_summary(scored, fit)},
            "without_tools": {
                "rate": len(without_t) / n if n else None,
                **_metric_summary(without_t, fit),
            },
            "with_tools": {
                "rate": len(with_t) / n if n else None,
                **_metric_summary(with_t, fit),
            },
        },
    }
    calls: Counter[str] = Counter()
    ok_calls: Counter[str] = Counter()
    known_calls: Counter[str] = Counter()
    images: dict[str, list[Row]] = {}
    for row in scored:
        names = _tools(row)
        oks = list(row.get("tools_ok") or [])
        for i, name in enumerate(names):
            calls[name] += 1
            if i < len(oks) and oks[i] is not None:
                known_calls[name] += 1
                ok_calls[name] += int(bool(oks[i]))
        for name in _ordered(names):
            images.setdefault(name, []).append(row)
    per_tool: dict[str, Any] = {}
    for name, _ in sorted(images.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        subset = images[name]
        summary = _metric_summary(subset, fit)
        per_tool[name] = {
            "images": len(subset),
            "rate": len(subset) / n if n else None,
            "srcc": summary["srcc"],
            "plcc": summary["plcc"],
            "message": summary["message"],
            "calls": calls[name],
            "success_rate": ok_calls[name] / known_calls[name] if known_calls[name] else None,
        }
    out["per_tool"] = per_tool
    out["rubric"], out["top_levels"] = _rubric_usage(scored, list(per_tool))
    return out


def _rubric_usage(
    scored: Sequence[Row], tool_names: list[str]
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    levels: dict[str, dict[str, list[Row]]] = {}
    for row in scored:
        rubric = row.get("rubric") or {}
        for attr, level in rubric.items():
            if level is None:
                continue
            levels.setdefault(str(attr), {}).setdefault(str(level), []).append(row)
    table: dict[str, dict[str, Any]] = {}
    flat: list[dict[str, Any]] = []
    for attr in sorted(levels):
        table[attr] = {}
        for level in sorted(levels[attr]):
            group = levels[attr][level]
            k = len(group)
            entry = {
                "n": k,
                "tool_rate": sum(_used_tools(r) for r in group) / k,
                "tools": {t: sum(t in _tools(r) for r in group) / k for t in tool_names},
            }
            table[attr][level] = entry
            flat.append({"attribute": attr, "level": level, **entry})
    eligible = [e for e in flat if e["n"] >= MIN_LEVEL_IMAGES] or flat
    top = sorted(eligible, key=lambda e: (-e["tool_rate"], -e["n"], e["attribute"], e["level"]))
    return table, top[:TOP_LEVELS]


def _efficiency(rows: Sequence[Row], runs: Sequence[Row]) -> dict[str, Any]:
    """Table-8 style figures: throughput from the runs' active wall time."""
    n = len(rows)
    wall = sum(_num(r.get("wall_s")) or 0.0 for r in runs)

    def mean(key: str) -> float | None:
        vals = [v for v in (_num(r.get(key)) for r in rows) if v is not None]
        return float(np.mean(vals)) if vals else None

    note = ""
    if not runs:
        note = "no run record; throughput unknown"
    elif wall <= 0:
        note = "runs record no active wall time; throughput unknown"
    return {
        "images": n,
        "wall_s": wall if runs else None,
        "images_per_s": n / wall if wall > 0 else None,
        "output_tokens_per_image": mean("output_tokens"),
        "input_tokens_per_image": mean("input_tokens"),
        "tool_calls_per_image": mean("tool_calls"),
        "seconds_per_image": mean("seconds"),
        "failures": sum(_failed(r) for r in rows),
        "concurrency": sorted({_int(r.get("concurrency")) for r in runs}) if runs else [],
        "backends": sorted({str(r.get("backend")) for r in rows if r.get("backend")}),
        "note": note,
    }


# -- build -------------------------------------------------------------------------


def build_report(
    rows: Sequence[Row],
    runs: Sequence[Row],
    *,
    fit: str = "5pl",
    bootstrap: int = 0,
) -> dict[str, Any]:
    """Build a JSON-serialisable report from result rows and run records."""
    if fit not in FIT_NAMES:
        raise ValueError(f"fit must be one of {FIT_NAMES}, not {fit!r}")
    runs = list(runs)
    rows = list(rows)
    raw, unique, warnings = _group_rows(rows, runs)
    runs_sorted = sorted(runs, key=lambda r: _num(r.get("started_at")) or 0.0)
    keys = _ordered(
        [(str(r.get("method")), str(r.get("dataset"))) for r in runs_sorted]
        + [(str(r.get("method")), str(r.get("dataset"))) for r in rows]
    )
    methods = _ordered(k[0] for k in keys)
    datasets = _ordered(k[1] for k in keys)
    known_runs = {str(r.get("run_id")) for r in runs}
    missing = sorted({str(r.get("run_id")) for r in rows} - known_runs)
    if missing:
        warnings.append(f"rows refer to unknown run(s): {', '.join(missing)}")

    fit_text = FIT_DESCRIPTIONS[fit]
    groups: list[dict[str, Any]] = []
    used_slugs: set[str] = set()
    for method, dataset in keys:
        all_rows = raw.get((method, dataset), [])
        rows_u = unique.get((method, dataset), [])
        g_runs = [
            r
            for r in runs
            if (str(r.get("method")), str(r.get("dataset"))) == (method, dataset)
            or str(r.get("run_id")) in {str(x.get("run_id")) for x in all_rows}
        ]
        scored = [r for r in rows_u if _has_score(r)]
        no_mos = sum(
            1
            for r in rows_u
            if _num(r.get("score")) is not None and _num(r.get("mos_norm")) is None
        )
        failures = _failures(rows_u)
        m = _metrics(rows_u, fit, bootstrap)
        if m is None:
            if not rows_u:
                reason = "no results recorded"
            else:
                top = ", ".join(f"{k!r} ×{v}" for k, v in list(failures["reasons"].items())[:3])
                reason = f"no valid scores: {failures['count']} of {len(rows_u)} failed ({top})"
                if no_mos:
                    reason += f"; {no_mos} scored image(s) lack a normalised MOS"
            metrics: dict[str, Any] = Metrics(
                0, None, None, None, None, "none", message=reason, fit_requested=fit
            ).to_dict()
        else:
            metrics = m.to_dict()
        if no_mos and m is not None:
            warnings.append(f"{method} / {dataset}: {no_mos} scored image(s) lack mos_norm")
        if metrics["message"]:
            warnings.append(f"{method} / {dataset}: {metrics['message']}")
        attributes = attribute_metrics(rows_u, fit, bootstrap)
        if attributes and not any(e["predicted"] for e in attributes.values()):
            warnings.append(
                f"{method} / {dataset}: attribute labels but no predicted attribute scores "
                "(run with --attribute-scores)"
            )
        slug = f"scatter-{slugify(method)}--{slugify(dataset)}"
        base, i = slug, 2
        while slug in used_slugs:
            slug, i = f"{base}-{i}", i + 1
        used_slugs.add(slug)
        group = {
            "method": method,
            "dataset": dataset,
            "run_ids": _ordered(str(r.get("run_id")) for r in g_runs),
            "n_rows": len(rows_u),
            "n_scored": len(scored),
            "metrics": metrics,
            "failures": failures,
            "tool_usage": _tool_usage(scored, fit),
            "efficiency": _efficiency(all_rows, g_runs),
            "plot": f"{slug}.png" if scored else None,
        }
        if attributes:
            group["attributes"] = attributes
        groups.append(group)

    table = _table(groups, methods, datasets)
    per_method = {}
    for method in methods:
        m_rows = [r for r in rows if str(r.get("method")) == method]
        m_runs = [r for r in runs if str(r.get("method")) == method]
        per_method[method] = _efficiency(m_rows, m_runs)
    report: dict[str, Any] = {
        "fit": fit,
        "fit_description": f"PLCC and RMSE {fit_text}",
        "mos": "MOS normalised to [1, 5] (mos_norm)",
        "bootstrap": bootstrap,
        "ci_level": 0.95 if bootstrap else None,
        "methods": methods,
        "datasets": datasets,
        "table": table,
        "groups": groups,
        "efficiency": per_method,
        "runs": [
            {
                "run_id": r.get("run_id"),
                "method": r.get("method"),
                "dataset": r.get("dataset"),
                "started_at": _num(r.get("started_at")),
                "finished_at": _num(r.get("finished_at")),
                "wall_s": _num(r.get("wall_s")),
                "concurrency": _int(r.get("concurrency")),
                "endpoints": [str(e) for e in (r.get("endpoints") or [])],
            }
            for r in runs_sorted
        ],
        "warnings": warnings,
    }
    attr_keys = order_attributes(k for g in groups for k in g.get("attributes", {}))
    if attr_keys:
        report["attributes"] = {
            "keys": attr_keys,
            "description": (
                "predicted attribute scores (1-5) against the attribute labels, each on its "
                "own scale, higher better; n counts images with both; SRCC, and PLCC and "
                f"RMSE {fit_text} onto the label scale"
            ),
        }
    return report


def _table(
    groups: Sequence[Mapping[str, Any]], methods: Sequence[str], datasets: Sequence[str]
) -> dict[str, Any]:
    """Table 1: methods as rows, datasets as columns, ``SRCC/PLCC`` cells, average."""
    by_key = {(g["method"], g["dataset"]): g for g in groups}
    out_rows = []
    for method in methods:
        cells: dict[str, Any] = {}
        s_vals, p_vals = [], []
        for ds in datasets:
            g = by_key.get((method, ds))
            if g is None:
                cells[ds] = {"srcc": None, "plcc": None, "n": 0, "text": "–", "note": "not run"}
                continue
            mt = g["metrics"]
            cells[ds] = {
                "srcc": mt["srcc"],
                "plcc": mt["plcc"],
                "n": mt["n"],
                "text": format_pair(mt["srcc"], mt["plcc"]),
                "note": mt["message"],
            }
            if mt["srcc"] is not None:
                s_vals.append(mt["srcc"])
            if mt["plcc"] is not None:
                p_vals.append(mt["plcc"])
        avg_s = float(np.mean(s_vals)) if s_vals else None
        avg_p = float(np.mean(p_vals)) if p_vals else None
        complete = len(s_vals) == len(datasets) and len(p_vals) == len(datasets)
        out_rows.append(
            {
                "method": method,
                "cells": cells,
                "avg": {
                    "srcc": avg_s,
                    "plcc": avg_p,
                    "n_datasets": min(len(s_vals), len(p_vals)),
                    "complete": complete,
                    "text": format_pair(avg_s, avg_p) + ("" if complete else "*"),
                },
            }
        )
    return {"columns": [*datasets, "Avg"], "rows": out_rows}


# -- markdown ----------------------------------------------------------------------


def _with_ci(mt: Mapping[str, Any], name: str) -> str:
    """``mt[name]`` to 3 decimals, with its bootstrap interval when there is one."""
    value = _f(mt[name])
    ci = mt.get("ci") or {}
    if name in ci and mt[name] is not None:
        value += f" [{ci[name][0]:.3f}, {ci[name][1]:.3f}]"
    return value


def _attribute_lines(report: Mapping[str, Any], fit_sentence: str) -> list[str]:
    """The attribute section (none without attribute labels)."""
    if not report.get("attributes"):
        return []
    lines = [
        "## Attribute scores",
        "",
        "Predicted attribute scores (1-5) against the datasets' attribute labels, each label "
        f"on its own scale, higher better. n: images with both a label and a prediction; "
        f"SRCC; {fit_sentence} of the predictions onto the label scale.",
        "",
        "| Method | Dataset | Attribute | n | Labels | Predicted | SRCC | PLCC | PLCC basis "
        "| Notes |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for g in report["groups"]:
        for key, e in (g.get("attributes") or {}).items():
            lines.append(
                f"| {_md(g['method'])} | {_md(g['dataset'])} | {_md(key)} | {e['n']} | "
                f"{e['labels']} | {e['predicted']} | {_with_ci(e, 'srcc')} | "
                f"{_with_ci(e, 'plcc')} | {_md(e['plcc_basis'] or '–')} | "
                f"{_md(e['message'] or '')} |"
            )
    lines.append("")
    return lines


def _markdown(report: Mapping[str, Any]) -> str:
    fit = report["fit"]
    lines: list[str] = ["# Evaluation report", ""]
    fit_sentence = (
        f"PLCC {FIT_DESCRIPTIONS[fit]}"
        if fit == "none"
        else f"PLCC after a {fit[0]}-parameter logistic fit"
    )
    lines += [
        f"Scores are compared with the MOS normalised to [1, 5]. SRCC is Spearman's rank "
        f"correlation; {fit_sentence} (monotone VQEG mapping of predictions onto MOS; "
        "RMSE on the same mapped values). Where a fit fails, the raw PLCC is reported and "
        "the per-dataset table says so.",
        "",
    ]
    if report.get("bootstrap"):
        lines += [
            f"Intervals are 95% percentile-bootstrap CIs over {report['bootstrap']} resamples.",
            "",
        ]

    # Table 1
    table = report["table"]
    datasets = report["datasets"]
    lines += [f"## Results (SRCC/PLCC, {fit_sentence})", ""]
    lines.append("| Method | " + " | ".join(_md(c) for c in table["columns"]) + " |")
    lines.append("|---|" + "---|" * len(table["columns"]))
    incomplete = False
    for row in table["rows"]:
        cells = [row["cells"][d]["text"] for d in datasets]
        incomplete |= not row["avg"]["complete"]
        lines.append(
            f"| {_md(row['method'])} | " + " | ".join(cells) + f" | {row['avg']['text']} |"
        )
    lines.append("")
    if incomplete:
        lines += ["\\* average over the datasets with a value only.", ""]

    # per-dataset metrics
    lines += ["## Per-dataset metrics", ""]
    lines.append(
        "| Method | Dataset | n | Failed | SRCC | KRCC | PLCC | RMSE | PLCC basis | Notes |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for g in report["groups"]:
        mt = g["metrics"]
        lines.append(
            f"| {_md(g['method'])} | {_md(g['dataset'])} | {mt['n']} | "
            f"{g['failures']['count']} | {_with_ci(mt, 'srcc')} | {_f(mt['krcc'])} | "
            f"{_with_ci(mt, 'plcc')} | {_f(mt['rmse'])} | {_md(mt['plcc_basis'] or '–')} | "
            f"{_md(mt['message'] or '')} |"
        )
    lines.append("")
    lines += _attribute_lines(report, fit_sentence)

    # tool usage
    lines += [
        "## Tool usage",
        "",
        "Over the images with a valid score. Tool rate: share of images with at least one "
        "tool call; SRCC/PLCC recomputed on each subset; success: share of calls that "
        "succeeded.",
        "",
    ]
    for g in report["groups"]:
        tu = g["tool_usage"]
        lines += [f"### {_md(g['method'])} / {_md(g['dataset'])}", ""]
        if not tu["n"]:
            lines += ["No scored images.", ""]
            continue
        lines += [
            f"Tool rate: {_pct(tu['tool_rate'])} of {tu['n']} images.",
            "",
            "| Images | Share | n | SRCC | PLCC |",
            "|---|---|---|---|---|",
        ]
        labels = {"all": "all", "without_tools": "no tool call", "with_tools": "with tool calls"}
        for key, label in labels.items():
            e = tu["mechanism"][key]
            lines.append(
                f"| {label} | {_pct(e['rate'])} | {e['n']} | {_f(e['srcc'])} | {_f(e['plcc'])} |"
            )
        lines.append("")
        if tu["per_tool"]:
            lines += [
                "| Tool | Images | Rate | SRCC | PLCC | Calls | Success |",
                "|---|---|---|---|---|---|---|",
            ]
            for name, e in tu["per_tool"].items():
                lines.append(
                    f"| {_md(name)} | {e['images']} | {_pct(e['rate'])} | {_f(e['srcc'])} | "
                    f"{_f(e['plcc'])} | {e['calls']} | {_pct(e['success_rate'])} |"
                )
            lines.append("")
        if tu["rubric"]:
            tools = list(tu["per_tool"])
            head = _mdrow(["Attribute", "Level", "n", "Tool rate", *tools])
            rule = "|" + "---|" * (4 + len(tools))

            lines += [
                f"Rubric levels with the highest tool rates (at least {MIN_LEVEL_IMAGES} "
                "images where available):",
                "",
                head,
                rule,
            ]
            lines += [_level_row(e["attribute"], e["level"], e, tools) for e in tu["top_levels"]]
            lines += ["", "<details><summary>All rubric levels</summary>", "", head, rule]
            for attr, lv in tu["rubric"].items():
                lines += [_level_row(attr, level, e, tools) for level, e in lv.items()]
            lines += ["", "</details>", ""]

    # efficiency
    lines += [
        "## Efficiency",
        "",
        "Throughput is images (including failures) over the runs' active wall time; the "
        "other columns are means per image.",
        "",
        "| Method | Dataset | Images | Wall s | Images/s | Out tokens | In tokens | "
        "Tool calls | Seconds | Failures | Concurrency |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def eff_line(method: str, dataset: str, e: Mapping[str, Any], bold: bool = False) -> str:
        conc = ", ".join(str(c) for c in e["concurrency"]) or "–"
        return (
            f"| {'**' + _md(method) + '**' if bold else _md(method)} | {_md(dataset)} | {e['images']} | {_f(e['wall_s'], 1)} | "
            f"{_f(e['images_per_s'], 2)} | {_f(e['output_tokens_per_image'], 1)} | "
            f"{_f(e['input_tokens_per_image'], 1)} | {_f(e['tool_calls_per_image'], 2)} | "
            f"{_f(e['seconds_per_image'], 2)} | {e['failures']} | {conc} |"
        )

    for g in report["groups"]:
        lines.append(eff_line(g["method"], g["dataset"], g["efficiency"]))
    for method, e in report["efficiency"].items():
        lines.append(eff_line(method, "all", e, bold=True))
    lines.append("")

    # failures
    failing = [g for g in report["groups"] if g["failures"]["count"]]
    lines += ["## Failures", ""]
    if not failing:
        lines += ["None.", ""]
    for g in failing:
        f = g["failures"]
        lines.append(
            f"- **{_md(g['method'])} / {_md(g['dataset'])}**: {f['count']} of {g['n_rows']} "
            f"({_pct(f['rate'])})"
        )
        for reason, count in list(f["reasons"].items())[:5]:
            lines.append(f"  - {count} × {_md(reason)}")
    lines.append("")

    # plots
    lines += ["## Plots", ""]
    for g in report["groups"]:
        title = f"{_md(g['method'])} / {_md(g['dataset'])}"
        if g.get("plot"):
            lines += [f"### {title}", "", f"![{title}]({g['plot']})", ""]
        else:
            lines += [
                f"- {title}: no plot ({_md(g['metrics']['message'] or 'no scored images')})",
                "",
            ]
    lines.append("")

    if report.get("warnings"):
        lines += ["## Warnings", ""]
        lines += [f"- {_md(w)}" for w in report["warnings"]]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# -- plot -------------------------------------------------------------------------


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow without FreeType
        return ImageFont.load_default()


def _nice_step(span: float, target: int = 8) -> float:
    raw = span / max(1, target)
    mag = 10 ** math.floor(math.log10(raw))
    for mult in (1, 2, 2.5, 5, 10):
        if mult * mag >= raw:
            return mult * mag
    return 10 * mag


def _ticks(lo: float, hi: float) -> list[float]:
    step = _nice_step(hi - lo)
    start = math.ceil(lo / step - 1e-9) * step
    out = []
    v = start
    while v <= hi + 1e-9 * step:
        out.append(round(v, 10))
        v += step
    return out


def _limits(values: Sequence[float]) -> tuple[float, float]:
    lo, hi = min([1.0, *values]), max([5.0, *values])
    pad = 0.04 * (hi - lo)
    return lo - pad, hi + pad


def _tick_label(v: float) -> str:
    return f"{v:g}" if abs(v - round(v)) < 1e-9 else f"{v:.2f}".rstrip("0")


def scatter_plot(
    pred: Sequence[float],
    mos: Sequence[float],
    *,
    title: str,
    subtitle: str,
    curve: LogisticFit | None = None,
    highlight: Sequence[bool] | None = None,
    size: tuple[int, int] = PLOT_SIZE,
) -> Image.Image:
    """Prediction vs normalised MOS with the fitted curve; returns an RGB image."""
    w, h = size
    left, right, top, bottom = 92, 28, 84, 74
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    f_title, f_sub, f_axis, f_tick = _font(22), _font(17), _font(17), _font(14)

    pred_a = np.asarray(pred, dtype=float)
    mos_a = np.asarray(mos, dtype=float)
    xs_curve = ys_curve = None
    if curve is not None and curve.ok and pred_a.size:
        xs_curve = np.linspace(float(pred_a.min()), float(pred_a.max()), 240)
        ys_curve = curve.predict(xs_curve)
    x_lo, x_hi = _limits(pred_a.tolist())
    y_lo, y_hi = _limits(mos_a.tolist() + (ys_curve.tolist() if ys_curve is not None else []))
    pw, ph = w - left - right, h - top - bottom

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (
            left + (x - x_lo) / (x_hi - x_lo) * pw,
            top + (1.0 - (y - y_lo) / (y_hi - y_lo)) * ph,
        )

    # titles (the built-in font covers Latin text; long titles are shortened)
    while len(title) > 8 and draw.textlength(title, font=f_title) > w - 40:
        title = title[: len(title) - 4] + "..."
    draw.text((w / 2, 14), title, fill="black", font=f_title, anchor="ma")
    draw.text((w / 2, 46), subtitle, fill=(60, 60, 60), font=f_sub, anchor="ma")

    # grid, ticks, frame
    for v in _ticks(x_lo, x_hi):
        px, _ = to_px(v, y_lo)
        draw.line([(px, top), (px, top + ph)], fill=(228, 228, 228))
        draw.line([(px, top + ph), (px, top + ph + 6)], fill="black", width=2)
        draw.text((px, top + ph + 9), _tick_label(v), fill="black", font=f_tick, anchor="ma")
    for v in _ticks(y_lo, y_hi):
        _, py = to_px(x_lo, v)
        draw.line([(left, py), (left + pw, py)], fill=(228, 228, 228))
        draw.line([(left - 6, py), (left, py)], fill="black", width=2)
        draw.text((left - 9, py), _tick_label(v), fill="black", font=f_tick, anchor="rm")
    draw.rectangle([left, top, left + pw, top + ph], outline="black", width=2)

    # y = x reference (dashed)
    a, b = max(x_lo, y_lo), min(x_hi, y_hi)
    if b > a:
        segs = 60
        for i in range(0, segs, 2):
            t0, t1 = a + (b - a) * i / segs, a + (b - a) * (i + 1) / segs
            draw.line([to_px(t0, t0), to_px(t1, t1)], fill=(150, 150, 150), width=1)

    # points (translucent)
    overlay = Image.new("RGBA", size, (0, 0, 0, 0))
    od = ImageDraw.Draw(overlay)
    hl = list(highlight) if highlight is not None else [False] * pred_a.size
    colours = {False: (31, 97, 171, 150), True: (230, 120, 20, 170)}
    r = 4 if pred_a.size > 300 else 5
    for x, y, flag in zip(pred_a, mos_a, hl, strict=True):
        px, py = to_px(float(x), float(y))
        od.ellipse([px - r, py - r, px + r, py + r], fill=colours[bool(flag)])
    img.paste(overlay, (0, 0), overlay)
    draw = ImageDraw.Draw(img)

    if xs_curve is not None and ys_curve is not None:
        pts = [to_px(float(x), float(y)) for x, y in zip(xs_curve, ys_curve, strict=True)]
        draw.line(pts, fill=(200, 30, 30), width=3, joint="curve")

    # legend
    entries: list[tuple[str, tuple[int, ...], str]] = []
    if highlight is not None and any(hl):
        entries.append(("point", colours[False][:3], "no tool call"))
        entries.append(("point", colours[True][:3], "with tool calls"))
    else:
        entries.append(("point", colours[False][:3], "images"))
    if xs_curve is not None and curve is not None:
        entries.append(("line", (200, 30, 30), f"{curve.kind.upper()} logistic fit"))
    entries.append(("dash", (150, 150, 150), "y = x"))
    lx, ly = left + 12, top + 10
    box_w = 14 + max(int(draw.textlength(t, font=f_tick)) for *_, t in entries) + 34
    draw.rectangle(
        [lx - 6, ly - 6, lx + box_w, ly + 22 * len(entries) - 2],
        fill=(255, 255, 255),
        outline=(180, 180, 180),
    )
    for i, (kind, colour, text) in enumerate(entries):
        cy = ly + 8 + 22 * i
        if kind == "point":
            draw.ellipse([lx + 9, cy - 5, lx + 19, cy + 5], fill=colour)
        elif kind == "line":
            draw.line([(lx, cy), (lx + 28, cy)], fill=colour, width=3)
        else:
            for x0 in range(0, 28, 8):
                draw.line([(lx + x0, cy), (lx + x0 + 4, cy)], fill=colour, width=1)
        draw.text((lx + 36, cy), text, fill="black", font=f_tick, anchor="lm")

    # axis labels
    draw.text((left + pw / 2, h - 12), "Predicted score", fill="black", font=f_axis, anchor="md")
    label = "MOS (normalised to 1-5)"
    tw = int(draw.textlength(label, font=f_axis)) + 8
    tmp = Image.new("RGB", (tw, 26), "white")
    ImageDraw.Draw(tmp).text((tw / 2, 13), label, fill="black", font=f_axis, anchor="mm")
    rot = tmp.rotate(90, expand=True)
    img.paste(rot, (12, int(top + ph / 2 - rot.height / 2)))
    return img


def _plot_group(group: Mapping[str, Any], rows: Sequence[Row]) -> Image.Image:
    scored = [r for r in rows if _has_score(r)]
    mt = group["metrics"]
    curve = None
    if mt["fit"] in ("4pl", "5pl") and mt["fit_params"]:
        curve = LogisticFit(mt["fit"], tuple(mt["fit_params"]), True)
    basis = f" ({mt['fit'].upper()})" if mt["fit"] != "none" else " (raw)"

    def val(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    subtitle = f"n={mt['n']}   SRCC={val(mt['srcc'])}   PLCC={val(mt['plcc'])}{basis}"
    if group["failures"]["count"]:
        subtitle += f"   failed={group['failures']['count']}"
    return scatter_plot(
        [float(r["score"]) for r in scored],
        [float(r["mos_norm"]) for r in scored],
        title=f"{group['method']} / {group['dataset']}",
        subtitle=subtitle,
        curve=curve,
        highlight=[_used_tools(r) for r in scored],
    )


# -- write -------------------------------------------------------------------------


def write_report(report: Mapping[str, Any], rows: Sequence[Row], out_dir: str | Path) -> list[Path]:
    """Write ``report.md``, ``report.json`` and the scatter plots; return the paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    _, unique, _ = _group_rows(list(rows), [dict(r) for r in report.get("runs", [])])
    for g in report["groups"]:
        if not g.get("plot"):
            continue
        img = _plot_group(g, unique.get((g["method"], g["dataset"]), []))
        path = out / g["plot"]
        img.save(path, format="PNG")
        written.append(path)
    md = out / "report.md"
    md.write_text(_markdown(report), encoding="utf-8")
    js = out / "report.json"
    js.write_text(
        json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8"
    )
    return [md, js, *written]
