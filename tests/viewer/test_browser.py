"""The viewer in a real headless Chromium: what a researcher sees, measured in the browser."""

import io

import pytest
from PIL import Image, ImageStat

TOLERANCE_PX = 1.0


def wait_for_images(page) -> None:
    page.wait_for_function("Array.from(document.images).every(img => img.complete && img.naturalWidth > 0)")


def geometry_box(locator) -> dict:
    """The rectangle's bounding box in the page without its stroke (Chromium's box includes half the stroke)."""
    box = locator.bounding_box()
    half = locator.evaluate("rect => parseFloat(getComputedStyle(rect).strokeWidth)") / 2
    return {
        "x": box["x"] + half,
        "y": box["y"] + half,
        "width": box["width"] - 2 * half,
        "height": box["height"] - 2 * half,
    }


def test_list_shows_the_fixture_episodes(page, server_url, fixture_run):
    page.goto(server_url + "/")
    rows = page.locator("tr.episode-row")
    assert rows.count() == 8
    assert page.locator("#match-count").get_attribute("data-total") == "8"
    questions = rows.locator("td.question").all_inner_texts()
    expected = [b.record.question for b in fixture_run.training + fixture_run.evaluation]
    assert questions == expected
    assert rows.nth(0).locator("td.reward-cell").inner_text().strip() == "1.000"


def test_filters_narrow_the_list(page, server_url):
    page.goto(server_url + "/")
    page.fill("input[name=text]", "battery")
    page.click("button[type=submit]")
    page.wait_for_url("**/?*text=battery*")
    assert page.locator("tr.episode-row").count() == 4
    page.select_option("select[name=finish]", "max_images")
    page.click("button[type=submit]")
    page.wait_for_url("**finish=max_images*")
    rows = page.locator("tr.episode-row")
    assert rows.count() == 1 and rows.nth(0).get_attribute("data-line") == "4"
    page.select_option("select[name=finish]", "max_turns")
    page.click("button[type=submit]")
    page.wait_for_url("**finish=max_turns*")
    assert [row.get_attribute("data-line") for row in page.locator("tr.episode-row").all()] == ["5"]
    page.click("th a:has-text('reward')")  # sort by reward, descending first
    assert page.locator("tr.episode-row").count() == 1 and "sort=reward" in page.url


def test_episode_page_shows_turns_candidates_and_the_selection(page, server_url):
    page.goto(server_url + "/episode/0/0")
    wait_for_images(page)
    assert page.locator("section.turns article.turn").count() == 4
    kinds = page.locator("article.turn").evaluate_all("els => els.map(e => e.dataset.kind)")
    assert kinds == ["search", "select", "bbox", "answer"]
    candidates = page.locator("#turn-1 figure.candidate")
    assert candidates.count() == 3
    assert candidates.locator("img.thumb").evaluate_all("els => els.map(e => e.naturalWidth)") == [220, 220, 220]
    selected = page.locator("#turn-1 figure.candidate.selected")
    assert selected.count() == 1 and selected.get_attribute("data-page") == "northwind_annual_report_2023_2"
    assert "rank 1 · score 0.912" in selected.inner_text()
    assert page.locator("table.facts").inner_text().count("845") == 2  # reference and model answer


def test_drawn_boxes_sit_at_the_expected_pixels(page, server_url, fixture_run):
    record = fixture_run.training[0].record
    crop = record.searches[0].crops[0]
    raw_w, raw_h = record.page_sizes[crop.page_id]["raw"]
    display_w, display_h = record.page_sizes[crop.page_id]["display"]
    gold = fixture_run.truths["nw-asia-2023"].boxes_for(crop.page_id)[0]
    page.goto(server_url + "/episode/0/0")
    wait_for_images(page)
    turn = page.locator("#turn-3")
    turn.locator("img.page-image").scroll_into_view_if_needed()
    image = turn.locator("img.page-image").bounding_box()
    assert image["width"] == pytest.approx(520)
    assert image["height"] == pytest.approx(520 * raw_h / raw_w, abs=TOLERANCE_PX)

    model = geometry_box(turn.locator("rect.box-model"))
    x1, y1, x2, y2 = crop.boxes_display[0]
    scale_x, scale_y = image["width"] / display_w, image["height"] / display_h
    assert model["x"] == pytest.approx(image["x"] + x1 * scale_x, abs=TOLERANCE_PX)
    assert model["y"] == pytest.approx(image["y"] + y1 * scale_y, abs=TOLERANCE_PX)
    assert model["width"] == pytest.approx((x2 - x1) * scale_x, abs=TOLERANCE_PX)
    assert model["height"] == pytest.approx((y2 - y1) * scale_y, abs=TOLERANCE_PX)

    drawn_gold = geometry_box(turn.locator("rect.box-gold"))  # 0-1000 of the raw page = fraction of the image
    assert drawn_gold["x"] == pytest.approx(image["x"] + gold[0] / 1000 * image["width"], abs=TOLERANCE_PX)
    assert drawn_gold["y"] == pytest.approx(image["y"] + gold[1] / 1000 * image["height"], abs=TOLERANCE_PX)
    assert drawn_gold["width"] == pytest.approx((gold[2] - gold[0]) / 1000 * image["width"], abs=TOLERANCE_PX)
    assert drawn_gold["height"] == pytest.approx((gold[3] - gold[1]) / 1000 * image["height"], abs=TOLERANCE_PX)

    zoom = turn.locator("img.crop-image").evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert tuple(zoom) == crop.zoom_size

    shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    edge = shot.getpixel((round(model["x"]), round(model["y"] + model["height"] / 2)))
    assert edge[0] > 170 and edge[1] < 110, f"the model box's stroke is not drawn there: {edge}"
    page.uncheck("#show-model")
    assert not turn.locator("rect.box-model").is_visible()


def test_two_box_crop_and_invalid_action_are_shown(page, server_url):
    page.goto(server_url + "/episode/0/3")
    assert page.locator("#turn-3 rect.box-model").count() == 2
    page.goto(server_url + "/episode/0/2")
    invalid = page.locator("#turn-1")
    assert invalid.get_attribute("data-kind") == "invalid"
    assert (
        "bad_box: expected [x1, y1, x2, y2] or a list of them, got '[10, 20]'" in invalid.locator(".error").inner_text()
    )
    observation = invalid.locator(".error-observation").inner_text()
    assert "Invalid action (bad_box): expected [x1, y1, x2, y2] or a list of them" in observation
    page.goto(server_url + "/episode/0/4")
    assert "search service timed out" in page.locator("#turn-1 .error").inner_text()
    assert page.locator("#turn-4 .badge-forced").count() == 1


def test_run_page_and_screenshot_is_not_blank(page, server_url, tmp_path):
    page.goto(server_url + "/run")
    titles = page.locator("svg.chart .chart-title").all_text_contents()
    for title in ("Reward", "Reward components (train)", "KL", "Entropy", "Response length (tokens)", "Turns"):
        assert title in titles
    assert "accuracy: sample" in titles
    assert page.locator("table.accuracy tr").count() == 4 * 2
    page.goto(server_url + "/episode/0/0")
    wait_for_images(page)
    path = tmp_path / "episode.png"
    page.screenshot(path=str(path), full_page=True)
    image = Image.open(path).convert("L")
    assert image.height > 1500
    assert ImageStat.Stat(image).stddev[0] > 20, "the screenshot is blank"
