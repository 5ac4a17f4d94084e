"""Cut a chapter into speech items a listener can follow: one item per paragraph, and a
paragraph longer than the bound becomes groups of whole sentences packed up to it.

Items are what a batch submits, one job each, so they are what the progress bar counts and what
``--gap-ms`` separates in the joined file; an item boundary is where one job's audio ends. The
bound keeps each item well under the gateway's text limit (5000 characters), and the worker
splits every item again into its own short chunks. A sentence is cut only when it alone is over
the bound (at a clause mark or between words; see ``shared/domain/text_split.py``).
"""

from __future__ import annotations

import re

from shared.domain.text_split import split_text

DEFAULT_MAX_CHARS = 500
"""About half a minute of speech: a paragraph of ordinary prose is one item."""

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*(?:\n[ \t]*)+")


def split_chapter(text: str, *, max_chars: int = DEFAULT_MAX_CHARS) -> list[str]:
    """The items, in order. Each holds at most ``max_chars`` characters and never more than one
    paragraph; together they hold every non-space character of ``text`` in order (line wraps
    inside a paragraph become spaces)."""
    if max_chars < 1:
        raise ValueError("max_chars must be at least 1")
    return [item for block in paragraphs(text) for item in split_text(block, max_chars=max_chars)]


def paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, each with its inner whitespace collapsed to single spaces
    (a text file wraps lines for the eye, not for the voice)."""
    normalised = text.replace("\r\n", "\n").replace("\r", "\n")
    blocks = (" ".join(block.split()) for block in _PARAGRAPH_BREAK.split(normalised))
    return [block for block in blocks if block]
