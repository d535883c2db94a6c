"""Fixtures for the dashboard tests: a real `slipway up` (examples/echo, or examples/minilm), and
headless Chromium through Playwright for the browser tests.

Chromium is Debian's /usr/bin/chromium, driven by the `playwright` package; a test that needs it
is skipped, with the reason, where either is missing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

from tests.e2e.conftest import EXAMPLES, REPO, Slipway, free_port

DASHBOARD = {"X-Slipway-Dashboard": "1"}
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS = REPO / "test-output" / "web"
# Data refreshes every 3 s; usage is flushed every 0.5 s.
WAIT_MS = 15_000


def wait_ready(node: Slipway, model: str, timeout: float = 60.0) -> dict:
    """The model's production deployment once it has a ready replica."""
    deadline = time.monotonic() + timeout
    with node.http() as admin:
        while time.monotonic() < deadline:
            detail = admin.get(f"/api/v1/models/{model}").json()
            ready = [d for d in detail.get("deployments", []) if d["status"] == "active" and d["ready_replicas"] >= 1]
            if ready:
                return ready[0]
            time.sleep(0.2)
    raise AssertionError(f"{model} not ready after {timeout}s:\n{node.output()}")


@contextmanager
def sign_in(node: Slipway, key: str) -> Iterator[httpx.Client]:
    """A client holding a dashboard session (and no key header)."""
    with httpx.Client(base_url=node.url, timeout=30, headers=DASHBOARD) as client:
        response = client.post("/ui/session", json={"key": key})
        assert response.status_code == 200, response.text
        yield client


def _slipway_with(tmp_path_factory, example: str, timeout: float) -> Iterator[Slipway]:
    home = tmp_path_factory.mktemp("web") / "home"
    home.mkdir()
    node = Slipway(home=home, port=free_port())
    node.start()
    try:
        node.cli("deploy", str(EXAMPLES / example), "--promote")
        wait_ready(node, example, timeout=timeout)
        yield node
    finally:
        node.cleanup()


@pytest.fixture(scope="module")
def slipway_echo(tmp_path_factory):
    """`slipway up` with examples/echo deployed and promoted (module-wide: starting one takes seconds)."""
    yield from _slipway_with(tmp_path_factory, "echo", timeout=60)


@pytest.fixture(scope="module")
def slipway_minilm(tmp_path_factory):
    """`slipway up` with examples/minilm (a real embedding model from PyPI) deployed and promoted."""
    yield from _slipway_with(tmp_path_factory, "minilm", timeout=180)


# The browser ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    from pathlib import Path

    if not Path(CHROMIUM).exists():
        pytest.skip(f"no {CHROMIUM}: install Debian's `chromium` package (apt-get install -y chromium)")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="the `playwright` Python package is missing: pip install -e '.[dev]'")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield launched
        launched.close()


def open_page(browser, viewport: dict | None = None):
    """A page in a fresh context (no cookies) that collects console errors in `page.console_errors`."""
    context = browser.new_context(viewport=viewport or DESKTOP)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.console_errors = []
    page.on("console", lambda message: page.console_errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: page.console_errors.append(f"uncaught: {error}"))
    return page


@pytest.fixture
def page(browser):
    opened = open_page(browser)
    yield opened
    opened.context.close()


def shoot(page, name: str) -> None:
    """A full-page screenshot under test-output/web/, named with the viewport size."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    page.screenshot(path=str(SCREENSHOTS / f"{name}-{size['width']}x{size['height']}.png"), full_page=True)


def sign_in_page(page, url: str, key: str) -> None:
    """Sign in through the form and wait for the models page."""
    page.goto(f"{url}/ui/")
    page.fill("#key", key)
    page.click("#sign-in button[type=submit]")
    wait_until(page, "() => location.hash === '#/models'")


def wait_until(page, predicate: str, timeout: float = WAIT_MS / 1000):
    """Poll the JavaScript function `predicate` until it returns something truthy, and return that.

    Not `page.wait_for_function`: that evaluates a string with eval, which the dashboard's
    Content-Security-Policy (rightly) forbids.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = page.evaluate(predicate)
        if value:
            return value
        assert time.monotonic() < deadline, f"still false after {timeout}s: {predicate}"
        page.wait_for_timeout(50)
