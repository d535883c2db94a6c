"""The whole learning loop in one command: traffic, feedback, dataset, LoRA job, eval, gate, serve.

    python examples/loop/run.py                        # a fresh `slipway up` in a temporary folder
    python examples/loop/run.py --url http://127.0.0.1:8000 --key sk-slw-...   # or a running slipway

SmolLM2-135M-Instruct is asked to route support tickets to one of six queues and answer with the
queue name only; out of the box it answers with sentences and scores 0. The steps:

     1 start slipway           `slipway up` with a fresh SLIPWAY_HOME (skipped with --url)
     2 deploy production       examples/smollm2 with `capture: true`, promoted to production
     3 traffic                 the traffic tickets through the gateway, official `openai` client,
                               a handful of streams; each answer's trace id from x-slipway-trace-id
     4 feedback                per trace: score 1 when right, else score 0 and the corrected answer
     5 dataset                 POST /api/v1/datasets/from_traces (this run's tag, feedback given;
                               corrected outputs replace wrong answers)
     6 fine-tune               a LoRA job on the dataset, followed to its end; its adapter folder
     7 eval production         the held-out tickets as an eval suite (exact match after strip and
                               lowercase), run on the production deployment: the score before
     8 deploy candidate        examples/smollm2 plus `runtime.merge_adapter: <adapter>`, a new
                               deployment of smollm2 in development (--merge-in-process: the
                               adapter folded into a copy of the weights here, deployed as `weights:`)
     9 gate                    the suite on the candidate, then the gate promotes only if the
                               candidate's mean >= production's + 0.30 and does not regress
                               (what `slipway promote smollm2 --deployment N --gate SUITE:MIN,no-regression`
                               does; the production run of step 7 is its baseline)
    10 ask production          one held-out ticket per queue through the gateway, `openai` client
    11 refuse a damaged one    the adapter with its updates reversed and amplified, deployed merged
                               and gated the same way against the new production: the gate refuses
                               it and production keeps serving the promoted version

Prints the before and after scores and the time of each step. A failed step ends the run with one
line saying what failed, and exit code 1.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx
import openai
from pydantic import ValidationError

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1]))

import tickets  # noqa: E402
from local_slipway import LocalSlipway, StartError  # noqa: E402
from settings import DEFAULT_SETTINGS, TrainingSettings  # noqa: E402
from steps import (  # noqa: E402
    MAX_ANSWER_TOKENS,
    MODEL,
    TRAFFIC_STREAMS,
    LoopError,
    api_post,
    damage_adapter,
    console,
    deploy,
    follow_job,
    give_feedback,
    mean,
    merge_into_folder,
    run_eval,
    send_traffic,
    wait_serving,
    write_package,
)

from slipway.client import Client  # noqa: E402
from slipway.errors import SlipwayError  # noqa: E402

EVAL_CONCURRENCY = 8
GATE_MARGIN = 0.30


@dataclass
class Timings:
    """Wall-clock seconds of each step, in order."""

    started: float = field(default_factory=time.monotonic)
    steps: list[tuple[str, float]] = field(default_factory=list)

    @contextmanager
    def step(self, number: int, title: str) -> Iterator[None]:
        console.print(f"\n[bold][{number}/{NUM_STEPS}] {title}[/]")
        started = time.monotonic()
        yield
        seconds = time.monotonic() - started
        self.steps.append((title, seconds))
        console.print(f"      done in {seconds:.1f} s")

    @property
    def total(self) -> float:
        return time.monotonic() - self.started


# ---- the loop ---------------------------------------------------------------------------------------

NUM_STEPS = 11

@dataclass
class Outcome:
    """What the report prints: held-out scores before and after, traffic accuracy, the final answers."""

    before: float = 0.0
    after: float = 0.0
    traffic_right: int = 0
    traffic_total: int = 0
    shown: list[tuple[tickets.Ticket, str]] = field(default_factory=list)
    damaged: float = 0.0
    refusal: str = ""


def candidate_package(work: Path, name: str, adapter: Path, job: dict, *, merge_in_process: bool) -> Path:
    """examples/smollm2 with `adapter` folded in: by the replica (`runtime.merge_adapter`), or here."""
    if not merge_in_process:
        return write_package(work / name, merge_adapter=adapter)
    with console.status("      folding the adapter into a copy of the base weights…"):
        merged = merge_into_folder(Path(job["base_model_path"]), adapter, work / f"{name}-weights")
    return write_package(work / name, weights=merged)


def run_loop(url: str, admin_key: str, work: Path, settings: TrainingSettings, timings: Timings, *,
             merge_in_process: bool = False) -> Outcome:
    outcome = Outcome()
    try:
        split = tickets.split_tickets(settings.num_heldout, settings.num_traffic,
                                      heldout_templates=settings.heldout_templates)
    except ValueError as exc:
        raise LoopError(str(exc)) from None
    tag = f"loop-{secrets.token_hex(3)}"
    client = Client(url, admin_key, timeout=120.0)

    with timings.step(2, f"Deploying {MODEL} to production with trace capture on"):
        production = deploy(client, write_package(work / "production"), promote=True, what="production")
        wait_serving(client, production["id"])
        invoke_key = client.create_key(name=f"{tag}-invoke", scopes=["invoke"], models=[MODEL])["key"]
        console.print(f"      {production['id']} serves {MODEL} in production")

    with timings.step(3, f"Sending {len(split.traffic)} tickets as production traffic ({TRAFFIC_STREAMS} streams)"):
        answers = asyncio.run(send_traffic(url, invoke_key, split.traffic, tag))
        outcome.traffic_total = len(answers)
        outcome.traffic_right = sum(tickets.is_correct(a.text, a.ticket.queue) for a in answers)
        console.print(f"      production answered {outcome.traffic_right}/{len(answers)} right; "
                      f"e.g. {answers[0].text!r} where {answers[0].ticket.queue!r} was expected")

    with timings.step(4, "Reviewing every trace (score, and the right queue where the answer was wrong)"):
        right, corrected = give_feedback(client, answers)
        console.print(f"      {right} scored right, {corrected} corrected")

    with timings.step(5, "Building a dataset from the reviewed traces"):
        dataset = api_post(url, admin_key, "/api/v1/datasets/from_traces", {
            "name": f"support-routing {tag}", "model": MODEL, "tags": [tag], "has_feedback": True,
            "min_feedback_score": 1.0, "validation_fraction": 0.0, "seed": settings.seed})
        console.print(f"      {dataset['id']}: {dataset['train_rows']} training rows (corrected outputs in "
                      "place of wrong answers)")

    with timings.step(6, f"Fine-tuning a LoRA adapter of {MODEL}"):
        job = client.create_fine_tuning_job(MODEL, dataset["id"], hyperparameters=settings.hyperparameters(),
                                            suffix=tag, seed=settings.seed)
        console.print(f"      job {job['id']}: " + ", ".join(f"{k} {v}" for k, v in settings.hyperparameters().items()))
        job = follow_job(client, job["id"])
        console.print(f"      adapter at {job['adapter_path']} ({job.get('trained_tokens') or 0} tokens trained)")

    with timings.step(7, f"Evaluating production on {len(split.heldout)} held-out tickets"):
        suite = client.create_eval_suite(
            tickets.eval_items(split.heldout), name=f"support-routing-{tag}", graders=[tickets.EXACT_GRADER],
            description="Route a ticket to its queue; exact match after strip and lowercase.",
            sampling={"temperature": 0, "max_tokens": MAX_ANSWER_TOKENS, "concurrency": EVAL_CONCURRENCY})
        before = run_eval(client, suite["id"], production["id"], "production")
        outcome.before = mean(before)
        console.print(f"      production scores {outcome.before:.2f} (run {before['id']})")

    with timings.step(8, "Deploying the candidate: the base weights with the adapter folded in"):
        adapter = Path(job["adapter_path"])
        package = candidate_package(work, "candidate", adapter, job, merge_in_process=merge_in_process)
        candidate = deploy(client, package, promote=False, what="candidate")
        console.print(f"      {candidate['id']} (#{candidate['number']}) is ready in development")

    min_score = min(1.0, round(outcome.before + GATE_MARGIN, 4))
    gate = f"{suite['name']}:{min_score},no-regression"
    with timings.step(9, f"Gating the promotion: {gate}"):
        after = run_eval(client, suite["id"], candidate["id"], "candidate")
        outcome.after = mean(after)
        console.print(f"      candidate scores {outcome.after:.2f} (run {after['id']})")
        try:
            result = client.eval_gate(MODEL, suite=suite["id"], min_score=min_score, no_regression=True,
                                      deployment_id=candidate["id"], candidate_run=after["id"],
                                      baseline_run=before["id"])
        except SlipwayError as exc:
            raise LoopError(exc.message) from None
        console.print(f"      {result['message']}")
        wait_serving(client, candidate["id"])
        console.print(f"      production now serves {candidate['id']}")

    with timings.step(10, "Asking production one held-out ticket per queue through the gateway"):
        chat = openai.OpenAI(base_url=f"{url}/v1", api_key=invoke_key, max_retries=3, timeout=60.0)
        one_per_queue = {t.queue: t for t in reversed(split.heldout)}
        for ticket in (one_per_queue[queue] for queue in tickets.QUEUES if queue in one_per_queue):
            reply = chat.chat.completions.create(model=MODEL, messages=tickets.messages(ticket.text),
                                                 max_tokens=MAX_ANSWER_TOKENS, temperature=0)
            outcome.shown.append((ticket, reply.choices[0].message.content or ""))

    with timings.step(11, "Gating a deliberately damaged adapter the same way (it must be refused)"):
        damaged_adapter = damage_adapter(adapter, work / "damaged-adapter")
        damaged = deploy(client, candidate_package(work, "damaged", damaged_adapter, job,
                                                   merge_in_process=merge_in_process),
                         promote=False, what="damaged candidate")
        damaged_run = run_eval(client, suite["id"], damaged["id"], "damaged candidate")
        outcome.damaged = mean(damaged_run)
        console.print(f"      damaged candidate scores {outcome.damaged:.2f}; production scores {outcome.after:.2f}")
        try:
            client.eval_gate(MODEL, suite=suite["id"], min_score=min_score, no_regression=True,
                             deployment_id=damaged["id"], candidate_run=damaged_run["id"], baseline_run=after["id"])
        except SlipwayError as exc:
            outcome.refusal = " ".join(exc.message.split())
        else:
            raise LoopError(f"the gate promoted the damaged candidate {damaged['id']}")
        serving = {e["name"]: e for e in client.model(MODEL)["environments"]}["production"]["deployment_id"]
        if serving != candidate["id"]:
            raise LoopError(f"production moved to {serving} after a refused gate")
        console.print(f"      refused: {outcome.refusal}")
        console.print(f"      production still serves {candidate['id']}")
        client.deactivate(damaged["id"])
    return outcome


def print_report(outcome: Outcome, timings: Timings) -> None:
    console.print("\n[bold]Held-out tickets answered by production now[/]")
    for ticket, answer in outcome.shown:
        mark = "[green]right[/]" if tickets.is_correct(answer, ticket.queue) else "[red]wrong[/]"
        text = ticket.text if len(ticket.text) <= 70 else ticket.text[:67] + "..."
        console.print(f"  {mark}  {answer!r:>13}  expected {ticket.queue!r:<11}  {text}")
    console.print("\n[bold]Time per step[/]")
    for title, seconds in timings.steps:
        console.print(f"  {seconds:7.1f} s  {title}")
    console.print(f"\nA damaged adapter scored {outcome.damaged:.2f} and the gate refused it; production was "
                  "left as it was.")
    gain = (outcome.after - outcome.before) * 100
    console.print(f"\n[bold]Held-out exact match: before {outcome.before:.2f}, after {outcome.after:.2f} "
                  f"({gain:+.0f} points).[/] Production traffic had been right {outcome.traffic_right}/"
                  f"{outcome.traffic_total}. Total time {timings.total / 60:.1f} min.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="A running slipway (default: start a fresh one in a temporary folder).")
    parser.add_argument("--key", help="Its admin key (with --url; default: SLIPWAY_API_KEY or ~/.slipway/admin.key).")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary folder (SLIPWAY_HOME, logs).")
    parser.add_argument("--traffic", type=int, default=DEFAULT_SETTINGS.num_traffic,
                        help="Tickets sent as production traffic (the training data).")
    parser.add_argument("--heldout", type=int, default=DEFAULT_SETTINGS.num_heldout,
                        help="Held-out tickets in the eval suite.")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="Torch threads of the started slipway's replicas and job (OMP_NUM_THREADS; default 1).")
    parser.add_argument("--merge-in-process", action="store_true",
                        help="Fold the adapter into a copy of the base weights here and deploy that folder, for "
                             "a slipway whose engine has no runtime.merge_adapter.")
    args = parser.parse_args(argv)
    try:
        settings = TrainingSettings.model_validate({**DEFAULT_SETTINGS.model_dump(), "num_traffic": args.traffic,
                                                    "num_heldout": args.heldout})
    except ValidationError as exc:
        parser.error("; ".join(f"--{e['loc'][0].removeprefix('num_')}: {e['msg']}" for e in exc.errors()))
    if args.torch_threads < 1:
        parser.error(f"--torch-threads must be at least 1, got {args.torch_threads}")

    timings = Timings()
    work = Path(tempfile.mkdtemp(prefix="slipway-loop-"))
    local: LocalSlipway | None = None
    try:
        with timings.step(1, "Starting slipway" if not args.url else f"Using slipway at {args.url}"):
            if args.url:
                url, admin_key = args.url.rstrip("/"), args.key or Client(args.url).api_key
            else:
                local = LocalSlipway.start(work, keep_home=args.keep, torch_threads=args.torch_threads)
                url, admin_key = local.url, local.admin_key
                console.print(f"      {url}, SLIPWAY_HOME={local.home} (log: {local.log_path})")
        outcome = run_loop(url, admin_key, work, settings, timings, merge_in_process=args.merge_in_process)
    except (LoopError, StartError, SlipwayError, openai.OpenAIError, httpx.HTTPError) as exc:
        message = " ".join((getattr(exc, "message", None) or str(exc) or type(exc).__name__).split())
        console.print(f"[red]error:[/] {message}", soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        console.print("[red]interrupted[/]")
        return 130
    finally:
        if local is not None:
            with console.status("Stopping slipway…"):
                local.stop()
        if args.keep or (args.url and args.merge_in_process):
            # With --url the candidate's merged weights must outlive this script: its slipway serves them.
            console.print(f"Kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print_report(outcome, timings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
