"""The dashboard with 50 deployments and a day of metric history, in headless Chromium.

The node is `slipway up`'s own composition (`slipway.app.Node`) served by uvicorn in a thread of
this process, so the test can seed it cheaply: 50 models of a tiny custom package, asleep at
zero replicas (no processes start), and 24 hours of synthetic samples per deployment written
through the control plane's `MetricHistory.record`. The main page must render them with one API
request (no request per model or deployment). How long it takes is printed, not asserted: the
figure depends on the machine.
"""

from __future__ import annotations

import math
import textwrap
import threading
import time

import httpx
import pytest

from slipway.client import pack_package
from slipway.observe.history import MetricSample
from tests.e2e.conftest import free_port
from tests.web.conftest import open_page, shoot, sign_in_page, wait_until

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the `playwright` Python package is missing: pip install -e '.[dev]'")
expect = sync_api.expect
uvicorn = pytest.importorskip("uvicorn")

FLEET_SIZE = 50
DAY = 86_400
# History as the sampler writes it: one sample a minute for the day (as the 1-minute tier keeps it),
# then one every 5 s for the last 15 minutes (the 5-second tier).
COARSE_STEP, FINE_STEP, FINE_SPAN = 60, 5, 900
TINY_MODEL = """
class Model:
    def load(self):
        pass

    def predict(self, request):
        return request
"""


def _latency(requests: float) -> tuple[tuple[float, float], ...]:
    return ((0.025, 0.0), (0.05, requests * 0.7), (0.1, requests * 0.25), (0.25, requests * 0.05))


def _sample(index: int, at: float, seconds: float) -> MetricSample:
    """A daily wave of traffic, its size and phase different per deployment."""
    rate = (1 + index % 5) * (1.2 + math.sin(2 * math.pi * (at / DAY + index / FLEET_SIZE)))
    requests = rate * seconds
    return MetricSample(seconds=seconds, requests=requests, errors=requests * 0.01, latency=_latency(requests),
                        in_flight=rate * 0.05, queued=0.0, replicas_ready=1 if requests else 0,
                        replicas_desired=1 if requests else 0)


def seed(node, packages_dir, now: float) -> list[str]:
    """50 deployments at zero replicas, each with a day of history up to `now`; their ids."""
    ids = []
    for index in range(FLEET_SIZE):
        folder = packages_dir / f"fleet-{index:02d}"
        folder.mkdir(parents=True)
        (folder / "slipway.yaml").write_text(f"name: fleet-{index:02d}\nkind: custom\n"
                                             "autoscaling: {min_replica: 0, max_replica: 1}\n")
        (folder / "model.py").write_text(textwrap.dedent(TINY_MODEL))
        deployed = node.plane.deploy(node.workspace.id, pack_package(folder), promote=True)
        # As if it had served and then scaled to zero: active, serving production, no replicas.
        with node.store.transaction() as tx:
            tx.deployments.update(deployed.deployment.id, now, status="active", desired_replicas=0)
            tx.environments.set_serving(deployed.environment.id, deployed.deployment.id, now)
        ids.append(deployed.deployment.id)
    history = node.plane.history
    started = time.perf_counter()
    for index, deployment_id in enumerate(ids):
        at = now - DAY + COARSE_STEP
        while at < now - FINE_SPAN:
            history.record(deployment_id, _sample(index, at, COARSE_STEP), at)
            at += COARSE_STEP
        while at <= now:
            history.record(deployment_id, _sample(index, at, FINE_STEP), at)
            at += FINE_STEP
    print(f"\nseeded {FLEET_SIZE} deployments with a day of history "
          f"({history.bucket_count()} buckets) in {time.perf_counter() - started:.2f} s")
    return ids


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """(url, admin key, deployment ids) of a node serving the seeded fleet."""
    from slipway.app import Node

    root = tmp_path_factory.mktemp("fleet")
    home = root / "home"
    home.mkdir()
    node = Node(home)
    ids = seed(node, root / "packages", time.time())
    admin_key = (home / "admin.key").read_text().strip()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(node.app, host="127.0.0.1", port=port, lifespan="on",
                                           access_log=False, log_config=None))
    thread = threading.Thread(target=server.run, name="fleet-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the fleet's server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", admin_key, ids
    finally:
        server.should_exit = True
        thread.join(60)


def test_the_main_page_shows_fifty_deployments_with_one_request(fleet, browser):
    url, admin_key, ids = fleet
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30) as admin:
        started = time.perf_counter()
        listing = admin.get("/api/v1/deployments")
        api_ms = (time.perf_counter() - started) * 1000
    assert listing.status_code == 200 and len(listing.json()["data"]) == FLEET_SIZE
    assert all(d["traffic"]["requests"] > 0 for d in listing.json()["data"])

    page = open_page(browser)
    try:
        sign_in_page(page, url, admin_key)
        api_calls: list[str] = []
        page.on("request", lambda request: api_calls.append(request.url.split(url, 1)[1])
                if "/api/" in request.url else None)
        page.reload()  # a fresh load of the main page, signed in
        timing = wait_until(page, """() => {
            const nav = performance.getEntriesByType('navigation')[0];
            const rendered = performance.getEntriesByName('slipway:rendered:models')[0];
            return rendered && nav.loadEventEnd > 0
                && {dom: nav.domContentLoadedEventEnd, load: nav.loadEventEnd, rendered: rendered.startTime};
        }""")
        calls_until_rendered = list(api_calls)
        expect(page.locator("[data-model]")).to_have_count(FLEET_SIZE)
        assert page.locator(".sparkline .bar:not(.idle)").count() > FLEET_SIZE  # the history is drawn
        print(f"main page, {FLEET_SIZE} deployments with a day of history: GET /api/v1/deployments {api_ms:.0f} ms "
              f"(from Python); in Chromium DOMContentLoaded {timing['dom']:.0f} ms, load {timing['load']:.0f} ms, "
              f"data rendered {timing['rendered']:.0f} ms after navigation start; "
              f"API requests until rendered: {calls_until_rendered}")
        # One request for the whole page, not one per model or deployment.
        assert calls_until_rendered == ["/api/v1/deployments"]
        shoot(page, "fleet-models")

        # A deployment's page draws its last hour from the seeded history.
        started = time.perf_counter()
        page.click(f'a.deployment-link[href="#/deployments/{ids[7]}"]')
        expect(page.locator('[data-chart="requests"]')).to_have_attribute("data-has-data", "true")
        expect(page.locator('[data-chart="latency"] .legend')).to_contain_text("p99")
        print(f"a deployment's page with its history: charts drawn {1000 * (time.perf_counter() - started):.0f} ms "
              "after the click")
        shoot(page, "fleet-deployment")
        assert page.console_errors == []
    finally:
        page.context.close()
