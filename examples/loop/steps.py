"""How each step of the loop talks to slipway: packages, traffic, feedback, jobs, evals, promotion.

`run.py` calls these in order; each prints through the shared `console`, shows a Rich progress bar
while it waits (only on a terminal), and raises LoopError with one line saying what failed.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

import tickets
from slipway.client import Client
from slipway.errors import NotFoundError, SlipwayError, SpecError

MODEL = "smollm2"
BASE_PACKAGE = Path(__file__).resolve().parents[1] / "smollm2"
# A queue name is at most 2 tokens; the cap only cuts the base model's sentences short.
MAX_ANSWER_TOKENS = 8
TRAFFIC_STREAMS = 6
FEEDBACK_WAIT_SECONDS = 30.0
DEPLOY_TIMEOUT_SECONDS = 600.0
JOB_TIMEOUT_SECONDS = 3600.0

console = Console(highlight=False, soft_wrap=True)


class LoopError(Exception):
    """A step of the loop failed; the message is the one line printed."""


def progress_bar() -> Progress:
    """A bar for a long step; off when the output is not a terminal, so logs hold only the summary lines."""
    return Progress(TextColumn("      {task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=console, transient=True,
                    disable=not console.is_terminal)


# ---- packages ---------------------------------------------------------------------------------------

def write_package(folder: Path, *, merge_adapter: Path | None = None, weights: Path | None = None) -> Path:
    """examples/smollm2 with trace capture on and, for a candidate, the adapter to fold into its weights
    (or, with --merge-in-process, weights that have it folded in already)."""
    spec = yaml.safe_load((BASE_PACKAGE / "slipway.yaml").read_text())
    spec["capture"] = True
    if merge_adapter is not None:
        spec.setdefault("runtime", {})["merge_adapter"] = str(merge_adapter.resolve())
    if weights is not None:
        spec["weights"] = str(weights.resolve())
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "slipway.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    return folder


def merge_into_folder(base: Path, adapter: Path, destination: Path) -> Path:
    """The base weights with the adapter folded in, saved as a Hugging Face folder (--merge-in-process)."""
    import torch
    import transformers
    from peft import PeftModel

    transformers.logging.disable_progress_bar()
    transformers.logging.set_verbosity_error()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft asks transformers a deprecated question
        model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
        PeftModel.from_pretrained(model, adapter).merge_and_unload().save_pretrained(destination)
    transformers.AutoTokenizer.from_pretrained(base).save_pretrained(destination)
    return destination


def damage_adapter(adapter: Path, destination: Path) -> Path:
    """A copy of `adapter` whose updates point the other way, four times as far: a worse candidate.

    Every `lora_B` matrix is multiplied by -4, so the merged weights move away from what training
    found; the gate must refuse it.
    """
    from safetensors.torch import load_file, save_file

    shutil.copytree(adapter, destination)
    weights_file = destination / "adapter_model.safetensors"
    tensors = load_file(weights_file)
    save_file({name: tensor * -4 if "lora_B" in name else tensor for name, tensor in tensors.items()},
              weights_file)
    return destination


def deploy(client: Client, package: Path, *, promote: bool, what: str) -> dict[str, Any]:
    try:
        deployment = client.deploy(package, promote=promote)
    except SpecError as exc:
        if "merge_adapter" in exc.message:
            raise LoopError("this slipway cannot serve a merged adapter yet (its package spec has no "
                            f"runtime.merge_adapter): {' '.join(exc.message.split())}") from None
        raise
    with console.status(f"      starting the {what} replica ({deployment['id']}, #{deployment['number']})…"):
        return client.wait_ready(deployment["id"], timeout=DEPLOY_TIMEOUT_SECONDS)


# ---- traffic and feedback ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Answer:
    """What production answered to one traffic ticket, and the id of the trace the gateway kept."""

    ticket: tickets.Ticket
    text: str
    trace_id: str | None


async def wait_for_key(client: openai.AsyncOpenAI, timeout: float = 10.0) -> None:
    """A new key reaches the gateway with its next routing snapshot: wait until the gateway accepts it."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            await client.models.list()
            return
        except openai.AuthenticationError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def send_traffic(url: str, invoke_key: str, traffic: list[tickets.Ticket], tag: str) -> list[Answer]:
    """Every ticket as one chat completion through the gateway, TRAFFIC_STREAMS at a time."""
    client = openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=invoke_key, max_retries=3, timeout=120.0)
    await wait_for_key(client)
    streams = asyncio.Semaphore(TRAFFIC_STREAMS)
    answers: list[Answer] = []
    with progress_bar() as progress:
        bar = progress.add_task("tickets answered", total=len(traffic), note="")

        async def ask(ticket: tickets.Ticket) -> Answer:
            async with streams:
                raw = await client.chat.completions.with_raw_response.create(
                    model=MODEL, messages=tickets.messages(ticket.text), max_tokens=MAX_ANSWER_TOKENS,
                    temperature=0, extra_headers={"X-Slipway-Tags": tag})
            text = raw.parse().choices[0].message.content or ""
            answer = Answer(ticket, text, raw.headers.get("x-slipway-trace-id"))
            answers.append(answer)
            right = sum(tickets.is_correct(a.text, a.ticket.queue) for a in answers)
            progress.update(bar, advance=1, note=f"{right} right")
            return answer

        try:
            return await asyncio.gather(*(ask(t) for t in traffic))
        finally:
            await client.close()


def give_feedback(client: Client, answers: list[Answer]) -> tuple[int, int]:
    """A reviewer's verdict on each trace: score 1 when right, else 0 and the right queue. (right, corrected)"""
    right = corrected = 0
    with progress_bar() as progress:
        bar = progress.add_task("traces reviewed", total=len(answers), note="")
        for answer in answers:
            if answer.trace_id is None:
                raise LoopError("the gateway returned no x-slipway-trace-id: trace capture is off for the "
                                f"production deployment of {MODEL}")
            if tickets.is_correct(answer.text, answer.ticket.queue):
                _retry_until_stored(lambda: client.give_feedback(answer.trace_id, score=1.0))
                right += 1
            else:
                _retry_until_stored(lambda: client.give_feedback(answer.trace_id, score=0.0, label="wrong-queue",
                                                                 corrected_output=answer.ticket.queue))
                corrected += 1
            progress.update(bar, advance=1, note=f"{right} right, {corrected} corrected")
    return right, corrected


def _retry_until_stored(call: Any) -> Any:
    """Traces reach the store a moment after the answer (the gateway journals them): retry a 404 briefly."""
    deadline = time.monotonic() + FEEDBACK_WAIT_SECONDS
    while True:
        try:
            return call()
        except NotFoundError:
            if time.monotonic() > deadline:
                raise LoopError(f"a trace was not stored within {FEEDBACK_WAIT_SECONDS:.0f} s of its answer") from None
            time.sleep(0.5)


# ---- management routes the SDK has no method for ----------------------------------------------------

def api_post(url: str, admin_key: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = httpx.post(f"{url}{path}", json=body, headers={"Authorization": f"Bearer {admin_key}"}, timeout=120.0)
    if answer.status_code >= 400:
        try:
            message = answer.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = answer.text
        raise LoopError(f"POST {path} answered {answer.status_code}: {message}")
    return answer.json()


# ---- fine-tuning and evals --------------------------------------------------------------------------

def follow_job(client: Client, job_id: str) -> dict[str, Any]:
    """Show the job's steps and loss until it ends; the succeeded job with `adapter_path` and `base_model_path`."""
    deadline = time.monotonic() + JOB_TIMEOUT_SECONDS
    seen: set[str] = set()
    adapter_path = base_model_path = None
    with progress_bar() as progress:
        bar = progress.add_task(f"{job_id} starting", total=None, note="")
        while True:
            job = client.fine_tuning_job(job_id)
            for event in reversed(client.fine_tuning_events(job_id)):
                if event["id"] in seen:
                    continue
                seen.add(event["id"])
                data = event.get("data") or {}
                adapter_path = data.get("adapter_path", adapter_path)
                base_model_path = data.get("base_model_path", base_model_path)
                if event.get("type") == "metrics" and "step" in data:
                    progress.update(bar, total=data.get("total_steps"), completed=data["step"],
                                    note=f"loss {data.get('train_loss', float('nan')):.3f}")
                elif event.get("level") in ("warn", "error") or "started" in event["message"]:
                    progress.console.print(f"      {event['message']}", soft_wrap=True)
            progress.update(bar, description=f"{job_id} {job['status']}")
            if job["status"] in ("succeeded", "failed", "cancelled"):
                break
            if time.monotonic() > deadline:
                raise LoopError(f"fine-tuning job {job_id} did not finish within {JOB_TIMEOUT_SECONDS:.0f} s")
            time.sleep(1.0)
    if job["status"] != "succeeded":
        reason = ((job.get("error") or {}).get("message") or job["status"]).strip().splitlines()[0]
        raise LoopError(f"fine-tuning job {job_id} {job['status']}: {reason}")
    if adapter_path is None:
        raise LoopError(f"fine-tuning job {job_id} succeeded but no event named its adapter_path")
    return {**job, "adapter_path": adapter_path, "base_model_path": base_model_path}


def run_eval(client: Client, suite_id: str, deployment_id: str, what: str) -> dict[str, Any]:
    """Run the suite on one deployment with a progress bar; the succeeded run."""
    run = client.create_eval_run(suite_id, deployment_id)
    with progress_bar() as progress:
        bar = progress.add_task(f"{what} ({deployment_id})", total=None, note="")

        def show(current: dict[str, Any]) -> None:
            summary = current.get("summary") or {}
            progress.update(bar, total=summary.get("num_items"), completed=summary.get("completed", 0))

        try:
            return client.wait_eval_run(run["id"], on_progress=show)
        except SlipwayError as exc:
            raise LoopError(exc.message) from None


def mean(run: dict[str, Any]) -> float:
    return float(run["summary"]["mean_score"])


def wait_serving(client: Client, deployment_id: str) -> None:
    """Until production's traffic goes to `deployment_id` (a promotion waits for a ready replica)."""
    deadline = time.monotonic() + DEPLOY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        environments = {e["name"]: e for e in client.model(MODEL)["environments"]}
        if environments.get("production", {}).get("deployment_id") == deployment_id:
            return
        time.sleep(0.5)
    raise LoopError(f"production did not switch to {deployment_id} within {DEPLOY_TIMEOUT_SECONDS:.0f} s")
