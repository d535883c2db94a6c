"""Eval runs: ask a target every item of a suite through the gateway, grade the answers, store and summarise.

    EvalWorker.run_forever()      queued runs in the store ─► execute(run), one run at a time
    EvalWorker.execute(run)       suite ─► GatewaySampler (official openai client) ─► run_items ─► results, summary
    run_items(items, graders, …)  bounded concurrency; each item sampled once and graded by every grader

How a target is addressed through the gateway (chat completions, temperature 0 unless the suite says):

    target_kind    target            request
    environment    "bot", "bot@dev"  POST /v1/chat/completions, model = target (fine-tuned model names too)
    deployment     "dep-3f9a…"       POST /deployments/{id}/predict with the same chat body

The gateway's OpenAI routes name models and environments, not deployments; a deployment's predict
route takes a chat body (an llm replica answers it as a chat completion), so that is how one
deployment is asked, still with the openai client and its retries.

An item's score is the mean of its graders' scores and it passes when every grader passes. The
summary holds the mean score with its 95% Student t-interval and the pass rate with its 95% Wilson
interval (see `slipway.evals.summary`), overall and per grader. A sample whose request fails
scores 0 with the error as its rationale; a run in which every request fails is `failed`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
from openai.types.chat import ChatCompletion

from slipway.errors import SlipwayError
from slipway.evals.catalog import Sampling, SuiteCatalog
from slipway.evals.graders import GradeResult, Grader, grade_any
from slipway.evals.suite import EvalItem
from slipway.evals.summary import RunSummary, summarise
from slipway.store import EvalResultRecord, EvalRunRow, Store

log = logging.getLogger(__name__)

INTERVALS = "mean score: 95% Student t-interval; pass rate: 95% Wilson score interval"
RESULTS_BATCH = 20
AUTH_GRACE_SECONDS = 5.0  # a key created for a run reaches the gateway with the next routing snapshot


class SampleError(SlipwayError):
    """The target could not answer an item."""


@dataclass(frozen=True)
class ItemOutcome:
    """One item: what was sent, what came back, and every grader's verdict."""

    index: int
    item: EvalItem
    output: str | None
    error: str | None
    grades: list[tuple[str, GradeResult]] = field(default_factory=list)

    @property
    def score(self) -> float:
        return sum(g.score for _, g in self.grades) / len(self.grades) if self.grades else 0.0

    @property
    def passed(self) -> bool:
        return bool(self.grades) and all(g.passed for _, g in self.grades)

    def record(self) -> EvalResultRecord:
        rationale = self.error or "; ".join(f"{name}: {g.rationale}" for name, g in self.grades)
        sample = {"messages": self.item.chat(), "ideal": self.item.ideal, "output": self.output, "error": self.error,
                  "grades": [{"grader": name, "score": g.score, "passed": g.passed, "rationale": g.rationale}
                             for name, g in self.grades]}
        return EvalResultRecord(item_index=self.index, sample=sample, score=self.score, passed=self.passed,
                                rationale=rationale[:4000])


Sample = Callable[[list[dict[str, Any]]], Any]
"""async (messages) -> the answer's text; raises SampleError when the target cannot answer."""


async def run_items(items: Sequence[EvalItem], graders: Sequence[Grader], sample: Sample, *, concurrency: int = 4,
                    on_outcome: Callable[[ItemOutcome], Any] | None = None,
                    skip: set[int] = frozenset()) -> list[ItemOutcome]:  # type: ignore[assignment]
    """Sample and grade every item (but those in `skip`), at most `concurrency` at once, in item order."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, item: EvalItem) -> ItemOutcome:
        async with gate:
            try:
                output = await sample(item.chat())
            except SampleError as exc:
                failed = GradeResult(score=0.0, passed=False, rationale=f"request failed: {exc.message}")
                outcome = ItemOutcome(index, item, None, exc.message, [(g.name, failed) for g in graders])
            else:
                row = item.model_dump()
                grades = [(g.name, await _grade(g, row, output)) for g in graders]
                outcome = ItemOutcome(index, item, output, None, grades)
        if on_outcome is not None:
            await on_outcome(outcome)
        return outcome

    tasks = [one(i, item) for i, item in enumerate(items) if i not in skip]
    return sorted(await asyncio.gather(*tasks), key=lambda o: o.index)


async def _grade(grader: Grader, row: dict[str, Any], output: str) -> GradeResult:
    try:
        return await grade_any(grader, row, output)
    except SampleError as exc:  # the judge model could not answer: this grade fails, the run goes on
        return GradeResult(score=0.0, passed=False, rationale=f"the judge could not answer: {exc.message}")


def _summary_dict(summary: RunSummary) -> dict[str, Any]:
    return {"num_samples": summary.num_samples, "mean_score": summary.mean_score,
            "mean_score_ci": list(summary.mean_score_ci), "num_passed": summary.num_passed,
            "pass_rate": summary.pass_rate, "pass_rate_ci": list(summary.pass_rate_ci)}


def summarise_outcomes(outcomes: Sequence[ItemOutcome], grader_names: Sequence[str]) -> dict[str, Any]:
    """The run's summary: overall and per-grader means and pass rates with their 95% intervals."""
    overall = summarise(GradeResult(score=o.score, passed=o.passed, rationale="") for o in outcomes)
    per_grader = {name: _summary_dict(summarise(g for o in outcomes for n, g in o.grades if n == name))
                  for name in grader_names}
    return {**_summary_dict(overall), "num_items": len(outcomes), "num_errors": sum(1 for o in outcomes if o.error),
            "intervals": INTERVALS, "graders": per_grader}


# ---- asking a target through the gateway -----------------------------------------------------------

class GatewaySampler:
    """Asks one target for chat answers through the gateway with the official openai client."""

    def __init__(self, gateway_url: str, api_key: str, target_kind: str, target: str, sampling: Sampling, *,
                 transport: httpx.AsyncBaseTransport | None = None, timeout: float = 300.0) -> None:
        self.target_kind, self.target, self.sampling = target_kind, target, sampling
        root = gateway_url.rstrip("/")
        base_url = f"{root}/v1" if target_kind == "environment" else f"{root}/deployments/{target}"
        http_client = httpx.AsyncClient(transport=transport, timeout=timeout) if transport is not None else None
        self.client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=2, timeout=timeout,
                                         http_client=http_client)

    async def close(self) -> None:
        await self.client.close()

    async def __call__(self, messages: list[dict[str, Any]]) -> str:
        deadline = time.monotonic() + AUTH_GRACE_SECONDS
        while True:
            try:
                completion = await self._ask(messages)
                break
            except openai.AuthenticationError as exc:
                if time.monotonic() > deadline:
                    raise SampleError(f"the gateway refused the run's key: {_api_message(exc)}") from None
                await asyncio.sleep(0.1)
            except openai.APIStatusError as exc:
                raise SampleError(f"{self.target} answered {exc.status_code}: {_api_message(exc)}") from None
            except openai.APIError as exc:
                raise SampleError(f"{self.target} could not be reached: {exc}") from None
        try:
            content = completion.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            content = None
        if not isinstance(content, str):
            raise SampleError(f"{self.target} did not answer with a chat completion (no choices[0].message.content)")
        return content

    async def _ask(self, messages: list[dict[str, Any]]) -> ChatCompletion:
        options: dict[str, Any] = {"temperature": self.sampling.temperature}
        if self.sampling.max_tokens is not None:
            options["max_tokens"] = self.sampling.max_tokens
        if self.target_kind == "environment":
            chat: Any = messages  # the suite's messages are OpenAI chat messages as plain dicts
            return await self.client.chat.completions.create(model=self.target, messages=chat, **options)
        return await self.client.post("/predict", cast_to=ChatCompletion,
                                      body={"model": self.target, "messages": messages, **options})


def _api_message(exc: openai.APIStatusError) -> str:
    body = exc.body if isinstance(exc.body, dict) else {}
    error = body.get("error", body) if isinstance(body, dict) else {}
    return str(error.get("message") if isinstance(error, dict) and error.get("message") else exc.message)[:500]


# ---- the worker ------------------------------------------------------------------------------------

class EvalWorker:
    """Executes queued eval runs, one at a time, in `slipway up`'s event loop.

    `key_for(workspace_id)` returns an invoke key of that workspace (called in a worker thread);
    `transport`, when given, carries the openai client's requests (e.g. to the in-process gateway).
    """

    def __init__(self, store: Store, home: Path, *, gateway_url: str, key_for: Callable[[str], str],
                 transport: httpx.AsyncBaseTransport | None = None, poll_interval: float = 5.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.catalog = SuiteCatalog(store, home, clock=clock)
        self.gateway_url, self.key_for, self.transport = gateway_url, key_for, transport
        self.poll_interval = poll_interval
        self._clock = clock
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    def wake(self) -> None:
        """Look for queued runs now (safe from any thread)."""
        if self._loop is not None and self._wake is not None:
            try:
                self._loop.call_soon_threadsafe(self._wake.set)
            except RuntimeError:  # the loop has closed
                pass

    async def run_forever(self) -> None:
        self._loop, self._wake = asyncio.get_running_loop(), asyncio.Event()
        while True:
            try:
                await self.run_pending()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in one pass must not stop later runs
                log.exception("eval worker pass failed; retrying")
            try:
                await asyncio.wait_for(self._wake.wait(), timeout=self.poll_interval)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()

    async def run_pending(self) -> int:
        """Execute every queued or interrupted run, oldest first; returns how many were executed."""
        runs = await asyncio.to_thread(self.store.evals.list_unfinished_runs)
        for run in runs:
            await self.execute(run)
        return len(runs)

    async def execute(self, run: EvalRunRow) -> EvalRunRow | None:
        """Run one eval to succeeded or failed; None if another worker finished it first."""
        started = await asyncio.to_thread(self.store.evals.transition_run, run.id, "running", self._clock())
        if started is None:
            return None
        try:
            summary = await self._evaluate(run)
        except asyncio.CancelledError:
            raise  # stays running: the next start resumes it, keeping results already stored
        except Exception as exc:
            message = exc.message if isinstance(exc, SlipwayError) else f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, SlipwayError):
                log.exception("eval run %s failed", run.id)
            return await asyncio.to_thread(self.store.evals.transition_run, run.id, "failed", self._clock(),
                                           error={"message": message, "code": "eval_failed"})
        if summary["num_items"] and summary["num_errors"] == summary["num_items"]:
            first = await asyncio.to_thread(self.store.evals.list_results, run.workspace_id, run.id, limit=1)
            reason = first[0].rationale if first else "every request failed"
            return await asyncio.to_thread(self.store.evals.transition_run, run.id, "failed", self._clock(),
                                           summary=summary, error={"message": f"every item failed; first: {reason}",
                                                                   "code": "target_unavailable"})
        return await asyncio.to_thread(self.store.evals.transition_run, run.id, "succeeded", self._clock(),
                                       summary=summary)

    async def _evaluate(self, run: EvalRunRow) -> dict[str, Any]:
        suite_row = await asyncio.to_thread(self.store.evals.get_suite, run.workspace_id, run.suite_id)
        if suite_row is None:
            raise SlipwayError(f"suite {run.suite_id} no longer exists")
        key = await asyncio.to_thread(self.key_for, run.workspace_id)
        judges: list[GatewaySampler] = []

        def complete_for(model: str):
            judge = GatewaySampler(self.gateway_url, key, "environment", model, Sampling(temperature=0.0),
                                   transport=self.transport)
            judges.append(judge)
            return judge

        suite = self.catalog.load(suite_row, complete_for=complete_for)
        sampling = self.catalog.sampling(suite_row)
        sampler = GatewaySampler(self.gateway_url, key, run.target_kind, run.target, sampling,
                                 transport=self.transport)
        # A run resumed after a restart keeps the results it had; only the rest are asked again.
        done = await asyncio.to_thread(self._stored_results, run)
        pending: list[EvalResultRecord] = []
        num_done = len(done)

        async def flush() -> None:
            batch = list(pending)
            pending.clear()
            await asyncio.to_thread(self.store.evals.add_results, run.id, batch)
            await asyncio.to_thread(self.store.evals.transition_run, run.id, "running", self._clock(),
                                    expected=("running",),
                                    summary={"completed": num_done, "num_items": len(suite.items)})

        async def on_outcome(outcome: ItemOutcome) -> None:
            nonlocal num_done
            pending.append(outcome.record())
            num_done += 1
            if len(pending) >= RESULTS_BATCH:
                await flush()

        try:
            fresh = await run_items(suite.items, suite.graders, sampler, concurrency=sampling.concurrency,
                                    on_outcome=on_outcome, skip=set(done))
            if pending:
                await flush()
        finally:
            await sampler.close()
            for judge in judges:
                await judge.close()
        outcomes = sorted([*fresh, *(self._outcome_of(suite.items, r) for r in done.values())], key=lambda o: o.index)
        return summarise_outcomes(outcomes, [g.name for g in suite.graders])

    def _stored_results(self, run: EvalRunRow) -> dict[int, EvalResultRecord]:
        stored: dict[int, EvalResultRecord] = {}
        after = -1
        while True:
            page = self.store.evals.list_results(run.workspace_id, run.id, after_index=after, limit=1000)
            if not page:
                return stored
            stored.update({r.item_index: r for r in page})
            after = page[-1].item_index

    @staticmethod
    def _outcome_of(items: Sequence[EvalItem], record: EvalResultRecord) -> ItemOutcome:
        grades = [(g["grader"], GradeResult(score=g["score"], passed=g["passed"], rationale=g["rationale"]))
                  for g in record.sample.get("grades", [])]
        return ItemOutcome(record.item_index, items[record.item_index], record.sample.get("output"),
                           record.sample.get("error"), grades)
