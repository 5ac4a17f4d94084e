"""Captions from word timings: words grouped into cues, written as SubRip (SRT) or WebVTT.

The grouping follows common subtitle practice (Netflix's timed-text guide: 42 characters a line,
two lines a cue, at most 7 s on screen; 6 s here, since read-aloud text is dense): a new cue
after the end of a sentence and after a pause (the silence between a joined batch's items); a
full cue ends at its last clause (a comma) rather than stranding the sentence's last words; and
its lines are balanced rather than a full line over a stub. Times only move forward: a cue
starts no earlier than the one before it ends, and none ends past the audio, whatever an
aligner reported (overlapping words, a last word past the end).

Writing is pysubs2's: one library for both formats, whose timestamps and cue numbering match
what players and the standard parsers expect."""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from enum import StrEnum

import pysubs2
from pydantic import BaseModel, ConfigDict, Field

from shared.domain.verification import WordTiming


class CaptionFormat(StrEnum):
    SRT = "srt"
    VTT = "vtt"

    @property
    def content_type(self) -> str:
        return _CONTENT_TYPES[self]

    @property
    def extension(self) -> str:
        return f".{self.value}"


_CONTENT_TYPES = {
    CaptionFormat.SRT: "application/x-subrip",
    CaptionFormat.VTT: "text/vtt; charset=utf-8",
}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CaptionRules(_Frozen):
    """How words are grouped into cues."""

    max_line_chars: int = Field(default=42, ge=10)
    max_lines: int = Field(default=2, ge=1)
    max_cue_s: float = Field(default=6.0, gt=0)
    """From the first word's start to the last word's end."""
    min_cue_s: float = Field(default=0.7, ge=0)
    """A cue shorter than this stays up longer, into the silence after it (never over the
    next cue): a one-word cue of 0.2 s is gone before it is read."""
    max_pause_s: float = Field(default=1.0, gt=0)
    """Silence between two words past which they belong to different cues: text stays on
    screen only while it is said."""


class Cue(_Frozen):
    start_s: float = Field(ge=0)
    end_s: float = Field(ge=0)
    lines: tuple[str, ...] = Field(min_length=1)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


SENTENCE_ENDS = frozenset(".!?…。！？")  # noqa: RUF001 - full-width on purpose
CLAUSE_ENDS = frozenset(",;:—–、，；：")  # noqa: RUF001 - en dash and full-width on purpose
_CLOSERS = frozenset("\"'”’»)]」』）")  # noqa: RUF001 - typographic on purpose
"""Closing quotes and brackets after a sentence's end still belong to that sentence."""
ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "vs"})
"""Titles and the like whose full stop ends no sentence ("Mr. Hale")."""


def ends_sentence(word: str) -> bool:
    stripped = word.rstrip("".join(_CLOSERS))
    if not stripped or stripped[-1] not in SENTENCE_ENDS:
        return False
    if stripped.endswith(".") and stripped == word:
        bare = stripped[:-1]
        # A title, or an initial ("J. R. R."): the sentence goes on.
        if bare.casefold() in ABBREVIATIONS or (len(bare) == 1 and bare.isupper()):
            return False
    return True


def group_cues(
    segments: Iterable[Iterable[WordTiming]],
    *,
    rules: CaptionRules | None = None,
    duration_s: float | None = None,
) -> tuple[Cue, ...]:
    """The cues that show the words of ``segments``, each in the order said. A segment (one
    job's words, or one item of a joined batch) never shares a cue with another: an item is a
    paragraph. ``duration_s``, the audio's length, bounds every time."""
    rules = rules or CaptionRules()
    groups: list[list[WordTiming]] = []
    for segment in segments:
        words = [
            WordTiming(word=text, start_s=w.start_s, end_s=w.end_s)
            for w in segment
            if (text := _clean(w.word))
        ]
        for run in _runs(words, rules=rules):
            groups.extend(_partition(run, rules=rules))
    return _timed(groups, rules=rules, duration_s=duration_s)


def render_captions(cues: Sequence[Cue], *, fmt: CaptionFormat) -> str:
    """The cues as an SRT or WebVTT document."""
    subs = pysubs2.SSAFile()
    for cue in cues:
        lines = [_escaped(line, fmt=fmt) for line in cue.lines]
        subs.append(
            pysubs2.SSAEvent(start=_ms(cue.start_s), end=_ms(cue.end_s), text=r"\N".join(lines))
        )
    # keep_ssa_tags: the text is written as given; without it pysubs2 reads "{...}" in a
    # spoken word as a styling tag and drops it.
    text: str = subs.to_string(fmt.value, keep_ssa_tags=True)
    return text


def captions(
    segments: Iterable[Iterable[WordTiming]],
    *,
    fmt: CaptionFormat,
    duration_s: float | None = None,
    rules: CaptionRules | None = None,
) -> str:
    """``segments`` grouped (``group_cues``) and written (``render_captions``)."""
    return render_captions(group_cues(segments, rules=rules, duration_s=duration_s), fmt=fmt)


# -- grouping ----------------------------------------------------------------------------------


def _runs(words: list[WordTiming], *, rules: CaptionRules) -> list[list[WordTiming]]:
    """The words cut after every sentence and at every pause: no cue spans either."""
    runs: list[list[WordTiming]] = []
    for word in words:
        if runs:
            last = runs[-1][-1]
            if not ends_sentence(last.word) and word.start_s - last.end_s <= rules.max_pause_s:
                runs[-1].append(word)
                continue
        runs.append([word])
    return runs


def _partition(run: list[WordTiming], *, rules: CaptionRules) -> list[list[WordTiming]]:
    """One sentence in the fewest cues that fit, as even in length as they can be, cut after
    a clause (a comma) where one is near the middle: a reader pauses there, and no cue holds
    the last word or two of a sentence alone.

    Dynamic programming over the cut points; a cue's text is measured as words are put in
    front of it, so each candidate costs constant time and the whole is linear in the words
    times the words a cue holds at most.
    """
    # best[end]: (cues, badness, start of the last cue) of the best cutting of run[:end].
    best: list[tuple[int, float, int]] = [(0, 0.0, 0)]
    width = rules.max_line_chars
    for end in range(1, len(run) + 1):
        last = end == len(run)
        found: tuple[int, float, int] | None = None
        lines, line_chars, chars, latest = 0, 0, 0, 0.0
        for start in range(end - 1, -1, -1):
            word = run[start].word
            if start == end - 1:
                lines, line_chars, chars, latest = 1, len(word), len(word), run[start].end_s
            else:
                # Wrapping from the end fills the fewest lines, as wrapping from the front does.
                gap = len(_separator(word, run[start + 1].word))
                chars += len(word) + gap
                latest = max(latest, run[start].end_s)
                if line_chars + gap + len(word) <= width:
                    line_chars += gap + len(word)
                else:
                    lines, line_chars = lines + 1, len(word)
                if lines > rules.max_lines or latest - run[start].start_s > rules.max_cue_s:
                    break  # nor does any longer cue ending here (a lone word always goes)
            cues, badness, _ = best[start]
            # Even cues: the sum of squared lengths is least when they are equal.
            badness += chars * chars
            if not last and _ends_clause(run[end - 1].word):
                badness -= width * width
            if found is None or (cues + 1, badness) < found[:2]:
                found = (cues + 1, badness, start)
        assert found is not None  # the lone word run[end - 1] is always a candidate
        best.append(found)
    cuts: list[list[WordTiming]] = []
    end = len(run)
    while end > 0:
        start = best[end][2]
        cuts.append(run[start:end])
        end = start
    return cuts[::-1]


def _ends_clause(word: str) -> bool:
    stripped = word.rstrip("".join(_CLOSERS))
    return bool(stripped) and stripped[-1] in CLAUSE_ENDS


def _timed(
    groups: list[list[WordTiming]], *, rules: CaptionRules, duration_s: float | None
) -> tuple[Cue, ...]:
    end_of_audio = float("inf") if duration_s is None else max(duration_s, 0.0)
    cues: list[Cue] = []
    previous_end = 0.0
    for index, group in enumerate(groups):
        start = min(max(group[0].start_s, previous_end), end_of_audio)
        end = min(max(max(w.end_s for w in group), start), end_of_audio)
        # Held up to the minimum, but never into the next cue's first word nor past the audio.
        following = groups[index + 1][0].start_s if index + 1 < len(groups) else end_of_audio
        end = max(end, min(start + rules.min_cue_s, following, end_of_audio))
        cues.append(
            Cue(
                start_s=start,
                end_s=end,
                lines=tuple(_balanced([w.word for w in group], rules=rules)),
            )
        )
        previous_end = end
    return tuple(cues)


def _balanced(words: list[str], *, rules: CaptionRules) -> list[str]:
    """The fewest lines the words fit in, as even in length as those lines allow: the
    narrowest width that still needs no more lines than the full one."""
    lines = _wrap(words, width=rules.max_line_chars)
    if len(lines) < 2:
        return lines
    narrowest = max(len(w) for w in words)
    for width in range(narrowest, rules.max_line_chars + 1):
        even = _wrap(words, width=width)
        if len(even) <= len(lines):
            return even
    return lines


def _wrap(words: list[str], *, width: int) -> list[str]:
    """Greedy wrapping (the fewest lines for one width); a word longer than a line has one
    of its own, since a word is never cut."""
    lines: list[str] = []
    for word in words:
        if lines and len(joined := _join(lines[-1], word)) <= width:
            lines[-1] = joined
        else:
            lines.append(word)
    return lines


def _join(line: str, word: str) -> str:
    return line + _separator(line, word) + word


def _separator(before: str, word: str) -> str:
    # Chinese and Japanese words are written without spaces between them, and punctuation an
    # aligner hands over as a word of its own sticks to the word before it.
    if (_unspaced(before[-1]) and _unspaced(word[0])) or _trailing(word):
        return ""
    return " "


def _unspaced(char: str) -> bool:
    name = unicodedata.name(char, "")
    return name.startswith(("CJK ", "HIRAGANA", "KATAKANA", "IDEOGRAPHIC", "FULLWIDTH"))


def _trailing(word: str) -> bool:
    return all(c in _TRAILING for c in word)


_TRAILING = SENTENCE_ENDS | CLAUSE_ENDS | (_CLOSERS - {'"', "'"}) | {"%"}
"""Marks that close what comes before them (an opening quote or bracket does not)."""


def _clean(word: str) -> str:
    """One line of printable text: line breaks and other control characters in a word would
    end a cue early in every format (a blank line ends an SRT cue)."""
    printable = "".join(" " if unicodedata.category(c).startswith("C") else c for c in word)
    return " ".join(printable.split())


# -- writing -----------------------------------------------------------------------------------


_WORD_JOINER = "\u2060"


def _escaped(line: str, *, fmt: CaptionFormat) -> str:
    # pysubs2 turns the two-character sequences \N, \n and \h into breaks and spaces even with
    # keep_ssa_tags; an invisible word joiner after the backslash keeps them as written.
    line = line.replace("\\", "\\" + _WORD_JOINER)
    if fmt is CaptionFormat.VTT:
        # WebVTT cue text is markup: "<" opens a tag and "&" an entity, and "-->" would read
        # as a timing line. SRT has no escapes; its readers take text as it is.
        line = line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return line


def _ms(seconds: float) -> int:
    # Rounded, not truncated; rounding never reorders, so ordered cues stay ordered.
    return round(seconds * 1000)
