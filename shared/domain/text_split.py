"""Split long text into pieces of whole sentences: the chunks the worker's model speaks one at
a time, and the items ``qtts render`` cuts a long paragraph into. Pure, so both use it.

The model's prosody is best across whole sentences, so boundaries are preferred in order:
sentence ends and line breaks, then clause punctuation, then whitespace, and only as a last
resort a hard cut. Every chunk is a stripped substring of the input, in order, so nothing but
whitespace between chunks is ever dropped.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

Span = tuple[int, int]
"""[start, end) into the text, never empty and never starting or ending with whitespace."""

_TERMINATORS = frozenset(".!?…")
"""Western sentence ends: only a boundary when followed by whitespace or CJK text."""
_CJK_TERMINATORS = frozenset("。！？；．")  # noqa: RUF001 - full-width on purpose
"""Always a boundary: CJK text puts no space after them."""
_CLOSERS = frozenset("\"')]}”’»」』）】》〉")  # noqa: RUF001 - typographic on purpose
"""Kept with the sentence they close: 'He said "Go."' ends after the quote."""
_CLAUSE_MARKS = frozenset(",;:")
"""Only a boundary before whitespace, so "3,000" and "10:30" stay whole."""
_CJK_CLAUSE_MARKS = frozenset("、，；：")  # noqa: RUF001 - full-width on purpose
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs"})
"""Titles and the like that an upper-case word usually follows ("Mr. Smith")."""


def split_text(text: str, *, max_chars: int) -> list[str]:
    """Chunks of at most ``max_chars`` characters, packing as many whole sentences as fit."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be at least 1, got {max_chars}")
    whole = _strip(text, 0, len(text))
    if whole is None:
        return []
    return [text[start:end] for start, end in _split(text, whole, max_chars, level=0)]


def split_for_stream(text: str, *, max_chars: int, first_max_chars: int) -> list[str]:
    """``split_text``'s chunks, but the first is the text's first sentence alone (cut at a
    clause, a word or at last hard to ``first_max_chars`` if it is longer): a stream's first
    audio comes once one short sentence is said, not a whole chunk of them."""
    if first_max_chars < 1:
        raise ValueError(f"first_max_chars must be at least 1, got {first_max_chars}")
    whole = _strip(text, 0, len(text))
    if whole is None:
        return []
    first_sentence = _pieces(text, whole, _sentence_end)[0]
    first = _split(text, first_sentence, min(first_max_chars, max_chars), level=1)[0]
    rest = _strip(text, first[1], whole[1])
    later = [] if rest is None else _split(text, rest, max_chars, level=0)
    return [text[start:end] for start, end in (first, *later)]


def _split(text: str, span: Span, max_chars: int, *, level: int) -> list[Span]:
    start, end = span
    if end - start <= max_chars:
        return [span]
    if level == len(_LEVELS):
        return [(i, min(i + max_chars, end)) for i in range(start, end, max_chars)]
    pieces = _pieces(text, span, _LEVELS[level])
    out = [sub for piece in pieces for sub in _split(text, piece, max_chars, level=level + 1)]
    return _pack(out, max_chars)


def _pack(spans: list[Span], max_chars: int) -> list[Span]:
    """Greedily merge neighbours while the merged substring still fits."""
    packed: list[Span] = []
    start, end = spans[0]
    for next_start, next_end in spans[1:]:
        if next_end - start <= max_chars:
            end = next_end
        else:
            packed.append((start, end))
            start, end = next_start, next_end
    packed.append((start, end))
    return packed


def _pieces(text: str, span: Span, cut_after: Callable[[str, int, int], int | None]) -> list[Span]:
    """Cut ``span`` wherever ``cut_after`` says a piece ends; strip and drop empty pieces."""
    start, end = span
    cuts = [start]
    i = start
    while i < end:
        stop = cut_after(text, i, end)
        if stop is not None:
            cuts.append(stop)
            i = stop
        else:
            i += 1
    cuts.append(end)
    stripped = (_strip(text, a, b) for a, b in itertools.pairwise(cuts))
    return [piece for piece in stripped if piece is not None]


def _sentence_end(text: str, i: int, end: int) -> int | None:
    ch = text[i]
    if ch in "\r\n":
        return i + 1
    if ch in _CJK_TERMINATORS:
        return _after_closers(text, i + 1, end)
    if ch not in _TERMINATORS:
        return None
    j = i + 1
    while j < end and (text[j] in _TERMINATORS or text[j] in _CJK_TERMINATORS):
        j += 1
    j = _after_closers(text, j, end)
    if j == end or _is_cjk(text[j]):
        return j
    if not text[j].isspace():
        return None  # "3.14", "e.g.", "example.com"
    k = j
    while k < end and text[k].isspace():
        k += 1
    if k < end and text[k].islower():
        return None  # "e.g. the", "approx. ten"
    if text[i] == "." and j == i + 1 and _is_abbreviation(text, i):
        return None
    return j


def _clause_end(text: str, i: int, end: int) -> int | None:
    ch = text[i]
    if ch in _CJK_CLAUSE_MARKS:
        return _after_closers(text, i + 1, end)
    if ch in _CLAUSE_MARKS and (i + 1 == end or text[i + 1].isspace()):
        return i + 1
    return None


def _word_end(text: str, i: int, end: int) -> int | None:
    return i + 1 if text[i].isspace() else None


_LEVELS: tuple[Callable[[str, int, int], int | None], ...] = (
    _sentence_end,
    _clause_end,
    _word_end,
)


def _after_closers(text: str, j: int, end: int) -> int:
    while j < end and text[j] in _CLOSERS:
        j += 1
    return j


def _is_abbreviation(text: str, dot: int) -> bool:
    start = dot
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    word = text[start:dot].lstrip("\"'(“‘")  # noqa: RUF001 - typographic on purpose
    # Initials ("J. R. R.") and dotted forms ("U.S.") rarely end a sentence.
    return word.lower() in _ABBREVIATIONS or (len(word) == 1 and word.isupper()) or "." in word


def _is_cjk(ch: str) -> bool:
    code = ord(ch)
    return (
        0x3040 <= code <= 0x30FF  # kana
        or 0x3400 <= code <= 0x4DBF
        or 0x4E00 <= code <= 0x9FFF
        or 0xAC00 <= code <= 0xD7AF  # hangul
        or 0xF900 <= code <= 0xFAFF
    )


def _strip(text: str, start: int, end: int) -> Span | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None
