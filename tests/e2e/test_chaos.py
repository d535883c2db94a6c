"""Chaos under load: replicas SIGKILLed every 10 s, a promotion midway and a scale-down at the end.

A real `slipway up` serves a small `kind: custom` package that answers in OpenAI's chat shape
and streams `chat.completion.chunk` events slowly (so a kill lands mid-stream), on 3 replicas.
Closed-loop clients send non-streamed and streamed requests through the gateway the whole time.

What must hold:
  - no non-streamed request fails: a replica killed before it answered is retried on another
    (a kill between an answer's headers and its body included);
  - every stream either finishes (all its chunks, then `data: [DONE]`) or ends with the explicit
    `{"error": {..., "code": "upstream_disconnected"}}` event and no [DONE]: never silently short;
  - the store bills every answered request exactly once: one usage row per request id the client
    saw in x-request-id, with the status it was answered with (200, or 502 for a broken stream),
    and no row for anything else.

It takes about 75 s: `pytest tests/e2e/test_chaos.py` (or `-m slow`) runs it alone.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import pid_alive

pytestmark = pytest.mark.slow

MODEL = "chatty"
REPLICAS = 3
CHAOS_SECONDS = 60.0
KILL_EVERY = 10.0
PROMOTE_AT = 30.0
NON_STREAMING_CLIENTS = 3
STREAMING_CLIENTS = 3
STREAM_CHUNKS = 10
CHUNK_DELAY = 0.03
BROKEN_STREAM_STATUS = 502  # how the gateway bills an answer that broke off midway
# A replica writes a non-streamed answer's headers and its body in two writes; SIGKILLed between
# them, the gateway has the headers, then a closed connection. Nothing reached the client yet, so
# the gateway retries it on another replica: no such 502 is tolerated (True would accept one per
# kill, counted and checked for billing).
TOLERATE_BUFFERED_ANSWER_BROKEN = False

MODEL_PY = '''\
"""Answers in OpenAI's chat shape; with "stream": true, one chat.completion.chunk per delay."""

import asyncio
import os


def _usage(completion_tokens):
    return {"prompt_tokens": 3, "completion_tokens": completion_tokens, "total_tokens": 3 + completion_tokens}


class Model:
    async def predict(self, request):
        nonce, chunks, delay = request["nonce"], int(request["chunks"]), float(request["delay"])
        if request.get("stream"):
            return self._stream(nonce, chunks, delay)
        await asyncio.sleep(delay)
        message = {"role": "assistant", "content": nonce}
        return {"id": nonce, "object": "chat.completion", "pid": os.getpid(), "usage": _usage(1),
                "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}

    async def _stream(self, nonce, chunks, delay):
        for index in range(chunks):
            await asyncio.sleep(delay)
            yield {"id": nonce, "object": "chat.completion.chunk", "usage": None,
                   "choices": [{"index": 0, "delta": {"content": f"{index} "}, "finish_reason": None}]}
        yield {"id": nonce, "object": "chat.completion.chunk", "usage": _usage(chunks),
               "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
'''

SLIPWAY_YAML = f"""\
name: {MODEL}
kind: custom
description: Chat-shaped answers, streamed slowly, for the chaos test.
resources: {{cpu: 0.25, memory: 128Mi}}
autoscaling: {{min_replica: {REPLICAS}, max_replica: {REPLICAS}, concurrency_target: 16}}
"""


@dataclass
class Outcomes:
    """What the clients saw, shared by their threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    answered: dict[str, int] = field(default_factory=dict)
    """x-request-id -> the status the request should be billed with."""
    non_streamed_ok: int = 0
    non_streamed_broken: int = 0
    """Answered 502 upstream_broken: the replica died between the headers and the body."""
    streams_done: int = 0
    streams_broken: int = 0
    failures: list[str] = field(default_factory=list)

    def answer(self, request_id: str | None, status: int) -> None:
        with self.lock:
            if not request_id:
                self.failures.append(f"an answer with status {status} had no x-request-id")
            elif request_id in self.answered:
                self.failures.append(f"request id {request_id} answered twice")
            else:
                self.answered[request_id] = status

    def fail(self, what: str) -> None:
        with self.lock:
            self.failures.append(what)


def _body(nonce: str, stream: bool) -> dict:
    return {"nonce": nonce, "chunks": STREAM_CHUNKS, "delay": CHUNK_DELAY, "stream": stream}


def _non_streaming_client(url: str, key: str, stop: threading.Event, outcomes: Outcomes, name: str) -> None:
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
        number = 0
        while not stop.is_set():
            number += 1
            nonce = f"{name}-{number}"
            try:
                response = client.post(f"/models/{MODEL}/predict", json=_body(nonce, stream=False))
            except httpx.HTTPError as exc:
                outcomes.fail(f"non-streamed {nonce}: {exc!r}")
                continue
            if TOLERATE_BUFFERED_ANSWER_BROKEN and _broke_after_headers(response):
                outcomes.answer(response.headers.get("x-request-id"), BROKEN_STREAM_STATUS)
                with outcomes.lock:
                    outcomes.non_streamed_broken += 1
                continue
            if response.status_code != 200:
                outcomes.fail(f"non-streamed {nonce}: {response.status_code} {response.text[:300]}")
                continue
            answer = response.json()
            if answer.get("choices", [{}])[0].get("message", {}).get("content") != nonce:
                outcomes.fail(f"non-streamed {nonce}: a wrong answer {answer}")
                continue
            outcomes.answer(response.headers.get("x-request-id"), 200)
            with outcomes.lock:
                outcomes.non_streamed_ok += 1


def _broke_after_headers(response: httpx.Response) -> bool:
    if response.status_code != 502:
        return False
    error = response.json().get("error", {})
    return error.get("code") == "upstream_broken" and "mid-response" in error.get("message", "")


def _streaming_client(url: str, key: str, stop: threading.Event, outcomes: Outcomes, name: str) -> None:
    with httpx.Client(base_url=url, timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
        number = 0
        while not stop.is_set():
            number += 1
            nonce = f"{name}-{number}"
            events: list[str] = []
            try:
                with client.stream("POST", f"/models/{MODEL}/predict", json=_body(nonce, stream=True)) as response:
                    if response.status_code != 200:
                        response.read()
                        outcomes.fail(f"stream {nonce}: {response.status_code} {response.text[:300]}")
                        continue
                    request_id = response.headers.get("x-request-id")
                    events = [line[len("data: "):] for line in response.iter_lines() if line.startswith("data: ")]
            except httpx.HTTPError as exc:  # cut off without the error event: silently short
                outcomes.fail(f"stream {nonce}: cut off after {len(events)} events: {exc!r}")
                continue
            verdict = _judge_stream(nonce, events)
            if verdict == "done":
                outcomes.answer(request_id, 200)
                with outcomes.lock:
                    outcomes.streams_done += 1
            elif verdict == "broken":
                outcomes.answer(request_id, BROKEN_STREAM_STATUS)
                with outcomes.lock:
                    outcomes.streams_broken += 1
            else:
                outcomes.fail(f"stream {nonce}: {verdict}: {events}")


def _judge_stream(nonce: str, events: list[str]) -> str:
    """"done" (every chunk, the usage chunk, then [DONE]), "broken" (whole chunks, then the error
    event, no [DONE]), or what is wrong with it."""
    if not events:
        return "no event at all"
    if events[-1] == "[DONE]":
        chunks = [json.loads(e) for e in events[:-1]]
        contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"][0]["delta"]]
        if contents != [f"{i} " for i in range(STREAM_CHUNKS)] or any(c["id"] != nonce for c in chunks):
            return "ended with [DONE] but its chunks are not all there"
        if chunks[-1]["choices"][0]["finish_reason"] != "stop" or not chunks[-1]["usage"]:
            return "ended with [DONE] without the final usage chunk"
        return "done"
    if "[DONE]" in events:
        return "[DONE] before the end"
    try:
        last = json.loads(events[-1])
        chunks = [json.loads(e) for e in events[:-1]]
    except json.JSONDecodeError:
        return "an event that is not whole JSON"
    if not isinstance(last, dict) or last.get("error", {}).get("code") != "upstream_disconnected":
        return "ended without [DONE] and without the upstream_disconnected error event"
    contents = [c["choices"][0]["delta"].get("content") for c in chunks if c["choices"][0]["delta"]]
    if contents != [f"{i} " for i in range(len(contents))]:
        return "broken, and its chunks before the break are not in order"
    return "broken"


def _serving_deployment(http: httpx.Client) -> str:
    environments = http.get(f"/api/v1/models/{MODEL}").json()["environments"]
    return next(e["deployment_id"] for e in environments if e["name"] == "production")


def _replicas(http: httpx.Client, deployment_id: str, state: str | None = "ready") -> list[dict]:
    replicas = http.get(f"/api/v1/deployments/{deployment_id}/replicas").json()["data"]
    return [r for r in replicas if state is None or r["state"] == state]


def _kill_one(http: httpx.Client, rng: random.Random) -> dict | None:
    """SIGKILL a ready replica of the serving deployment, once it has another ready one (the
    gateway retries on another replica; with none it could only fail the request or hold it)."""
    deadline = time.monotonic() + 8
    while time.monotonic() < deadline:
        ready = _replicas(http, _serving_deployment(http))
        live = [r for r in ready if r.get("pid") and pid_alive(r["pid"])]
        if len(live) >= 2:
            victim = rng.choice(live)
            os.kill(victim["pid"], signal.SIGKILL)
            return victim
        time.sleep(0.2)
    return None


def _usage_rows(db: Path) -> list[tuple[str, int, int, int]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as connection:
        return connection.execute("SELECT request_id, status_code, input_units, output_units FROM usage "
                                  "WHERE model_name = ?", (MODEL,)).fetchall()


def test_kills_promotion_and_scale_down_under_load_fail_no_request(slipway_up, tmp_path):
    package = tmp_path / MODEL
    package.mkdir()
    (package / "model.py").write_text(MODEL_PY)
    (package / "slipway.yaml").write_text(SLIPWAY_YAML)
    slipway_up.cli("deploy", str(package), "--promote")
    http = slipway_up.http()
    first = _serving_deployment(http)
    deadline = time.monotonic() + 60
    while len(_replicas(http, first)) < REPLICAS:
        assert time.monotonic() < deadline, f"{REPLICAS} replicas never became ready: {_replicas(http, first, None)}"
        time.sleep(0.2)

    outcomes = Outcomes()
    stop = threading.Event()
    clients = [threading.Thread(target=_non_streaming_client, args=(slipway_up.url, slipway_up.admin_key, stop,
                                                                    outcomes, f"plain{i}"), daemon=True)
               for i in range(NON_STREAMING_CLIENTS)]
    clients += [threading.Thread(target=_streaming_client, args=(slipway_up.url, slipway_up.admin_key, stop,
                                                                 outcomes, f"stream{i}"), daemon=True)
                for i in range(STREAMING_CLIENTS)]
    rng = random.Random(7)
    killed: list[dict] = []
    started = time.monotonic()
    for client in clients:
        client.start()
    try:
        next_kill = KILL_EVERY / 2
        promoted = False
        while (elapsed := time.monotonic() - started) < CHAOS_SECONDS:
            if not promoted and elapsed >= PROMOTE_AT:
                # The same package again, promoted: the first deployment serves until the second
                # has a ready replica, then drains its in-flight answers and retires.
                slipway_up.cli("deploy", str(package), "--promote")
                promoted = True
            elif elapsed >= next_kill:
                victim = _kill_one(http, rng)
                assert victim is not None, "the serving deployment never had 2 ready replicas to kill one of"
                killed.append(victim)
                next_kill += KILL_EVERY
            time.sleep(0.05)
        second = _serving_deployment(http)
        assert second != first, "the promoted deployment never took production over"
        # Scale down under load: the replicas stopped drain their answers before they exit.
        slipway_up.cli("scale", second, "--replicas", "1")
        time.sleep(4)
    finally:
        stop.set()
        for client in clients:
            client.join(60)
    chaos_took = time.monotonic() - started

    assert not outcomes.failures, f"{len(outcomes.failures)} requests failed: {outcomes.failures[:5]}"
    assert outcomes.non_streamed_ok > 100 and outcomes.streams_done > 50, outcomes
    assert outcomes.non_streamed_broken <= len(killed), "more broken non-streamed answers than kills"
    assert len(killed) == int(CHAOS_SECONDS / KILL_EVERY)
    assert all(not pid_alive(victim["pid"]) for victim in killed)

    # Desired state reached: the first deployment retired, the second down to one replica.
    deadline = time.monotonic() + 30
    while True:
        retired = http.get(f"/api/v1/deployments/{first}").json()
        left = _replicas(http, second, state=None)
        if retired["status"] == "inactive" and not _replicas(http, first, state=None) \
                and len(left) == 1 and left[0]["state"] == "ready":
            break
        assert time.monotonic() < deadline, f"never settled: {retired['status']}, {left}"
        time.sleep(0.2)

    # Exactly one usage row per answered request, with the status it was answered with. The
    # flusher writes every ~0.5 s, so poll until the count is exact (and then a little longer,
    # so a duplicate arriving late would be seen).
    expected = dict(outcomes.answered)
    deadline = time.monotonic() + 20
    while len(rows := _usage_rows(slipway_up.home / "slipway.db")) < len(expected):
        assert time.monotonic() < deadline, f"{len(rows)} usage rows, {len(expected)} answered requests"
        time.sleep(0.2)
    time.sleep(1.5)
    rows = _usage_rows(slipway_up.home / "slipway.db")
    billed = Counter(request_id for request_id, *_ in rows)
    assert [r for r, n in billed.items() if n > 1] == [], "billed more than once"
    assert set(billed) == set(expected), (f"billed but never answered: {sorted(set(billed) - set(expected))[:5]}; "
                                          f"answered but not billed: {sorted(set(expected) - set(billed))[:5]}")
    statuses = {request_id: status for request_id, status, *_ in rows}
    assert statuses == expected
    units = {request_id: (input_units, output_units) for request_id, _, input_units, output_units in rows}
    assert all(units[r] == (3, STREAM_CHUNKS) or units[r] == (3, 1) for r, s in expected.items() if s == 200)

    print(f"chaos: {chaos_took:.0f}s, {len(killed)} replicas SIGKILLed, one promotion, 3 -> 1 replicas; "
          f"{outcomes.non_streamed_ok} non-streamed answers ({outcomes.non_streamed_broken} broken after their "
          f"headers), {outcomes.streams_done} streams finished, "
          f"{outcomes.streams_broken} ended with the upstream_disconnected event; "
          f"{len(rows)} usage rows, one per answer")
