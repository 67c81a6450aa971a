"""Streamed LLM text cut into sentences for TTS."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.sentences import MIN_CHARS, SentenceChunker


def chunk(deltas: list[str]) -> list[str]:
    chunker = SentenceChunker()
    out = [sentence for delta in deltas for sentence in chunker.push(delta)]
    rest = chunker.flush()
    return [*out, rest] if rest is not None else out


def test_streamed_deltas_become_sentences():
    chunker = SentenceChunker()
    assert chunker.push("Hello there, how are") == []
    assert chunker.push(" you today?") == []  # the end is not certain until whitespace follows
    assert chunker.push(" I am fine, thanks. An") == [
        "Hello there, how are you today?",
        "I am fine, thanks.",
    ]
    assert chunker.push("d you") == []
    assert chunker.flush() == "And you"
    assert chunker.flush() is None


@pytest.mark.parametrize("mark", [".", "!", "?", ";", ":"])
def test_each_sentence_end(mark: str):
    chunker = SentenceChunker()
    assert chunker.push(f"Here is the first part{mark} and the rest") == [
        f"Here is the first part{mark}"
    ]
    assert chunker.flush() == "and the rest"


def test_no_cut_without_whitespace_or_at_commas():
    chunker = SentenceChunker()
    assert chunker.push("It costs 3.50 dollars, or e.g.ten euros, roughly ") == []
    assert chunker.flush() == "It costs 3.50 dollars, or e.g.ten euros, roughly"


def test_closing_quotes_and_brackets_stay_with_their_sentence():
    chunker = SentenceChunker()
    assert chunker.push('He said "stop right there." (It was late.) Then') == [
        'He said "stop right there."',
        "(It was late.)",
    ]


def test_short_fragments_wait_for_more():
    chunker = SentenceChunker()
    assert chunker.push("Hi. ") == []
    assert chunker.push("Yes! ") == []
    assert chunker.push("How can I help you today? Ok") == ["Hi. Yes! How can I help you today?"]
    assert chunker.flush() == "Ok"


def test_flush_of_nothing():
    chunker = SentenceChunker()
    assert chunker.flush() is None
    assert chunker.push("   ") == []
    assert chunker.flush() is None


@st.composite
def streamed(draw) -> tuple[str, list[str]]:
    """A text and the same text cut into deltas at arbitrary places."""
    word = st.text(st.characters(codec="utf-8"), min_size=1, max_size=8)
    end = st.sampled_from(["", "", ".", "!", "?", ";", ":", ".\"", "?)", ","])
    space = st.sampled_from([" ", " ", "  ", "\n", "\t", " \n "])
    words = draw(st.lists(st.tuples(word, end, space), max_size=40))
    text = "".join(w + e + s for w, e, s in words) + draw(st.text(max_size=5))
    cuts = sorted(draw(st.lists(st.integers(0, len(text)), max_size=20)))
    deltas = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]
    return text, deltas


@given(streamed())
def test_any_delta_boundaries_keep_every_word_in_order(case: tuple[str, list[str]]):
    text, deltas = case
    sentences = chunk(deltas)
    assert " ".join(sentences).split() == text.split()
    assert all(s and s == s.strip() for s in sentences)
    assert all(len(s) >= MIN_CHARS for s in sentences[:-1])


@given(streamed())
def test_delta_boundaries_do_not_change_the_sentences(case: tuple[str, list[str]]):
    text, deltas = case
    assert chunk(deltas) == chunk([text]) == chunk(list(text))
