import pytest

from tests.corpus import asterisk_prompts, normalize_words, select_prompts, word_error_rate


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("Hello, World!", ["hello", "world"]),
        ("Press 1 for sales.", ["press", "one", "for", "sales"]),
        ("press one for sales", ["press", "one", "for", "sales"]),
        ("twenty-one", ["twenty", "one"]),
        ("21", ["twenty", "one"]),
        ("100", ["one", "hundred"]),
        ("2,500", ["two", "thousand", "five", "hundred"]),
        ("1st and 22nd", ["first", "and", "twenty", "second"]),
        ("the 20th", ["the", "twentieth"]),
        ("$5", ["five", "dollars"]),
        ("0800", ["zero", "eight", "zero", "zero"]),
        ("55512345", ["five", "five", "five", "one", "two", "three", "four", "five"]),
        ("press # or *", ["press", "pound", "or", "star"]),
        ("Party’s extension", ["party's", "extension"]),
        ("...to mute", ["to", "mute"]),
        ("", []),
    ],
)
def test_normalize_words(text: str, words: list[str]) -> None:
    assert normalize_words(text) == words


def test_wer_identical_after_normalisation_is_zero() -> None:
    assert word_error_rate(["Press 1, then #."], ["press one then pound"]) == 0.0


def test_wer_counts_substitutions_insertions_and_deletions() -> None:
    ref = "the cat sat on the mat"  # 6 words
    assert word_error_rate([ref], ["the cat sat on a mat"]) == pytest.approx(1 / 6)
    assert word_error_rate([ref], ["the cat sat on the big mat"]) == pytest.approx(1 / 6)
    assert word_error_rate([ref], ["cat sat on the mat"]) == pytest.approx(1 / 6)
    assert word_error_rate([ref], ["sat the cat on mat"]) == pytest.approx(3 / 6)
    assert word_error_rate([ref], [""]) == 1.0
    assert word_error_rate(["yes"], ["no no no"]) == 3.0  # insertions can push WER past 1


def test_wer_is_corpus_level_not_a_mean_of_sentences() -> None:
    # 1 error in 1 word and 0 errors in 9 words: 1/10 over the corpus, not (1 + 0) / 2.
    refs = ["yes", "one two three four five six seven eight nine"]
    hyps = ["no", "1 2 3 4 5 6 7 8 9"]
    assert word_error_rate(refs, hyps) == pytest.approx(0.1)


def test_wer_rejects_mismatched_or_empty_input() -> None:
    with pytest.raises(ValueError):
        word_error_rate(["a"], [])
    with pytest.raises(ValueError):
        word_error_rate(["..."], ["a"])


def test_prompts_have_text_and_audio_and_no_sound_descriptions() -> None:
    prompts = {p.name: p for p in asterisk_prompts()}
    assert len(prompts) > 500
    assert prompts["digits/1"].text == "one"
    assert prompts["letters/at"].text == "at"
    assert prompts["auth-thankyou"].text == "Thank you."
    for described in ("beep", "ascending-2tone", "tt-monkeys", "silence/1"):
        assert described not in prompts
    assert all(p.wav.is_file() and p.text for p in prompts.values())
    pcm, rate = prompts["auth-thankyou"].pcm()
    assert rate == 8000
    assert len(pcm) == pytest.approx(prompts["auth-thankyou"].duration * 8000 * 2)


def test_select_prompts_is_deterministic_and_varied() -> None:
    picked = select_prompts(20, seed=7, min_secs=1.5, max_secs=6.0)
    assert [p.name for p in picked] == [p.name for p in select_prompts(20, seed=7)]
    assert [p.name for p in picked] != [p.name for p in select_prompts(20, seed=8)]
    assert len({p.name for p in picked}) == 20
    durations = [p.duration for p in picked]
    assert all(1.5 <= d <= 6.0 for d in durations)
    assert min(durations) < 2.5 and max(durations) > 4.5
    assert all(len(p.text.split()) >= 3 for p in picked)
