"""Acceptance: `slipway up` captures a capturing environment's traffic, and feedback lands on the trace."""

from __future__ import annotations

import time

from tests.e2e.conftest import EXAMPLES


def test_captured_call_takes_feedback(slipway_up):
    slipway_up.cli("deploy", str(EXAMPLES / "echo"), "--promote")
    with slipway_up.http() as admin:
        before = admin.post("/models/echo/predict", json={"text": "not captured"})
        assert before.status_code == 200 and "x-slipway-trace-id" not in before.headers
        switched = admin.patch("/api/v1/models/echo/environments/production", json={"capture": True})
        assert switched.status_code == 200 and switched.json()["capture"] is True

        answer = admin.post("/models/echo/predict", json={"text": "hello traces"},
                            headers={"X-Slipway-Tags": "e2e,lang=en"})
        assert answer.status_code == 200, answer.text
        trace_id = answer.headers["x-slipway-trace-id"]

        deadline = time.monotonic() + 20
        trace = admin.get(f"/api/v1/traces/{trace_id}")
        while trace.status_code == 404 and time.monotonic() < deadline:
            time.sleep(0.2)
            trace = admin.get(f"/api/v1/traces/{trace_id}")
        assert trace.status_code == 200, trace.text
        body = trace.json()
        assert body["request"] == {"text": "hello traces"}
        assert body["response"]["echo"] == {"text": "hello traces"}
        assert (body["model"], body["environment"], body["status_code"]) == ("echo", "production", 200)
        assert body["tags"] == ["e2e", "lang=en"]

        feedback = admin.post(f"/api/v1/traces/{trace_id}/feedback",
                              json={"score": 0.25, "label": "too-literal", "corrected_output": "Hello!"})
        assert feedback.status_code == 200, feedback.text
        stored = admin.get(f"/api/v1/traces/{trace_id}").json()
        assert (stored["feedback_score"], stored["feedback_label"], stored["corrected_output"]) == (
            0.25, "too-literal", "Hello!")
        # Only the captured call was stored.
        assert [t["id"] for t in admin.get("/api/v1/traces", params={"model": "echo"}).json()["data"]] == [trace_id]
