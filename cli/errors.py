"""The one exception the commands turn into a line on stderr and a non-zero exit."""

from __future__ import annotations


class QttsError(Exception):
    """A problem worth one line to the person at the terminal; never a traceback."""
