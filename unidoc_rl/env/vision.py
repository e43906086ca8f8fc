"""The one module that owns image sizes and box coordinates.

Frames:
- raw: pixels of the page image as stored on disk.
- display: pixels of the page as the model saw it, after the processor's resize (`smart_resize` to a pixel
  budget, sides multiples of 28). The loop resizes every image to its display size itself, so the processor's
  own resize is the identity and the model's frame is known exactly.
- norm1000: 0–1000 on each axis of the raw page (the frame gold boxes use).

The model writes boxes either in the display frame (`absolute`, Qwen2.5-VL) or in 0–1000 of the displayed image
(`norm1000`, Qwen3-VL style). `model_box_to_raw` maps either to raw pixels, clamps, enforces a minimum crop size,
and rejects degenerate boxes. SFT data, rollout and rewards all convert through these functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from PIL import Image

Box = tuple[float, float, float, float]
Size = tuple[int, int]
"""(width, height), PIL's order."""

PATCH_FACTOR = 28
"""Qwen2/2.5-VL: patch 14 × spatial merge 2."""
MAX_ASPECT_RATIO = 200
"""`smart_resize` refuses images whose longer side exceeds this many times the shorter one."""
MAX_ZOOM_ASPECT = 100
"""A zoomed crop is padded to at most this aspect ratio (less where the pixel budget is small: `max_zoom_aspect`)."""


class CoordinateConvention(StrEnum):
    ABSOLUTE = "absolute"
    NORM1000 = "norm1000"


@dataclass(frozen=True)
class PixelBudget:
    min_pixels: int = 256 * 28 * 28
    max_pixels: int = 512 * 28 * 28
    factor: int = PATCH_FACTOR

    def __post_init__(self) -> None:
        if not 0 < self.min_pixels <= self.max_pixels:
            raise ValueError(f"need 0 < min_pixels <= max_pixels, got {self.min_pixels}, {self.max_pixels}")
        if self.factor <= 0:
            raise ValueError(f"factor must be positive, got {self.factor}")


class BoxProblem(StrEnum):
    NON_FINITE = "non_finite"
    DEGENERATE = "degenerate"
    OUTSIDE = "outside"


class BoxError(ValueError):
    """A box that cannot be cropped; `problem` says why (degenerate, outside the page, not finite)."""

    def __init__(self, message: str, problem: BoxProblem = BoxProblem.DEGENERATE):
        super().__init__(message)
        self.problem = problem


def smart_resize(
    height: int, width: int, factor: int = PATCH_FACTOR, min_pixels: int = 56 * 56, max_pixels: int = 14 * 14 * 4 * 1280
) -> tuple[int, int]:
    """(height, width) with sides multiples of `factor` and area in [min_pixels, max_pixels]; Qwen2-VL's rule."""
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise ValueError(f"absolute aspect ratio must be smaller than {MAX_ASPECT_RATIO}, got {ratio:g}")
    new_height = round(height / factor) * factor
    new_width = round(width / factor) * factor
    if new_height * new_width > max_pixels:
        shrink = math.sqrt((height * width) / max_pixels)
        new_height = max(factor, math.floor(height / shrink / factor) * factor)
        new_width = max(factor, math.floor(width / shrink / factor) * factor)
    elif new_height * new_width < min_pixels:
        grow = math.sqrt(min_pixels / (height * width))
        new_height = math.ceil(height * grow / factor) * factor
        new_width = math.ceil(width * grow / factor) * factor
    return new_height, new_width


def display_size(raw_size: Size, budget: PixelBudget) -> Size:
    """The (width, height) at which the processor shows an image of `raw_size`."""
    width, height = raw_size
    new_height, new_width = smart_resize(height, width, budget.factor, budget.min_pixels, budget.max_pixels)
    return new_width, new_height


def to_display(image: Image.Image, budget: PixelBudget) -> Image.Image:
    """The image resized to its display size (RGB), so the processor's own resize leaves it unchanged.

    Raises ValueError for an image that has no such size: beyond `smart_resize`'s aspect ratio, or so thin that
    its shorter side would fall below one patch within the budget (the processor would then resize it again, and
    boxes would be read in a frame the model never saw).
    """
    size = display_size(image.size, budget)
    if display_size(size, budget) != size:
        raise ValueError(f"a {image.width}x{image.height} image has no stable display size within {budget}")
    image = image.convert("RGB")
    return image if image.size == size else image.resize(size, Image.Resampling.BICUBIC)


def scale_box(box: Box, from_size: Size, to_size: Size) -> Box:
    sx = to_size[0] / from_size[0]
    sy = to_size[1] / from_size[1]
    return (box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy)


def display_to_raw(box: Box, display: Size, raw: Size) -> Box:
    return scale_box(box, display, raw)


def raw_to_display(box: Box, raw: Size, display: Size) -> Box:
    return scale_box(box, raw, display)


def to_norm1000(box: Box, size: Size) -> Box:
    return scale_box(box, size, (1000, 1000))


def from_norm1000(box: Box, size: Size) -> Box:
    return scale_box(box, (1000, 1000), size)


def clamp_box(box: Box, size: Size) -> Box:
    width, height = size
    x1, y1, x2, y2 = box
    return (min(max(x1, 0.0), width), min(max(y1, 0.0), height), min(max(x2, 0.0), width), min(max(y2, 0.0), height))


def enforce_min_size(box: Box, size: Size, min_side: float) -> Box:
    """Grow each side shorter than `min_side` symmetrically about its centre, shifted to stay inside the image."""
    width, height = size
    x1, y1, x2, y2 = box
    x1, x2 = _grow_interval(x1, x2, min(min_side, width), width)
    y1, y2 = _grow_interval(y1, y2, min(min_side, height), height)
    return (x1, y1, x2, y2)


def _grow_interval(low: float, high: float, min_length: float, limit: float) -> tuple[float, float]:
    if high - low >= min_length:
        return low, high
    centre = (low + high) / 2
    low = centre - min_length / 2
    low = min(max(low, 0.0), limit - min_length)
    return low, low + min_length


@dataclass(frozen=True)
class MappedBox:
    """One model box after conversion.

    `display` and `norm1000` describe the region the model asked for (clamped to the page); `raw` is the region
    actually cropped, which may be larger to respect the minimum crop size.
    """

    model: Box
    display: Box
    raw: Box
    norm1000: Box


def model_box_to_raw(
    box: Box,
    convention: CoordinateConvention,
    display: Size,
    raw: Size,
    min_crop_side: float = PATCH_FACTOR,
) -> MappedBox:
    """Map a box the model wrote to the raw page: convert, clamp, reject degenerate, grow to the minimum size.

    `min_crop_side` is in display pixels (one patch by default), so a crop never shows less than the model
    could resolve on the displayed page.
    """
    if not all(math.isfinite(value) for value in box):
        raise BoxError(f"box {box} has a non-finite coordinate", BoxProblem.NON_FINITE)
    if box[2] <= box[0] or box[3] <= box[1]:
        raise BoxError(f"box {_fmt(box)} is degenerate: need x1 < x2 and y1 < y2")
    frame = (1000, 1000) if convention is CoordinateConvention.NORM1000 else display
    clamped = clamp_box(box, frame)
    if clamped[2] <= clamped[0] or clamped[3] <= clamped[1]:
        raise BoxError(f"box {_fmt(box)} lies outside the image ({frame[0]}x{frame[1]})", BoxProblem.OUTSIDE)
    display_box = scale_box(clamped, frame, display)
    crop_box = display_to_raw(enforce_min_size(display_box, display, min_crop_side), display, raw)
    norm_box = to_norm1000(display_to_raw(display_box, display, raw), raw)
    return MappedBox(model=tuple(box), display=display_box, raw=crop_box, norm1000=norm_box)


def _fmt(box: Box) -> str:
    return "[" + ", ".join(f"{value:g}" for value in box) + "]"


def crop_region(image: Image.Image, raw_box: Box) -> Image.Image:
    """Crop with outward rounding, so the region always contains the whole box."""
    x1, y1, x2, y2 = raw_box
    left, top = math.floor(x1), math.floor(y1)
    right, bottom = max(math.ceil(x2), left + 1), max(math.ceil(y2), top + 1)
    return image.crop((left, top, min(right, image.width), min(bottom, image.height)))


def stitch_vertically(images: list[Image.Image], background: str = "white") -> Image.Image:
    """Stack crops top to bottom, left-aligned, on a background as wide as the widest crop."""
    if len(images) == 1:
        return images[0]
    width = max(image.width for image in images)
    canvas = Image.new("RGB", (width, sum(image.height for image in images)), background)
    top = 0
    for image in images:
        canvas.paste(image, (0, top))
        top += image.height
    return canvas


def max_zoom_aspect(budget: PixelBudget) -> float:
    """The widest aspect ratio a zoom may have: its shorter side stays at least two patches at the budget's area."""
    return min(MAX_ZOOM_ASPECT, budget.max_pixels / (2 * budget.factor**2))


def pad_to_aspect(image: Image.Image, max_ratio: float = MAX_ZOOM_ASPECT, background: str = "white") -> Image.Image:
    """Pad the shorter side (content centred) so the longer side is at most `max_ratio` times the shorter."""
    width, height = image.size
    if max(width, height) <= max_ratio * min(width, height):
        return image
    size = (width, math.ceil(width / max_ratio)) if width > height else (math.ceil(height / max_ratio), height)
    canvas = Image.new("RGB", size, background)
    canvas.paste(image, ((size[0] - width) // 2, (size[1] - height) // 2))
    return canvas


def zoom_size(size: Size, budget: PixelBudget) -> Size:
    """Scale `size` so its area fills the display budget's `max_pixels`, then snap with `smart_resize`."""
    width, height = size
    scale = math.sqrt(budget.max_pixels / (width * height))
    return display_size((max(1, round(width * scale)), max(1, round(height * scale))), budget)


def crop_and_zoom(image: Image.Image, raw_boxes: list[Box], budget: PixelBudget) -> Image.Image:
    """Crop each box from the raw page, stitch the crops vertically, and re-encode at the display budget.

    A stitched crop thinner than `max_zoom_aspect` allows (a one-pixel line, several tall narrow boxes) is padded
    with white around it rather than refused, so every box that maps onto the page yields a zoom, at a size the
    processor leaves unchanged.
    """
    if not raw_boxes:
        raise BoxError("no boxes to crop")
    stitched = stitch_vertically([crop_region(image.convert("RGB"), box) for box in raw_boxes])
    stitched = pad_to_aspect(stitched, max_zoom_aspect(budget))
    return stitched.resize(zoom_size(stitched.size, budget), Image.Resampling.BICUBIC)
