"""The Gradio demo page: one image streamed step by step, or a batch ranked by score.

Run it with ``tooliqa ui`` or ``python ui/app.py`` (``--server URL --model NAME`` to
preselect a vLLM server; the embedded classic backend is the default).
"""

from __future__ import annotations

import argparse
import asyncio
import html
import io
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

if __package__ in (None, ""):  # run as a script: make the repository importable if needed
    try:
        import tooliqa  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gradio as gr
from PIL import Image, ImageDraw, ImageFont

from tooliqa.ui.serving import (
    CACHE_CLEANUP,
    MAX_UPLOAD_BYTES,
    LaunchError,
    check_connection,
    launch_options,
    shown_text,
    upload_bytes,
    write_download,
)
from tooliqa.ui.serving import status_markdown as _status

__all__ = [
    "build_app",
    "extra_settings",
    "gauge_html",
    "main",
    "query_markdown",
    "regions_image",
    "rubric_rows",
    "uncertainty_text",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = REPO_ROOT / "examples"

CLASSIC = "classic (built in)"
SERVER = "vLLM server"
from tooliqa.tools import BLOBS, is_blob_ref  # noqa: E402
from tooliqa.tools import DEFAULT_TOOLS as _GRAPH_DEFAULT_TOOLS  # noqa: E402
from tooliqa.tools import TOOLS as _GRAPH_TOOLS  # noqa: E402

#: Every tool the graph knows: the paper's two views (on by default) and the measurement
#: tools (NIQE, BRISQUE, PIQE and the simple measures; off by default).
TOOLS = list(_GRAPH_TOOLS)
DEFAULT_TOOLS = list(_GRAPH_DEFAULT_TOOLS)
RUBRIC_HEADERS = ["attribute", "level", "score (1–5)"]
BATCH_HEADERS = ["rank", "image", "score", "rubric levels", "tools used", "error"]
DISPLAY_SIDE = 640  # longest side of the images shown in the steps gallery
#: Page option → the Context setting it turns on (single-image runs).
EXTRAS = {
    "attribute scores": "attribute_scores",
    "distortion regions": "report_regions",
    "score uncertainty (logprobs)": "score_logprobs",
}
SEVERITY_COLOURS = {
    "minor": (234, 179, 8),
    "moderate": (249, 115, 22),
    "severe": (220, 38, 38),
}
UNRATED_COLOUR = (37, 99, 235)  # regions without a severity (e.g. magnifier regions)

CSS = """
#gauge svg { max-width: 260px; display: block; margin: 0 auto; }
#status p { margin: 0.2em 0; }
#uncertainty p { margin: 0; text-align: center; }
.tooliqa-error { color: #b91c1c; font-weight: 600; }
.tooliqa-ok { color: #15803d; font-weight: 600; }
"""

INTRO = (
    "# Tool-IQA image quality\n"
    "The agent looks at the image, writes a rubric note, may inspect it with a "
    "**magnifier** or a **gamma corrector**, then gives a score from 1.00 (bad) to "
    "5.00 (excellent) with its reasons. The built-in *classic* backend needs no GPU "
    "or network; a vLLM server runs a vision-language model."
)


def _theme() -> Any:
    """A theme that uses system fonts only (the page fetches nothing from elsewhere)."""
    sans = ("ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Arial", "sans-serif")
    mono = ("ui-monospace", "SFMono-Regular", "Consolas", "Liberation Mono", "monospace")
    return gr.themes.Soft(primary_hue="indigo", font=sans, font_mono=mono)


class _Page(gr.Blocks):
    """Blocks whose ``launch`` defaults to the page's theme, CSS, example folder and
    upload size cap."""

    def launch(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("theme", _theme())
        kwargs.setdefault("css", CSS)
        allowed = list(kwargs.get("allowed_paths") or [])
        if EXAMPLES_DIR.is_dir() and str(EXAMPLES_DIR) not in allowed:
            allowed.append(str(EXAMPLES_DIR))
        kwargs["allowed_paths"] = allowed
        kwargs.setdefault("footer_links", ["api", "settings"])
        kwargs.setdefault("max_file_size", MAX_UPLOAD_BYTES)
        return super().launch(*args, **kwargs)


# ---------------------------------------------------------------------------
# Rendering helpers (pure; no gradio)
# ---------------------------------------------------------------------------


def gauge_html(score: float | None) -> str:
    """A semicircular gauge from 1 to 5 as inline SVG (no external assets)."""
    cx, cy, r = 110.0, 110.0, 84.0

    def point(t: float, radius: float = r) -> tuple[float, float]:
        theta = math.pi * (1.0 - t)
        return cx + radius * math.cos(theta), cy - radius * math.sin(theta)

    colours = ["#dc2626", "#f97316", "#eab308", "#84cc16", "#16a34a"]
    parts = []
    for i, colour in enumerate(colours):
        t0, t1 = i / 5, (i + 1) / 5
        (x0, y0), (x1, y1) = point(t0), point(t1)
        parts.append(
            f'<path d="M {x0:.1f} {y0:.1f} A {r} {r} 0 0 1 {x1:.1f} {y1:.1f}" '
            f'stroke="{colour}" stroke-width="20" fill="none"/>'
        )
    for v in range(1, 6):
        x, y = point((v - 1) / 4, r - 26)
        parts.append(
            f'<text x="{x:.1f}" y="{y + 4:.1f}" font-size="12" text-anchor="middle" '
            f'fill="currentColor">{v}</text>'
        )
    if score is None:
        label, aria, needle = "–", "no score yet", ""
    else:
        s = min(5.0, max(1.0, float(score)))
        nx, ny = point((s - 1) / 4, r - 8)
        label, aria = f"{s:.2f}", f"score {s:.2f} of 5"
        needle = (
            f'<line x1="{cx}" y1="{cy}" x2="{nx:.1f}" y2="{ny:.1f}" stroke="currentColor" '
            f'stroke-width="4" stroke-linecap="round"/>'
            f'<circle cx="{cx}" cy="{cy}" r="7" fill="currentColor"/>'
        )
    data = "" if score is None else f' data-score="{label}"'
    return (
        f'<div class="tooliqa-gauge"{data}>'
        f'<svg viewBox="0 0 220 150" role="img" aria-label="{aria}" '
        f'xmlns="http://www.w3.org/2000/svg">{"".join(parts)}{needle}'
        f'<text x="{cx}" y="{cy + 34}" font-size="24" font-weight="700" '
        f'text-anchor="middle" fill="currentColor">{label}</text></svg></div>'
    )


def _fit(img: Image.Image, side: int = DISPLAY_SIDE) -> tuple[Image.Image, float]:
    scale = min(1.0, side / max(img.width, img.height))
    if scale < 1.0:
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))))
    return img, scale


def _original_with_box(rgb: Any, box: Sequence[int]) -> Image.Image:
    img, scale = _fit(Image.fromarray(rgb).convert("RGB"))
    x1, y1, x2, y2 = (round(v * scale) for v in box)
    width = max(2, round(max(img.size) / 160))
    ImageDraw.Draw(img).rectangle([x1, y1, x2, y2], outline=(255, 32, 32), width=width)
    return img


def _view_image(step: dict[str, Any]) -> Image.Image | None:
    view = step.get("view")
    if not view:
        return None
    try:
        if is_blob_ref(view):  # the graph's steps name their views
            view = BLOBS.get(view)
        with Image.open(io.BytesIO(view)) as im:
            return _fit(im.convert("RGB"))[0]
    except Exception:
        return None


def _args_text(args: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in args.items() if not str(k).startswith("_"))


def step_items(step: dict[str, Any], rgb: Any, reduced: int = 1) -> list[tuple[Image.Image, str]]:
    """Gallery items for one tool step: the box on the original and the crop, or the view.
    ``reduced``: how many times ``rgb`` is smaller than the image the box is in
    (:attr:`~tooliqa.tools.DecodedImage.scale`)."""
    if not step.get("ok"):
        return []
    n, tool = step.get("round", "?"), step.get("tool", "tool")
    view = _view_image(step)
    items: list[tuple[Image.Image, str]] = []
    box = step.get("box")
    if tool == "magnifier" and box and rgb is not None:
        drawn = [v / reduced for v in box]
        items.append((_original_with_box(rgb, drawn), f"round {n} · magnifier region {list(box)}"))
    if view is not None:
        if tool == "gamma_corrector" and step.get("gamma") is not None:
            caption = f"round {n} · gamma {float(step['gamma']):g} view"
        elif tool == "magnifier":
            caption = f"round {n} · magnified crop"
        else:
            caption = f"round {n} · {tool} view"
        items.append((view, caption))
    return items


def rubric_rows(rubric: dict[str, Any], scores: dict[str, Any] | None = None) -> list[list[str]]:
    """Rows ``[attribute, level, score]`` of the rubric table; an attribute scored but
    absent from the rubric gets its own row, an unscored one an empty score."""
    rows = []
    scores = dict(scores or {})
    for name in [*(rubric or {}), *(k for k in scores if k not in (rubric or {}))]:
        value = (rubric or {}).get(name)
        level = value.get("level") if isinstance(value, dict) else value
        score = scores.get(name)
        rows.append(
            [
                str(name).replace("_", " "),
                "—" if level is None else str(level),
                "" if score is None else f"{float(score):.2f}",
            ]
        )
    return rows


def severity_name(value: Any) -> str | None:
    """``minor``/``moderate``/``severe`` for a region's severity (a word, or a number
    in [0, 1] read in thirds), else None."""
    if isinstance(value, str):
        word = value.strip().lower()
        return word if word in SEVERITY_COLOURS else None
    if isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value <= 1:
        return "minor" if value < 1 / 3 else "moderate" if value < 2 / 3 else "severe"
    return None


def _font(size: int) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except (OSError, TypeError):  # pragma: no cover - Pillow without a scalable default
        return ImageFont.load_default()


def regions_image(
    rgb: Any, regions: Sequence[dict[str, Any]], side: int = DISPLAY_SIDE, reduced: int = 1
) -> Image.Image | None:
    """The original, downscaled to ``side``, with each region's box drawn in its
    severity's colour and labelled "label · severity"; None without usable regions.
    ``reduced``: how many times ``rgb`` is smaller than the image the boxes are in."""
    img, scale = _fit(
        rgb.convert("RGB") if isinstance(rgb, Image.Image) else Image.fromarray(rgb).convert("RGB"),
        side,
    )
    scale /= reduced
    draw = ImageDraw.Draw(img)
    width = max(2, round(max(img.size) / 200))
    font = _font(max(11, round(max(img.size) / 45)))
    boxes: list[tuple[tuple[float, float, float, float], str | None, str]] = []
    for region in regions:
        try:
            x1, y1, x2, y2 = (float(v) * scale for v in region["box"])
        except (KeyError, TypeError, ValueError):
            continue
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            continue
        if x2 <= x1 or y2 <= y1 or x2 <= 0 or y2 <= 0 or x1 >= img.width or y1 >= img.height:
            continue
        x1, x2 = sorted((min(max(x1, 0), img.width - 1), min(max(x2 - 1, 0), img.width - 1)))
        y1, y2 = sorted((min(max(y1, 0), img.height - 1), min(max(y2 - 1, 0), img.height - 1)))
        severity = severity_name(region.get("severity"))
        label = str(region.get("label") or "region") + (f" · {severity}" if severity else "")
        boxes.append(((x1, y1, max(x2, x1 + 1), max(y2, y1 + 1)), severity, label))
    taken = [box for box, _, _ in boxes]
    for box, severity, label in boxes:
        colour = SEVERITY_COLOURS.get(severity or "", UNRATED_COLOUR)
        left, top, right, bottom = draw.textbbox((0, 0), label, font=font)
        size = (right - left + 4, bottom - top + 4)
        tx, ty = _label_spot(box, size, img.size, taken)
        taken.append((tx, ty, tx + size[0], ty + size[1]))
        draw.rectangle(taken[-1], fill=colour)
        draw.text((tx + 2 - left, ty + 2 - top), label, fill=(255, 255, 255), font=font)
    for box, severity, _ in boxes:  # on top of the labels, so no label hides a box
        draw.rectangle(
            box, outline=SEVERITY_COLOURS.get(severity or "", UNRATED_COLOUR), width=width
        )
    return img if boxes else None


def _label_spot(
    box: tuple[float, float, float, float],
    size: tuple[float, float],
    image_size: tuple[int, int],
    taken: Sequence[tuple[float, float, float, float]],
) -> tuple[float, float]:
    """Top-left corner of a box's label: above it, below it or inside its top edge,
    the first that stays in the image and clear of ``taken`` (other boxes, labels)."""
    (x1, y1, _, y2), (tw, th), (w, h) = box, size, image_size
    tx = min(x1, max(0, w - tw))
    spots = [(tx, y1 - th), (tx, y2 + 1), (tx, y1 + 1)]
    spots += [(tx, y2 + 1 + k * th) for k in range(1, 4)]
    inside = [(x, y) for x, y in spots if y >= 0 and y + th <= h]
    for x, y in inside:
        clear = not any(
            x < b[2] and b[0] < x + tw and y < b[3] and b[1] < y + th for b in taken if b != box
        )
        if clear:
            return x, y
    return inside[0] if inside else (tx, max(0, min(y1, h - th)))


def regions_summary(regions: Sequence[dict[str, Any]]) -> str:
    """One line: how many regions, from which sources."""
    if not regions:
        return "no distortion regions"
    sources: dict[str, int] = {}
    for region in regions:
        name = str(region.get("source") or "unknown")
        sources[name] = sources.get(name, 0) + 1
    parts = ", ".join(f"{n} {name}" for name, n in sources.items())
    return f"{len(regions)} distortion region(s): {parts}"


def uncertainty_text(uncertainty: dict[str, Any] | None) -> str:
    """The line under the gauge, ``mean ± std (90 % interval lo–hi, source)``, or why
    there is no distribution; "" when none was asked for."""
    if not uncertainty:
        return ""
    source = str(uncertainty.get("source") or "unknown source")
    mean, std, interval = (uncertainty.get(k) for k in ("mean", "std", "interval"))
    note = str(uncertainty.get("note") or "").strip()
    if mean is None or std is None:
        return html.escape(f"Uncertainty unavailable ({source}): {note or 'no reason given'}")
    if uncertainty.get("n") and source == "samples":
        source = f"{source}, n={uncertainty['n']}"
    text = f"{float(mean):.2f} ± {float(std):.2f}"
    if interval and len(interval) == 2 and None not in interval:
        level = float(uncertainty.get("level") or 0.9) * 100
        text += (
            f" ({level:g} % interval {float(interval[0]):.2f}–{float(interval[1]):.2f}, {source})"
        )
    else:
        text += f" ({source})"
    if note:
        text += f" — {note}"
    return html.escape(text)


def query_markdown(query_answer: dict[str, Any] | None) -> str:
    """The "Question" panel: the query, the verdict or answer, the focus score and
    the evidence; "" without an answered query."""
    if not query_answer:
        return ""

    def esc(value: Any) -> str:
        return html.escape(" ".join(str(value).split()))

    lines = ["### Question", f"**Q:** {esc(query_answer.get('query') or '')}"]
    verdict = query_answer.get("verdict")
    answer = str(query_answer.get("answer") or "").strip()
    if verdict:
        head = f"**Verdict: {esc(str(verdict).capitalize())}**"
        lines.append(f"{head} — {esc(answer)}" if answer else head)
    elif answer:
        lines.append(f"**Answer:** {esc(answer)}")
    score = query_answer.get("score")
    if score is not None:
        focus = ", ".join(str(f).replace("_", " ") for f in query_answer.get("focus") or [])
        lines.append(f"**Score:** {float(score):.2f} / 5" + (f" ({esc(focus)})" if focus else ""))
    if query_answer.get("region"):
        lines.append(f"**Region:** {esc(query_answer['region'])}")
    evidence = [e for e in query_answer.get("evidence") or [] if isinstance(e, dict)]
    if evidence:
        bullets = []
        for item in evidence:
            where = esc(item.get("source") or "model")
            if item.get("round") is not None:
                where += f", round {esc(item['round'])}"
            bullets.append(f"- *{where}*: {esc(item.get('text') or '')}")
        lines.append("**Evidence**\n" + "\n".join(bullets))
    return "\n\n".join(lines)


def extra_settings(extras: Sequence[str] | None) -> dict[str, bool]:
    """Context settings for the ticked page options (all of them, on or off)."""
    chosen = set(extras or [])
    return {setting: label in chosen for label, setting in EXTRAS.items()}


def _step_line(step: dict[str, Any]) -> str:
    mark = "✓" if step.get("ok") else "✗"
    args = _args_text(step.get("args") or {})
    return f"- {mark} round {step.get('round')}: `{step.get('tool')}({args})` — {step.get('message', '')}"


def _failure_text(exc: BaseException) -> str:
    """A readable reason for whatever ended a run, with its kind (see tooliqa.failures)."""
    from tooliqa.failures import classify

    failure = classify(exc)
    return f"{failure.reason} ({failure.kind})"


def _context(
    backend: str,
    url: str,
    model: str,
    rounds: Any,
    tools: Sequence[str],
    extras: Sequence[str] | None = None,
) -> Any:
    from tooliqa.api import make_context
    from tooliqa.backends.openai_compat import BackendError

    rounds_n = int(rounds if rounds is not None else 2)
    enabled = tuple(t for t in (tools or []) if t in TOOLS)
    settings: dict[str, Any] = extra_settings(extras)
    if backend == SERVER:
        url = (url or "").strip()
        if not url:
            raise BackendError("enter the vLLM server URL (e.g. http://127.0.0.1:8000/v1)")
        return make_context(
            server=url,
            model_name=(model or "").strip() or None,
            max_rounds=rounds_n,
            enabled_tools=enabled,
            **settings,
        )
    return make_context(max_rounds=rounds_n, enabled_tools=enabled, **settings)


# ---------------------------------------------------------------------------
# Handlers
# ---------------------------------------------------------------------------


class _RunView:
    """What the single-image outputs show, updated as stream events arrive."""

    def __init__(self) -> None:
        self.status = ""
        self.score: float | None = None
        self.uncertainty = ""
        self.query = ""
        self.note = ""
        self.rubric: list[list[str]] = []
        self.gallery: list[tuple[Image.Image, str]] = []
        self.regions: Image.Image | None = None
        self.trace: list[str] = []
        self.rationale = ""
        self.download: str | None = None

    def outputs(self) -> tuple[Any, ...]:
        return (
            self.status,
            self.score,
            gauge_html(self.score),
            self.uncertainty,
            self.query,
            self.note,
            self.rubric,
            self.regions,
            self.gallery,
            "\n".join(self.trace),
            self.rationale,
            gr.update(value=self.download, interactive=self.download is not None),
        )


async def run_single(
    image: Any,
    backend: str,
    url: str,
    model: str,
    rounds: Any,
    tools: list[str],
    question: str,
    extras: list[str] | None = None,
) -> AsyncIterator[tuple[Any, ...]]:
    """Assess one image, yielding the page's outputs after each step of the agent."""
    from tooliqa.api import DEFAULT_DEADLINE, graph, stream_within
    from tooliqa.backends.openai_compat import BackendError
    from tooliqa.graph import Assessment
    from tooliqa.tools import ImageError, decode_image_cached

    view = _RunView()
    t0 = time.perf_counter()
    try:
        ctx = await asyncio.to_thread(_context, backend, url, model, rounds, tools, extras)
        data, name = await asyncio.to_thread(upload_bytes, image, ctx.image_limits)
        decoded = await asyncio.to_thread(decode_image_cached, data, ctx.image_limits)
    except ImageError as exc:
        view.status = _status(f"This is not a usable image: {exc}", "error")
        gr.Warning(f"Not a usable image: {exc}")
        yield view.outputs()
        return
    except (BackendError, ValueError) as exc:
        view.status = _status(f"Backend not usable: {exc}", "error")
        gr.Warning(f"Backend not usable: {exc}")
        yield view.outputs()
        return

    label = "classic backend" if backend != SERVER else f"server {url}"
    view.status = _status(f"Assessing {shown_text(name or 'the image')} with the {label}…")
    yield view.outputs()
    inputs = {
        "image": data,
        "image_name": name,
        "image_question": (question or "").strip() or None,
    }
    final_state: dict[str, Any] | None = None
    steps: list[dict[str, Any]] = []
    try:
        stream = graph.astream(inputs, context=ctx, stream_mode=["updates", "custom"])
        async for mode, chunk in stream_within(stream, DEFAULT_DEADLINE):
            if mode == "updates":
                updates: dict[str, Any] = chunk if isinstance(chunk, dict) else {}
                for node, update in updates.items():
                    if node == "finalize" and isinstance(update, dict):
                        final_state = update
                continue
            event: dict[str, Any] = dict(chunk) if isinstance(chunk, dict) else {}
            kind = event.get("type")
            if kind == "rubric":
                view.note = str(event.get("note") or "")
                view.rubric = rubric_rows(event.get("rubric") or {})
                view.trace.append("- rubric note written")
                view.status = _status("Rubric note written; deciding what to do next…")
            elif kind == "decision":
                action = str(event.get("action", ""))
                what = {
                    "ToolCallAction": "calls a tool",
                    "InvalidToolCall": "asked for a tool in a way that could not be used",
                    "AnswerAction": "gives its answer",
                }.get(action, "reply could not be used")
                view.trace.append(f"- decision: {what}")
            elif kind == "tool":
                step = dict(event.get("step") or {})
                steps.append(step)
                view.trace.append(_step_line(step))
                items = await asyncio.to_thread(step_items, step, decoded.rgb, decoded.scale)
                view.gallery = [*view.gallery, *items]
                view.status = _status(f"Tool round {step.get('round')}: {step.get('tool')} done")
            elif kind == "final":
                view.score = event.get("score")
                view.rationale = str(event.get("rationale") or "")
            else:
                continue
            yield view.outputs()
    except Exception as exc:
        reason = _failure_text(exc)
        view.status = _status(f"Assessment failed: {reason}", "error")
        gr.Warning(f"Assessment failed: {reason}")
        yield view.outputs()
        return

    if final_state is None or "assessment" not in final_state:
        view.status = _status("Assessment failed: the run ended without a result", "error")
        yield view.outputs()
        return
    result = Assessment.model_validate(final_state["assessment"])
    for done, raw in zip(result.steps, steps, strict=False):
        ref = raw.get("view")  # the step event names its view
        done.view = BLOBS.get(ref) if isinstance(ref, str) and ref in BLOBS else None
    result.timings["total_s"] = round(time.perf_counter() - t0, 6)
    view.score = result.score
    view.rationale = result.rationale or view.rationale
    view.uncertainty = uncertainty_text(result.uncertainty)
    view.query = query_markdown(result.query_answer)
    if result.rubric or result.attribute_scores:
        view.rubric = rubric_rows(result.rubric, result.attribute_scores)
    if result.regions:
        view.regions = await asyncio.to_thread(
            regions_image, decoded.rgb, result.regions, DISPLAY_SIDE, decoded.scale
        )
    if result.regions or ctx.report_regions:
        view.trace.append(f"- {regions_summary(result.regions)}")
    view.download = write_download(result.to_json(indent=2), name)
    seconds = time.perf_counter() - t0
    tools_used = ", ".join(s.tool for s in result.steps) or "no tools"
    if not result.steps:
        view.trace.append("- no tool was used")
    if result.score is None:
        view.status = _status(
            f"The model gave no usable score ({result.error or 'unknown reason'}); "
            f"the JSON records what it said.",
            "error",
        )
        gr.Warning("The model gave no usable score")
    else:
        view.status = _status(
            f"Score {result.score:.2f} in {seconds:.1f} s ({result.backend}; {tools_used})", "ok"
        )
    yield view.outputs()


def _thumbnail(path: str, caption: str) -> tuple[Image.Image, str]:
    try:
        with Image.open(path) as im:
            im.thumbnail((256, 256))
            return im.convert("RGB"), caption
    except Exception:
        img = Image.new("RGB", (256, 256), (229, 231, 235))
        ImageDraw.Draw(img).text((20, 120), "not an image", fill=(185, 28, 28))
        return img, caption


async def run_batch(
    files: Any, backend: str, url: str, model: str, rounds: Any, tools: list[str]
) -> tuple[str, list[list[Any]], list[tuple[Image.Image, str]]]:
    """Assess several files; a table and thumbnails sorted by score (best first)."""
    from tooliqa.api import assess_many
    from tooliqa.backends.openai_compat import BackendError

    paths = []
    for f in files or []:
        p = (
            f
            if isinstance(f, str | os.PathLike)
            else (f.get("path") if isinstance(f, dict) else getattr(f, "name", None))
        )
        if p:
            paths.append(str(p))
    if not paths:
        gr.Warning("Add some image files first.")
        return _status("Add some image files first.", "error"), [], []
    try:
        ctx = await asyncio.to_thread(_context, backend, url, model, rounds, tools)
    except (BackendError, ValueError) as exc:
        gr.Warning(f"Backend not usable: {exc}")
        return _status(f"Backend not usable: {exc}", "error"), [], []
    t0 = time.perf_counter()
    results: dict[int, Any] = {}
    async for i, a in assess_many(paths, context=ctx, concurrency=2):
        results[i] = a
    order = sorted(
        results,
        key=lambda i: (results[i].score is None, -(results[i].score or 0.0), Path(paths[i]).name),
    )
    rows, thumbs = [], []
    for rank, i in enumerate(order, start=1):
        a, name = results[i], Path(paths[i]).name
        error = (a.error or "").replace(paths[i], name)
        levels = ", ".join(f"{k}={v}" for k, v in a.rubric.items())
        used = ", ".join(f"{s.tool}{'' if s.ok else ' (failed)'}" for s in a.steps)
        score = "—" if a.score is None else f"{float(a.score):.2f}"
        rows.append([rank, name, score, levels, used, error])
        caption = f"#{rank} {name} · " + ("failed" if a.score is None else score)
        thumbs.append(await asyncio.to_thread(_thumbnail, paths[i], caption))
    failed = sum(1 for a in results.values() if a.score is None)
    seconds = time.perf_counter() - t0
    text = f"{len(paths)} image(s) assessed in {seconds:.1f} s"
    if failed:
        gr.Warning(f"{failed} of {len(paths)} file(s) could not be assessed")
        return _status(f"{text}; {failed} failed (see the error column).", "error"), rows, thumbs
    return _status(text, "ok"), rows, thumbs


# ---------------------------------------------------------------------------
# Page
# ---------------------------------------------------------------------------


def _examples() -> list[list[str]]:
    return [[str(p)] for p in sorted(EXAMPLES_DIR.glob("*.jpg"))]


def build_app(*, server: str | None = None, model: str | None = None) -> gr.Blocks:
    """The page as a Blocks (not launched). ``server`` preselects the vLLM backend."""
    with _Page(
        title="Tool-IQA image quality", analytics_enabled=False, delete_cache=CACHE_CLEANUP
    ) as demo:
        gr.Markdown(INTRO)
        with gr.Accordion("Backend and tools", open=True):
            with gr.Row():
                backend = gr.Radio(
                    [CLASSIC, SERVER],
                    value=SERVER if server else CLASSIC,
                    label="Backend",
                    elem_id="backend",
                )
                server_url = gr.Textbox(
                    value=server or "",
                    label="Server URL",
                    placeholder="http://127.0.0.1:8000/v1",
                    elem_id="server-url",
                )
                model_name = gr.Textbox(
                    value=model or "",
                    label="Model (empty: the server's first)",
                    elem_id="model-name",
                )
                check_btn = gr.Button("Check connection", elem_id="check", scale=0)
            connection = gr.Markdown("", elem_id="connection")
            with gr.Row():
                rounds = gr.Slider(0, 4, value=2, step=1, label="Max tool rounds", elem_id="rounds")
                tools = gr.CheckboxGroup(
                    TOOLS, value=list(DEFAULT_TOOLS), label="Enabled tools", elem_id="tools"
                )
                extras = gr.CheckboxGroup(
                    list(EXTRAS),
                    value=[],
                    label="Also report (single image)",
                    info="score uncertainty needs a vLLM server",
                    elem_id="extras",
                )
        check_btn.click(
            check_connection,
            inputs=[server_url, model_name],
            outputs=[connection, model_name],
            api_name="check_connection",
        )

        with gr.Tabs():
            with gr.Tab("Single image", id="single"):
                with gr.Row():
                    with gr.Column(scale=1):
                        image = gr.Image(
                            type="filepath",
                            sources=["upload", "clipboard"],
                            label="Image (upload or paste)",
                            elem_id="upload",
                            height=360,
                        )
                        gr.Examples(_examples(), inputs=[image], label="Examples")
                        question = gr.Textbox(
                            label="Question (optional)",
                            placeholder="e.g. Is the text on the sign readable?",
                            elem_id="question",
                        )
                        run_btn = gr.Button("Assess", variant="primary", elem_id="run")
                    with gr.Column(scale=1):
                        status = gr.Markdown("", elem_id="status")
                        with gr.Row():
                            score = gr.Number(
                                label="Score (1.00–5.00)",
                                precision=2,
                                interactive=False,
                                elem_id="score",
                            )
                            gauge = gr.HTML(gauge_html(None), elem_id="gauge")
                        uncertainty = gr.Markdown("", elem_id="uncertainty")
                        query_panel = gr.Markdown("", elem_id="query-answer")
                        rubric_table = gr.Dataframe(
                            headers=RUBRIC_HEADERS,
                            value=[],
                            interactive=False,
                            label="Rubric",
                            elem_id="rubric-table",
                        )
                        rubric_note = gr.Textbox(
                            label="Rubric note", lines=5, interactive=False, elem_id="rubric-note"
                        )
                        regions_view = gr.Image(
                            type="pil",
                            label="Distortion regions",
                            interactive=False,
                            height=300,
                            elem_id="regions",
                        )
                        steps_gallery = gr.Gallery(
                            label="Tool views",
                            columns=2,
                            height=300,
                            object_fit="contain",
                            elem_id="steps",
                        )
                        trace = gr.Markdown("", elem_id="trace")
                        rationale = gr.Textbox(
                            label="Rationale", lines=3, interactive=False, elem_id="rationale"
                        )
                        download = gr.DownloadButton(
                            "Download assessment JSON", interactive=False, elem_id="download"
                        )
                run_btn.click(
                    run_single,
                    inputs=[
                        image,
                        backend,
                        server_url,
                        model_name,
                        rounds,
                        tools,
                        question,
                        extras,
                    ],
                    outputs=[
                        status,
                        score,
                        gauge,
                        uncertainty,
                        query_panel,
                        rubric_note,
                        rubric_table,
                        regions_view,
                        steps_gallery,
                        trace,
                        rationale,
                        download,
                    ],
                    api_name="assess",
                    preprocess=False,  # the upload is checked by tooliqa, with a readable error
                    concurrency_limit=8,
                )

            with gr.Tab("Batch", id="batch"):
                batch_files = gr.File(file_count="multiple", label="Images", elem_id="batch-files")
                batch_btn = gr.Button("Assess all", variant="primary", elem_id="batch-run")
                batch_status = gr.Markdown("", elem_id="batch-status")
                batch_table = gr.Dataframe(
                    headers=BATCH_HEADERS,
                    value=[],
                    interactive=False,
                    wrap=True,
                    column_widths=["7%", "20%", "8%", "35%", "15%", "15%"],
                    label="Ranked by score",
                    elem_id="batch-table",
                )
                batch_gallery = gr.Gallery(
                    label="Thumbnails (same order)",
                    columns=6,
                    height="auto",
                    object_fit="contain",
                    elem_id="batch-gallery",
                )
                batch_btn.click(
                    run_batch,
                    inputs=[batch_files, backend, server_url, model_name, rounds, tools],
                    outputs=[batch_status, batch_table, batch_gallery],
                    api_name="assess_batch",
                    concurrency_limit=2,
                )
    return demo


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tooliqa ui", description="The Tool-IQA demo page.")
    parser.add_argument("--server", help="preselect a vLLM server, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--model", help="model name on the server")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host other than loopback (set TOOLIQA_UI_AUTH=user:password too)",
    )
    args = parser.parse_args(argv)
    try:
        options = launch_options(args.host, args.port, allow_remote=args.allow_remote)
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    demo = build_app(server=args.server, model=args.model)
    demo.queue().launch(**options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
