"""The dashboard in real headless Chromium (Playwright), against a real `slipway up`.

Signs in, sees examples/echo ready, sees the deployment's charts say there is no traffic yet,
sends traffic and watches the usage table and the requests chart change, edits max_replica,
creates and revokes a key, and saves screenshots of each page at desktop and phone sizes under
test-output/web/. Any console error fails the test.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import REPO

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip("no /usr/bin/chromium: install Debian's `chromium` package (apt-get install -y chromium)",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the `playwright` Python package is missing: pip install -e '.[dev]'")

SCREENSHOTS = REPO / "test-output" / "web"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
# Data refreshes every 3 s; usage is flushed every 0.5 s.
WAIT_MS = 15_000


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    page.console_errors = []
    page.on("console", lambda message: page.console_errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: page.console_errors.append(f"uncaught: {error}"))
    yield page
    context.close()


def shoot(page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    page.screenshot(path=str(SCREENSHOTS / f"{name}-{size['width']}x{size['height']}.png"), full_page=True)


def test_dashboard_end_to_end(slipway_echo, page):
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    expect = sync_api.expect
    with slipway_echo.http() as admin:
        invoke_key = admin.post("/api/v1/keys", json={"name": "traffic", "scopes": ["invoke"]}).json()["key"]
        deployment_id = admin.get("/api/v1/models/echo").json()["deployments"][0]["id"]

    # Signed out: only the sign-in page; a wrong key says why.
    page.goto(f"{slipway_echo.url}/")
    expect(page.locator("#sign-in")).to_be_visible()
    expect(page.locator("#topbar")).to_be_hidden()
    shoot(page, "sign-in")
    page.fill("#key", "sk-slw-wrong")
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#sign-in .error")).to_contain_text("invalid API key")
    page.console_errors.clear()  # the browser itself logs the refused sign-in's 401

    page.fill("#key", slipway_echo.admin_key)
    page.click("#sign-in button[type=submit]")
    expect(page).to_have_url(re.compile(r"#/models$"))
    echo = page.locator('[data-model="echo"]')
    expect(echo.locator(".replicas").first).to_have_text("1/1")
    expect(echo.locator(".pill").first).to_have_text("active")
    shoot(page, "models")

    # Before any traffic the charts say what to do; replicas are charted from the first ticks.
    page.click(f'a.deployment-link[href="#/deployments/{deployment_id}"]')
    requests_chart = page.locator('[data-chart="requests"]')
    expect(requests_chart.locator(".chart-empty")).to_contain_text("No traffic yet")
    expect(requests_chart.locator(".chart-empty pre")).to_contain_text(f"/deployments/{deployment_id}/predict")
    expect(page.locator('[data-chart="ttft"] .chart-empty')).to_contain_text("Measured for LLM deployments")
    expect(page.locator('[data-chart="replicas"]')).to_have_attribute("data-has-data", "true")
    expect(page.locator('[data-chart="replicas"] .legend')).to_contain_text("ready 1")
    shoot(page, "deployment-no-traffic")

    # Usage follows traffic.
    page.click('nav a[data-page="usage"]')
    total = page.locator("#usage-total")
    expect(total).to_be_visible()
    before = int(total.inner_text().replace(",", ""))
    for _ in range(3):
        response = httpx.post(f"{slipway_echo.url}/models/echo/predict", json={"text": "hi"},
                              headers={"Authorization": f"Bearer {invoke_key}"}, timeout=30)
        assert response.status_code == 200, response.text
    expect(total).to_have_text(str(before + 3))
    expect(page.locator("table")).to_contain_text("traffic")
    shoot(page, "usage")

    # The deployment: replicas, and max_replica edited and saved.
    page.goto(f"{slipway_echo.url}/ui/#/models")
    page.click(f'a.deployment-link[href="#/deployments/{deployment_id}"]')
    expect(page.locator("#ready-replicas")).to_have_text("1/1")
    expect(page.locator("table")).to_contain_text("ready")
    # The traffic reaches the charts: the replica's /metrics is read every second.
    expect(requests_chart).to_have_attribute("data-has-data", "true")
    expect(requests_chart.locator("svg.chart path.line, svg.chart circle.dot").first).to_be_attached()
    expect(page.locator('[data-chart="latency"]')).to_have_attribute("data-has-data", "true")
    expect(page.locator('[data-chart="latency"] .legend')).to_contain_text("p50")
    page.locator("#charts").screenshot(path=str(SCREENSHOTS / "deployment-charts-1280x800.png"))
    page.fill("#as-max_replica", "3")
    page.click("#autoscaling button[type=submit]")
    expect(page.locator("#autoscaling .ok")).to_have_text("Saved.")
    expect(page.locator("#autoscaling-now")).to_contain_text("max 3")
    with slipway_echo.http() as admin:
        assert admin.get(f"/api/v1/deployments/{deployment_id}").json()["autoscaling"]["max_replica"] == 3
    shoot(page, "deployment")

    # Keys: create (secret shown once), then revoke with a confirming second click.
    page.click('nav a[data-page="keys"]')
    page.fill("#key-name", "from-the-browser")
    page.click("#create-key button[type=submit]")
    secret = page.locator("#new-secret")
    expect(secret).to_have_text(re.compile(r"^sk-slw-"))
    created = httpx.post(f"{slipway_echo.url}/models/echo/predict", json={"text": "x"},
                         headers={"Authorization": f"Bearer {secret.inner_text()}"}, timeout=30)
    assert created.status_code == 200, created.text
    shoot(page, "keys")
    with slipway_echo.http() as admin:
        key_id = next(k["id"] for k in admin.get("/api/v1/keys").json()["data"] if k["name"] == "from-the-browser")
    revoke = page.locator(f'[data-revoke="{key_id}"]')
    revoke.click()
    expect(revoke).to_have_text("Confirm revoke")
    revoke.click()
    expect(page.locator("tr", has_text="from-the-browser")).to_contain_text("revoked")
    with slipway_echo.http() as admin:
        assert next(k for k in admin.get("/api/v1/keys").json()["data"] if k["id"] == key_id)["revoked_at"]

    # Every page at phone size, without sideways scrolling of the page itself.
    page.set_viewport_size(PHONE)
    for name, hash_route, ready in [("models", "#/models", '[data-model="echo"]'), ("usage", "#/usage", "#usage-total"),
                                    ("deployment", f"#/deployments/{deployment_id}",
                                     '[data-chart="requests"][data-has-data="true"] svg.chart'),
                                    ("keys", "#/keys", "#create-key")]:
        page.goto(f"{slipway_echo.url}/ui/{hash_route}")
        expect(page.locator(ready).first).to_be_visible()
        page.wait_for_timeout(300)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], name
        shoot(page, name)

    page.click("#sign-out")
    expect(page.locator("#sign-in")).to_be_visible()
    shoot(page, "sign-in")
    assert page.console_errors == []
