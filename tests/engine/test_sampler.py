"""Sampling: masks, penalties, greedy, seeded reproducibility, logprobs."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from slipway.engine.sampler import (
    Sampler, SamplingRow, apply_min_p, apply_penalties, apply_top_k, apply_top_p,
)
from slipway.engine.sampling_params import SamplingParams

NEG = float("-inf")


def logits_of(probs: list[float]) -> torch.Tensor:
    return torch.tensor([probs]).log()


def kept(logits: torch.Tensor) -> list[int]:
    return torch.nonzero(logits[0] > NEG).flatten().tolist()


def test_top_k_keeps_the_k_largest():
    logits = torch.tensor([[0.1, 3.0, 2.0, -1.0, 2.5], [1.0, 2.0, 3.0, 4.0, 5.0]])
    apply_top_k(logits, torch.tensor([2, 0]))
    assert torch.nonzero(logits[0] > NEG).flatten().tolist() == [1, 4]
    assert (logits[1] > NEG).all(), "k = 0 keeps everything"


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = logits_of([0.5, 0.3, 0.15, 0.05])
    apply_top_p(logits, torch.tensor([0.75]))
    assert kept(logits) == [0, 1]
    logits = logits_of([0.5, 0.3, 0.15, 0.05])
    apply_top_p(logits, torch.tensor([0.45]))
    assert kept(logits) == [0]
    logits = logits_of([0.5, 0.3, 0.15, 0.05])
    apply_top_p(logits, torch.tensor([1.0]))
    assert kept(logits) == [0, 1, 2, 3]


def test_min_p_drops_tokens_below_a_share_of_the_top():
    logits = logits_of([0.5, 0.3, 0.15, 0.05])
    apply_min_p(logits, torch.tensor([0.5]))
    assert kept(logits) == [0, 1]


def test_penalties_subtract_presence_once_and_frequency_per_count():
    logits = torch.zeros(2, 4)
    apply_penalties(logits, [[1, 1, 3], []], torch.tensor([0.5, 0.5]), torch.tensor([0.25, 0.25]))
    assert logits[0].tolist() == [0.0, -1.0, 0.0, -0.75]
    assert logits[1].tolist() == [0.0] * 4


def test_greedy_takes_the_argmax_after_penalties():
    sampler = Sampler()
    logits = torch.tensor([[1.0, 3.0, 2.9], [1.0, 3.0, 2.9]])
    rows = [SamplingRow(SamplingParams(temperature=0)),
            SamplingRow(SamplingParams(temperature=0, frequency_penalty=1.0), output_token_ids=[1])]
    assert [s.token_id for s in sampler.sample(logits, rows)] == [1, 2]


def test_seeded_rows_reproduce_regardless_of_batch():
    logits = torch.randn(1, 50)
    params = SamplingParams(temperature=1.0, seed=7)

    def draws(batch_noise: int) -> list[int]:
        sampler = Sampler(torch.Generator().manual_seed(batch_noise))
        generator = torch.Generator().manual_seed(7)
        out = []
        for _ in range(20):
            batch = torch.cat([torch.randn(batch_noise, 50), logits])
            rows = [SamplingRow(SamplingParams())] * batch_noise + [SamplingRow(params, generator=generator)]
            out.append(sampler.sample(batch, rows)[-1].token_id)
        return out

    first = draws(0)
    assert first == draws(3)
    assert len(set(first)) > 1, "temperature 1 over 50 tokens varies"


def test_draws_follow_the_distribution():
    sampler = Sampler(torch.Generator().manual_seed(0))
    probs = [0.6, 0.3, 0.1]
    rows = [SamplingRow(SamplingParams(temperature=1.0))] * 4000
    tokens = [s.token_id for s in sampler.sample(logits_of(probs).expand(4000, 3).clone(), rows)]
    for token, p in enumerate(probs):
        assert tokens.count(token) / 4000 == pytest.approx(p, abs=0.03)


def test_temperature_sharpens():
    sampler = Sampler(torch.Generator().manual_seed(0))
    rows = [SamplingRow(SamplingParams(temperature=0.1))] * 500
    tokens = [s.token_id for s in sampler.sample(logits_of([0.6, 0.4]).expand(500, 2).clone(), rows)]
    assert tokens.count(0) / 500 > 0.95


def test_masks_apply_when_drawing():
    sampler = Sampler(torch.Generator().manual_seed(0))
    logits = logits_of([0.4, 0.3, 0.2, 0.1]).expand(300, 4).clone()
    for params, allowed in [(SamplingParams(top_k=2), {0, 1}), (SamplingParams(top_p=0.6), {0, 1}),
                            (SamplingParams(min_p=0.6), {0, 1})]:
        tokens = {s.token_id for s in sampler.sample(logits, [SamplingRow(params)] * 300)}
        assert tokens == allowed


def test_logprobs_are_of_the_raw_model():
    sampler = Sampler()
    logits = logits_of([0.5, 0.25, 0.25])
    [token] = sampler.sample(logits, [SamplingRow(SamplingParams(temperature=0, logprobs=2, presence_penalty=2.0),
                                                  output_token_ids=[0])])
    assert token.token_id == 1
    assert token.logprob.logprob == pytest.approx(math.log(0.25))
    assert token.logprob.top[0] == (0, pytest.approx(math.log(0.5)))


def test_params_validate_with_reasons():
    with pytest.raises(ValidationError, match="at most 16 stop strings"):
        SamplingParams(stop=[str(i) for i in range(17)])
    with pytest.raises(ValidationError):
        SamplingParams(temperature=-1)
    assert SamplingParams(stop="x").stop == ("x",)
    assert SamplingParams(top_k=1).is_greedy


def test_suppressed_tokens_are_never_sampled_and_logprobs_stay_raw():
    sampler = Sampler(torch.Generator().manual_seed(0))
    logits = torch.tensor([[5.0, 1.0, 0.0], [5.0, 1.0, 0.0], [5.0, 1.0, 0.0]])
    rows = [SamplingRow(SamplingParams(temperature=0, logprobs=1), suppressed_token_ids=(0,)),
            SamplingRow(SamplingParams(temperature=1.0, seed=3), suppressed_token_ids=(0, 1)),
            SamplingRow(SamplingParams(temperature=0))]
    picked = sampler.sample(logits, rows)
    assert [s.token_id for s in picked] == [1, 2, 0]
    assert picked[0].logprob.top[0][0] == 0, "logprobs report the model's own distribution"
    assert logits[0, 0] == 5.0, "the caller's logits are not modified"


def test_min_tokens_must_fit_in_max_tokens():
    with pytest.raises(ValidationError, match=r"min_tokens \(5\) exceeds max_tokens \(4\)"):
        SamplingParams(max_tokens=4, min_tokens=5)
    assert SamplingParams(max_tokens=4, min_tokens=4).min_tokens == 4
