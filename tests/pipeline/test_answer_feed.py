"""The text side of an answer spoken on one vendor stream."""

from __future__ import annotations

from pipeline.answer_feed import AnswerFeed
from pipeline.response import Response


class Stream:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bool]] = []
        self.closed = False

    async def send(self, text: str, flush: bool = False) -> None:
        self.sent.append((text, flush))

    async def close(self) -> None:
        self.closed = True


async def test_words_go_out_as_written_with_a_flush_at_each_sentence_end() -> None:
    stream, response = Stream(), Response()
    feed = AnswerFeed(stream, response)  # type: ignore[arg-type]
    for delta in ["Sure, your or", "der ships to", "day. Any", "thing else", "?"]:
        await feed.push(delta)
    assert await feed.finish() == "Anything else?"
    assert stream.sent == [
        ("Sure, your ", False),
        ("order ships ", False),
        ("today.", True),  # the sentence's end, flushed before the next one's words
        ("Anything ", False),
        ("else?", False),
    ]
    assert stream.closed
    texts = [s.text for s in response.sentences]
    assert texts == ["Sure, your order ships today.", "Anything else?"]


async def test_audio_is_placed_by_the_characters_it_speaks() -> None:
    stream, response = Stream(), Response()
    feed = AnswerFeed(stream, response)  # type: ignore[arg-type]
    await feed.push("Hello there, friend. How are")  # 18 characters, then 6 of the next
    assert [s.text for s in response.sentences] == ["Hello there, friend.", ""]
    assert [feed.sentence_at(n) for n in (0, 17, 18, 23, 99)] == [0, 0, 1, 1, 1]
