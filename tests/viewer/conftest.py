"""Fixtures: one real run (sample corpus pages, scored episodes, metrics, evaluation) and a viewer server on it."""

from pathlib import Path

import pytest

from unidoc_rl.viewer.app import Viewer, ViewerSettings
from unidoc_rl.viewer.sample_run import BUDGET, FixtureRun, build_run
from unidoc_rl.viewer.server import serve_in_thread


@pytest.fixture(scope="session")
def fixture_run(tmp_path_factory) -> FixtureRun:
    return build_run(Path(tmp_path_factory.mktemp("viewer")))


@pytest.fixture(scope="session")
def viewer(fixture_run) -> Viewer:
    return Viewer(ViewerSettings(run_dir=fixture_run.run_dir, pages_dir=fixture_run.pages_dir, budget=BUDGET))


@pytest.fixture(scope="session")
def server_url(viewer):
    server, url = serve_in_thread(viewer)
    yield url
    server.shutdown()
    server.server_close()


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Debian's Chromium driven by Playwright, with a fresh profile (`make browser` installs it)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make browser` (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
            bypass_csp=True,  # the viewer forbids scripts; the tests evaluate their own in the page
        )
        yield context
        context.close()


@pytest.fixture
def page(browser):
    tab = browser.new_page()
    yield tab
    tab.close()
