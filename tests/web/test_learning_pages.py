"""The learning-loop pages of the dashboard (traces, datasets, fine-tuning jobs, evals) in headless Chromium.

The node is `slipway up`'s own composition (`slipway.app.Node`) served by uvicorn in a thread of
this process with its lifespan off, so no control loop, job supervisor or eval worker runs: what
the test seeds stays as seeded. Traces, fine-tuning jobs (with their metric events and
checkpoints) and eval runs (with their results) are written through the store's repositories; the
dataset is uploaded as JSONL and the eval suite created through the management API. Every page is
checked for the seeded data, at 1280x800 and 390x844, with no console errors, and photographed
under test-output/web/.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass

import httpx
import pytest

from slipway.evals.graders import GradeResult
from slipway.evals.summary import summarise
from slipway.store import CheckpointRecord, EvalResultRecord, EventRecord, TraceRecord
from tests.e2e.conftest import free_port
from tests.web.conftest import DESKTOP, PHONE, open_page, shoot, sign_in_page

sync_api = pytest.importorskip("playwright.sync_api",
                               reason="the `playwright` Python package is missing: pip install -e '.[dev]'")
expect = sync_api.expect
uvicorn = pytest.importorskip("uvicorn")

NUM_TRACES = 30  # more than one page of 25
TOTAL_STEPS = 12
RUNNING_STEPS = 8  # the running job's steps so far; two more arrive while its page is open
HYPERPARAMETERS = {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 1.0, "lora_rank": 8,
                   "lora_alpha": 16, "lora_dropout": 0.05, "lora_target_modules": "all-linear",
                   "checkpoint_every_steps": 4, "keep_checkpoints": 3, "max_seq_len": 1024, "warmup_steps": 0,
                   "weight_decay": 0.0, "max_grad_norm": 1.0}


@dataclass
class Seeded:
    url: str
    admin_key: str
    node: object
    trace_ids: list[str]
    dataset_id: str
    running_job: str
    finished_job: str
    suite_id: str
    finished_run: str
    running_run: str


def _chat_trace(n: int, workspace_id: str, at: float) -> TraceRecord:
    model = "support-bot" if n % 3 else "sales-bot"
    tags = ("team=billing", "beta") if n % 5 == 0 else ("team=support",)
    return TraceRecord(
        id=f"req-seed-{n:04d}", workspace_id=workspace_id, model=model, environment="production",
        deployment_id="dep-0000seed",
        request={"model": model, "temperature": 0.2, "max_tokens": 64,
                 "messages": [{"role": "system", "content": "You answer billing questions briefly."},
                              {"role": "user", "content": f"Why was I charged twice in month {n}?"}]},
        response={"id": f"chatcmpl-{n}", "object": "chat.completion",
                  "choices": [{"index": 0, "finish_reason": "stop",
                               "message": {"role": "assistant", "content": f"Charge number {n} was a hold."}}],
                  "usage": {"prompt_tokens": 21, "completion_tokens": 7}},
        created_at=at, status_code=500 if n == 7 else 200, latency_ms=120.0 + n, prompt_tokens=21,
        completion_tokens=7, tags=tags)


def _loss(step: int) -> float:
    return round(2.4 * 0.82 ** step + 0.3, 6)


def _metric_events(first_seq: int, steps: range, at: float) -> list[EventRecord]:
    return [EventRecord(seq=first_seq + i, level="info", type="metrics", created_at=at + step,
                        message=f"Step {step}/{TOTAL_STEPS}: training loss={_loss(step):.4f}",
                        data={"step": step, "total_steps": TOTAL_STEPS, "epoch": 1 + (step - 1) // 4,
                              "train_loss": _loss(step), "learning_rate": 2e-4, "tokens": 512})
            for i, step in enumerate(steps)]


def _seed_job(store, workspace_id: str, dataset_id: str, now: float, *, steps: int, finished: bool) -> str:
    """A job with `steps` metric events and a checkpoint (with validation loss) every 4 steps."""
    job = store.fine_tuning.create_job(workspace_id, model="smollm2", training_file=dataset_id,
                                       hyperparameters=HYPERPARAMETERS, seed=7, now=now - 600, status="running",
                                       suffix="support" if finished else None)
    events = [EventRecord(seq=0, level="info", message=f"Validating training file: {dataset_id}", created_at=now - 600),
              EventRecord(seq=1, level="info", message="Files validated, moving job to queued state",
                          created_at=now - 599),
              EventRecord(seq=2, level="info", created_at=now - 598,
                          message=f"Fine-tuning started: 16 rows, 3 epoch(s), {TOTAL_STEPS} steps of batch 4",
                          data={"total_steps": TOTAL_STEPS, "rows": 16, "hyperparameters": HYPERPARAMETERS})]
    events += _metric_events(3, range(1, steps + 1), now - 590)
    checkpoints = []
    for step in range(4, steps + 1, 4):
        metrics = {"step": step, "train_loss": _loss(step), "valid_loss": round(_loss(step) + 0.15, 6)}
        events.append(EventRecord(seq=len(events), level="info", created_at=now - 590 + step,
                                  message=f"Checkpoint created at step {step}, validation loss={metrics['valid_loss']}",
                                  data={"step": step, "total_steps": TOTAL_STEPS, "metrics": metrics}))
        checkpoints.append(CheckpointRecord(step=step, metrics=metrics, path=f"/nonexistent/step-{step}",
                                            created_at=now - 590 + step))
    if finished:
        events.append(EventRecord(seq=len(events), level="warn", created_at=now - 500,
                                  message="1 training row(s) have no assistant tokens and are skipped: rows 3"))
    store.fine_tuning.add_events(job.id, events)
    store.fine_tuning.sync_checkpoints(job.id, checkpoints)
    if finished:
        store.fine_tuning.transition(job.id, "succeeded", now - 480, fine_tuned_model="smollm2:ft-support",
                                     trained_tokens=6144)
    return job.id


def _eval_results() -> list[EvalResultRecord]:
    results = []
    for index in range(5):
        passed = index != 2
        judge_score = 0.9 if passed else 0.2
        grades = [{"grader": "includes", "score": 1.0 if passed else 0.0, "passed": passed,
                   "rationale": "found 'refund'" if passed else "missing 'refund'"},
                  {"grader": "llm_judge", "score": judge_score, "passed": passed,
                   "rationale": "Polite and correct." if passed else "The answer never mentions the refund policy."}]
        sample = {"messages": [{"role": "user", "content": f"Can I get a refund for order {index}?"}],
                  "ideal": "Yes, a refund within 30 days.", "error": None, "grades": grades,
                  "output": f"Yes: a refund for order {index} within 30 days." if passed else "Please call us."}
        results.append(EvalResultRecord(item_index=index, sample=sample, score=(grades[0]["score"] + judge_score) / 2,
                                        passed=passed, rationale="; ".join(f"{g['grader']}: {g['rationale']}"
                                                                           for g in grades)))
    return results


def _summary(results: list[EvalResultRecord]) -> dict:
    def as_dict(summary) -> dict:
        return {"num_samples": summary.num_samples, "mean_score": summary.mean_score,
                "mean_score_ci": list(summary.mean_score_ci), "num_passed": summary.num_passed,
                "pass_rate": summary.pass_rate, "pass_rate_ci": list(summary.pass_rate_ci)}

    overall = summarise(GradeResult(score=r.score, passed=r.passed, rationale="") for r in results)
    graders = {name: as_dict(summarise(GradeResult(score=g["score"], passed=g["passed"], rationale="")
                                       for r in results for g in r.sample["grades"] if g["grader"] == name))
               for name in ("includes", "llm_judge")}
    return {**as_dict(overall), "num_items": len(results), "num_errors": 0, "graders": graders,
            "intervals": "mean score: 95% Student t-interval; pass rate: 95% Wilson score interval"}


def seed(node, url: str, admin_key: str) -> Seeded:
    store, workspace_id, now = node.store, node.workspace.id, time.time()
    traces = [_chat_trace(n, workspace_id, now - 3600 + n * 60) for n in range(NUM_TRACES)]
    store.traces.insert_many(traces)
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {admin_key}"}, timeout=30) as admin:
        rows = [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                              {"role": "assistant", "content": f"It is {2 * i}."}]} for i in range(20)]
        uploaded = admin.post("/api/v1/datasets", params={"name": "support-chats", "validation_fraction": 0.2},
                              content="".join(json.dumps(r) + "\n" for r in rows),
                              headers={"Content-Type": "application/jsonl"})
        assert uploaded.status_code == 201, uploaded.text
        suite = admin.post("/api/v1/evals/suites", json={
            "name": "refunds", "description": "Does the bot explain the refund policy?",
            "items": [{"input": f"Can I get a refund for order {i}?", "ideal": "refund"} for i in range(5)],
            "graders": [{"type": "includes"}, {"type": "llm_judge", "model": "judge"}]})
        assert suite.status_code == 201, suite.text
    dataset_id, suite_id = uploaded.json()["id"], suite.json()["id"]
    finished_job = _seed_job(store, workspace_id, dataset_id, now - 60, steps=TOTAL_STEPS, finished=True)
    running_job = _seed_job(store, workspace_id, dataset_id, now, steps=RUNNING_STEPS, finished=False)

    results = _eval_results()
    finished_run = store.evals.create_run(workspace_id, suite_id=suite_id, target_kind="environment",
                                          target="support-bot@production", now=now - 300).id
    store.evals.transition_run(finished_run, "running", now - 290)
    store.evals.add_results(finished_run, results)
    store.evals.transition_run(finished_run, "succeeded", now - 280, summary=_summary(results))
    running_run = store.evals.create_run(workspace_id, suite_id=suite_id, target_kind="deployment",
                                         target="dep-0000seed", now=now - 30).id
    store.evals.transition_run(running_run, "running", now - 20, summary={"completed": 2, "num_items": 5})
    return Seeded(url=url, admin_key=admin_key, node=node, trace_ids=[t.id for t in traces], dataset_id=dataset_id,
                  running_job=running_job, finished_job=finished_job, suite_id=suite_id, finished_run=finished_run,
                  running_run=running_run)


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    from slipway.app import Node

    home = tmp_path_factory.mktemp("learning") / "home"
    home.mkdir()
    node = Node(home)
    admin_key = (home / "admin.key").read_text().strip()
    port = free_port()
    # Lifespan off: the control loop, job supervisor and eval worker never start.
    server = uvicorn.Server(uvicorn.Config(node.app, host="127.0.0.1", port=port, lifespan="off",
                                           access_log=False, log_config=None))
    thread = threading.Thread(target=server.run, name="learning-pages-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield seed(node, f"http://127.0.0.1:{port}", admin_key)
    finally:
        server.should_exit = True
        thread.join(30)
        node.store.close()


@pytest.fixture
def signed_in(browser, seeded):
    page = open_page(browser)
    sign_in_page(page, seeded.url, seeded.admin_key)
    yield page
    page.context.close()


def _api(seeded: Seeded) -> httpx.Client:
    return httpx.Client(base_url=seeded.url, headers={"Authorization": f"Bearer {seeded.admin_key}"}, timeout=30)


def _path_points(d: str) -> int:
    return len(re.findall(r"[ML]", d))


def test_traces_filter_page_and_take_feedback(seeded, signed_in):
    page = signed_in
    page.click('nav a[data-page="traces"]')
    rows = page.locator("#traces tbody tr")
    expect(rows).to_have_count(25)
    newest = seeded.trace_ids[-1]
    first_row = rows.first
    expect(first_row.locator("a.trace-link")).to_have_attribute("data-trace", newest)
    expect(first_row).to_contain_text("support-bot")
    expect(first_row).to_contain_text("production")
    expect(first_row).to_contain_text("149 ms")
    expect(first_row).to_contain_text("21 → 7")
    expect(page.locator('[data-trace="req-seed-0007"]').locator("xpath=ancestor::tr")).to_contain_text("500")
    shoot(page, "traces")

    # The API's cursor pages on to the five oldest, and back.
    page.click('#pager [data-pager="forward"]')
    expect(rows).to_have_count(NUM_TRACES - 25)
    expect(rows.last.locator("a.trace-link")).to_have_attribute("data-trace", seeded.trace_ids[0])
    page.click('#pager [data-pager="back"]')
    expect(rows.first.locator("a.trace-link")).to_have_attribute("data-trace", newest)

    # Filters by model and by tag, kept in the address.
    page.fill("#filter-model", "sales-bot")
    page.click("#trace-filters button[type=submit]")
    expect(page).to_have_url(re.compile(r"#/traces\?model=sales-bot$"))
    expect(rows).to_have_count(NUM_TRACES // 3)
    for text in rows.all_inner_texts():
        assert "sales-bot" in text
    page.fill("#filter-model", "")
    page.fill("#filter-tag", "beta")
    page.click("#trace-filters button[type=submit]")
    expect(rows).to_have_count(NUM_TRACES // 5)
    expect(rows.first.locator(".tag", has_text="beta")).to_be_visible()
    page.fill("#filter-tag", "no-such-tag")
    page.click("#trace-filters button[type=submit]")
    expect(page.locator("#traces .empty")).to_contain_text("No traces of tag “no-such-tag”")
    page.click("#clear-filters")
    expect(rows).to_have_count(25)

    # One trace: the conversation rendered, not only JSON; then feedback saved through the form.
    target = seeded.trace_ids[10]
    page.click(f'a.trace-link[data-trace="{target}"]')
    request = page.locator("#trace-request")
    expect(request.locator(".chat-message.role-system")).to_contain_text("You answer billing questions briefly.")
    expect(request.locator(".chat-message.role-user")).to_contain_text("Why was I charged twice in month 10?")
    expect(request.locator(".settings")).to_contain_text("temperature 0.2")
    expect(page.locator("#trace-response .chat-message.role-assistant")).to_contain_text("Charge number 10 was a hold.")
    expect(page.locator("#feedback-saved")).to_contain_text("No feedback yet")
    page.fill("#feedback-score", "0.25")
    page.fill("#feedback-label", "wrong-reason")
    page.click("#use-answer")
    expect(page.locator("#feedback-corrected")).to_have_value("Charge number 10 was a hold.")
    page.fill("#feedback-corrected", "Charge number 10 was a duplicate; it is refunded within 3 days.")
    page.click("#feedback button[type=submit]")
    expect(page.locator("#trace-feedback .ok")).to_have_text("Saved.")
    expect(page.locator("#saved-score")).to_have_text("0.25")
    expect(page.locator("#saved-label")).to_have_text("wrong-reason")
    expect(page.locator("#saved-corrected")).to_have_text("Charge number 10 was a duplicate; it is refunded within 3 days.")
    with _api(seeded) as admin:
        saved = admin.get(f"/api/v1/traces/{target}").json()
    assert (saved["feedback_score"], saved["feedback_label"]) == (0.25, "wrong-reason")
    assert saved["corrected_output"] == "Charge number 10 was a duplicate; it is refunded within 3 days."
    shoot(page, "trace")

    # An empty form is refused on the page, before any request.
    page.fill("#feedback-score", "")
    page.fill("#feedback-label", "")
    page.fill("#feedback-corrected", "")
    page.click("#feedback button[type=submit]")
    expect(page.locator("#trace-feedback .error")).to_contain_text("Give a score, a label or a corrected output")

    # The list shows the feedback.
    page.click('nav a[data-page="traces"]')
    feedback = page.locator(f'a.trace-link[data-trace="{target}"]').locator("xpath=ancestor::tr").locator(".feedback")
    expect(feedback).to_contain_text("0.25")
    expect(feedback).to_contain_text("wrong-reason")
    assert page.console_errors == []


def test_datasets_list_and_detail(seeded, signed_in):
    page = signed_in
    page.click('nav a[data-page="datasets"]')
    row = page.locator("#datasets tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("support-chats")
    expect(row).to_contain_text("16")
    expect(row).to_contain_text("4")
    with _api(seeded) as admin:
        content_hash = admin.get(f"/api/v1/datasets/{seeded.dataset_id}").json()["content_hash"]
    expect(row).to_contain_text(content_hash[:12])
    shoot(page, "datasets")
    page.click(f'a.dataset-link[data-dataset="{seeded.dataset_id}"]')
    expect(page.locator("h1")).to_have_text("support-chats")
    expect(page.locator("#dataset-hash")).to_have_text(content_hash)
    expect(page.locator("#dataset-train-rows")).to_have_text("16")
    expect(page.locator("#dataset-validation-rows")).to_have_text("4")
    expect(page.locator("#dataset-jobs tbody tr")).to_have_count(2)
    expect(page.locator("#dataset-jobs")).to_contain_text("smollm2:ft-support")
    shoot(page, "dataset")
    assert page.console_errors == []


def test_fine_tuning_jobs_loss_curve_live_refresh_and_cancel(seeded, signed_in):
    page = signed_in
    page.click('nav a[data-page="fine-tuning"]')
    rows = page.locator("#jobs tbody tr")
    expect(rows).to_have_count(2)
    finished = page.locator(f'a.job-link[data-job="{seeded.finished_job}"]').locator("xpath=ancestor::tr")
    expect(finished.locator(".pill")).to_have_text("succeeded")
    expect(finished).to_contain_text("smollm2:ft-support")
    running = page.locator(f'a.job-link[data-job="{seeded.running_job}"]').locator("xpath=ancestor::tr")
    expect(running.locator(".pill")).to_have_text("running")
    shoot(page, "fine-tuning")

    # A finished job: the whole curve, validation loss at the checkpoints, hyperparameters, events.
    page.click(f'a.job-link[data-job="{seeded.finished_job}"]')
    train_line = page.locator("#loss-chart path.line.series-0")
    valid_line = page.locator("#loss-chart path.line.series-1")
    expect(train_line).to_have_count(1)
    assert _path_points(train_line.get_attribute("d")) == TOTAL_STEPS
    assert _path_points(valid_line.get_attribute("d")) == TOTAL_STEPS // 4
    expect(page.locator("#loss .legend")).to_contain_text(f"train loss {_loss(TOTAL_STEPS):.3f}")
    expect(page.locator("#hyperparameters")).to_contain_text("lora_rank")
    expect(page.locator("#checkpoints tbody tr")).to_have_count(3)
    expect(page.locator("#checkpoints tbody tr").first).to_contain_text("smollm2:ft-support:ckpt-step-12")
    expect(page.locator("#events tbody tr").first).to_contain_text("no assistant tokens")  # newest first
    expect(page.locator("#cancel-job")).to_be_hidden()
    shoot(page, "fine-tuning-job")

    # A running job: its curve grows as metric events arrive, then the Cancel button stops it.
    page.goto(f"{seeded.url}/ui/#/fine-tuning/{seeded.running_job}")
    expect(page.locator("#job-step")).to_have_text(f"step {RUNNING_STEPS} of {TOTAL_STEPS}")
    assert _path_points(train_line.get_attribute("d")) == RUNNING_STEPS
    seeded.node.store.fine_tuning.add_events(seeded.running_job, _metric_events(
        100, range(RUNNING_STEPS + 1, RUNNING_STEPS + 3), time.time()))
    expect(page.locator("#job-step")).to_have_text(f"step {RUNNING_STEPS + 2} of {TOTAL_STEPS}")
    assert _path_points(train_line.get_attribute("d")) == RUNNING_STEPS + 2
    expect(page.locator("#events tbody tr").first).to_contain_text(f"Step {RUNNING_STEPS + 2}/{TOTAL_STEPS}")
    shoot(page, "fine-tuning-job-running")
    cancel = page.locator("#cancel-job")
    cancel.click()
    expect(cancel).to_have_text("Confirm cancel")
    cancel.click()
    expect(page.locator("#job-status")).to_have_text("cancelled")
    expect(cancel).to_be_hidden()
    with _api(seeded) as admin:
        assert admin.get(f"/api/v1/fine_tuning/jobs/{seeded.running_job}").json()["status"] == "cancelled"
    assert page.console_errors == []


def test_eval_suites_runs_and_results(seeded, signed_in):
    page = signed_in
    page.click('nav a[data-page="evals"]')
    expect(page.locator("#suites tbody tr")).to_contain_text("refunds")
    expect(page.locator("#suites tbody tr")).to_contain_text("includes, llm_judge")
    with _api(seeded) as admin:
        summary = admin.get(f"/api/v1/evals/runs/{seeded.finished_run}").json()["summary"]
    low, high = summary["mean_score_ci"]
    finished = page.locator(f'a.run-link[data-run="{seeded.finished_run}"]').locator("xpath=ancestor::tr")
    expect(finished).to_contain_text(f"{summary['mean_score']:.3f} [{low:.3f}, {high:.3f}]")
    expect(finished).to_contain_text("4/5")
    expect(finished).to_contain_text("support-bot@production")
    running = page.locator(f'a.run-link[data-run="{seeded.running_run}"]').locator("xpath=ancestor::tr")
    expect(running.locator(".pill")).to_have_text("running")
    expect(running).to_contain_text("2 of 5 done")
    shoot(page, "evals")

    page.click(f'a.run-link[data-run="{seeded.finished_run}"]')
    expect(page.locator("#run-passed")).to_have_text("4/5")
    expect(page.locator("#grader-summary tbody tr")).to_have_count(2)
    items = page.locator("#results .result")
    expect(items).to_have_count(5)
    failed = page.locator('#results .result[data-item="2"]')
    expect(failed.locator("header .pill")).to_have_text("fail")
    expect(failed).to_contain_text("Can I get a refund for order 2?")
    expect(failed).to_contain_text("Please call us.")
    expect(failed).to_contain_text("Yes, a refund within 30 days.")
    expect(failed.locator(".grades li.judge .rationale")).to_have_text("The answer never mentions the refund policy.")
    shoot(page, "eval-run")
    page.check("#only-failed")
    expect(items).to_have_count(1)
    expect(items.first).to_have_attribute("data-item", "2")
    assert page.console_errors == []


def test_every_learning_page_at_phone_size(seeded, browser):
    page = open_page(browser, PHONE)
    try:
        sign_in_page(page, seeded.url, seeded.admin_key)
        for name, hash_route, ready in [
            ("traces", "#/traces", "#traces tbody tr"),
            ("trace", f"#/traces/{seeded.trace_ids[3]}", "#trace-response .chat-message"),
            ("datasets", "#/datasets", "#datasets tbody tr"),
            ("dataset", f"#/datasets/{seeded.dataset_id}", "#dataset-jobs tbody tr"),
            ("fine-tuning", "#/fine-tuning", "#jobs tbody tr"),
            ("fine-tuning-job", f"#/fine-tuning/{seeded.finished_job}", "#loss-chart path.line"),
            ("evals", "#/evals", "#runs tbody tr"),
            ("eval-run", f"#/evals/runs/{seeded.finished_run}", "#results .result"),
        ]:
            page.goto(f"{seeded.url}/ui/{hash_route}")
            expect(page.locator(ready).first).to_be_visible()
            page.wait_for_timeout(200)
            assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"], name
            shoot(page, name)
        # The navigation fits: every entry visible without scrolling sideways.
        for link in page.locator("nav a").all():
            box = link.bounding_box()
            assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
        assert page.console_errors == []
    finally:
        page.context.close()


def test_empty_pages_say_how_to_start(seeded, browser):
    _, created = seeded.node.plane.create_workspace("empty-learning")
    for viewport in (DESKTOP, PHONE):
        page = open_page(browser, viewport)
        try:
            sign_in_page(page, seeded.url, created.secret)
            page.goto(f"{seeded.url}/ui/#/traces")
            empty = page.locator("#traces .empty")
            expect(empty).to_contain_text("Capture is off by default")
            expect(empty).to_contain_text("capture: true")
            expect(empty).to_contain_text('{"capture": true}')
            shoot(page, "traces-empty")
            page.goto(f"{seeded.url}/ui/#/datasets")
            expect(page.locator("#datasets .empty")).to_contain_text("slipway datasets create")
            page.goto(f"{seeded.url}/ui/#/fine-tuning")
            expect(page.locator("#jobs .empty")).to_contain_text("slipway train")
            page.goto(f"{seeded.url}/ui/#/evals")
            expect(page.locator("#suites .empty")).to_contain_text("slipway evals suites create")
            assert "support-bot" not in page.inner_text("body")
            assert page.console_errors == []
        finally:
            page.context.close()
