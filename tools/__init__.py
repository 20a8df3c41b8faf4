"""Ground layer of tooliqa: image I/O with limits, the view tools (magnifier,
gamma corrector) as pure functions, their registry and LangChain wrappers.

Imports nothing else from tooliqa.
"""

from .image_io import (
    DecodedImage,
    ImageError,
    ImageLimits,
    data_url,
    decode_image,
    decode_image_cached,
    encode_image,
    fit_within_pixels,
    model_image,
    read_image_bytes,
)
from .registry import (
    VIEW_TOOLS,
    GammaArgs,
    MagnifierArgs,
    ViewResult,
    ViewSettings,
    canonical_tool_name,
    run_view_tool,
    tool_specs,
)
from .views import (
    GAMMA_PRESETS,
    GAMMA_RANGE,
    MIN_REGION_SIDE,
    BBoxConvention,
    ToolArgumentError,
    apply_gamma,
    bbox_to_pixels,
    crop,
    gamma_lut,
    magnify,
    resolve_gamma,
)

__all__ = [
    "GAMMA_PRESETS",
    "GAMMA_RANGE",
    "MIN_REGION_SIDE",
    "VIEW_TOOLS",
    "BBoxConvention",
    "DecodedImage",
    "GammaArgs",
    "ImageError",
    "ImageLimits",
    "MagnifierArgs",
    "ToolArgumentError",
    "ViewResult",
    "ViewSettings",
    "apply_gamma",
    "bbox_to_pixels",
    "canonical_tool_name",
    "crop",
    "data_url",
    "decode_image",
    "decode_image_cached",
    "encode_image",
    "fit_within_pixels",
    "gamma_lut",
    "magnify",
    "model_image",
    "read_image_bytes",
    "resolve_gamma",
    "run_view_tool",
    "tool_specs",
]
