"""Typed settings of the routing policies: one model per policy, a description per field.

    LeastLoadConfig      exact scan (the default) or power of two choices
    BoundedLoadConfig    the load bound shared by the cache-aware policies
    PrefixAwareConfig    prompt-text prefix index: chunking and size
    KvAwareConfig        KV block overlap against load: weight, request cap, routed-block memory

The bound on load: a cache-aware policy may send a request to a replica other than the least
loaded one only while that replica's in-flight count is at most `load_factor * fewest + load_slack`,
where `fewest` is the smallest in-flight count among the candidates. Cache affinity pays for itself
only while the replica that holds the prefix is not the bottleneck.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LeastLoadConfig(_Settings):
    """How `least_load` compares replicas."""

    mode: Literal["exact", "two_choices"] = Field(
        "exact", description="exact: the fewest in flight among every candidate, ties taken in turn (best when "
                             "this process sees every request, as one gateway does). two_choices: sample two "
                             "candidates at random and take the less loaded (power of two choices; avoids herding "
                             "when several gateways route on stale or partial load).")
    seed: int | None = Field(
        None, description="Seed of the sampling for two_choices, for reproducible runs (simulator, tests); "
                          "None: seeded from the operating system, so gateways do not sample in step.")


class BoundedLoadConfig(_Settings):
    """The load bound of the cache-aware policies (see the module docstring)."""

    load_factor: float = Field(
        1.5, ge=1.0, description="A replica chosen for its cache may carry at most this many times the in-flight "
                                 "requests of the least loaded candidate (plus load_slack). 1.0 with slack 0: "
                                 "never leave the least loaded replica.")
    load_slack: int = Field(
        4, ge=0, description="In-flight requests a cache-holding replica may carry beyond load_factor times the "
                             "least loaded candidate's; keeps affinity when every replica is nearly idle.")

    def load_limit(self, fewest_in_flight: int) -> float:
        """The most in-flight requests a replica may carry to be chosen for its cache."""
        return self.load_factor * fewest_in_flight + self.load_slack


class PrefixAwareConfig(BoundedLoadConfig):
    """How `prefix_aware` indexes prompt prefixes it has routed."""

    chunk_chars: int = Field(
        64, ge=1, le=65_536, description="Characters per prefix chunk; a prompt is known by the chained hashes of "
                                         "its leading chunks, so prefixes shorter than one chunk never match.")
    max_prefix_chars: int = Field(
        4096, ge=1, le=1_048_576, description="Leading characters of a prompt that are indexed; bounds the work "
                                              "per request. Prompts that share this much go to the same replica.")
    min_match_ratio: float = Field(
        0.3, ge=0.0, le=1.0, description="Least share of a prompt's indexed chunks that its longest known prefix "
                                         "must cover for the prompt to follow that prefix; below it the prompt goes "
                                         "to the least loaded replica. A short prefix that every prompt shares (a "
                                         "chat template, a brief system prompt) then does not herd new "
                                         "conversations onto one replica. 0 follows any match.")
    load_weight: float = Field(
        4.0, ge=0.0, description="Matched prefix chunks one in-flight request is worth: the replica holding a "
                                 "prompt's prefix takes it only while its matched chunks are at least this many "
                                 "times its in-flight requests beyond the least loaded replica's. 0: the load "
                                 "bound alone decides, as it does for requests known only by prompt_key.")
    max_entries: int = Field(
        50_000, ge=1, description="Most prefix chunks remembered (each maps to the replica that last took it); "
                                  "the least recently routed are forgotten first. About 150 bytes each.")


class KvAwareConfig(BoundedLoadConfig):
    """How `kv_aware` weighs cached blocks against load (cost = blocks to prefill + load_weight * in flight)."""

    load_weight: float = Field(
        4.0, ge=0.0, description="Prompt blocks one in-flight request is worth: a replica holding k more of the "
                                 "prompt's blocks wins while it carries fewer than k / load_weight extra requests. "
                                 "0: cache overlap alone decides (within the load bound).")
    max_request_blocks: int = Field(
        1024, ge=1, description="Leading blocks of a request's hash chain that are considered; bounds the work "
                                "per request.")
    learn_routed: bool = Field(
        True, description="Treat the blocks of a request as cached on the replica it was just sent to, until "
                          "forgotten: replicas report their cache once per tick, and a burst of requests with "
                          "one prefix should not scatter before the next report.")
    max_entries: int = Field(
        50_000, ge=1, description="Most routed blocks remembered when learn_routed is on (block hash -> replica "
                                  "that last took it); the least recently routed are forgotten first.")
