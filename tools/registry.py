"""The tool registry: argument schemas, function specs for the model, and a
runner that never raises on a bad call.

Two kinds of tools share one runner. View tools (:data:`VIEW_TOOLS`: the paper's
magnifier and gamma corrector, the default) return an image; measurement tools
(:data:`MEASURE_TOOLS`: NIQE, BRISQUE, PIQE, see :mod:`.iqa_tools`) return numbers
only, so their :class:`ViewResult` has ``view=None`` and the values in ``extra``.
Adding a tool is one entry: a name, a pydantic argument model, a description and a
function ``(image, args, settings) -> (view or None, info)``.
"""

from __future__ import annotations

import difflib
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from .image_io import DecodedImage, encode_image
from .iqa_tools import IQA_METRICS, MeasureArgs, measure
from .views import (
    GAMMA_RANGE,
    MIN_REGION_SIDE,
    BBoxConvention,
    ToolArgumentError,
    apply_gamma,
    gamma_mode,
    magnify,
    resolve_gamma,
)

__all__ = [
    "DEFAULT_TOOLS",
    "MEASURE_TOOLS",
    "TOOLS",
    "VIEW_TOOLS",
    "GammaArgs",
    "MagnifierArgs",
    "ViewResult",
    "ViewSettings",
    "ViewTool",
    "canonical_tool_name",
    "run_view_tool",
    "tool_specs",
]

_BOX_HELP = {
    "rel1000": "relative coordinates from 0 to 1000 on each axis ((0,0) is top-left, (1000,1000) bottom-right)",
    "unit": "relative coordinates from 0 to 1 on each axis ((0,0) is top-left)",
    "pixel": "pixel coordinates of the original image ((0,0) is top-left)",
}


class MagnifierArgs(BaseModel):
    """Arguments of the magnifier."""

    model_config = ConfigDict(extra="ignore")
    bbox: list[float] = Field(
        description="Region to inspect as [x1, y1, x2, y2].", min_length=4, max_length=4
    )


class GammaArgs(BaseModel):
    """Arguments of the gamma corrector."""

    model_config = ConfigDict(extra="ignore")
    mode: Literal["brighten", "darken"] | None = Field(
        default=None,
        description="'brighten' (gamma < 1) reveals detail in shadows; 'darken' (gamma > 1) in highlights.",
    )
    gamma: float | None = Field(
        default=None,
        description=f"Explicit exponent in [{GAMMA_RANGE[0]}, {GAMMA_RANGE[1]}] for I_out = I_in ** gamma.",
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _paper_words(cls, value: Any) -> Any:
        """The paper's "darkening"/"brightening" and the short forms name the same options."""
        try:
            return gamma_mode(value)
        except ToolArgumentError:
            return value  # the Literal check reports it

    @model_validator(mode="after")
    def _consistent(self) -> GammaArgs:
        """The schema the model was given: a mode or a gamma in range, agreeing with each
        other (a call that breaks it is an invalid call, not a failed view)."""
        resolve_gamma(self.mode, self.gamma)
        return self


@dataclass(frozen=True)
class ViewSettings:
    """How views are made: box convention, pixel budget and limits."""

    convention: BBoxConvention = "rel1000"
    max_pixels: int = 1_003_520
    min_side: int = MIN_REGION_SIDE
    max_zoom: float = 4.0
    view_format: str = "PNG"


@dataclass
class ViewResult:
    """The outcome of one view-tool call: a view, or a failure message for the model."""

    tool: str
    args: dict[str, Any]
    ok: bool
    message: str
    view: bytes | None = None
    mime: str | None = None
    box: list[int] | None = None
    gamma: float | None = None
    elapsed_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)
    """Structured data of measurement tools: ``metric``, ``raw``, ``score_1_5``."""
    valid_call: bool = True
    """The call named an enabled tool with arguments of its schema. False: refused before
    the tool ran (unknown tool, wrong argument types); a valid call may still fail on the
    image (a region too small), then ``ok`` is False and this stays True."""


#: A tool: (decoded image, parsed arguments, settings) -> (view or None, info). Boxes in
#: and out are in the image's own pixels, also when it was decoded reduced.
ViewFn = Callable[[DecodedImage, BaseModel, ViewSettings], tuple[np.ndarray | None, dict[str, Any]]]


@dataclass(frozen=True)
class ViewTool:
    name: str
    title: str
    description: str
    args_model: type[BaseModel]
    run: ViewFn
    aliases: tuple[str, ...] = ()
    describe: Callable[[str], str] | None = None
    """Description for a box convention, where it depends on one."""

    def description_for(self, convention: str) -> str:
        """What the model is told about the tool, in the run's box convention."""
        return self.describe(convention) if self.describe else self.description


def _run_magnifier(
    image: DecodedImage, args: BaseModel, settings: ViewSettings
) -> tuple[np.ndarray, dict[str, Any]]:
    assert isinstance(args, MagnifierArgs)
    w, h = image.width, image.height
    view, box = magnify(
        image.rgb,
        args.bbox,
        settings.convention,
        max_pixels=settings.max_pixels,
        max_zoom=settings.max_zoom,
        min_side=settings.min_side,
        scale=image.scale,
        size=(w, h),
    )
    zoom = view.shape[1] / float(box[2] - box[0])
    msg = (
        f"Magnifier view of region x {box[0]}-{box[2]}, y {box[1]}-{box[3]} "
        f"(pixels of the {w}x{h} image), enlarged {zoom:.1f}x."
    )
    return view, {"box": list(box), "message": msg}


def _run_gamma(
    image: DecodedImage, args: BaseModel, settings: ViewSettings
) -> tuple[np.ndarray, dict[str, Any]]:
    assert isinstance(args, GammaArgs)
    gamma = resolve_gamma(args.mode, args.gamma)
    view = apply_gamma(image.rgb, gamma)
    effect = "brightened" if gamma < 1 else "darkened" if gamma > 1 else "unchanged"
    msg = f"Gamma-corrected view of the whole image (gamma {gamma:g}, {effect})."
    return view, {"gamma": gamma, "message": msg}


def _magnifier_description(convention: str) -> str:
    return (
        "Magnifier: crop a region of the ORIGINAL image and show it enlarged, to inspect "
        "fine detail, texture, blur, noise and compression artifacts. "
        f"bbox is [x1, y1, x2, y2] in {_BOX_HELP[convention]}."
    )


VIEW_TOOLS: dict[str, ViewTool] = {
    "magnifier": ViewTool(
        name="magnifier",
        title="Magnifier",
        description=_magnifier_description("rel1000"),
        args_model=MagnifierArgs,
        run=_run_magnifier,
        aliases=("zoom", "zoom_in", "magnify", "crop", "image_zoom_in_tool", "zoom_in_tool"),
        describe=_magnifier_description,
    ),
    "gamma_corrector": ViewTool(
        name="gamma_corrector",
        title="Gamma Corrector",
        description=(
            "Gamma Corrector: re-expose the whole ORIGINAL image with I_out = I_in ** gamma "
            "(intensities in [0, 1]) to reveal detail hidden in shadows (mode 'brighten') or "
            "highlights (mode 'darken'), or with an explicit gamma."
        ),
        args_model=GammaArgs,
        run=_run_gamma,
        aliases=("gamma", "gamma_correction", "gamma_correct", "gamma_corrector_tool", "exposure"),
    ),
}


def _run_measure(metric: str) -> ViewFn:
    def run(
        image: DecodedImage, args: BaseModel, settings: ViewSettings
    ) -> tuple[np.ndarray | None, dict[str, Any]]:
        assert isinstance(args, MeasureArgs)
        size = (image.width, image.height)
        m = measure(
            image.rgb,
            metric,
            args.bbox,
            settings.convention,
            min_side=settings.min_side,
            scale=image.scale,
            size=size,
        )
        return None, {"box": list(m.box), "message": m.message, "extra": m.data()}

    return run


def _measure_description(metric: str) -> Callable[[str], str]:
    m = IQA_METRICS[metric]

    def describe(convention: str) -> str:
        return (
            f"{m.summary}. Measures the ORIGINAL image and returns the raw value and a "
            "1-5 quality score (5-parameter logistic fitted to AGIQA-3K), no image. "
            f"Optional bbox [x1, y1, x2, y2] in {_BOX_HELP[convention]} measures only that "
            f"region (at least {max(m.min_side, MIN_REGION_SIDE)} px per side); "
            "omit it for the whole image."
        )

    return describe


MEASURE_TOOLS: dict[str, ViewTool] = {
    name: ViewTool(
        name=name,
        title=m.title,
        description=_measure_description(name)("rel1000"),
        args_model=MeasureArgs,
        run=_run_measure(name),
        aliases=(f"{name}_tool", f"{name}_score", f"compute_{name}"),
        describe=_measure_description(name),
    )
    for name, m in IQA_METRICS.items()
}

#: Every registered tool, views first.
TOOLS: dict[str, ViewTool] = {**VIEW_TOOLS, **MEASURE_TOOLS}
#: The tools enabled when none are named: the paper's two views.
DEFAULT_TOOLS: tuple[str, ...] = tuple(VIEW_TOOLS)

_ARG_ALIASES = {"bbox_2d": "bbox", "box": "bbox", "region": "bbox", "bounding_box": "bbox"}


def canonical_tool_name(name: str, enabled: Iterable[str] | None = None) -> str | None:
    """The registered name for ``name`` or one of its aliases (case-insensitive), else None.

    ``enabled``: the names to accept (default :data:`DEFAULT_TOOLS`)."""
    key = (name or "").strip().lower().replace("-", "_").replace(" ", "_")
    allowed = set(DEFAULT_TOOLS if enabled is None else enabled)
    for tool in TOOLS.values():
        if tool.name in allowed and (key == tool.name or key in tool.aliases):
            return tool.name
    return None


def _suggest(name: str, allowed: Iterable[str]) -> str:
    names = sorted(allowed)
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return f"unknown tool {name!r}; available tools: {', '.join(names) or 'none'}.{hint}"


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "arguments"
        parts.append(f"{loc}: {err.get('msg', 'invalid')}")
    return "; ".join(parts)


def _normalise_args(args: Any) -> dict[str, Any]:
    if not isinstance(args, Mapping):
        raise ToolArgumentError(f"arguments must be a JSON object, got {type(args).__name__}")
    return {_ARG_ALIASES.get(str(k), str(k)): v for k, v in args.items()}


def run_view_tool(
    name: str,
    args: Any,
    image: DecodedImage | np.ndarray,
    settings: ViewSettings | None = None,
    *,
    enabled: Iterable[str] | None = None,
) -> ViewResult:
    """Run a tool on the original image. Never raises for a bad call:
    an unknown tool or invalid arguments give ``ok=False`` and a message the
    model can act on. A measurement tool's result has no view (``view=None``)
    and its values in ``extra``. ``enabled`` defaults to :data:`DEFAULT_TOOLS`."""
    settings = settings or ViewSettings()
    allowed = list(DEFAULT_TOOLS if enabled is None else enabled)
    t0 = time.perf_counter()
    raw_args = dict(args) if isinstance(args, Mapping) else {"_raw": args}
    canonical = canonical_tool_name(name, allowed)

    def fail(reason: str, *, valid_call: bool = True) -> ViewResult:
        return ViewResult(
            tool=canonical or str(name),
            args=raw_args,
            ok=False,
            message=f"Tool call failed: {reason}",
            elapsed_ms=(time.perf_counter() - t0) * 1000.0,
            valid_call=valid_call,
        )

    if canonical is None:
        return fail(_suggest(str(name), allowed), valid_call=False)
    tool = TOOLS[canonical]
    try:
        parsed = tool.args_model.model_validate(_normalise_args(args))
    except ToolArgumentError as exc:
        return fail(str(exc), valid_call=False)
    except ValidationError as exc:
        reason = f"invalid arguments for {canonical}: {_validation_message(exc)}"
        return fail(reason, valid_call=False)
    if not isinstance(image, DecodedImage):
        image = DecodedImage(rgb=np.asarray(image), format=None, mode="RGB", transposed=False)
    try:
        view, info = tool.run(image, parsed, settings)
    except ToolArgumentError as exc:
        return fail(str(exc))
    encoded: bytes | None = None
    mime: str | None = None
    if view is not None:
        encoded = encode_image(view, max_pixels=settings.max_pixels, fmt=settings.view_format)
        mime = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}[
            settings.view_format.upper()
        ]
    return ViewResult(
        tool=canonical,
        args=parsed.model_dump(exclude_none=True),
        ok=True,
        message=info["message"],
        view=encoded,
        mime=mime,
        box=info.get("box"),
        gamma=info.get("gamma"),
        elapsed_ms=(time.perf_counter() - t0) * 1000.0,
        extra=info.get("extra", {}),
    )


def _box_item(convention: str) -> dict[str, Any]:
    hi = {"rel1000": 1000, "unit": 1}.get(convention)
    item: dict[str, Any] = {"type": "number"}
    if hi is not None:
        item.update(minimum=0, maximum=hi)
    return item


def _measure_parameters(convention: str, strict: bool) -> dict[str, Any]:
    """An optional region. Strict schemas list every property as required, so there
    the region is nullable instead (null: the whole image)."""
    bbox: dict[str, Any] = {
        "type": ["array", "null"] if strict else "array",
        "items": _box_item(convention),
        "minItems": 4,
        "maxItems": 4,
        "description": (
            f"Optional region [x1, y1, x2, y2] in {_BOX_HELP[convention]}; "
            f"{'null' if strict else 'omit it'} to measure the whole image."
        ),
    }
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"bbox": bbox},
        "required": ["bbox"] if strict else [],
    }
    if strict:
        schema["additionalProperties"] = False
    return schema


def _parameters(tool: ViewTool, convention: str, strict: bool) -> dict[str, Any]:
    if tool.args_model is MeasureArgs:
        return _measure_parameters(convention, strict)
    if tool.name == "magnifier":
        props: dict[str, Any] = {
            "bbox": {
                "type": "array",
                "items": _box_item(convention),
                "minItems": 4,
                "maxItems": 4,
                "description": f"[x1, y1, x2, y2] in {_BOX_HELP[convention]}.",
            }
        }
        required = ["bbox"]
    else:
        props = {
            "mode": {
                "type": "string",
                "enum": ["brighten", "darken"],
                "description": "'brighten' reveals shadows (gamma 0.5); 'darken' reveals highlights (gamma 2.0).",
            },
            "gamma": {
                "type": "number",
                "minimum": GAMMA_RANGE[0],
                "maximum": GAMMA_RANGE[1],
                "description": "Optional explicit exponent; < 1 brightens, > 1 darkens.",
            },
        }
        required = ["mode"]
    schema: dict[str, Any] = {"type": "object", "properties": props, "required": required}
    if strict:
        schema["additionalProperties"] = False
        if tool.name == "gamma_corrector":
            # Constrained decoding then only produces consistent calls: brighten with
            # gamma < 1, darken with gamma > 1 (or the mode's preset when gamma is omitted).
            schema["anyOf"] = [
                _gamma_branch("brighten", GAMMA_RANGE[0], 0.95),
                _gamma_branch("darken", 1.05, GAMMA_RANGE[1]),
            ]
    return schema


def _gamma_branch(mode: str, lo: float, hi: float) -> dict[str, Any]:
    return {
        "properties": {
            "mode": {"type": "string", "enum": [mode]},
            "gamma": {"type": "number", "minimum": lo, "maximum": hi},
        },
        "required": ["mode"],
        "additionalProperties": False,
    }


def tool_specs(
    enabled: Iterable[str] | None = None,
    convention: BBoxConvention = "rel1000",
    *,
    strict: bool = False,
) -> list[dict[str, Any]]:
    """OpenAI-style function specs (what vLLM's chat template renders in Qwen3's tool format).

    ``enabled`` defaults to :data:`DEFAULT_TOOLS`; measurement tools appear only when named."""
    names = list(DEFAULT_TOOLS if enabled is None else enabled)
    specs = []
    for name in names:
        tool = TOOLS[name]
        fn: dict[str, Any] = {
            "name": name,
            "description": tool.description_for(convention),
            "parameters": _parameters(tool, convention, strict),
        }
        if strict:
            fn["strict"] = True
        specs.append({"type": "function", "function": fn})
    return specs
