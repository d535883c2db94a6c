"""Prompt-lookup drafts and their verification (the engine-level exactness is in test_engine)."""

from slipway.engine.speculative import SpeculativeCounters, accepted_prefix_len, propose_ngram_drafts


def test_drafts_follow_the_latest_earlier_match_of_the_longest_tail():
    tokens = [1, 2, 3, 9, 9, 1, 2, 3, 7, 8, 5, 2, 3]
    # Tail [5, 2, 3] never occurred; tail [2, 3] last occurred at 6, followed by 7 8 5.
    assert propose_ngram_drafts(tokens, num_drafts=3, max_ngram=3) == [7, 8, 5]
    assert propose_ngram_drafts(tokens, num_drafts=1, max_ngram=3) == [7]


def test_no_match_no_drafts():
    assert propose_ngram_drafts([1, 2, 3, 4], num_drafts=3) == []
    assert propose_ngram_drafts([1], num_drafts=3) == []
    assert propose_ngram_drafts([1, 1], num_drafts=0) == []


def test_matches_must_be_token_aligned():
    # 256 and 1 share bytes with other alignments; only whole tokens count.
    tokens = [256, 1, 0, 0, 5, 1]
    assert propose_ngram_drafts(tokens, num_drafts=2, min_ngram=1, max_ngram=1) == [0, 0]


def test_drafts_stop_at_the_end_of_the_sequence():
    assert propose_ngram_drafts([4, 5, 4], num_drafts=5, max_ngram=1) == [5, 4]


def test_acceptance():
    assert accepted_prefix_len([5, 6, 7], [5, 6, 9, 1]) == 2
    assert accepted_prefix_len([5, 6, 7], [4, 6, 7, 1]) == 0
    assert accepted_prefix_len([5], [5, 2]) == 1
    counters = SpeculativeCounters(num_draft_tokens=8, num_accepted_tokens=6)
    assert counters.acceptance_rate == 0.75
    assert SpeculativeCounters().acceptance_rate == 0.0
