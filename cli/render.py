"""``qtts render``: a chapter file to one audio file per item, through one batch job.

The batch is submitted with an ``Idempotency-Key`` derived from its items, so running the same
command again (after Ctrl-C, a lost connection, a closed laptop) finds the same batch instead of
paying for a second one, and only the files not on disk yet are fetched. Files are written
under a temporary name and renamed when complete, so a file that exists is a finished one.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from cli.errors import QttsError
from cli.http import ApiError, Client, Job, JsonObject, Manifest, save_atomically
from cli.split import DEFAULT_MAX_CHARS, split_chapter

# The CustomVoice model's speakers (README, "Limits and errors"). Anything else is taken for a
# registered voice; the gateway answers 404 for one it does not know.
BUILTIN_SPEAKERS = frozenset(
    {"vivian", "serena", "uncle_fu", "dylan", "eric", "ryan", "aiden", "ono_anna", "sohee"}
)
RECORD_NAME = "render.json"
MAX_STEM_CHARS = 90  # item keys are at most 100 characters: the stem, "-", four digits
FAILED_STATES = frozenset({"failed", "canceled"})
FINISHED_STATES = FAILED_STATES | {"succeeded"}


@dataclass(frozen=True, slots=True)
class RenderOptions:
    voice: str
    format: str
    speed: float | None = None
    language: str | None = None
    max_chars: int = DEFAULT_MAX_CHARS
    join: bool = False
    """Also fetch one file of the whole chapter, which the gateway joins from the items."""
    join_gap_ms: int = 0
    verify: bool = True
    """Have every chunk checked (and said again where it fails), and its words timed: the
    gateway's default for batch items, so only ``False`` is sent."""
    captions: str | None = None
    """Also fetch the joined file's captions in this format (``srt`` or ``vtt``)."""


@dataclass(frozen=True, slots=True)
class Checks:
    """What the gateway's checks found, over the items of the batch."""

    chunks: int
    remade: int
    below_threshold: int
    """Chunks whose kept audio still fails a check."""
    items_below: tuple[int, ...]
    """The chapter's item numbers (as in the file names) holding such chunks."""

    def line(self) -> str:
        text = (
            f"{self.chunks} chunks, {self.remade} re-made, {self.below_threshold} below threshold"
        )
        if self.items_below:
            noun = "item" if len(self.items_below) == 1 else "items"
            text += f": {noun} {', '.join(map(str, self.items_below))}"
        return text


@dataclass(slots=True)
class Outcome:
    total: int
    batch_id: str | None = None
    succeeded: set[str] = field(default_factory=set)
    failed: dict[str, str] = field(default_factory=dict)
    """Item key to the reason, for items that have no file."""
    downloaded: int = 0
    joined: Path | None = None
    """The whole chapter in one file, when it was asked for and is on disk."""
    captions: Path | None = None
    """The joined file's captions, when they were asked for and are on disk."""
    captions_error: str | None = None
    """Why the captions asked for could not be had (the audio is made all the same)."""
    checks: Checks | None = None
    """What the checks found, when the gateway checked the items."""


def speech_item(*, key: str, text: str, options: RenderOptions) -> JsonObject:
    """One native speech body (``SpeechRequest``) with its batch key."""
    item: JsonObject = {"key": key, "text": text, "format": options.format}
    if options.voice.lower() in BUILTIN_SPEAKERS:
        item |= {"mode": "custom_voice", "speaker": options.voice}
    else:
        item |= {"mode": "clone_prompt", "voice": options.voice}
    if options.speed is not None:
        item["speed"] = options.speed
    if options.language is not None:
        item["language"] = options.language
    if not options.verify:
        # Only the refusal is sent: a checked render's items (and so its batch's key) stay as
        # they were before checks existed, and a re-run finds the batch it made then.
        item["verify"] = False
    return item


def chapter_items(text: str, *, stem: str, options: RenderOptions) -> list[JsonObject]:
    stem = stem[:MAX_STEM_CHARS] or "item"
    chunks = split_chapter(text, max_chars=options.max_chars)
    return [
        speech_item(key=f"{stem}-{index:04d}", text=chunk, options=options)
        for index, chunk in enumerate(chunks, start=1)
    ]


def idempotency_key(items: list[JsonObject], *, salt: str = "") -> str:
    """SHA-256 of the canonical JSON of the items (their text and every option): the same
    chapter with the same options finds the same batch; any change makes a new one."""
    canonical = json.dumps(
        {"qtts-render": 1, "items": items, "salt": salt},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


def render(
    client: Client,
    *,
    book: Path,
    out_dir: Path,
    options: RenderOptions,
    poll_s: float,
    new_batch: bool,
    console: Console,
) -> Outcome:
    if options.captions and not options.join:
        raise QttsError("--captions are timed against the joined file: add --join")
    items = chapter_items(book.read_text(encoding="utf-8"), stem=book.stem, options=options)
    if not items:
        raise QttsError(f"{book} holds no text to render")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {str(item["key"]): out_dir / f"{item['key']}.{options.format}" for item in items}
    joined_path = out_dir / f"{book.stem}.{options.format}"
    captions_path = out_dir / f"{book.stem}.{options.captions}" if options.captions else None
    outcome = Outcome(total=len(items))
    outcome.succeeded = {key for key, path in paths.items() if path.exists()}
    missing = [item for item in items if str(item["key"]) not in outcome.succeeded]
    if options.join and joined_path.exists():
        outcome.joined = joined_path
    if captions_path is not None and captions_path.exists():
        outcome.captions = captions_path
    joined_done = outcome.joined is not None or not options.join
    captions_done = outcome.captions is not None or captions_path is None
    if not missing and joined_done and captions_done:
        return outcome
    if options.join and new_batch:
        # The joined file is of one batch's items: a new batch of some of them cannot make it.
        raise QttsError("--join makes the whole chapter in one batch; it cannot use --new-batch")

    body: JsonObject = {}
    if options.join:
        body = {"join": True, "join_gap_ms": options.join_gap_ms}
    if new_batch:
        # Only what is not on disk, under a key of its own: the way to try failed items again,
        # since the chapter's own key always finds the batch in which they failed.
        submitted, key = missing, idempotency_key(missing, salt=f"new-batch-{time.time_ns()}")
    else:
        # A joined render is another batch than a plain one (an empty salt keeps the plain
        # render's key as it always was).
        salt = json.dumps(body, sort_keys=True) if body else ""
        submitted, key = items, idempotency_key(items, salt=salt)
    batch = Job.parse(
        client.post_json(
            "/v1/tts/batch", {"items": submitted, **body}, headers={"Idempotency-Key": key}
        )
    )
    outcome.batch_id = batch.id
    _write_record(out_dir, batch_id=batch.id, book=book, keys=list(paths))
    console.print(f"batch {batch.id}: {len(submitted)} items, {len(outcome.succeeded)} on disk")

    submitted_keys = [str(item["key"]) for item in submitted]
    # The joined file counts as one more step, as the batch's own progress counts its join job:
    # the bar is not full, and its clock does not stop, while the gateway is still joining.
    joins = 1 if options.join else 0
    joined_before = 1 if outcome.joined else 0
    with Progress(
        SpinnerColumn(finished_text=" "),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(
            book.stem,
            total=len(items) + joins,
            completed=len(outcome.succeeded) + joined_before,
            status="",
        )
        delay = poll_s
        while True:
            manifest = client.manifest(batch.id)
            changed = False
            for index, entry in enumerate(manifest.items):
                # The manifest lists items in submission order; the key is what we match on,
                # the position only covers a server that did not echo it.
                item_key = entry.key or (
                    submitted_keys[index] if index < len(submitted_keys) else None
                )
                if item_key not in paths or item_key in outcome.succeeded:
                    continue
                if item_key in outcome.failed:
                    continue
                if entry.state == "succeeded":
                    changed = True
                    audio = entry.audio_url or f"/v1/jobs/{entry.job_id}/audio"
                    try:
                        client.download(audio, paths[item_key])
                    except ApiError as exc:
                        if exc.status is None:
                            raise  # the connection broke: stop here, a re-run resumes
                        outcome.failed[item_key] = f"download failed: {exc}"
                        continue
                    outcome.succeeded.add(item_key)
                    outcome.downloaded += 1
                elif entry.state in FAILED_STATES:
                    changed = True
                    outcome.failed[item_key] = str(entry.error) if entry.error else entry.state
            progress.update(
                task,
                completed=len(outcome.succeeded) + len(outcome.failed) + joined_before,
                status=f"{len(outcome.failed)} failed" if outcome.failed else "",
            )
            pending = [k for k in paths if k not in outcome.succeeded and k not in outcome.failed]
            if not pending:
                break
            listed_all_finished = all(
                e.state == "succeeded" or e.state in FAILED_STATES for e in manifest.items
            )
            if listed_all_finished and (manifest.items or manifest.state in FINISHED_STATES):
                # Every listed child is done, yet some items are neither on disk nor failed:
                # the batch does not hold them (it cannot, with keys we chose; say so anyway).
                for key in pending:
                    outcome.failed[key] = f"not in batch {batch.id}"
                break
            time.sleep(delay)
            delay = poll_s if changed else min(delay * 1.5, poll_s * 5)
        outcome.checks = _checks(manifest, order=list(paths), submitted=submitted_keys)
        if options.join and not outcome.failed and outcome.joined is None:
            progress.update(task, status="joining")
            outcome.joined = _fetch_joined(
                client, batch.id, joined_path, poll_s=poll_s, on_poll=progress.refresh
            )
            progress.update(task, advance=1, status="")
    if options.captions and captions_path and outcome.joined and outcome.captions is None:
        try:
            client.download_captions(batch.id, fmt=options.captions, dest=captions_path)
            outcome.captions = captions_path
        except ApiError as exc:
            if exc.status is None:
                raise  # the connection broke: stop here, a re-run resumes
            outcome.captions_error = str(exc)
    return outcome


def _checks(manifest: Manifest, *, order: list[str], submitted: list[str]) -> Checks | None:
    """The checks of every item the gateway checked; ``None`` when it checked none."""
    chunks = remade = below = 0
    items_below: list[int] = []
    checked = False
    number = {key: place for place, key in enumerate(order, start=1)}
    for index, entry in enumerate(manifest.items):
        summary = entry.verification
        if summary is None:
            continue
        checked = True
        chunks += summary.chunks
        remade += summary.remade
        below += len(summary.below_threshold)
        if summary.below_threshold:
            key = entry.key or (submitted[index] if index < len(submitted) else None)
            # Numbered as the files are (chapter order, from 1), whichever batch made it.
            items_below.append(number.get(key, index + 1) if key is not None else index + 1)
    if not checked:
        return None
    return Checks(
        chunks=chunks, remade=remade, below_threshold=below, items_below=tuple(items_below)
    )


def _fetch_joined(
    client: Client, batch_id: str, path: Path, *, poll_s: float, on_poll: Callable[[], None]
) -> Path:
    """Wait for the batch's joined file (made after its last item) and download it; ``on_poll``
    runs after every look, so the display moves even where nothing refreshes it on a timer."""
    delay = poll_s
    while True:
        manifest = client.manifest(batch_id)
        on_poll()
        joined = manifest.joined
        if joined is not None and joined.state == "succeeded":
            client.download(joined.audio_url or f"/v1/jobs/{joined.job_id}/audio", path)
            return path
        if joined is not None and joined.state in FAILED_STATES:
            raise QttsError(f"the joined file failed: {joined.error or joined.state}")
        if joined is None and manifest.state in FAILED_STATES:
            raise QttsError(f"batch {batch_id} is {manifest.state}: nothing to join")
        time.sleep(delay)
        delay = min(delay * 1.5, poll_s * 5)


def _write_record(out_dir: Path, *, batch_id: str, book: Path, keys: list[str]) -> None:
    """``render.json``, for people: which batch made these files. Nothing reads it back."""
    path = out_dir / RECORD_NAME
    batches: list[str] = []
    try:
        previous = json.loads(path.read_text())
        if isinstance(previous, dict) and isinstance(previous.get("batches"), list):
            batches = [str(b) for b in previous["batches"]]
    except (OSError, ValueError):
        pass
    if batch_id not in batches:
        batches.append(batch_id)
    record = {"book": str(book), "batch_id": batch_id, "batches": batches, "keys": keys}
    text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    save_atomically([text.encode()], path)
