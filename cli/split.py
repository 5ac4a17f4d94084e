"""Cut a chapter into speech items: whole paragraphs where they fit, else their sentences, packed
greedily up to a character bound.

Items are what a batch submits, one job each. Bigger items mean fewer jobs; the bound keeps each
well under the gateway's text limit (5000 characters), and the worker splits every item again
into its own short chunks, so an item boundary only decides where one job's audio ends.
"""

from __future__ import annotations

import re

DEFAULT_MAX_CHARS = 1500

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")
# A sentence ends at . ! ? or … (with any closing quotes or brackets) before whitespace or the
# end, or right after a CJK full stop, which needs no space after it.
_SENTENCE = re.compile(
    r".+?(?:[.!?\u2026]+[\"'\u201d\u2019\u00bb)\]]*(?=\s|$)|[\u3002\uff01\uff1f]+[\u300d\u300f\u201d)]*|$)",
    re.DOTALL,
)


def split_chapter(text: str, *, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """The items, in order. Each holds at most ``max_chars`` characters; together they hold
    every non-space character of ``text`` in order (line wraps inside a paragraph become
    spaces; paragraphs packed into one item are separated by a blank line)."""
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    items: list[str] = []
    current = ""
    for paragraph in paragraphs(text):
        if len(paragraph) <= max_chars:
            pieces = [paragraph]
        else:
            pieces = [p for s in sentences(paragraph) for p in _fit(s, max_chars=max_chars)]
        for index, piece in enumerate(pieces):
            separator = "\n\n" if index == 0 else " "
            if current and len(current) + len(separator) + len(piece) <= max_chars:
                current += separator + piece
            else:
                if current:
                    items.append(current)
                current = piece
    if current:
        items.append(current)
    return items


def paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, each with its inner whitespace collapsed to single spaces
    (a text file wraps lines for the eye, not for the voice)."""
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    blocks = (" ".join(block.split()) for block in _PARAGRAPH_BREAK.split(normalised))
    return [block for block in blocks if block]


def sentences(paragraph: str) -> list[str]:
    found = (match.group().strip() for match in _SENTENCE.finditer(paragraph))
    return [sentence for sentence in found if sentence]


def _fit(sentence: str, *, max_chars: int) -> list[str]:
    """A sentence longer than the bound, cut between words (and a word longer than the bound,
    which only a pathological file holds, cut anywhere)."""
    if len(sentence) <= max_chars:
        return [sentence]
    pieces: list[str] = []
    current = ""
    for word in sentence.split():
        while len(word) > max_chars:
            if current:
                pieces.append(current)
                current = ""
            pieces.append(word[:max_chars])
            word = word[max_chars:]
        if current and len(current) + 1 + len(word) <= max_chars:
            current += " " + word
        else:
            if current:
                pieces.append(current)
            current = word
    if current:
        pieces.append(current)
    return pieces
