# ruff: noqa: RUF001 - full-width CJK punctuation is the subject under test
from __future__ import annotations

import random

import pytest

from shared.domain.text_split import split_for_stream, split_text


def non_space(text: str) -> str:
    return "".join(text.split())


def test_short_text_is_one_chunk_stripped_but_otherwise_unchanged() -> None:
    text = "  Hello there.\n\nA second  paragraph!  "
    assert split_text(text, max_chars=100) == ["Hello there.\n\nA second  paragraph!"]


@pytest.mark.parametrize("text", ["", "   ", "\n\t\n"])
def test_blank_text_gives_no_chunks(text: str) -> None:
    assert split_text(text, max_chars=10) == []


def test_english_sentences_are_packed_greedily() -> None:
    text = "The sun rose. Birds sang loudly! Did anyone hear them? Nobody did."
    assert split_text(text, max_chars=35) == [
        "The sun rose. Birds sang loudly!",
        "Did anyone hear them? Nobody did.",
    ]


def test_paragraph_breaks_are_boundaries_even_without_punctuation() -> None:
    text = "A heading without a period\nThe body follows here."
    assert split_text(text, max_chars=30) == [
        "A heading without a period",
        "The body follows here.",
    ]


def test_chinese_splits_after_full_width_punctuation() -> None:
    text = "今天天气很好。我们去公园散步吧！你觉得怎么样？好的；那就走吧。"
    assert split_text(text, max_chars=12) == [
        "今天天气很好。",
        "我们去公园散步吧！",
        "你觉得怎么样？好的；",
        "那就走吧。",
    ]


def test_mixed_scripts_split_where_cjk_follows_a_western_stop() -> None:
    text = "Hello world.你好世界。Mixed text!"
    assert split_text(text, max_chars=14) == ["Hello world.", "你好世界。", "Mixed text!"]


def test_closing_quotes_stay_with_their_sentence() -> None:
    text = 'He said "Go." Then he left. 她说：“走吧。”然后离开了。'
    assert split_text(text, max_chars=13) == [
        'He said "Go."',
        "Then he left.",
        "她说：“走吧。”",
        "然后离开了。",
    ]


@pytest.mark.parametrize(
    "text",
    [
        "Mr. Smith and Dr. Jones arrived.",
        "Pi is about 3.14159 and e is 2.718.",
        "Bring fruit, e.g. apples or pears.",
        "J. R. R. Tolkien wrote it in the U.S. Army barracks.",
        "Visit example.com today.",
        "It was... well, fine.",
    ],
)
def test_abbreviations_and_decimals_do_not_end_a_sentence(text: str) -> None:
    # Room for the whole sentence but not for it and the next one.
    assert split_text(f"{text} Next one.", max_chars=len(text) + 3) == [text, "Next one."]


def test_long_sentence_splits_at_clauses_then_words() -> None:
    text = "First clause here, second clause there; and a rather long tail of words"
    assert split_text(text, max_chars=20) == [
        "First clause here,",
        "second clause there;",
        "and a rather long",
        "tail of words",
    ]


def test_commas_inside_numbers_are_not_clause_boundaries() -> None:
    assert split_text("It cost 3,000 dollars at 10:30 today", max_chars=14) == [
        "It cost 3,000",
        "dollars at",
        "10:30 today",
    ]


def test_one_giant_word_is_hard_cut() -> None:
    text = "x" * 25
    assert split_text(text, max_chars=10) == ["x" * 10, "x" * 10, "x" * 5]


def test_giant_unpunctuated_chinese_is_hard_cut() -> None:
    text = "我" * 30
    assert split_text(text, max_chars=12) == ["我" * 12, "我" * 12, "我" * 6]


def test_max_chars_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_chars"):
        split_text("hi", max_chars=0)


TOKENS = [
    "word", "Apple", "e.g.", "Mr.", "3.14", "3,000", "你好", "世界", "。", "！", "？", "；",
    ".", "!", "?", "…", ",", ";", ":", "、", "，", '"', "”", "(", ")", "supercalifragilistic",
    "x" * 40, " ", " ", " ", "  ", "\n", "\n\n", "\t",
]  # fmt: skip


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(TOKENS) for _ in range(rng.randint(0, 80)))


def test_invariants_hold_for_random_text() -> None:
    rng = random.Random(20240601)
    for _ in range(400):
        text = random_text(rng)
        max_chars = rng.randint(1, 60)
        chunks = split_text(text, max_chars=max_chars)
        assert non_space(" ".join(chunks)) == non_space(text), (text, max_chars)
        position = 0
        for chunk in chunks:
            assert chunk
            assert chunk == chunk.strip()
            assert len(chunk) <= max_chars
            position = text.index(chunk, position) + len(chunk)  # an in-order substring


# -- a stream's first chunk --------------------------------------------------------------------


def test_a_streams_first_chunk_is_its_first_sentence_alone() -> None:
    text = "The sun rose. Birds sang loudly! Did anyone hear them? Nobody did."
    assert split_for_stream(text, max_chars=60, first_max_chars=100) == [
        "The sun rose.",
        "Birds sang loudly! Did anyone hear them? Nobody did.",
    ]


def test_a_long_first_sentence_is_cut_at_a_clause_then_the_rest_packs_as_usual() -> None:
    text = "When the storm came in at last, the keeper lit the lamp, and waited. Dawn came."
    assert split_for_stream(text, max_chars=300, first_max_chars=40) == [
        "When the storm came in at last,",
        "the keeper lit the lamp, and waited. Dawn came.",
    ]


@pytest.mark.parametrize("seed", range(20))
def test_a_stream_split_keeps_every_character_in_order_within_the_caps(seed: int) -> None:
    rng = random.Random(seed)
    words = ["alpha", "beta,", "gamma.", "delta!", "epsilon", "zeta;", "eta?", "theta"]
    text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 80)))
    chunks = split_for_stream(text, max_chars=50, first_max_chars=20)
    assert non_space("".join(chunks)) == non_space(text)
    assert len(chunks[0]) <= 20
    assert all(len(c) <= 50 for c in chunks)
