"""The `slipway` command line: Typer commands over `slipway.Client`, and `slipway up`.

Every command prints one clear line on error (no traceback) and exits non-zero. Long steps show
a Rich progress spinner. The admin key saved by `slipway up` is used unless SLIPWAY_API_KEY says
otherwise, so on a laptop every command just works.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from slipway.errors import SlipwayError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Slipway: package, deploy and serve models.")
keys_app = typer.Typer(no_args_is_help=True, help="Create, list and revoke API keys.")
app.add_typer(keys_app, name="keys")
bench_app = typer.Typer(no_args_is_help=True, help="Load-test an OpenAI-compatible server.")
app.add_typer(bench_app, name="bench")
jobs_app = typer.Typer(no_args_is_help=True, help="List, follow and cancel fine-tuning jobs.")
app.add_typer(jobs_app, name="jobs")
datasets_app = typer.Typer(no_args_is_help=True, help="Upload, list and delete fine-tuning datasets.")
app.add_typer(datasets_app, name="datasets")
evals_app = typer.Typer(no_args_is_help=True, help="Eval suites and runs against deployed models.")
app.add_typer(evals_app, name="evals")
suites_app = typer.Typer(no_args_is_help=True, help="Upload and list eval suites.")
evals_app.add_typer(suites_app, name="suites")

console = Console()
err_console = Console(stderr=True)


def _client():
    from slipway.client import Client

    return Client()


def _when(value: Any) -> str:
    """A Unix time or ISO string as 'YYYY-MM-DD HH:MM' UTC; empty for None."""
    if value in (None, ""):
        return ""
    if isinstance(value, (int, float)):
        return time.strftime("%Y-%m-%d %H:%M", time.gmtime(value))
    return str(value)[:16].replace("T", " ")


def _print_json(data: Any) -> None:
    console.print_json(json.dumps(data, default=str))


@app.command()
def up(
    port: int = typer.Option(8000, help="Port for the gateway, API and dashboard (127.0.0.1 only)."),
    deploy: list[Path] = typer.Option([], "--deploy", "-d", help="Package folders to deploy and promote at start."),
    home: Optional[Path] = typer.Option(None, help="State folder (default $SLIPWAY_HOME or ~/.slipway)."),
) -> None:
    """Start the control plane, gateway and dashboard in one process (Ctrl-C stops it and its replicas)."""
    from slipway.app import run_up

    run_up(port=port, packages=deploy, home=home, console=console)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                              "help_option_names": []})
def gateway(ctx: typer.Context) -> None:
    """Run a standalone gateway process that follows a control plane (see --help of the gateway)."""
    from slipway.gateway.serve import main as gateway_main

    gateway_main(list(ctx.args))


@app.command()
def init(
    name: str = typer.Argument(..., help="Model name: lowercase letters, digits and dashes."),
    kind: str = typer.Option("custom", "--kind", help="custom | embedding | llm"),
    directory: Optional[Path] = typer.Option(None, "--dir", help="Where to write it (default ./NAME)."),
) -> None:
    """Scaffold a model package that deploys as is."""
    from slipway.cli.scaffold import scaffold_package

    if kind not in ("custom", "embedding", "llm"):
        raise SlipwayError(f"--kind {kind!r} is not a package kind; use custom, embedding or llm")
    dest = scaffold_package(name, kind, directory or Path(name))  # type: ignore[arg-type]
    console.print(f"[green]Created[/] {dest}  (deploy it with: slipway deploy {dest} --promote)")


@app.command("deploy")
def deploy_cmd(
    path: Path = typer.Argument(..., help="Package folder with slipway.yaml."),
    env: Optional[str] = typer.Option(None, "--env", help="Environment to place it in (default development)."),
    promote: bool = typer.Option(False, "--promote", help="Promote to production once ready."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Wait until a replica is ready."),
) -> None:
    """Deploy a package as a new, immutable deployment of its model."""
    from slipway.spec.package import check_package_files, parse_package

    spec_file = path / "slipway.yaml"
    if not spec_file.is_file():
        raise SlipwayError(f"{path}: no slipway.yaml here; point at a package folder (slipway init NAME makes one)")
    spec = parse_package(spec_file.read_text(), source=str(spec_file))
    check_package_files(spec, {p.name for p in path.iterdir()}, source=str(path))
    client = _client()
    with console.status(f"Uploading {spec.name}…"):
        deployment = client.deploy(path, environment=env, promote=promote)
    console.print(f"Deployment [bold]{deployment['id']}[/] (#{deployment['number']}) of [bold]{spec.name}[/] created")
    if wait:
        with console.status("Starting replicas… (slipway logs shows their output)"):
            deployment = client.wait_ready(deployment["id"])
        console.print(f"[green]Ready[/]: {deployment['id']} is {deployment['status']}")


@app.command("ls")
def list_models() -> None:
    """List models, their environments and deployments."""
    client = _client()
    models = client.models()
    if not models:
        console.print("No models yet. Deploy one: slipway deploy examples/echo --promote")
        return
    table = Table("model", "environment", "deployment", "status", "replicas")
    for model in models:
        detail = client.model(model["name"])
        by_id = {d["id"]: d for d in detail.get("deployments", [])}
        for env in detail.get("environments", []):
            dep = by_id.get(env.get("deployment_id") or "")
            if dep is None:
                continue
            replicas = f"{dep.get('ready_replicas', 0)}/{dep.get('desired_replicas', 0)}"
            table.add_row(model["name"], env["name"], f"{dep['id']} (#{dep['number']})", dep["status"], replicas)
    console.print(table)


@app.command()
def predict(
    model: str = typer.Argument(..., help="Model name (name@env picks an environment)."),
    data: str = typer.Option("{}", "--data", "-d", help="JSON request body, or @file.json."),
) -> None:
    """Call a model's predict route through the gateway and print the result."""
    raw = Path(data[1:]).read_text() if data.startswith("@") else data
    try:
        body = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SlipwayError(f"--data is not valid JSON ({exc.msg} at position {exc.pos}); quote it like '{{\"x\": 1}}'")
    name, _, env = model.partition("@")
    _print_json(_client().predict(name, body, environment=env or None))


def _resolve_deployment(client, target: str) -> str:
    """Accept a deployment id or a model name (its production, else development, deployment)."""
    if target.startswith("dep-"):
        return target
    detail = client.model(target)
    envs = {e["name"]: e.get("deployment_id") for e in detail.get("environments", [])}
    deployment_id = envs.get("production") or envs.get("development")
    if not deployment_id:
        deployments = detail.get("deployments", [])
        if not deployments:
            raise SlipwayError(f"model {target!r} has no deployment; deploy one first")
        deployment_id = deployments[-1]["id"]
    return deployment_id


@app.command()
def logs(
    target: str = typer.Argument(..., help="Deployment id or model name."),
    tail: int = typer.Option(200, help="Lines per replica."),
) -> None:
    """Print the recent log lines of a deployment's replicas (including failed ones)."""
    client = _client()
    result = client.logs(_resolve_deployment(client, target), tail=tail)
    for replica in result.get("data", []):
        console.rule(f"{replica.get('replica_id')} ({replica.get('state', '?')})")
        sys.stdout.write(replica.get("logs", "") + "\n")


@app.command()
def scale(
    target: str = typer.Argument(..., help="Deployment id or model name."),
    replicas: Optional[int] = typer.Option(None, "--replicas", "-r", help="Fixed replica count (sets min_replica = max_replica = N; 0 sleeps until a request)."),
    min_replica: Optional[int] = typer.Option(None, "--min", help="Autoscaling min_replica."),
    max_replica: Optional[int] = typer.Option(None, "--max", help="Autoscaling max_replica."),
    concurrency_target: Optional[int] = typer.Option(None, help="Autoscaling concurrency_target."),
    scale_down_delay: Optional[str] = typer.Option(None, help="Autoscaling scale_down_delay, e.g. 60s."),
) -> None:
    """Set a deployment's replica count or autoscaling settings."""
    client = _client()
    deployment_id = _resolve_deployment(client, target)
    settings = {k: v for k, v in {"min_replica": min_replica, "max_replica": max_replica,
                                  "concurrency_target": concurrency_target,
                                  "scale_down_delay": scale_down_delay}.items() if v is not None}
    if settings:
        client.set_autoscaling(deployment_id, **settings)
    if replicas is not None:
        client.scale(deployment_id, replicas)
    if not settings and replicas is None:
        raise SlipwayError("nothing to change: pass --replicas N or an autoscaling option (--min, --max, ...)")
    console.print(f"[green]Updated[/] {deployment_id}")


@app.command()
def promote(
    model: str = typer.Argument(..., help="Model name."),
    deployment: str = typer.Option(..., "--deployment", help="Deployment id or number to promote."),
    env: str = typer.Option("production", "--env", help="Environment to promote into."),
    gate: Optional[str] = typer.Option(None, "--gate", help="SUITE:MIN[,no-regression]: run the suite on the "
                                       "candidate and the current deployment; promote only if the candidate's "
                                       "mean >= MIN (and >= the current one's)."),
    canary: Optional[int] = typer.Option(None, "--canary", metavar="PERCENT",
                                         help="Send only PERCENT% of the environment's requests to the deployment "
                                         "(a canary). Promote it again without --canary to complete it; "
                                         "`slipway rollback` ends it."),
) -> None:
    """Point an environment (production by default) at a deployment, or try it on part of the traffic first."""
    if canary is not None and not 1 <= canary <= 99:
        raise SlipwayError(f"--canary must be a percent between 1 and 99, got {canary}; leave it out to promote "
                           "the deployment fully")
    client = _client()
    if gate is not None:
        _gated_promote(client, model, deployment, env, gate, canary)
        return
    if deployment.isdigit():
        result = client.promote(model, number=int(deployment), environment=env, canary_percent=canary)
    else:
        result = client.promote(model, deployment_id=deployment, environment=env, canary_percent=canary)
    _print_promotion(model, env, result)


def _print_promotion(model: str, env: str, result: dict, why: str = "") -> None:
    """One line: the canary started, or the promotion done (or waiting for a ready replica)."""
    target = result["deployment_id"]
    why = f": {why}" if why else ""
    if result.get("canary_deployment_id") == target:
        console.print(f"[green]Canary[/] {model} {env}: {result['canary_percent']}% of requests -> {target}, the "
                      f"rest -> {result.get('serving_deployment_id')}{why}", highlight=False)
    elif result.get("pending"):
        console.print(f"[green]Promoted[/] {model} {env} -> {target}, serving once it has a ready replica "
                      f"({result.get('serving_deployment_id')} serves until then){why}", highlight=False)
    else:
        console.print(f"[green]Promoted[/] {model} {env} -> {target}{why}", highlight=False)


@app.command()
def rollback(
    model: str = typer.Argument(..., help="Model name."),
    env: str = typer.Option("production", "--env", help="Environment to roll back."),
) -> None:
    """Re-promote the environment's previous deployment."""
    result = _client().rollback(model, environment=env)
    console.print(f"[green]Rolled back[/] {model} {env} -> {result.get('deployment_id')}")


@keys_app.command("create")
def keys_create(
    name: str = typer.Option("", help="A label for the key."),
    scope: list[str] = typer.Option(["invoke"], "--scope", help="admin | invoke | metrics (repeatable)."),
    model: list[str] = typer.Option([], "--model", help="Limit an invoke key to these models (repeatable)."),
) -> None:
    """Create an API key; its secret is shown once."""
    key = _client().create_key(name=name, scopes=scope, models=model or None)
    console.print(f"Key [bold]{key['id']}[/] ({', '.join(key['scopes'])}) — store it now, it is not shown again:")
    print(key["key"])


@keys_app.command("ls")
def keys_list() -> None:
    """List the workspace's keys (never their secrets)."""
    table = Table("id", "name", "prefix", "scopes", "models", "created", "revoked")
    for column in table.columns[:3]:
        column.no_wrap = True
    for key in _client().keys():
        table.add_row(key["id"], key.get("name") or "", key.get("prefix", ""), ",".join(key["scopes"]),
                      ",".join(key.get("models") or []) or "all", _when(key.get("created_at")),
                      _when(key.get("revoked_at")))
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str = typer.Argument(..., help="Key id (from slipway keys ls).")) -> None:
    """Revoke a key; it stops working at once."""
    _client().revoke_key(key_id)
    console.print(f"[green]Revoked[/] {key_id}")


@app.command()
def usage(
    group_by: str = typer.Option("model", help="Comma list of model, key, day."),
    start: Optional[str] = typer.Option(None, help="From this date/time (ISO 8601)."),
    end: Optional[str] = typer.Option(None, help="Until this date/time (ISO 8601)."),
) -> None:
    """Aggregate usage (requests, input and output units, latency) by model, key and day."""
    rows = _client().usage(group_by=group_by, start=start, end=end)
    if not rows:
        console.print("No usage yet.")
        return
    columns = list(rows[0].keys())
    table = Table(*columns)
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    console.print(table)


@bench_app.command("serve")
def bench_serve(
    base_url: str = typer.Option("http://127.0.0.1:8000", "--base-url", help="Server to load."),
    model: Optional[str] = typer.Option(None, "--model", help="Model name (default: the first /v1/models lists)."),
    endpoint: str = typer.Option("chat", "--endpoint", help="chat | completions"),
    api_key: Optional[str] = typer.Option(None, "--api-key", help="Bearer key (default $SLIPWAY_API_KEY)."),
    dataset: str = typer.Option("random", "--dataset", help="random | multi-turn | trace"),
    num_prompts: int = typer.Option(100, help="Requests to send."),
    input_len: int = typer.Option(256, help="Prompt tokens (random dataset)."),
    output_len: int = typer.Option(128, help="Output tokens (random dataset)."),
    range_ratio: float = typer.Option(0.0, help="Spread of random lengths around the mean (0..1)."),
    prefix_len: int = typer.Option(0, help="Tokens of prefix shared by every random prompt."),
    num_conversations: int = typer.Option(8, help="Chats in the multi-turn dataset."),
    num_turns: int = typer.Option(4, help="Turns per chat in the multi-turn dataset."),
    tokenizer: Optional[Path] = typer.Option(None, help="Folder with tokenizer.json, for exact lengths."),
    trace: Optional[Path] = typer.Option(None, help="Azure CSV or Mooncake JSONL trace for arrivals and lengths."),
    trace_speedup: float = typer.Option(1.0, help="Replay the trace this many times faster."),
    trace_max_requests: int = typer.Option(1000, help="Most trace rows to replay."),
    trace_block_size: int = typer.Option(512, help="Tokens per Mooncake hash block after scaling."),
    max_total_len: int = typer.Option(2048, help="Scale trace lengths to fit this context."),
    arrival: Optional[str] = typer.Option(None, help="rate | trace (default: trace when --trace is given)."),
    request_rate: float = typer.Option(math.inf, help="Poisson requests/s (inf: all at once)."),
    burstiness: float = typer.Option(1.0, help="Gamma shape of inter-arrival times (1 = Poisson)."),
    max_concurrency: Optional[int] = typer.Option(None, help="Closed loop: at most this many in flight."),
    goodput: list[str] = typer.Option([], "--goodput", help="SLOs in ms, e.g. 'ttft:500 tpot:50'."),
    ignore_eos: bool = typer.Option(True, "--ignore-eos/--no-ignore-eos", help="Ask for exact output lengths."),
    seed: int = typer.Option(0, help="Seed for datasets and arrivals."),
    request_timeout: float = typer.Option(600.0, help="Seconds before one request counts as failed."),
    out: Optional[Path] = typer.Option(None, help="Write the full JSON report here."),
) -> None:
    """Benchmark an OpenAI-compatible server: TTFT, TPOT, ITL, E2E, throughput, goodput."""
    from slipway.bench import bench_command

    bench_command(base_url=base_url, model=model, endpoint=endpoint, api_key=api_key, dataset=dataset,
                  num_prompts=num_prompts, input_len=input_len, output_len=output_len, range_ratio=range_ratio,
                  prefix_len=prefix_len, num_conversations=num_conversations, num_turns=num_turns,
                  tokenizer=tokenizer, trace=trace, trace_speedup=trace_speedup,
                  trace_max_requests=trace_max_requests, trace_block_size=trace_block_size,
                  max_total_len=max_total_len, arrival=arrival, request_rate=request_rate, burstiness=burstiness,
                  max_concurrency=max_concurrency, goodput=goodput, ignore_eos=ignore_eos, seed=seed,
                  request_timeout_s=request_timeout, out=out, console=console)


@app.command()
def train(
    model: str = typer.Option(..., "--model", "-m", help="Base model: a model whose production (or development) "
                                                        "deployment is an llm package."),
    dataset: str = typer.Option(..., "--dataset", "-d", help="Chat fine-tuning JSONL file to upload, or a dataset "
                                                            "id (ds-...)."),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Passes over the data (default: auto)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Rows per step (default: auto)."),
    learning_rate_multiplier: Optional[float] = typer.Option(None, "--learning-rate-multiplier",
                                                             help="Scales the base learning rate (default: auto)."),
    lora_rank: Optional[int] = typer.Option(None, "--lora-rank", help="LoRA rank r (default 8)."),
    suffix: Optional[str] = typer.Option(None, "--suffix", help="Names the result <model>:ft-<suffix>."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Makes the run repeatable (default: random)."),
    validation_fraction: float = typer.Option(0.1, "--validation-fraction",
                                              help="Share of an uploaded file held out for validation."),
    follow: bool = typer.Option(True, "--follow/--no-follow", help="Show progress until the job ends."),
) -> None:
    """Fine-tune a LoRA adapter of a deployed llm on a dataset (uploading the file first if given one)."""
    client = _client()
    if Path(dataset).is_file():
        with console.status(f"Uploading {dataset}…"):
            created = client.create_dataset(Path(dataset), validation_fraction=validation_fraction)
        console.print(f"Dataset [bold]{created['id']}[/] ({created['train_rows']} training, "
                      f"{created['validation_rows']} validation rows)")
        for warning in created.get("warnings", []):
            console.print(f"  [yellow]warning[/] {warning}", highlight=False)
        dataset_id = created["id"]
    elif dataset.startswith("ds-"):
        dataset_id = dataset
    else:
        raise SlipwayError(f"--dataset {dataset!r} is neither a file nor a dataset id (ds-...); "
                           "`slipway datasets ls` lists your datasets")
    hyperparameters = {k: v for k, v in {"n_epochs": epochs, "batch_size": batch_size,
                                         "learning_rate_multiplier": learning_rate_multiplier,
                                         "lora_rank": lora_rank}.items() if v is not None}
    job = client.create_fine_tuning_job(model, dataset_id, hyperparameters=hyperparameters or None, suffix=suffix,
                                        seed=seed)
    console.print(f"Fine-tuning job [bold]{job['id']}[/] of [bold]{model}[/] created")
    if follow:
        _follow_job(client, job["id"])
    else:
        console.print(f"Follow it with: slipway jobs follow {job['id']}")


_FINISHED_JOB_STATUSES = ("succeeded", "failed", "cancelled")


def _follow_job(client, job_id: str, *, interval: float = 1.0) -> None:
    """Show a job's progress (step/total, loss) and its messages until it ends; raise if it did not succeed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    seen: set[str] = set()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[loss]}"),
               TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(f"{job_id} starting", total=None, loss="")
            while True:
                job = client.fine_tuning_job(job_id)
                for event in reversed(client.fine_tuning_events(job_id)):
                    if event["id"] in seen:
                        continue
                    seen.add(event["id"])
                    data = event.get("data") or {}
                    if event.get("type") == "metrics" and "step" in data:
                        loss = f"loss {data['train_loss']:.4f}" if isinstance(data.get("train_loss"), float) else ""
                        progress.update(task, total=data.get("total_steps"), completed=data["step"], loss=loss)
                    else:
                        color = {"warn": "yellow", "error": "red"}.get(event.get("level", ""), "dim")
                        progress.console.print(f"  [{color}]{event['message']}[/]", highlight=False, soft_wrap=True)
                progress.update(task, description=f"{job_id} {job['status']}")
                if job["status"] in _FINISHED_JOB_STATUSES:
                    break
                time.sleep(interval)
    except KeyboardInterrupt:
        err_console.print(f"Stopped following; the job keeps running (slipway jobs follow {job_id})")
        raise typer.Exit(130)
    if job["status"] == "succeeded":
        console.print(f"[green]Succeeded[/]: fine-tuned model [bold]{job['fine_tuned_model']}[/] "
                      f"({job.get('trained_tokens') or 0} tokens trained)")
        return
    if job["status"] == "failed":
        message = ((job.get("error") or {}).get("message") or "no reason given").strip().splitlines()[0]
        raise SlipwayError(f"fine-tuning job {job_id} failed: {message}")
    raise SlipwayError(f"fine-tuning job {job_id} was cancelled")


@jobs_app.command("ls")
def jobs_list(limit: int = typer.Option(20, help="Most jobs shown, newest first.")) -> None:
    """List fine-tuning jobs, newest first."""
    jobs = _client().fine_tuning_jobs(limit=limit)
    if not jobs:
        console.print("No fine-tuning jobs yet. Start one: slipway train --model BASE --dataset data.jsonl")
        return
    table = Table("id", "model", "status", "fine-tuned model", "dataset", "created", "finished")
    table.columns[0].no_wrap = True
    for job in jobs:
        table.add_row(job["id"], job["model"], job["status"], job.get("fine_tuned_model") or "",
                      job["training_file"], _when(job.get("created_at")), _when(job.get("finished_at")))
    console.print(table)


@jobs_app.command("follow")
def jobs_follow(job_id: str = typer.Argument(..., help="Job id (ftjob-...).")) -> None:
    """Show a job's progress until it ends."""
    _follow_job(_client(), job_id)


@jobs_app.command("cancel")
def jobs_cancel(job_id: str = typer.Argument(..., help="Job id (ftjob-...).")) -> None:
    """Cancel a fine-tuning job; a running one stops after saving a checkpoint."""
    job = _client().cancel_fine_tuning_job(job_id)
    console.print(f"[green]Cancelled[/] {job['id']}")


@datasets_app.command("ls")
def datasets_list(limit: int = typer.Option(100, help="Most datasets shown, newest first.")) -> None:
    """List datasets, newest first."""
    rows = _client().datasets(limit=limit)
    if not rows:
        console.print("No datasets yet. Upload one: slipway datasets create data.jsonl")
        return
    table = Table("id", "name", "source", "train rows", "validation rows", "created")
    table.columns[0].no_wrap = True
    for row in rows:
        table.add_row(row["id"], row["name"], row["source"], str(row["train_rows"]), str(row["validation_rows"]),
                      _when(row.get("created_at")))
    console.print(table)


@datasets_app.command("create")
def datasets_create(
    path: Path = typer.Argument(..., help="Chat fine-tuning JSONL file."),
    name: Optional[str] = typer.Option(None, help="A label (default: the file name)."),
    validation_fraction: float = typer.Option(0.1, help="Share of rows held out for validation."),
) -> None:
    """Upload a chat fine-tuning JSONL file as a dataset (every bad line is reported)."""
    created = _client().create_dataset(path, name=name, validation_fraction=validation_fraction)
    for warning in created.get("warnings", []):
        console.print(f"  [yellow]warning[/] {warning}", highlight=False)
    console.print(f"Dataset [bold]{created['id']}[/] ({created['train_rows']} training, "
                  f"{created['validation_rows']} validation rows)")


@datasets_app.command("rm")
def datasets_remove(dataset_id: str = typer.Argument(..., help="Dataset id (ds-...).")) -> None:
    """Delete a dataset and its files."""
    _client().delete_dataset(dataset_id)
    console.print(f"[green]Deleted[/] {dataset_id}")


# Evals --------------------------------------------------------------------------------------

def _grader_option(text: str) -> dict[str, Any]:
    """A --grader value: a type name (exact, includes, ...) or a JSON object like '{"type": "regex", ...}'."""
    text = text.strip()
    if text.startswith(("{", "[")):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SlipwayError(f"--grader {text!r} is not valid JSON ({exc.msg} at position {exc.pos})")
        if not isinstance(value, dict):
            raise SlipwayError(f"--grader {text!r} must be a JSON object like '{{\"type\": \"exact\"}}'")
        return value
    return {"type": text}


def _wait_runs(client, runs: dict[str, dict]) -> dict[str, dict]:
    """Follow runs (label -> run) with a Rich progress bar each; their finished rows by label."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    finished: dict[str, dict] = {}
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as progress:
        bars = {label: progress.add_task(f"{label} ({run['target']})", total=None) for label, run in runs.items()}
        while len(finished) < len(runs):
            for label, run in runs.items():
                if label in finished:
                    continue
                current = client.eval_run(run["id"])
                summary = current.get("summary") or {}
                total = summary.get("num_items")
                done = summary.get("completed", summary.get("num_items", 0) if current["status"] == "succeeded" else 0)
                progress.update(bars[label], total=total, completed=done)
                if current["status"] == "succeeded":
                    finished[label] = current
                elif current["status"] in ("failed", "cancelled"):
                    reason = (current.get("error") or {}).get("message", "no detail")
                    raise SlipwayError(f"eval run {run['id']} on {run['target']} {current['status']}: {reason}")
            time.sleep(0.3)
    return finished


def _interval(values: Any) -> str:
    return f"[{values[0]:.3f}, {values[1]:.3f}]" if values else ""


def _summary_table(rows: dict[str, dict]) -> Table:
    table = Table("run", "target", "mean score", "95% CI (t)", "pass rate", "95% CI (Wilson)", "items", "errors")
    for label, run in rows.items():
        s = run.get("summary") or {}
        table.add_row(f"{label} {run['id']}", run["target"], f"{s.get('mean_score', 0):.4f}",
                      _interval(s.get("mean_score_ci")), f"{s.get('pass_rate', 0):.4f}",
                      _interval(s.get("pass_rate_ci")),
                      str(s.get("num_items", "")), str(s.get("num_errors", "")))
    return table


@suites_app.command("create")
def evals_suites_create(
    path: Path = typer.Argument(..., help="JSONL file: one item per line, {\"input\" or \"messages\", \"ideal\"}."),
    name: str = typer.Option(..., "--name", help="Suite name, unique in the workspace."),
    grader: list[str] = typer.Option(..., "--grader", help="exact | includes | ... or a JSON grader config "
                                     "(repeatable), e.g. '{\"type\": \"regex\", \"pattern\": \"\\\\d+\"}'."),
    description: str = typer.Option("", help="What the suite checks."),
    temperature: float = typer.Option(0.0, help="Sampling temperature of runs."),
    max_tokens: Optional[int] = typer.Option(None, help="Most tokens per answer."),
    concurrency: int = typer.Option(4, help="Items in flight at once during a run."),
) -> None:
    """Upload an eval suite (every bad line is reported by number)."""
    if not path.is_file():
        raise SlipwayError(f"{path} is not a file; pass a JSONL file with one eval item per line")
    sampling = {"temperature": temperature, "max_tokens": max_tokens, "concurrency": concurrency}
    suite = _client().create_eval_suite(path.read_text(encoding="utf-8"), name=name,
                                        graders=[_grader_option(g) for g in grader], description=description,
                                        sampling={k: v for k, v in sampling.items() if v is not None})
    console.print(f"Suite [bold]{suite['name']}[/] ({suite['id']}, {suite['num_items']} items)")


@suites_app.command("ls")
def evals_suites_list() -> None:
    """List the workspace's eval suites."""
    table = Table("id", "name", "items", "graders", "created")
    for suite in _client().eval_suites():
        table.add_row(suite["id"], suite["name"], str(suite["num_items"]),
                      ", ".join(g.get("name") or g["type"] for g in suite["graders"]), _when(suite["created_at"]))
    console.print(table)


@evals_app.command("run")
def evals_run(
    suite: str = typer.Argument(..., help="Suite name or id."),
    target: str = typer.Option(..., "--target", help="model, model@env, a fine-tuned model, dep-… or model#N."),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="Follow the run and print its summary."),
) -> None:
    """Run a suite against a target through the gateway."""
    client = _client()
    run = client.create_eval_run(suite, target)
    console.print(f"Eval run [bold]{run['id']}[/] of {suite} on {run['target']} queued")
    if wait:
        finished = _wait_runs(client, {"run": run})
        console.print(_summary_table(finished))


@evals_app.command("ls")
def evals_list(
    suite: Optional[str] = typer.Option(None, help="Only runs of this suite."),
    limit: int = typer.Option(20, help="Most runs shown, newest first."),
) -> None:
    """List eval runs, newest first."""
    table = Table("id", "target", "status", "mean score", "pass rate", "created")
    for run in _client().eval_runs(suite=suite, limit=limit):
        s = run.get("summary") or {}
        finished = run["status"] == "succeeded"
        table.add_row(run["id"], run["target"], run["status"], f"{s['mean_score']:.4f}" if finished else "",
                      f"{s['pass_rate']:.4f}" if finished else "", _when(run["created_at"]))
    console.print(table)


def _gated_promote(client, model: str, deployment: str, env: str, gate_text: str, canary: int | None) -> None:
    """Run the gate's suite on the candidate and the environment's deployment, then ask the gate to promote
    (or, with `canary`, to start the candidate as the environment's canary)."""
    from slipway.evals.gate import parse_gate

    spec = parse_gate(gate_text)
    detail = client.model(model)
    by_number = {str(d["number"]): d["id"] for d in detail.get("deployments", [])}
    candidate = by_number.get(deployment) or next((d["id"] for d in detail.get("deployments", [])
                                                   if d["id"] == deployment), None)
    if candidate is None:
        raise SlipwayError(f"model {model!r} has no deployment {deployment!r}; `slipway ls` lists them")
    serving = next((e.get("deployment_id") for e in detail.get("environments", []) if e["name"] == env), None)
    runs = {"candidate": client.create_eval_run(spec.suite, candidate)}
    if serving and serving != candidate:
        runs[env] = client.create_eval_run(spec.suite, serving)
    finished = _wait_runs(client, runs)
    console.print(_summary_table(finished))
    baseline = finished.get(env)
    result = client.eval_gate(model, suite=spec.suite, min_score=spec.min_score, no_regression=spec.no_regression,
                              deployment_id=candidate, candidate_run=finished["candidate"]["id"],
                              baseline_run=baseline["id"] if baseline else None, environment=env,
                              canary_percent=canary)
    _print_promotion(model, env, result["promotion"], result["message"])


def main() -> None:
    """Entry point: run the Typer app, turning slipway errors into one clear line."""
    try:
        app(standalone_mode=False)
    except SlipwayError as exc:
        err_console.print(f"[red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # click usage errors and the unexpected: still one line
        import click

        if isinstance(exc, click.exceptions.Exit):
            sys.exit(exc.exit_code)
        if isinstance(exc, click.ClickException):
            err_console.print(f"[red]error:[/] {exc.format_message()}", highlight=False, soft_wrap=True)
            sys.exit(exc.exit_code)
        if isinstance(exc, click.exceptions.Abort):
            sys.exit(1)
        err_console.print(f"[red]error:[/] {type(exc).__name__}: {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
