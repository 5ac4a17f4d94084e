"""JSON from callers, read with a bounded nesting depth.

The standard decoder (which Flask's ``get_json`` uses too) recurses once per level and raises
``RecursionError`` on a body such as ``[[[[…]]]]`` a few thousand levels deep: not a
``ValueError``, so it escaped every handler as a crash. No body this gateway takes nests
deeper than a handful of levels, so the depth is counted first, without recursion, and a
body deeper than ``MAX_DEPTH`` is refused like any other malformed JSON.
"""

from __future__ import annotations

import json
import re

MAX_DEPTH = 64
"""Far above any body the API or the intake takes (a batch item's correlation: 4 levels)."""

_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')
"""A whole string (whose brackets do not count), or one bracket. Unrolled so that a long
string, such as base64 audio, is consumed by one match in C, not one step per character."""
_OPENING = frozenset("[{")


class TooDeep(ValueError):
    """The text nests arrays and objects deeper than allowed."""


def loads(data: bytes, *, max_depth: int = MAX_DEPTH) -> object:
    """``json.loads`` of ``data`` (UTF-8, -16 or -32) that refuses nesting past ``max_depth``.

    Raises ``ValueError``: ``TooDeep``, ``json.JSONDecodeError`` or ``UnicodeDecodeError``.
    """
    # Decoded as json.loads decodes bytes, so that the brackets counted are the ones it reads
    # (a UTF-16 body's bytes are no guide to where its strings end).
    text = data.decode(json.detect_encoding(data), "surrogatepass")
    depth = 0
    for match in _TOKEN.finditer(text):
        first = text[match.start()]
        if first in _OPENING:
            depth += 1
            if depth > max_depth:
                raise TooDeep(f"JSON nested deeper than {max_depth} levels")
        elif first != '"':
            depth -= 1
    return json.loads(text)
