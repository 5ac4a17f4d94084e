"""The ``qtts`` command: speech, voices, jobs and whole chapters from a terminal.

Audio and answers go to stdout, everything said to the person (progress, job ids, errors) to
stderr, so ``qtts say "Hi" -o - | play -`` works. Every failure is one line and a non-zero exit.
"""

from __future__ import annotations

import functools
import json
import mimetypes
import os
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn, ParamSpec, TypeVar
from urllib.parse import quote

import typer
from rich.console import Console

from cli.errors import QttsError
from cli.http import (
    CHUNK_BYTES,
    ApiError,
    Client,
    Job,
    JsonObject,
    json_object,
    one_line,
    save_atomically,
)
from cli.render import RenderOptions, render
from cli.split import DEFAULT_MAX_CHARS

DEFAULT_BASE_URL = "http://127.0.0.1:8080"
# The gateway waits up to its max_wait_s (120 s) before answering 202; read longer than that.
DEFAULT_TIMEOUT_S = 300.0


class AudioFormat(StrEnum):
    wav = "wav"
    mp3 = "mp3"
    opus = "opus"
    flac = "flac"
    aac = "aac"
    pcm = "pcm"


class CaptionFormat(StrEnum):
    srt = "srt"
    vtt = "vtt"


EXTENSIONS = {
    ".wav": AudioFormat.wav,
    ".mp3": AudioFormat.mp3,
    ".opus": AudioFormat.opus,
    ".ogg": AudioFormat.opus,
    ".flac": AudioFormat.flac,
    ".aac": AudioFormat.aac,
    ".pcm": AudioFormat.pcm,
    ".raw": AudioFormat.pcm,
}

app = typer.Typer(
    name="qtts",
    help="Speak text, manage voices and jobs, and render chapters with the Qwen3-TTS gateway.",
    no_args_is_help=True,
    add_completion=False,
    # main() prints every error as one line; a rich traceback would be the opposite.
    pretty_exceptions_enable=False,
)
voices_app = typer.Typer(help="List, create and delete voices.", no_args_is_help=True)
jobs_app = typer.Typer(help="List, inspect and cancel jobs.", no_args_is_help=True)
app.add_typer(voices_app, name="voices")
app.add_typer(jobs_app, name="jobs")


@dataclass(frozen=True, slots=True)
class Session:
    client: Client
    poll_s: float


P = ParamSpec("P")
R = TypeVar("R")


def fail(message: str) -> NoReturn:
    typer.echo(f"qtts: {one_line(message)}", err=True)
    raise typer.Exit(1)


def reports_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Inside each command, so that the app behaves the same under ``main()`` and in tests."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except QttsError as exc:
            fail(str(exc))
        except OSError as exc:  # a local file: missing, unreadable, disk full
            where = f"{exc.filename}: " if exc.filename else ""
            fail(f"{where}{exc.strerror or exc}")
        except KeyboardInterrupt:
            # Typer would exit 130 in silence; say why the output stopped.
            typer.echo("qtts: interrupted", err=True)
            raise typer.Exit(130) from None

    return run


def session(ctx: typer.Context) -> Session:
    obj = ctx.find_root().obj
    assert isinstance(obj, Session)
    return obj


def stderr_console() -> Console:
    return Console(stderr=True)


def note(message: str) -> None:
    typer.echo(message, err=True)


@app.callback()
def root(
    ctx: typer.Context,
    base_url: Annotated[
        str, typer.Option("--base-url", envvar="QTTS_BASE_URL", help="The gateway.")
    ] = DEFAULT_BASE_URL,
    api_key: Annotated[
        str | None,
        typer.Option("--api-key", envvar="QTTS_API_KEY", help="Bearer key.", show_default=False),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for one answer.")
    ] = DEFAULT_TIMEOUT_S,
    poll_interval: Annotated[
        float,
        typer.Option("--poll-interval", min=0.001, help="Seconds between looks at a job."),
    ] = 1.0,
) -> None:
    ctx.obj = Session(
        client=Client(base_url=base_url, api_key=api_key, timeout_s=timeout),
        poll_s=poll_interval,
    )


# -- say ----------------------------------------------------------------------------------------


def format_for(output: str, explicit: AudioFormat | None) -> AudioFormat:
    if explicit is not None:
        return explicit
    if output == "-":
        return AudioFormat.mp3  # OpenAI's default
    suffix = Path(output).suffix.lower()
    if suffix not in EXTENSIONS:
        raise QttsError(f"cannot tell the audio format from {output!r}; pass --format")
    return EXTENSIONS[suffix]


def write_output(output: str, chunks: Iterable[bytes]) -> int:
    """Bytes to stdout as they come (a player can start), or to a file renamed when whole."""
    if output != "-":
        return save_atomically(chunks, Path(output))
    sink = sys.stdout.buffer
    size = 0
    for chunk in chunks:
        sink.write(chunk)
        sink.flush()
        size += len(chunk)
    return size


def wait_with_status(sess: Session, job_id: str, *, what: str) -> Job:
    with stderr_console().status(f"{what}: job {job_id} queued") as status:
        return sess.client.wait_for_job(
            job_id,
            poll_s=sess.poll_s,
            on_update=lambda job: status.update(f"{what}: job {job.id} {job.state}"),
        )


def finished_ok(job: Job) -> Job:
    if job.state == "succeeded":
        return job
    reason = f": {job.error}" if job.error else ""
    raise QttsError(f"job {job.id} {job.state}{reason}")


def read_text_argument(text: str) -> str:
    if text == "-":
        text = sys.stdin.read()
    if not text.strip():
        raise QttsError("nothing to say: the text is empty")
    return text


@app.command()
@reports_errors
def say(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="What to say; '-' reads it from stdin.")],
    output: Annotated[
        str, typer.Option("--output", "-o", help="Audio file to write; '-' is stdout.")
    ],
    voice: Annotated[
        str, typer.Option(help="A built-in speaker, an OpenAI voice name or a registered voice.")
    ] = "vivian",
    audio_format: Annotated[
        AudioFormat | None,
        typer.Option("--format", help="Default: from the output file's extension."),
    ] = None,
    speed: Annotated[float | None, typer.Option(min=0.25, max=4.0)] = None,
    model: Annotated[str, typer.Option(help="Any name; one ending in a model type picks it.")] = (
        "tts-1"
    ),
    instructions: Annotated[
        str | None, typer.Option(help="Style for a speaker, or the voice to design.")
    ] = None,
    stream: Annotated[bool, typer.Option(help="Write the audio as it is made.")] = False,
) -> None:
    """Say TEXT with POST /v1/audio/speech and write the audio."""
    sess = session(ctx)
    fmt = format_for(output, audio_format)
    body: JsonObject = {
        "model": model,
        "input": read_text_argument(text),
        "voice": voice,
        "response_format": fmt.value,
    }
    if speed is not None:
        body["speed"] = speed
    if instructions:
        body["instructions"] = instructions
    if stream:
        body["stream_format"] = "audio"
    try:
        response = sess.client.send("POST", "/v1/audio/speech", json_body=body, stream=stream)
    except ApiError as exc:
        # Past its wait the gateway answers 504 still_running naming the job, which runs on.
        if exc.code != "still_running" or not exc.job_id:
            raise
        job_id = exc.job_id
        note(f"job {job_id} is taking longer than the gateway waits; still waiting")
        size = _finish_later(sess, job_id, output=output, stream=stream)
    else:
        with response:
            job_id = response.headers.get("X-Job-Id", "")
            if response.status_code == 200:
                # chunk_size=None: hand on each piece the moment it arrives when streaming.
                chunks = response.iter_content(None if stream else CHUNK_BYTES)
                size = write_output(output, chunks)
            else:  # 202 with the job, from a gateway that answers so past its wait
                job = Job.parse(json_object(response))
                job_id = job.id
                note(f"job {job.id} is taking longer than the gateway waits; still waiting")
                size = _finish_later(sess, job.id, output=output, stream=stream)
    where = "stdout" if output == "-" else output
    note(f"wrote {size} bytes to {where}" + (f" (job {job_id})" if job_id else ""))


def _finish_later(sess: Session, job_id: str, *, output: str, stream: bool) -> int:
    """After a 202: a stream picks up from the job's stream route (which itself waits for the
    first piece); otherwise wait for the job and fetch its audio."""
    if stream:
        path = f"/v1/jobs/{quote(job_id, safe='')}/stream"
        while True:
            response = sess.client.send("GET", path, params={"stream_format": "audio"}, stream=True)
            with response:
                if response.status_code == 200:
                    return write_output(output, response.iter_content(None))
            time.sleep(sess.poll_s)
    job = finished_ok(wait_with_status(sess, job_id, what="speech"))
    with sess.client.fetch_audio(job.audio_url or f"/v1/jobs/{job.id}/audio") as response:
        return write_output(output, response.iter_content(CHUNK_BYTES))


# -- voices -------------------------------------------------------------------------------------


def all_pages(
    sess: Session, path: str, *, field: str, params: dict[str, str | int], limit: int | None
) -> list[JsonObject]:
    """Follow ``next_page_token`` until the last page or ``limit`` entries."""
    found: list[JsonObject] = []
    token: str | None = None
    while limit is None or len(found) < limit:
        page_params = dict(params)
        if token:
            page_params["page_token"] = token
        page = sess.client.get_json(path, params=page_params)
        entries = page.get(field)
        if not isinstance(entries, list):
            raise ApiError(f"the gateway answered a page without a '{field}' list")
        found += [e for e in entries if isinstance(e, dict)]
        next_token = page.get("next_page_token")
        if not isinstance(next_token, str) or not next_token:
            break
        token = next_token
    return found if limit is None else found[:limit]


def print_rows(rows: list[list[str]]) -> None:
    """Plain aligned columns: readable, and still easy to cut or grep."""
    if not rows:
        return
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        typer.echo("  ".join([*cells, row[-1]]).rstrip())


@voices_app.command("list")
@reports_errors
def voices_list(
    ctx: typer.Context,
    q: Annotated[str | None, typer.Option("--q", help="Part of a name or description.")] = None,
) -> None:
    """Built-in speakers, then the registered voices you may use."""
    params: dict[str, str | int] = {"page_size": 200}
    if q:
        params["q"] = q
    voices = all_pages(session(ctx), "/v1/voices", field="voices", params=params, limit=None)
    rows = []
    for voice in voices:
        traits = [str(voice[t]) for t in ("character", "emotion", "intensity") if voice.get(t)]
        tags = voice.get("tags") or []
        extra = " / ".join(traits) + (f"  [{', '.join(map(str, tags))}]" if tags else "")
        rows.append([str(voice.get("id")), str(voice.get("kind")), str(voice.get("name")), extra])
    print_rows(rows)


@voices_app.command("create")
@reports_errors
def voices_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The new voice's name.")],
    audio: Annotated[Path, typer.Option("--audio", help="Reference clip: WAV, FLAC, Ogg, MP3.")],
    ref_text: Annotated[str | None, typer.Option("--ref-text", help="What the clip says.")] = None,
    x_vector_only: Annotated[
        bool, typer.Option("--x-vector-only", help="No transcript: the speaker embedding only.")
    ] = False,
    character: Annotated[str | None, typer.Option()] = None,
    emotion: Annotated[str | None, typer.Option()] = None,
    intensity: Annotated[str | None, typer.Option()] = None,
    description: Annotated[str | None, typer.Option()] = None,
    tags: Annotated[str | None, typer.Option(help="Comma-separated, e.g. narrator,calm.")] = None,
) -> None:
    """Register a voice from a clip (POST /v1/voices), wait for it, print its id."""
    if (ref_text is None) == (not x_vector_only):
        fail("pass exactly one of --ref-text (the clip's transcript) and --x-vector-only")
    sess = session(ctx)
    clip = audio.read_bytes()
    mime = mimetypes.guess_type(audio.name)[0] or "application/octet-stream"
    fields = {
        "name": name,
        "ref_text": ref_text,
        "x_vector_only": "true" if x_vector_only else None,
        "character": character,
        "emotion": emotion,
        "intensity": intensity,
        "description": description,
        "tags": tags,
    }
    response = sess.client.send(
        "POST",
        "/v1/voices",
        data={k: v for k, v in fields.items() if v is not None},
        files={"ref_audio": (audio.name, clip, mime)},
    )
    job = Job.parse(json_object(response))
    note(f"job {job.id}: building voice {name!r}")
    job = finished_ok(wait_with_status(sess, job.id, what="voice"))
    if not job.voice_id:
        raise ApiError(f"job {job.id} succeeded without a voice id")
    typer.echo(job.voice_id)


@voices_app.command("delete")
@reports_errors
def voices_delete(
    ctx: typer.Context, voice_id: Annotated[str, typer.Argument(metavar="ID")]
) -> None:
    """Delete a registered voice (its prompt, reference clip and record)."""
    session(ctx).client.send("DELETE", f"/v1/voices/{quote(voice_id, safe='')}")
    typer.echo(f"deleted {voice_id}")


# -- jobs ---------------------------------------------------------------------------------------


@jobs_app.command("list")
@reports_errors
def jobs_list(
    ctx: typer.Context,
    state: Annotated[
        str | None, typer.Option(help="queued, running, succeeded, failed or canceled.")
    ] = None,
    created_after: Annotated[
        str | None, typer.Option("--created-after", help="ISO 8601, e.g. 2025-01-31T12:00:00Z.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many jobs.")] = 50,
) -> None:
    """Your jobs, in the order the gateway lists them, following the pages."""
    params: dict[str, str | int] = {"page_size": min(limit, 50)}
    if state:
        params["state"] = state
    if created_after:
        try:
            datetime.fromisoformat(created_after)
        except ValueError:
            fail(f"--created-after: {created_after!r} is not an ISO 8601 date or time")
        params["created_after"] = created_after
    jobs = all_pages(session(ctx), "/v1/jobs", field="jobs", params=params, limit=limit)
    rows = []
    for job in jobs:
        progress = job.get("progress")
        done = ""
        if isinstance(progress, dict):
            done = f"{progress.get('succeeded', 0)}/{progress.get('total', 0)} done"
            if progress.get("failed"):
                done += f", {progress['failed']} failed"
        error = job.get("error")
        if isinstance(error, dict):
            done = f"{done} {error.get('code', '')}".strip()
        rows.append(
            [
                str(job.get("id")),
                str(job.get("state")),
                str(job.get("mode")),
                str(job.get("created_at")),
                done,
            ]
        )
    print_rows(rows)


@jobs_app.command("get")
@reports_errors
def jobs_get(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """A job, as the gateway describes it (JSON)."""
    typer.echo(json.dumps(session(ctx).client.job(job_id).raw, indent=2))


@jobs_app.command("cancel")
@reports_errors
def jobs_cancel(ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Cancel a job that has not finished (a finished one answers 409)."""
    body = session(ctx).client.post_json(f"/v1/jobs/{quote(job_id, safe='')}/cancel", {})
    job = Job.parse(body)
    typer.echo(f"{job.id}: {job.state}")


# -- render -------------------------------------------------------------------------------------


@app.command("render")
@reports_errors
def render_command(
    ctx: typer.Context,
    book: Annotated[
        Path, typer.Argument(help="A chapter as UTF-8 text; blank lines part paragraphs.")
    ],
    out_dir: Annotated[Path, typer.Option("--output", "-o", help="Folder for the audio files.")],
    voice: Annotated[
        str, typer.Option(help="A built-in speaker (any case) or a registered voice.")
    ] = "Vivian",
    audio_format: Annotated[AudioFormat, typer.Option("--format")] = AudioFormat.mp3,
    speed: Annotated[float | None, typer.Option(min=0.25, max=4.0)] = None,
    language: Annotated[str | None, typer.Option(help="e.g. en, english; default auto.")] = None,
    max_chars: Annotated[
        int,
        typer.Option(
            "--max-chars",
            min=1,
            max=5000,
            help="Most characters per item. Each paragraph is an item; a longer one is cut into"
            " groups of whole sentences (a sentence only when it alone is longer).",
        ),
    ] = DEFAULT_MAX_CHARS,
    new_batch: Annotated[
        bool,
        typer.Option(
            "--new-batch",
            help="Submit the items not on disk as a new batch (to try failed ones again).",
        ),
    ] = False,
    join: Annotated[
        bool, typer.Option("--join", help="Also fetch the whole chapter as one file, STEM.FORMAT.")
    ] = False,
    gap_ms: Annotated[
        int, typer.Option("--gap-ms", min=0, max=10_000, help="Silence between items, joined.")
    ] = 0,
    verify: Annotated[
        bool,
        typer.Option(
            "--verify/--no-verify",
            help="Have the gateway check every chunk, say a failing one again, and time the"
            " words (needed for --captions).",
        ),
    ] = True,
    captions: Annotated[
        CaptionFormat | None,
        typer.Option(
            "--captions",
            help="Also fetch the joined file's captions, STEM.srt or STEM.vtt (needs --join).",
        ),
    ] = None,
) -> None:
    """Render a chapter as one batch: one audio file per item in DIR, resumable.

    Items are the chapter's paragraphs, long ones cut between sentences (see --max-chars).
    """
    sess = session(ctx)
    options = RenderOptions(
        voice=voice,
        format=audio_format.value,
        speed=speed,
        language=language,
        max_chars=max_chars,
        join=join,
        join_gap_ms=gap_ms,
        verify=verify,
        captions=captions.value if captions is not None else None,
    )
    outcome = render(
        sess.client,
        book=book,
        out_dir=out_dir,
        options=options,
        poll_s=sess.poll_s,
        new_batch=new_batch,
        console=stderr_console(),
    )
    if outcome.batch_id is None:
        typer.echo(f"{book.stem}: all {outcome.total} items are already in {out_dir}")
        return
    if outcome.joined is not None:
        typer.echo(f"{book.stem}: joined into {outcome.joined}")
    if outcome.captions is not None:
        typer.echo(f"{book.stem}: captions in {outcome.captions}")
    for key, reason in sorted(outcome.failed.items()):
        note(f"{key}: {one_line(reason)}")
    if outcome.captions_error is not None:
        note(f"captions: {one_line(outcome.captions_error)}")
    if outcome.checks is not None:
        typer.echo(f"{book.stem}: {outcome.checks.line()}")
    typer.echo(
        f"{book.stem}: {len(outcome.succeeded)} succeeded, {len(outcome.failed)} failed"
        f" ({outcome.downloaded} downloaded now; batch {outcome.batch_id})"
    )
    if outcome.failed:
        note("a re-run finds the same batch; pass --new-batch to try the failed items again")
        raise typer.Exit(1)
    if outcome.captions_error is not None:
        raise typer.Exit(1)


# -- the console script -------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """The ``qtts`` console script: the app with every error reduced to one line."""
    try:
        result: Any = app(args=argv, prog_name="qtts", standalone_mode=False)
    except typer.TyperException as exc:  # usage: unknown option, missing argument, bad value
        message = one_line(exc.format_message())
        if message:  # empty when the usage was the help itself (a group called bare)
            typer.echo(f"qtts: {message} (see --help)", err=True)
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        typer.echo("qtts: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # the promise is one line, never a traceback
        if os.environ.get("QTTS_DEBUG"):
            raise
        typer.echo(
            f"qtts: unexpected {type(exc).__name__}: {one_line(str(exc))}"
            " (QTTS_DEBUG=1 shows the traceback)",
            err=True,
        )
        sys.exit(2)
    sys.exit(result if isinstance(result, int) else 0)


if __name__ == "__main__":
    main()
