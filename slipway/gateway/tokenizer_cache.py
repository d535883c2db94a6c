"""The prompts of kv_aware deployments as KV block hashes: the replicas' tokenizer, fetched once, used here.

    cache = TokenizerCache(pool, config)
    hashes = await cache.block_hashes(route, body, max_blocks)   # () until the tokenizer is here
    cache.prefetch(route, now)                                    # the stats poller's tick starts fetches early

A deployment's replicas all run one immutable package, so its tokenizer and KV block size are
fetched once, from any ready replica (`GET /tokenizer`), and built in a worker thread
(transformers is imported then, and only by gateways that route a kv_aware deployment). Until
the tokenizer is built, and for `tokenizer_retry_interval` after a failed fetch, that
deployment's requests carry no block hashes, and kv_aware routes them by load within its bound:
no request ever waits for a tokenizer.

Token ids come from the functions the replica's runtime uses (`spec.openai`:
`chat_prompt_token_ids`, `completion_prompt_token_ids`), over the same tokenizer files, so the
hashes (`routing.block_hash_chain` with the replica's block size) are the ones the replica
reports for the blocks it caches. A body the replica would refuse gets no hashes.

Cost: SmolLM2's tokenizer takes about 2.5 ms for a 1,000-token chat prompt (template, tokenize
and hash; measured on the project's 2-core CPU machine), far too long for the event loop, so
prompts are tokenized in one worker thread. One thread also means a tokenizer is never used by two
threads at once (Hugging Face tokenizers are not safe for that). With `MAX_PENDING` tokenizations
queued, the next request goes without hashes rather than wait longer.

Memory: at most `max_tokenizers` tokenizers (least recently used dropped, fetched again on
demand); entries exist only for deployments in the current snapshot (`retain`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import tempfile
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import orjson
from pydantic import TypeAdapter, ValidationError

from slipway.gateway.config import GatewayConfig
from slipway.gateway.replica_reads import ReplicaReadError, get_json
from slipway.gateway.table import DeploymentRoute
from slipway.gateway.upstream import UpstreamPool
from slipway.routing import block_hash_chain
from slipway.spec.openai import (
    ChatMessage, CompletionPrompt, PromptError, chat_prompt_token_ids, completion_prompt_token_ids, completion_prompts,
)

log = logging.getLogger(__name__)

MAX_PENDING = 64
"""Tokenizations waiting for the worker thread beyond which a request is routed without hashes."""
MAX_TOKENIZER_BYTES = 96 * 1024 * 1024
"""Largest GET /tokenizer answer accepted (JSON, binary files in base64)."""

_MESSAGES = TypeAdapter(list[ChatMessage])
_PROMPT: TypeAdapter[CompletionPrompt] = TypeAdapter(CompletionPrompt)


@dataclass(frozen=True)
class PromptTokenizer:
    """A deployment's tokenizer as its replicas load it, and their KV block size."""

    tokenizer: Any
    block_size: int

    def token_ids(self, payload: Mapping[str, Any]) -> list[int] | None:
        """The prompt's token ids exactly as a replica computes them: `messages` is a chat, `prompt` a
        completion (its first prompt, for a batch); None when the replica would refuse the body."""
        try:
            if "messages" in payload:
                messages = _MESSAGES.validate_python(payload["messages"])
                return chat_prompt_token_ids(self.tokenizer, messages) if messages else None
            if "prompt" in payload:
                prompts = completion_prompts(_PROMPT.validate_python(payload["prompt"]))
                return completion_prompt_token_ids(self.tokenizer, prompts[0]) if prompts else None
        except (ValidationError, PromptError, ValueError, TypeError):
            return None
        return None

    def block_hashes(self, payload: Mapping[str, Any], max_blocks: int | None = None) -> tuple[int, ...]:
        """The prompt's chained KV block hashes (`routing.block_hash_chain`); () without a prompt."""
        token_ids = self.token_ids(payload)
        return block_hash_chain(token_ids, self.block_size, max_blocks) if token_ids else ()


def _body_block_hashes(tokenizer: PromptTokenizer, body: bytes, max_blocks: int | None) -> tuple[int, ...]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        return ()
    return tokenizer.block_hashes(payload, max_blocks) if isinstance(payload, dict) else ()


def build_prompt_tokenizer(answer: Any) -> PromptTokenizer:
    """A PromptTokenizer from a replica's GET /tokenizer answer (files written to a temporary folder and
    loaded as the replica's engine loads them). Slow: seconds for the first one (imports transformers)."""
    if not isinstance(answer, dict) or not isinstance(answer.get("files"), dict):
        raise ValueError("the GET /tokenizer answer has no 'files' object; the replica runs an older slipway")
    block_size = answer.get("kv_block_size")
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"the GET /tokenizer answer has kv_block_size {block_size!r}, not a positive integer")
    files: dict[str, bytes] = {name: text.encode("utf-8") for name, text in answer["files"].items()
                               if isinstance(text, str)}
    for name, encoded in (answer.get("binary_files") or {}).items():
        if isinstance(encoded, str):
            files[name] = base64.b64decode(encoded)
    from transformers import AutoTokenizer  # slow import, only in gateways routing a kv_aware deployment

    with tempfile.TemporaryDirectory(prefix="slipway-tokenizer-") as folder:
        for name, data in files.items():
            if name != Path(name).name or name.startswith("."):
                raise ValueError(f"the GET /tokenizer answer names a file {name!r}, which is not a plain file name")
            (Path(folder) / name).write_bytes(data)
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    return PromptTokenizer(tokenizer, block_size)


@dataclass
class _Entry:
    """One deployment's tokenizer: here, on its way, failed until `retry_at`, or dropped for room."""

    tokenizer: PromptTokenizer | None = None
    fetching: asyncio.Task[None] | None = field(default=None, repr=False)
    retry_at: float = 0.0
    evicted: bool = False
    """Dropped to keep max_tokenizers; fetched again only when a request needs it."""


class TokenizerCache:
    def __init__(self, pool: UpstreamPool, config: GatewayConfig) -> None:
        self.pool = pool
        self.config = config
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._executor: ThreadPoolExecutor | None = None  # started with the first tokenizer
        self._pending = 0

    def get(self, deployment_id: str) -> PromptTokenizer | None:
        """The deployment's tokenizer when it is built; None otherwise (never waits)."""
        entry = self._entries.get(deployment_id)
        return entry.tokenizer if entry is not None else None

    def state(self, deployment_id: str) -> str:
        """'ready', 'fetching', 'failed' (until its retry time), 'evicted' (dropped for room) or 'absent'."""
        entry = self._entries.get(deployment_id)
        if entry is None:
            return "absent"
        if entry.tokenizer is not None:
            return "ready"
        if entry.fetching is not None:
            return "fetching"
        if entry.evicted:
            return "evicted"
        return "failed" if entry.retry_at else "absent"

    def prefetch(self, route: DeploymentRoute, now: float, *, on_demand: bool = False) -> None:
        """Start fetching `route`'s tokenizer unless it is here, on its way, failed recently, or (unless
        `on_demand`: a request needs it) was dropped for room."""
        deployment_id = route.entry.deployment_id
        entry = self._entries.get(deployment_id)
        if entry is None:
            entry = self._entries[deployment_id] = _Entry()
        elif entry.tokenizer is not None:
            self._entries.move_to_end(deployment_id)
            return
        elif entry.fetching is not None or now < entry.retry_at or (entry.evicted and not on_demand):
            return
        urls = [replica.url for replica in route.replicas if replica.ready]
        if urls:
            entry.fetching = asyncio.get_running_loop().create_task(
                self._fetch(deployment_id, entry, urls), name=f"slipway-tokenizer-{deployment_id}")

    async def block_hashes(self, route: DeploymentRoute, body: bytes, max_blocks: int | None) -> tuple[int, ...]:
        """The request's KV block hashes for `route`'s replicas; () while their tokenizer is not here, or
        when the body has no prompt the replicas would accept."""
        self.prefetch(route, time.monotonic(), on_demand=True)
        tokenizer = self.get(route.entry.deployment_id)
        if tokenizer is None:
            return ()
        if self._pending >= MAX_PENDING:
            return ()  # the worker is behind: route on load now rather than make this request wait longer
        if self._executor is None:
            self._executor = ThreadPoolExecutor(1, thread_name_prefix="gateway-tokenize")
        self._pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, _body_block_hashes, tokenizer, body, max_blocks)
        finally:
            self._pending -= 1

    def retain(self, deployment_ids: Sequence[str] | set[str]) -> None:
        """Forget the deployments not in `deployment_ids` (they left the routing snapshot)."""
        keep = set(deployment_ids)
        for deployment_id in [d for d in self._entries if d not in keep]:
            entry = self._entries.pop(deployment_id)
            if entry.fetching is not None:
                entry.fetching.cancel()

    def close(self) -> None:
        for entry in self._entries.values():
            if entry.fetching is not None:
                entry.fetching.cancel()
        self._entries.clear()
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None

    async def _fetch(self, deployment_id: str, entry: _Entry, urls: list[str]) -> None:
        config = self.config
        try:
            answer: Any = None
            failures: list[str] = []
            for url in urls:
                try:
                    answer = await get_json(self.pool, url, b"/tokenizer", timeout=config.tokenizer_fetch_timeout,
                                            max_bytes=MAX_TOKENIZER_BYTES)
                    break
                except ReplicaReadError as exc:
                    failures.append(exc.message)
            else:
                raise ReplicaReadError("; ".join(failures))
            tokenizer = await asyncio.to_thread(build_prompt_tokenizer, answer)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure means: route by load, try again later
            entry.retry_at = time.monotonic() + config.tokenizer_retry_interval
            log.warning("no tokenizer for kv_aware deployment %s, routing its requests by load for now "
                        "(retry in %gs): %s", deployment_id, config.tokenizer_retry_interval, exc)
        else:
            entry.tokenizer = tokenizer
            entry.evicted = False
            if self._entries.get(deployment_id) is entry:
                self._entries.move_to_end(deployment_id)  # the newest is the most recently used
            log.info("tokenizer of kv_aware deployment %s ready (KV block size %d)", deployment_id,
                     tokenizer.block_size)
            self._make_room()
        finally:
            entry.fetching = None

    def _make_room(self) -> None:
        """Drop the least recently used tokenizers beyond max_tokenizers."""
        held = [deployment_id for deployment_id, entry in self._entries.items() if entry.tokenizer is not None]
        for deployment_id in held[:max(0, len(held) - self.config.max_tokenizers)]:
            entry = self._entries[deployment_id]
            entry.tokenizer = None
            entry.evicted = True
