"""The composition root of `slipway up`: store, backend, control plane and gateway in one process.

This is the one module that knows every concrete class. It opens the store, bootstraps the first
workspace and admin key, starts the reconciler loop, mounts the management API and the gateway
on one port (127.0.0.1), deploys the packages named on the command line, and prints how to call
them. Ctrl-C (SIGINT) or SIGTERM stops the loop, drains and stops the replicas, and exits.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
from pathlib import Path
from typing import Any

from rich.console import Console

from slipway.observe import configure_logging

log = logging.getLogger(__name__)

# Path prefixes served by the management API and by the dashboard; everything else is the
# gateway's data plane.
CONTROL_PREFIXES = ("/api/", "/internal/snapshot")
# The process's one Prometheus page: the control plane's families and the in-process gateway's.
CONTROL_PATHS = ("/metrics",)
DASHBOARD_PREFIXES = ("/ui/",)
DASHBOARD_PATHS = ("/", "/ui")


def slipway_home(home: Path | None = None) -> Path:
    path = home or Path(os.environ.get("SLIPWAY_HOME") or Path.home() / ".slipway")
    path = path.expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


class RootApp:
    """One ASGI app in front of the control API and the gateway, dispatching by path prefix.

    A plain prefix test keeps the gateway's hot path free of framework routing.
    """

    def __init__(self, control: Any, gateway: Any, on_startup, on_shutdown, dashboard: Any = None) -> None:
        self.control = control
        self.gateway = gateway
        self.dashboard = dashboard if dashboard is not None else control
        self._on_startup = on_startup
        self._on_shutdown = on_shutdown

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        path = scope.get("path", "")
        if path.startswith(CONTROL_PREFIXES) or path in CONTROL_PATHS:
            await self.control(scope, receive, send)
        elif path.startswith(DASHBOARD_PREFIXES) or path in DASHBOARD_PATHS:
            await self.dashboard(scope, receive, send)
        else:
            await self.gateway(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self._on_startup()
                except Exception as exc:  # report, so uvicorn exits with the reason
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                try:
                    await self._on_shutdown()
                finally:
                    await send({"type": "lifespan.shutdown.complete"})
                return


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _check_packages(packages: list[Path]) -> list[tuple[Path, bytes, str]]:
    """Validate each package before anything starts; (path, tarball, model name) per package."""
    from slipway.client import pack_package
    from slipway.errors import SpecError
    from slipway.spec.package import check_package_files, parse_package

    checked = []
    for path in packages:
        spec_file = path / "slipway.yaml"
        if not spec_file.is_file():
            raise SpecError(f"{path}: no slipway.yaml here; --deploy takes a package folder")
        spec = parse_package(spec_file.read_text(), source=str(spec_file))
        check_package_files(spec, {p.name for p in path.iterdir()}, source=str(path))
        checked.append((path, pack_package(path), spec.name))
    return checked


def base_model_folder(deployment: Any) -> Path:
    """The Hugging Face folder of an llm deployment's weights, for fine-tuning (a .gguf is converted once)."""
    from slipway.runtimes.gguf_convert import hf_folder_for
    from slipway.runtimes.weights import resolve_weights

    return hf_folder_for(resolve_weights(deployment.spec["weights"], Path(deployment.package_dir)))


class Node:
    """The wired-up objects of one `slipway up`, with its start-up and shutdown steps."""

    def __init__(self, home: Path, *, database_url: str | None = None) -> None:
        import httpx

        from slipway.backends.local import LocalBackend
        from slipway.control.api import create_control_app
        from slipway.control.autoscaler import Autoscaler, InProcessLoadSource
        from slipway.control.evaluation import EvalKeys, EvalServices
        from slipway.control.jobs import JobSupervisor
        from slipway.control.learning import LearningServices
        from slipway.control.plane import ControlPlane
        from slipway.evals.catalog import SuiteCatalog
        from slipway.evals.runner import EvalWorker
        from slipway.gateway import GatewayConfig, StoreTraceSink, StoreUsageSink, create_gateway_app
        from slipway.store import Store
        from slipway.train.catalog import DatasetCatalog
        from slipway.web import DashboardSessions, create_dashboard_app

        self.home = home
        self.store = Store.open(database_url, home)
        self.backend = LocalBackend(home)
        self.plane = ControlPlane(self.store, self.backend, home=home)
        self.workspace, _ = self.plane.bootstrap()
        # A request held for a deployment with no ready replica wakes the control loop, so the
        # autoscaler sees it queued and starts a replica now rather than at the next interval.
        self.gateway = create_gateway_app(self.plane.snapshots, StoreUsageSink(self.store),
                                          GatewayConfig(usage_journal_dir=home / "usage",
                                                        capture_journal_dir=home / "traces",
                                                        trace_redactor=os.environ.get("SLIPWAY_TRACE_REDACTOR") or None,
                                                        operator_workspace_id=self.plane.system_workspace_id),
                                          on_demand=lambda _deployment_id: self.plane.wake(),
                                          traces=StoreTraceSink(self.store))
        # The control loop reads this process's gateway load directly (no HTTP hop).
        self.plane.autoscaler = Autoscaler(InProcessLoadSource(self.gateway.load))
        self.sessions = DashboardSessions(self.store)
        # Fine-tuning jobs run beside the control loop; a registered fine-tuned model is published at once.
        self.jobs = JobSupervisor(self.store, home, base_model_folder=base_model_folder,
                                  on_model_registered=self.plane.publish)
        learning = LearningServices(datasets=DatasetCatalog(self.store, home), wake_jobs=self.jobs.wake)
        # Eval runs ask their targets through this process's gateway, in process (no port needed).
        self.evals = EvalWorker(self.store, home, gateway_url="http://slipway.internal", key_for=EvalKeys(self.plane),
                                transport=httpx.ASGITransport(app=self.gateway))
        evals_services = EvalServices(suites=SuiteCatalog(self.store, home), wake_runs=self.evals.wake)
        self.control = create_control_app(self.plane, session_lookup=self.sessions.principal, learning=learning,
                                          evals_services=evals_services,
                                          metrics_registries=[self.gateway.metrics_registry])
        self.dashboard = create_dashboard_app(self.plane, self.sessions)
        self.app = RootApp(self.control, self.gateway, self.startup, self.shutdown, dashboard=self.dashboard)
        self._loop_task: asyncio.Task | None = None
        self._jobs_task: asyncio.Task | None = None
        self._evals_task: asyncio.Task | None = None
        self._hook_tasks: list[asyncio.Task] = []
        self.after_startup: list = []

    async def startup(self) -> None:
        await self.plane.start()
        await self.gateway.startup()
        self._loop_task = asyncio.create_task(self.plane.run_forever(), name="slipway-control-loop")
        self._jobs_task = asyncio.create_task(self.jobs.run_forever(), name="slipway-fine-tuning-jobs")
        self._evals_task = asyncio.create_task(self.evals.run_forever(), name="slipway-eval-runs")
        # Kept referenced: the event loop holds only weak references to tasks.
        self._hook_tasks = [asyncio.create_task(hook()) for hook in self.after_startup]

    async def shutdown(self) -> None:
        tasks = [self._loop_task, self._jobs_task, self._evals_task, *self._hook_tasks]
        for task in tasks:
            if task is not None:
                task.cancel()
        await asyncio.gather(*(t for t in tasks if t), return_exceptions=True)
        try:
            await self.jobs.shutdown()  # job processes save a checkpoint; the next start resumes them
        except Exception:
            log.exception("stopping the fine-tuning job processes failed; the next start adopts or resumes them")
        try:
            await self.plane.shutdown(stop_replicas=True)
        finally:
            await self.gateway.shutdown()
            self.store.close()

    # Start-up deployments ------------------------------------------------------------------
    def deploy_if_changed(self, tarball: bytes, name: str) -> str:
        """Deploy and promote unless production already serves these exact package bytes."""
        digest = hashlib.sha256(tarball).hexdigest()
        model = self.store.models.get(self.workspace.id, name)
        if model is not None:
            production = self.store.environments.get(model.id, "production")
            for deployment in self.store.deployments.list_for_model(model.id):
                serving = production is not None and deployment.id in (production.deployment_id,
                                                                       production.pending_deployment_id)
                if serving and deployment.package_sha256 == digest and deployment.status != "failed":
                    return deployment.id
        return self.plane.deploy(self.workspace.id, tarball, promote=True).deployment.id

    def invoke_key(self) -> str:
        """A saved invoke key for the quickstart examples (created once, mode 600 like admin.key)."""
        from slipway.control.keys import write_secret_file

        path = self.home / "invoke.key"
        if path.exists():
            secret = path.read_text().strip()
            try:
                principal = self.plane.authenticate(secret)
                if principal.workspace_id == self.workspace.id:
                    return secret
            except Exception:
                pass
        created = self.plane.create_key(self.workspace.id, name="quickstart", scopes=["invoke"], models=None)
        write_secret_file(path, created.secret)
        return created.secret


def _banner(console: Console, url: str, home: Path, invoke_key: str, models: list[str]) -> None:
    model = models[0] if models else "MODEL"
    embedding = next((m for m in models if "minilm" in m), None)
    console.print(f"\n[bold green]slipway is up[/] at [bold]{url}[/]")
    console.print(f"  dashboard:        {url}/ui/ (sign in with the admin key)")
    console.print(f"  API and OpenAPI:  {url}/api/v1/openapi.json")
    console.print(f"  OpenAI base URL:  {url}/v1")
    console.print(f"  admin key:        {home / 'admin.key'} (the CLI uses it)")
    console.print(f"  invoke key:       {invoke_key}")
    if models:
        console.print(f"  models:           {', '.join(models)}")
    console.print("\n[bold]Try it[/]:")
    console.print(f"  curl {url}/models/{model}/predict -H 'Authorization: Bearer {invoke_key}' "
                  "-d '{\"text\": \"hello slipway\"}'", soft_wrap=True, highlight=False)
    if embedding:
        console.print(f"  curl {url}/v1/embeddings -H 'Authorization: Bearer {invoke_key}' "
                      f"-H 'Content-Type: application/json' -d '{{\"model\": \"{embedding}\", \"input\": [\"hello\"]}}'",
                      soft_wrap=True, highlight=False)
        console.print(f"  python -c \"from openai import OpenAI; c = OpenAI(base_url='{url}/v1', api_key='{invoke_key}'); "
                      f"print(len(c.embeddings.create(model='{embedding}', input=['hello']).data[0].embedding))\"",
                      soft_wrap=True, highlight=False)
    console.print("\nThe CLI: [bold]slipway ls[/], [bold]slipway deploy PATH --promote[/], [bold]slipway --help[/] "
                  "(in this virtual environment).")
    console.print("Ctrl-C stops slipway and its replicas.\n")


def run_up(*, port: int, packages: list[Path], home: Path | None, console: Console) -> None:
    """`slipway up`: serve until interrupted."""
    import uvicorn

    from slipway.errors import SlipwayError

    home = slipway_home(home)
    os.environ["SLIPWAY_HOME"] = str(home)
    log_dir = home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(os.environ.get("SLIPWAY_LOG_LEVEL", "INFO"), stream=open(log_dir / "slipway.log", "a"))
    if not _port_free(port):
        raise SlipwayError(f"port {port} on 127.0.0.1 is in use; stop what runs there or pass --port")
    checked = _check_packages(packages)
    with console.status("Opening the store…"):
        node = Node(home, database_url=os.environ.get("SLIPWAY_DATABASE_URL"))
    url = f"http://127.0.0.1:{port}"

    async def deploy_and_announce() -> None:
        names = []
        try:
            for path, tarball, name in checked:
                deployment_id = await asyncio.to_thread(node.deploy_if_changed, tarball, name)
                names.append(name)
                with console.status(f"Starting {name} ({path})…"):
                    while True:
                        row = await asyncio.to_thread(node.store.deployments.get, deployment_id)
                        if row is None or row.status in ("active", "failed"):
                            break
                        await asyncio.sleep(0.2)
                if row is not None and row.status == "failed":
                    console.print(f"[red]{name} failed to start[/]: see `slipway logs {name}`")
            invoke_key = await asyncio.to_thread(node.invoke_key)
            if not names:
                names = [m.name for m in await asyncio.to_thread(node.store.models.list, node.workspace.id)]
            _banner(console, url, home, invoke_key, names)
        except Exception as exc:
            log.exception("start-up deployments failed")
            console.print(f"[red]error:[/] {exc}")

    node.after_startup.append(deploy_and_announce)
    # The gateway's measured server settings (slipway/gateway/serve.py), with slipway's own logging.
    config = uvicorn.Config(node.app, host="127.0.0.1", port=port, loop="uvloop", http="httptools",
                            lifespan="on", access_log=False, proxy_headers=False, server_header=False,
                            date_header=False, backlog=2048, timeout_keep_alive=75, log_config=None,
                            timeout_graceful_shutdown=30)
    # Worker threads (store writes, the usage flusher) must not hold the event loop for the
    # default 5 ms switch interval: it would show in every proxied request's tail latency.
    sys.setswitchinterval(0.001)
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise SlipwayError(f"slipway could not start; see {log_dir / 'slipway.log'}")
