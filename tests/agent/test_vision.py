import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as qwen_smart_resize

from unidoc_rl.env.vision import (
    BoxError,
    BoxProblem,
    CoordinateConvention,
    PixelBudget,
    clamp_box,
    crop_and_zoom,
    display_size,
    enforce_min_size,
    from_norm1000,
    model_box_to_raw,
    pad_to_aspect,
    smart_resize,
    stitch_vertically,
    to_display,
    to_norm1000,
    zoom_size,
)


@settings(max_examples=300)
@given(
    st.integers(1, 6000),
    st.integers(1, 6000),
    st.sampled_from([14, 28, 32]),
    st.integers(1, 2000 * 28 * 28),
    st.integers(1, 4000 * 28 * 28),
)
def test_smart_resize_identical_to_qwen(height, width, factor, min_pixels, max_pixels):
    try:
        expected = qwen_smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    except ValueError:
        with pytest.raises(ValueError):
            smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
        return
    assert smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels) == expected


def test_display_size_is_a_fixed_point_of_the_processor_resize():
    budget = PixelBudget(256 * 28 * 28, 512 * 28 * 28)
    size = display_size((1240, 1754), budget)  # A4 at 150 dpi
    assert size == (532, 728)
    assert size[0] % 28 == 0 and size[1] % 28 == 0
    assert display_size(size, budget) == size
    image = to_display(Image.new("L", (1240, 1754)), budget)
    assert image.size == size and image.mode == "RGB"


def test_absolute_box_maps_by_the_raw_over_display_ratio():
    mapped = model_box_to_raw((56, 28, 280, 140), CoordinateConvention.ABSOLUTE, display=(532, 756), raw=(1240, 1754))
    sx, sy = 1240 / 532, 1754 / 756
    assert mapped.raw == pytest.approx((56 * sx, 28 * sy, 280 * sx, 140 * sy))
    assert mapped.display == (56, 28, 280, 140)
    assert mapped.norm1000 == pytest.approx((56 / 532 * 1000, 28 / 756 * 1000, 280 / 532 * 1000, 140 / 756 * 1000))


def test_norm1000_box_maps_to_raw_directly():
    mapped = model_box_to_raw((100, 200, 500, 600), CoordinateConvention.NORM1000, display=(532, 756), raw=(1240, 1754))
    assert mapped.raw == pytest.approx((124.0, 350.8, 620.0, 1052.4))
    assert mapped.norm1000 == pytest.approx((100, 200, 500, 600))
    assert mapped.display == pytest.approx((53.2, 151.2, 266.0, 453.6))


def test_clamping_and_min_size():
    mapped = model_box_to_raw((-50, -10, 600, 30), CoordinateConvention.ABSOLUTE, display=(532, 756), raw=(532, 756))
    assert mapped.display == (0, 0, 532, 30)
    assert mapped.raw == (0, 0, 532, 30)
    tiny = model_box_to_raw((100, 750, 101, 756), CoordinateConvention.ABSOLUTE, display=(532, 756), raw=(1064, 1512))
    assert tiny.display == (100, 750, 101, 756)  # the record keeps what the model asked for
    assert tiny.raw == pytest.approx((2 * 86.5, 2 * 728, 2 * 114.5, 2 * 756))  # the crop grows to 28 display px
    assert enforce_min_size((0, 0, 1, 1), (10, 10), 28) == (0, 0, 10, 10)
    assert clamp_box((-1, 5, 20, 30), (10, 10)) == (0, 5, 10, 10)


@pytest.mark.parametrize(
    "box",
    [
        (10, 10, 10, 50),
        (10, 50, 40, 20),
        (600, 10, 700, 20),
        (-20, -20, -1, -1),
        (0, 0, math.inf, 5),
        (0, 0, math.nan, 5),
    ],
)
def test_degenerate_or_outside_boxes_are_errors(box):
    with pytest.raises(BoxError):
        model_box_to_raw(box, CoordinateConvention.ABSOLUTE, display=(532, 756), raw=(1240, 1754))


def test_norm1000_frames_on_a_non_square_page():
    assert to_norm1000((64, 120, 320, 480), (640, 480)) == pytest.approx((100, 250, 500, 1000))
    assert from_norm1000((100, 250, 500, 1000), (640, 480)) == pytest.approx((64, 120, 320, 480))
    # A norm1000 box the model writes is read in the displayed page's frame, then lands on the raw page.
    mapped = model_box_to_raw(
        (100, 250, 500, 750), CoordinateConvention.NORM1000, display=(532, 756), raw=(1240, 1754), min_crop_side=0
    )
    assert mapped.display == pytest.approx((53.2, 189, 266, 567))
    assert mapped.raw == pytest.approx((124, 438.5, 620, 1315.5))
    assert mapped.norm1000 == pytest.approx((100, 250, 500, 750))


def test_box_errors_say_why():
    problems = {
        (10, 10, 5, 20): BoxProblem.DEGENERATE,
        (600, 10, 700, 20): BoxProblem.OUTSIDE,
        (0, 0, math.inf, 5): BoxProblem.NON_FINITE,
    }
    for box, problem in problems.items():
        with pytest.raises(BoxError) as raised:
            model_box_to_raw(box, CoordinateConvention.ABSOLUTE, display=(532, 756), raw=(1240, 1754))
        assert raised.value.problem is problem


def test_thin_or_many_narrow_crops_are_padded_into_a_zoom():
    budget = PixelBudget(8 * 28 * 28, 64 * 28 * 28)
    tall = Image.new("RGB", (300, 6000), "black")
    # Four narrow full-height boxes stitch into 3 x 24000 pixels: beyond smart_resize's aspect ratio.
    zoom = crop_and_zoom(tall, [(x, 0, x + 3, 6000) for x in (0, 50, 100, 150)], budget)
    assert zoom.width * zoom.height <= budget.max_pixels and display_size(zoom.size, budget) == zoom.size
    middle = zoom.height // 2
    assert zoom.getpixel((0, middle)) == (255, 255, 255)  # the padding, either side of the centred crop
    assert zoom.getpixel((zoom.width // 2, middle))[0] < 250
    # A half-pixel-high box with no minimum crop side is a one-pixel line across the page.
    line = crop_and_zoom(Image.new("RGB", (800, 600), "black"), [(0, 10, 800, 10.5)], budget)
    assert line.width > line.height and display_size(line.size, budget) == line.size


def test_a_page_without_a_stable_display_size_is_refused():
    budget = PixelBudget(8 * 28 * 28, 64 * 28 * 28)
    # Ratio 100: within smart_resize's limit, but its shorter side would be below one patch at this budget, so
    # the processor would resize the "display" image once more.
    with pytest.raises(ValueError, match="no stable display size"):
        to_display(Image.new("RGB", (40, 4000)), budget)
    with pytest.raises(ValueError, match="aspect ratio"):
        to_display(Image.new("RGB", (3, 700)), budget)
    wide = to_display(Image.new("RGB", (4000, 200)), budget)
    assert display_size(wide.size, budget) == wide.size


def test_pad_to_aspect_keeps_content_centred():
    padded = pad_to_aspect(Image.new("RGB", (1000, 2), "red"), max_ratio=100)
    assert padded.size == (1000, 10)
    assert padded.getpixel((500, 4)) == (255, 0, 0) and padded.getpixel((500, 0)) == (255, 255, 255)
    same = Image.new("RGB", (300, 4))
    assert pad_to_aspect(same, max_ratio=100) is same


def test_crop_and_zoom_fills_the_budget_and_keeps_content():
    budget = PixelBudget(8 * 28 * 28, 64 * 28 * 28)
    page = Image.new("RGB", (400, 600), "white")
    page.paste((255, 0, 0), (100, 100, 200, 150))
    crop = crop_and_zoom(page, [(100, 100, 200, 150)], budget)
    assert crop.size == zoom_size((100, 50), budget) == (308, 140)
    assert crop.width * crop.height <= budget.max_pixels
    assert crop.getpixel((crop.width // 2, crop.height // 2)) == (255, 0, 0)


def test_several_boxes_stitch_vertically():
    red, blue = Image.new("RGB", (30, 10), "red"), Image.new("RGB", (20, 20), "blue")
    stitched = stitch_vertically([red, blue])
    assert stitched.size == (30, 30)
    assert stitched.getpixel((5, 5)) == (255, 0, 0)
    assert stitched.getpixel((5, 15)) == (0, 0, 255)
    assert stitched.getpixel((25, 25)) == (255, 255, 255)
    budget = PixelBudget(8 * 28 * 28, 64 * 28 * 28)
    page = Image.new("RGB", (400, 600), "white")
    zoomed = crop_and_zoom(page, [(0, 0, 100, 50), (0, 100, 50, 150)], budget)
    assert zoomed.size == zoom_size((100, 100), budget)


def test_pixel_budget_rejects_bad_bounds():
    with pytest.raises(ValueError):
        PixelBudget(100, 10)
