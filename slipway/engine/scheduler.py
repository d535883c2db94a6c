"""Continuous batching: which sequences run in the next step, and how many tokens each.

Every step has a budget of `max_num_batched_tokens`. Running sequences go first, oldest
first: a decode takes one token (plus its speculative drafts), a prompt still being prefilled
takes the next chunk that fits. When the cache cannot hold a running sequence's next tokens,
the newest running sequence is preempted (its blocks freed; it recomputes from the start later,
usually partly from the prefix cache) until it can. Then, if nothing was preempted, waiting
sequences are admitted oldest first while the budget, `max_num_seqs` and the cache allow;
a prompt too long for what is left of the budget starts as a chunk. Admission stops at the
first sequence that does not fit, so nobody overtakes an older request.

Short prompts first (`short_prefill_tokens` = T > 0). A prompt with at most T tokens left to
compute is short: a follow-up turn whose history is cached, a brief question. In a step shared with
other sequences:
  - a long prompt prefills at most T tokens, so no step is much longer than T tokens of prefill;
  - while a short prompt is ready, long prompts sit out the step, so the short one's first token
    costs one small step instead of waiting behind chunks of long ones. A long prompt sits out at
    most `MAX_LONG_PREFILL_DEFERRALS` steps in a row, then takes its chunk: it is slowed, never
    starved.
Within each kind arrival order holds. A prompt alone in the engine takes the whole budget. T = 0
(the default) serves prompts strictly by arrival, each taking what budget is left.

    budget 512, T = 128:   A (900 to prefill, older)   B arrives (30 to prefill, prefix cached)
    T = 0      step 1: A 512       step 2: A 388 + B 30     B's first token after both steps
    T = 128    step 1: A 512 (alone)    step 2: B 30        step 3: A 128 ...

A sequence with a LoRA adapter is admitted only once its adapter holds one of the `max_loras`
slots (`LoraTable.acquire`: loaded on first use, evicting the least recently used idle one);
while it runs it pins the slot. When every slot is pinned it waits, and so does every later
adapter sequence (they would keep the slots busy and starve it); base sequences may pass it.
A sequence whose adapter no longer reads from disk is dropped into `SchedulerOutput.failed`.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from slipway.engine.kv.base import NO_HIT
from slipway.engine.kv.manager import KVCacheManager
from slipway.engine.lora.adapter import LoraAdapterError
from slipway.engine.lora.table import LoraTable
from slipway.engine.sequence import Sequence, SequenceStatus


MAX_LONG_PREFILL_DEFERRALS = 4
"""Steps in a row a long prompt may sit out while short ones go first (see the module docstring)."""


@dataclass(frozen=True)
class ScheduledSequence:
    seq: Sequence
    num_new_tokens: int
    """Tokens computed for it this step, drafts included."""
    num_draft_tokens: int = 0
    """How many of those are speculative drafts (verified after the forward)."""

    @property
    def completes_prompt(self) -> bool:
        """After this step every real token is computed, so a new token is sampled."""
        return self.seq.num_computed_tokens + self.num_new_tokens - self.num_draft_tokens >= self.seq.num_tokens


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledSequence] = field(default_factory=list)
    preempted: list[Sequence] = field(default_factory=list)
    num_batched_tokens: int = 0
    failed: list[tuple[Sequence, LoraAdapterError]] = field(default_factory=list)
    """Sequences taken out of the queue because their adapter could not be loaded."""


@dataclass
class SchedulerCounters:
    num_preemptions: int = 0
    prefix_queried_tokens: int = 0
    prefix_hit_tokens: int = 0


class Scheduler:
    """Waiting and running queues over one KV cache manager; see the module docstring."""

    def __init__(self, kv: KVCacheManager, *, max_num_seqs: int, max_num_batched_tokens: int,
                 enable_chunked_prefill: bool = True, short_prefill_tokens: int = 0,
                 loras: LoraTable | None = None) -> None:
        self.kv = kv
        self.loras = loras
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.enable_chunked_prefill = enable_chunked_prefill
        self.short_prefill_tokens = short_prefill_tokens if enable_chunked_prefill else 0
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self.counters = SchedulerCounters()

    def add(self, seq: Sequence) -> None:
        """Queue a sequence (new, or forked with blocks already) in arrival order."""
        seq.status = SequenceStatus.WAITING
        _insert_by_arrival(self.waiting, seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> SchedulerOutput:
        shared = len(self.running) + len(self.waiting) > 1
        short = self.short_prefill_tokens if shared else 0
        defer_long = short > 0 and self._short_prefill_ready(short)
        out = self._schedule(short, defer_long)
        if defer_long and not out.scheduled and not out.preempted:
            # The short prompt could not start after all (no cache room, no adapter slot): nobody waits for it.
            # Sequences the first pass dropped (an adapter that no longer reads) stay reported.
            failed = out.failed
            out = self._schedule(short, False)
            out.failed[:0] = failed
        return out

    def _schedule(self, short: int, defer_long: bool) -> SchedulerOutput:
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens
        self._schedule_running(out, budget, short, defer_long)
        budget -= out.num_batched_tokens
        if not out.preempted:
            self._admit_waiting(out, budget, short, defer_long)
        return out

    def finish(self, seq: Sequence) -> None:
        """Take a finished or aborted sequence out of the queues and free its blocks."""
        if seq in self.running:
            self.running.remove(seq)
            self._release_adapter(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        seq.status = SequenceStatus.FINISHED
        self.kv.free(seq.seq_id)

    def _schedule_running(self, out: SchedulerOutput, budget: int, short: int, defer_long: bool) -> None:
        index = 0
        while index < len(self.running) and budget > 0:
            seq = self.running[index]
            num_drafts = len(seq.spec_token_ids)
            num_real = self._prefill_chunk(seq, seq.num_tokens - seq.num_computed_tokens, short, defer_long)
            if num_real == 0:
                index += 1
                continue
            num_new = num_real + num_drafts
            if num_new > budget:
                # Drop the drafts that do not fit first; then prefill as much as fits.
                num_drafts = max(0, num_drafts - (num_new - budget))
                num_new = budget
            while self.kv.allocate_slots(seq.seq_id, seq.num_computed_tokens + num_new) is None:
                victim = self.running.pop()
                self._preempt(victim)
                out.preempted.append(victim)
                if victim is seq:
                    return
            del seq.spec_token_ids[num_drafts:]
            out.scheduled.append(ScheduledSequence(seq, num_new, num_drafts))
            out.num_batched_tokens += num_new
            budget -= num_new
            index += 1

    def _admit_waiting(self, out: SchedulerOutput, budget: int, short: int, defer_long: bool) -> None:
        index = 0
        adapters_blocked = False  # a sequence waits for a slot: later adapter sequences wait too
        while index < len(self.waiting) and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[index]
            if seq.lora is not None:
                pinned = False if adapters_blocked else self._acquire_adapter(seq, out)
                if pinned is None:  # out of the queue: the next sequence moved to `index`
                    continue
                if not pinned:
                    adapters_blocked = True
                    index += 1
                    continue
            already_has_blocks = self.kv.has(seq.seq_id)  # forked from a sibling
            hit = NO_HIT if already_has_blocks else self.kv.find_prefix(seq.token_ids, seq.root_hash)
            num_computed = seq.num_computed_tokens if already_has_blocks else hit.num_tokens
            num_new = self._prefill_chunk(seq, seq.num_tokens - num_computed, short, defer_long)
            if num_new == 0:
                self._release_adapter(seq)
                index += 1
                continue
            if num_new > budget:
                if not self.enable_chunked_prefill:
                    self._release_adapter(seq)
                    return
                num_new = budget
            if self.kv.allocate_slots(seq.seq_id, num_computed + num_new, hit) is None:
                self._release_adapter(seq)
                return
            self.waiting.pop(index)
            if not already_has_blocks:
                self.counters.prefix_queried_tokens += seq.num_tokens
                self.counters.prefix_hit_tokens += hit.num_tokens
                if seq.num_output_tokens == 0:
                    seq.num_cached_tokens = hit.num_tokens
            seq.num_computed_tokens = num_computed
            seq.status = SequenceStatus.RUNNING
            _insert_by_arrival(self.running, seq)
            out.scheduled.append(ScheduledSequence(seq, num_new))
            out.num_batched_tokens += num_new
            budget -= num_new

    def _short_prefill_ready(self, short: int) -> bool:
        """Whether a short prompt could start this step: one running, or among the waiting that fit
        in the free sequence slots, with its cached prefix counted."""
        for seq in self.running:
            left = seq.num_tokens - seq.num_computed_tokens
            if 1 < left <= short or (left == 1 and seq.num_output_tokens == 0):
                return True
        for seq in self.waiting[:max(0, self.max_num_seqs - len(self.running))]:
            cached = (seq.num_computed_tokens if self.kv.has(seq.seq_id)
                      else self.kv.find_prefix(seq.token_ids, seq.root_hash).num_tokens)
            if seq.num_tokens - cached <= short:
                return True
        return False

    def _prefill_chunk(self, seq: Sequence, num_left: int, short: int, defer_long: bool) -> int:
        """Real tokens `seq` may compute this step, of the `num_left` it has: all of them, or for a
        long prompt (more than `short`, when set) at most `short`, or 0 while it sits out. A decode
        has one token left and is never cut."""
        if not 0 < short < num_left:
            return num_left
        if defer_long and seq.long_prefill_deferrals < MAX_LONG_PREFILL_DEFERRALS:
            seq.long_prefill_deferrals += 1
            return 0
        seq.long_prefill_deferrals = 0
        return short

    def _acquire_adapter(self, seq: Sequence, out: SchedulerOutput) -> bool | None:
        """Pin the slot of `seq`'s adapter: True, or False if none is free now. None: the adapter
        could not be read, and `seq` went from the queue into `out.failed`."""
        assert self.loras is not None and seq.lora is not None
        try:
            return self.loras.acquire(seq.lora)
        except LoraAdapterError as error:
            self.waiting.remove(seq)
            seq.status = SequenceStatus.FINISHED
            self.kv.free(seq.seq_id)
            out.failed.append((seq, error))
            return None

    def _release_adapter(self, seq: Sequence) -> None:
        if seq.lora is not None and self.loras is not None:
            self.loras.release(seq.lora)

    def _preempt(self, seq: Sequence) -> None:
        self._release_adapter(seq)
        self.kv.free(seq.seq_id)
        seq.num_computed_tokens = 0
        seq.spec_token_ids.clear()
        self.counters.num_preemptions += 1
        self.add(seq)


def _insert_by_arrival(queue: list[Sequence], seq: Sequence) -> None:
    bisect.insort_right(queue, seq, key=lambda s: (s.arrival, s.index))
