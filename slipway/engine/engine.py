"""`LLMEngine`: the synchronous core. Requests in; each `step()` runs one batch and returns what
every advanced request produced.

    add_request ──► Scheduler.waiting ──► step(): propose drafts ─► schedule ─► runner.execute
                                                   ─► sample ─► verify drafts ─► append, stop checks
                                                   ─► cache full blocks ─► free finished ─► outputs

LoRA adapters: `add_lora(name, folder)` registers one (checked against the base at once);
`add_request(..., lora_name=name)` applies it to that request alone, in batches that mix
adapters and the base (engine/lora/ says how).

Not thread-safe: one thread drives it (`AsyncLLMEngine` runs it in its own thread). The
exceptions: `add_lora`, `remove_lora`, `loras` and `lora_folders`, safe from any thread while
it steps.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Sequence

import torch

from slipway.engine.build import build_engine_parts
from slipway.engine.config import EngineConfig
from slipway.engine.detokenizer import IncrementalDetokenizer
from slipway.engine.errors import EngineOverloadedError, EngineRequestError, PromptTooLongError
from slipway.engine.kv.manager import KVCacheManager
from slipway.engine.lora import LoraAdapter, LoraAdapterError, LoraTable
from slipway.engine.models.packed import can_pack
from slipway.engine.outputs import CompletionOutput, RequestOutput, accumulate
from slipway.engine.runner import ForwardInput
from slipway.engine.sampler import SampledToken, Sampler, SamplingRow
from slipway.engine.sampling_params import SamplingParams
from slipway.engine.scheduler import ScheduledSequence, Scheduler
from slipway.engine.sequence import Sequence as Seq
from slipway.engine.speculative import SpeculativeCounters, accepted_prefix_len, propose_ngram_drafts


class LLMEngine:
    """One model on one device serving many requests; see the module docstring."""

    def __init__(self, model_path: str | Path, config: EngineConfig | None = None, *,
                 tokenizer: Any | None | str = "auto") -> None:
        """Load `model_path` (a Hugging Face safetensors folder). `tokenizer`: "auto" loads the
        folder's own if it has one; None runs on token ids only (no text, no stop strings)."""
        self.config = config or EngineConfig()
        parts = build_engine_parts(model_path, self.config, tokenizer)
        self.model_config = parts.model_config
        self.runner = parts.runner
        self.tokenizer = parts.tokenizer
        self.device = parts.device
        self.max_model_len = parts.max_model_len
        self.kv = KVCacheManager(parts.num_kv_blocks, self.config.block_size,
                                 enable_prefix_caching=self.config.enable_prefix_caching)
        self.lora_table = LoraTable(parts.model_config, max_loras=self.config.max_loras,
                                    max_lora_rank=self.config.max_lora_rank, dtype=parts.dtype, device=self.device,
                                    pack=can_pack(self.device, parts.dtype))
        self.scheduler = Scheduler(self.kv, max_num_seqs=self.config.max_num_seqs,
                                   max_num_batched_tokens=self.config.max_num_batched_tokens,
                                   enable_chunked_prefill=self.config.enable_chunked_prefill,
                                   short_prefill_tokens=self.config.short_prefill_tokens,
                                   loras=self.lora_table)
        self.sampler = Sampler(torch.Generator(device=self.device).manual_seed(self.config.seed))
        eos = set(self.model_config.eos_token_ids)
        if self.tokenizer is not None and getattr(self.tokenizer, "eos_token_id", None) is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_token_ids = frozenset(eos)
        self.spec_counters = SpeculativeCounters()
        self._requests: dict[str, list[Seq]] = {}
        self._arrivals = itertools.count()
        self._seq_ids = itertools.count()
        self._num_steps = 0
        self.last_step_ran = False
        """Whether the latest step() had anything to run (False: everything waits for blocks)."""
        self._num_generated_tokens = 0
        self._failed: list[tuple[str, LoraAdapterError]] = []

    # -- LoRA adapters (any thread) ------------------------------------------------------------

    def add_lora(self, name: str, folder: str | Path) -> None:
        """Register the PEFT LoRA adapter in `folder` as `name`; its weights load on first use.
        Raises `LoraAdapterError` (an `EngineRequestError`) naming the file and the fix if it is
        not a LoRA adapter of this base, or `name` is taken by another folder. The same folder
        again is a no-op."""
        self.lora_table.register(name, folder)

    def remove_lora(self, name: str) -> bool:
        """Unregister `name`; False if it was not registered. Requests already using it finish with
        it; its weights are dropped once none does."""
        return self.lora_table.unregister(name)

    def loras(self) -> list[str]:
        """Registered adapter names, sorted."""
        return self.lora_table.names()

    def lora_folders(self) -> dict[str, Path]:
        """Registered adapter name -> its folder, by name."""
        return self.lora_table.folders()

    # -- requests --------------------------------------------------------------------------

    def validate_request(self, prompt_token_ids: Sequence[int], params: SamplingParams,
                         lora_name: str | None = None) -> None:
        """Raise `EngineRequestError` if the engine cannot serve this request; reads config and
        the adapter registry only."""
        if not prompt_token_ids:
            raise EngineRequestError("the prompt is empty; send at least one token", code="empty_prompt")
        if len(prompt_token_ids) >= self.max_model_len:
            raise PromptTooLongError(
                f"the prompt has {len(prompt_token_ids)} tokens but max_model_len is {self.max_model_len}, "
                "which leaves no room for a completion; shorten the prompt"
            )
        vocab = self.model_config.vocab_size
        if min(prompt_token_ids) < 0 or max(prompt_token_ids) >= vocab:
            raise EngineRequestError(f"prompt token ids must lie in [0, {vocab}); check the tokenizer matches the model")
        if params.stop and self.tokenizer is None:
            raise EngineRequestError("stop strings need a tokenizer, and this model has none; use stop_token_ids")
        if lora_name is not None:
            self._adapter(lora_name)

    def add_request(self, request_id: str, prompt_token_ids: Sequence[int], params: SamplingParams | None = None,
                    lora_name: str | None = None) -> None:
        """Queue a request, with the registered LoRA adapter `lora_name` if given; its outputs come
        from later `step()` calls under `request_id`."""
        params = params or SamplingParams()
        self.validate_request(prompt_token_ids, params)
        adapter = self._adapter(lora_name) if lora_name is not None else None
        if request_id in self._requests:
            raise EngineRequestError(f"request id {request_id!r} is already in flight; use a unique id")
        if len(self._requests) >= self.config.max_num_seqs + self.config.max_waiting_requests:
            raise EngineOverloadedError(
                f"{len(self._requests)} requests are already in flight, the most this engine queues; retry later"
            )
        arrival = next(self._arrivals)
        seqs = [self._new_sequence(request_id, index, prompt_token_ids, params, arrival, adapter)
                for index in range(params.n)]
        seqs[0].pending_children = seqs[1:]
        self._requests[request_id] = seqs
        self.scheduler.add(seqs[0])

    def abort_request(self, request_id: str) -> RequestOutput | None:
        """Drop a request at once, freeing its blocks; its last output (finish_reason "abort"),
        or None if it was not in flight."""
        seqs = self._requests.get(request_id)
        if seqs is None:
            return None
        for seq in seqs:
            if not seq.is_finished:
                seq.finish_reason = "abort"
                seq.pending_children = []
                self.scheduler.finish(seq)
        return self._request_output(request_id)

    def has_unfinished_requests(self) -> bool:
        return bool(self._requests)

    # -- the step --------------------------------------------------------------------------

    def step(self) -> list[RequestOutput]:
        """Run one batch; return the progress of every request that advanced in it. Requests
        that failed instead (their adapter no longer loads) are in `take_failed_requests()`."""
        self.lora_table.drop_unregistered()
        self._propose_drafts()
        schedule = self.scheduler.schedule()
        for seq, error in schedule.failed:
            self._fail_request(seq.request_id, error)
        scheduled = schedule.scheduled
        self.last_step_ran = bool(scheduled)
        if not scheduled:
            return []
        inputs = [self._forward_input(item) for item in scheduled]
        adapted = any(x.lora_slot is not None for x in inputs)
        logits = self.runner.execute(inputs, self.lora_table.stack() if adapted else None)
        rows = [self._sampling_row(item.seq) for item, x in zip(scheduled, inputs) for _ in range(x.num_logits)]
        sampled = self.sampler.sample(logits, rows)
        self._num_steps += 1

        changed: dict[str, None] = {}
        position = 0
        for item, x in zip(scheduled, inputs):
            if self._advance(item, sampled[position:position + x.num_logits]):
                changed[item.seq.request_id] = None
            position += x.num_logits
        return [self._request_output(request_id) for request_id in changed]

    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams | None = None, *,
                 lora_name: str | None = None) -> list[RequestOutput]:
        """Run prompts to completion (blocking), all with adapter `lora_name` if given; whole
        outputs, in the order of `prompts`."""
        ids = [f"generate-{next(self._arrivals)}-{i}" for i in range(len(prompts))]
        for request_id, prompt in zip(ids, prompts):
            self.add_request(request_id, prompt, params, lora_name=lora_name)
        deltas: dict[str, list[RequestOutput]] = {request_id: [] for request_id in ids}
        while any(request_id in self._requests for request_id in ids):
            for output in self.step():
                deltas[output.request_id].append(output)
            for request_id, error in self.take_failed_requests():
                if request_id in deltas:
                    raise error
        return [accumulate(deltas[request_id]) for request_id in ids]

    def take_failed_requests(self) -> list[tuple[str, LoraAdapterError]]:
        """Requests dropped since the last call because their adapter could not be loaded (its
        folder changed or vanished after it was registered), with the error to give their caller."""
        failed, self._failed = self._failed, []
        return failed

    def stats(self) -> dict[str, Any]:
        """Counters for /stats and metrics; cheap, a snapshot of this moment."""
        counters = self.scheduler.counters
        queried = counters.prefix_queried_tokens
        return {
            "requests": len(self._requests),
            "running": len(self.scheduler.running),
            "waiting": len(self.scheduler.waiting),
            "kv_blocks_total": self.kv.num_blocks,
            "kv_blocks_used": self.kv.num_used_blocks,
            "kv_blocks_cached": self.kv.pool.num_cached,
            "kv_block_size": self.kv.block_size,
            "prefix_cache_queried_tokens": queried,
            "prefix_cache_hit_tokens": counters.prefix_hit_tokens,
            "prefix_cache_hit_rate": counters.prefix_hit_tokens / queried if queried else 0.0,
            "num_preemptions": counters.num_preemptions,
            "spec_draft_tokens": self.spec_counters.num_draft_tokens,
            "spec_accepted_tokens": self.spec_counters.num_accepted_tokens,
            "spec_acceptance_rate": self.spec_counters.acceptance_rate,
            "num_steps": self._num_steps,
            "generated_tokens": self._num_generated_tokens,
            "max_model_len": self.max_model_len,
            "compile_seconds": self.compile_seconds,
            "decode_compiled": self.runner.compiled_decode is not None,
            "loras_registered": self.lora_table.num_registered,
            "loras_loaded": self.lora_table.num_loaded,
        }

    @property
    def compile_seconds(self) -> float | None:
        """How long compiling the decode step took; None while it runs eagerly (not asked for,
        still compiling in the background, or failed)."""
        compiled = self.runner.compiled_decode
        return compiled.compile_seconds if compiled is not None else None

    # -- internals -------------------------------------------------------------------------

    def _adapter(self, name: str) -> LoraAdapter:
        adapter = self.lora_table.get(name)
        if adapter is None:
            registered = ", ".join(self.lora_table.names()) or "none"
            raise EngineRequestError(f"no LoRA adapter named {name!r} is registered (registered: {registered}); "
                                     "register it with add_lora first", code="lora_not_found")
        return adapter

    def _fail_request(self, request_id: str, error: LoraAdapterError) -> None:
        if request_id in self._requests:
            self.abort_request(request_id)  # its other choices, if any, and their blocks
            self._failed.append((request_id, error))

    def _new_sequence(self, request_id: str, index: int, prompt: Sequence[int], params: SamplingParams,
                      arrival: int, adapter: LoraAdapter | None) -> Seq:
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed + index)
        detokenizer = None
        if self.tokenizer is not None:
            detokenizer = IncrementalDetokenizer(self.tokenizer, prompt, stop=params.stop,
                                                 skip_special_tokens=params.skip_special_tokens)
        return Seq(next(self._seq_ids), request_id, index, prompt, params, arrival,
                   generator=generator, detokenizer=detokenizer, lora=adapter)

    def _propose_drafts(self) -> None:
        spec = self.config.speculative
        if spec is None:
            return
        for seq in self.scheduler.running:
            params = seq.params
            if not seq.is_decoding or not params.is_greedy or params.has_penalties:
                continue
            if seq.num_output_tokens < params.min_tokens:
                continue  # its rows suppress the ends, which a draft window would need per position
            room = self.max_model_len - seq.num_tokens - 1
            if params.max_tokens is not None:
                room = min(room, params.max_tokens - seq.num_output_tokens - 1)
            seq.spec_token_ids = propose_ngram_drafts(
                seq.token_ids, num_drafts=min(spec.num_speculative_tokens, room),
                min_ngram=spec.prompt_lookup_min, max_ngram=spec.prompt_lookup_max,
            )

    def _sampling_row(self, seq: Seq) -> SamplingRow:
        # Output tokens matter to penalties only; copying them for every row would cost O(length).
        history = seq.output_token_ids if seq.params.has_penalties else ()
        suppressed: tuple[int, ...] = ()
        if seq.num_output_tokens < seq.params.min_tokens:  # this row samples output token num_output + 1
            ends = () if seq.params.ignore_eos else tuple(self.eos_token_ids)
            suppressed = ends + tuple(seq.params.stop_token_ids)
        return SamplingRow(seq.params, history, seq.generator, suppressed)

    def _forward_input(self, item: ScheduledSequence) -> ForwardInput:
        seq = item.seq
        start = seq.num_computed_tokens
        num_real = item.num_new_tokens - item.num_draft_tokens
        tokens = seq.token_ids[start:start + num_real] + seq.spec_token_ids[: item.num_draft_tokens]
        num_logits = 1 + item.num_draft_tokens if item.completes_prompt else 0
        slot = self.lora_table.slot_of(seq.lora) if seq.lora is not None else None
        return ForwardInput(tokens, start, self.kv.block_table(seq.seq_id), num_logits, slot)

    def _advance(self, item: ScheduledSequence, sampled: list[SampledToken]) -> bool:
        """Apply one step's result to a sequence; True if it produced tokens or finished."""
        seq = item.seq
        if not item.completes_prompt:
            seq.num_computed_tokens += item.num_new_tokens
            self.kv.cache_full_blocks(seq.seq_id, seq.token_ids, seq.num_computed_tokens, seq.root_hash)
            return False
        num_tokens_before = seq.num_tokens
        accepted = 0
        if item.num_draft_tokens:
            accepted = accepted_prefix_len(seq.spec_token_ids, [s.token_id for s in sampled])
            self.spec_counters.num_draft_tokens += item.num_draft_tokens
            self.spec_counters.num_accepted_tokens += accepted
        seq.spec_token_ids = []
        if seq.pending_children:
            self._start_children(seq)
        for token in sampled[: accepted + 1]:
            self._append_token(seq, token)
            if seq.finish_reason is not None:
                break
        # The cache now holds the last real token and every accepted draft.
        seq.num_computed_tokens = min(num_tokens_before + accepted, seq.num_tokens)
        self.kv.cache_full_blocks(seq.seq_id, seq.token_ids, seq.num_computed_tokens, seq.root_hash)
        if seq.finish_reason is not None:
            if seq.detokenizer is not None:
                seq.detokenizer.flush()
            self.scheduler.finish(seq)
        return True

    def _start_children(self, parent: Seq) -> None:
        """n > 1: the other choices share the parent's full prompt blocks and compute the rest."""
        shared = (parent.num_prompt_tokens - 1) // self.kv.block_size * self.kv.block_size
        for child in parent.pending_children:
            self.kv.fork(parent.seq_id, child.seq_id, shared)
            child.num_computed_tokens = shared
            child.num_cached_tokens = parent.num_cached_tokens
            self.scheduler.add(child)
        parent.pending_children = []

    def _append_token(self, seq: Seq, token: SampledToken) -> None:
        token_id = token.token_id
        seq.token_ids.append(token_id)
        self._num_generated_tokens += 1
        if seq.logprobs is not None and token.logprob is not None:
            seq.logprobs.append(token.logprob)
        params = seq.params
        # Short of min_tokens (this token counted) only the length limits end a sequence.
        may_stop = seq.num_output_tokens >= params.min_tokens
        stop_string = None
        if seq.detokenizer is not None:
            stop_string = seq.detokenizer.add_token(token_id, watch_stops=may_stop)
        if may_stop and not params.ignore_eos and token_id in self.eos_token_ids:
            seq.finish_reason = "stop"
        elif may_stop and token_id in params.stop_token_ids:
            seq.finish_reason, seq.stop_reason = "stop", token_id
        elif stop_string is not None:
            seq.finish_reason, seq.stop_reason = "stop", stop_string
        elif params.max_tokens is not None and seq.num_output_tokens >= params.max_tokens:
            seq.finish_reason = "length"
        elif seq.num_tokens >= self.max_model_len:
            seq.finish_reason = "length"

    def _request_output(self, request_id: str) -> RequestOutput:
        seqs = self._requests[request_id]
        outputs = []
        for seq in seqs:
            new_tokens = seq.token_ids[seq.num_prompt_tokens + seq.num_sent_tokens:]
            if not new_tokens and (not seq.is_finished or seq.finish_sent):
                continue
            seq.finish_sent = seq.is_finished
            text = seq.detokenizer.take_delta(finished=seq.is_finished) if seq.detokenizer is not None else ""
            logprobs = seq.logprobs[seq.num_sent_tokens:] if seq.logprobs is not None else None
            seq.num_sent_tokens = seq.num_output_tokens
            outputs.append(CompletionOutput(seq.index, new_tokens, text, logprobs,
                                            seq.finish_reason if seq.is_finished else None, seq.stop_reason))
        finished = all(seq.is_finished for seq in seqs)
        if finished:
            del self._requests[request_id]
        return RequestOutput(request_id, outputs, finished, seqs[0].num_prompt_tokens, seqs[0].num_cached_tokens)
