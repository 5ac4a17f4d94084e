"""``qtts``: the chapter splitter, and every command over real HTTP against the real API
(``create_api`` over the in-memory fakes, a scripted worker running the jobs), served by
werkzeug on 127.0.0.1, every answer checked against ``contracts/openapi.yaml``."""

from __future__ import annotations

import io
import itertools
import json
import math
import re
import struct
import threading
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import webvtt
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import ValidationError
from typer.testing import CliRunner, Result
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from cli.http import ApiError, Job, Manifest
from cli.main import app, main
from cli.render import RenderOptions, chapter_items, idempotency_key
from cli.split import DEFAULT_MAX_CHARS, paragraphs, split_chapter
from functions.api.app import create_api
from shared.domain.jobs import Job as StoredJob
from shared.domain.synthesis import BatchRequest, VoiceTraits, output_format
from shared.usecases.gateway import Gateway
from tests.support.api import submit
from tests.support.contracts import validate_response
from tests.support.gateway import Fakes, add_voice
from tests.support.timings import Aligner
from tests.support.worker import ScriptedWorker

NOW = "2025-01-01T00:00:00Z"


# -- the splitter -------------------------------------------------------------------------------


def squeeze(text: str) -> str:
    return "".join(text.split())


# A chapter as a text file holds it: 669 characters, four paragraphs, lines wrapped for the eye.
FOUR_PARAGRAPHS = """\
The rain had not stopped for three days, and the river below the mill ran brown
and fast. Anna stood at the window and counted the boats that passed, as her
father had taught her.

"They will come tonight," said Mr. Hale from the doorway. He did not take off
his coat. Water ran from its hem and gathered in a dark pool on the floorboards.

She did not answer at once. The lamp hissed; somewhere in the house a shutter
knocked against the wall, again and again, like a slow and patient visitor.

At last she turned. "Then we leave before the bridge goes," she said, and
reached for the lantern on the hook by the stove. Its glass was cracked, but it
would do, for now.
"""


def test_each_paragraph_is_an_item_of_its_own_and_line_wraps_become_spaces() -> None:
    text = "One two\nthree.\n\n  \nFour five.\r\n\r\nSix."
    assert paragraphs(text) == ["One two three.", "Four five.", "Six."]
    assert split_chapter(text) == ["One two three.", "Four five.", "Six."]
    assert split_chapter(text, max_chars=5000) == ["One two three.", "Four five.", "Six."]


def test_a_short_chapter_of_four_paragraphs_is_four_items_by_default() -> None:
    assert len(FOUR_PARAGRAPHS) == 669
    items = split_chapter(FOUR_PARAGRAPHS)
    assert items == paragraphs(FOUR_PARAGRAPHS)
    assert len(items) == 4
    assert items[1].startswith('"They will come tonight," said Mr. Hale from the doorway.')


def test_a_long_paragraph_becomes_groups_of_whole_sentences_under_the_bound() -> None:
    said = [
        f"Sentence {i} is said by Mr. Brown, who paid $3.50 for it at {i} p.m. sharp."
        for i in range(1, 41)
    ]
    paragraph = " ".join(said)
    assert len(paragraph) > 3 * DEFAULT_MAX_CHARS
    items = split_chapter(paragraph)
    assert len(items) >= 4
    assert all(len(item) <= DEFAULT_MAX_CHARS for item in items)
    # Every item is a run of whole sentences: no sentence was cut, none is missing or moved.
    groups = [item.split(" Sentence ") for item in items]
    rebuilt = [g if i == 0 else f"Sentence {g}" for group in groups for i, g in enumerate(group)]
    assert rebuilt == said
    # Packed, not one sentence an item: each group but the last could not take the next one.
    for item, following in itertools.pairwise(items):
        assert len(item) + 1 + len(following.split(" Sentence ")[0]) > DEFAULT_MAX_CHARS

    first_two = "First sentence here. Second one is here!"
    paragraph = f"{first_two} Third? «Quoted.» Last"
    assert split_chapter(paragraph, max_chars=40) == [first_two, "Third? «Quoted.» Last"]


def test_cjk_sentences_need_no_space_and_overlong_sentences_are_cut_between_words() -> None:
    bang, query = "\uff01", "\uff1f"  # full-width ! and ?
    text = f"你好。再见{bang}好吗{query}"
    assert split_chapter(text, max_chars=3) == ["你好。", f"再见{bang}", f"好吗{query}"]
    assert split_chapter("aaa bbb ccc ddd.", max_chars=7) == ["aaa bbb", "ccc", "ddd."]
    # Only the sentence over the bound is cut, between words, as late as the bound allows.
    long_one = "one two three four five six seven eight nine ten eleven twelve."
    assert split_chapter(f"Short. {long_one} Short again.", max_chars=30) == [
        "Short. one two three four five",
        "six seven eight nine ten",
        "eleven twelve. Short again.",
    ]
    assert split_chapter("abcdefghij", max_chars=4) == ["abcd", "efgh", "ij"]


def test_nothing_to_say_is_no_items_and_the_bound_must_be_positive() -> None:
    assert split_chapter(" \n\n\t\n") == []
    with pytest.raises(ValueError, match="max_chars"):
        split_chapter("text", max_chars=0)


@settings(max_examples=200, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("ab .!?。\n\t")), max_size=400),
    max_chars=st.integers(min_value=1, max_value=60),
)
def test_items_respect_the_bound_and_keep_every_character_in_order(
    text: str, max_chars: int
) -> None:
    items = split_chapter(text, max_chars=max_chars)
    assert all(0 < len(item) <= max_chars for item in items)
    assert all(item == item.strip() for item in items)
    assert squeeze("".join(items)) == squeeze(text)
    # An item never spans two paragraphs.
    assert all(any(item in block for block in paragraphs(text)) for item in items)


def test_items_are_speech_bodies_keyed_by_the_stem() -> None:
    builtin = RenderOptions(voice="uncle_FU", format="mp3", speed=1.25, max_chars=20)
    items = chapter_items("Hello there.\n\nGeneral Kenobi.", stem="ch1", options=builtin)
    assert items == [
        {
            "key": "ch1-0001",
            "text": "Hello there.",
            "format": "mp3",
            "mode": "custom_voice",
            "speaker": "uncle_FU",
            "speed": 1.25,
        },
        {
            "key": "ch1-0002",
            "text": "General Kenobi.",
            "format": "mp3",
            "mode": "custom_voice",
            "speaker": "uncle_FU",
            "speed": 1.25,
        },
    ]
    cloned = chapter_items(
        "Hi.", stem="x" * 200, options=RenderOptions(voice="Narrator", format="wav")
    )
    assert cloned[0]["mode"] == "clone_prompt"
    assert cloned[0]["voice"] == "Narrator"
    assert "speaker" not in cloned[0]
    assert len(cloned[0]["key"]) <= 100
    assert idempotency_key(items) == idempotency_key(json.loads(json.dumps(items)))
    assert idempotency_key(items) != idempotency_key(items[:1])


# -- the real API over real HTTP ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One request the command line made."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class Served:
    """``create_api`` over the in-memory fakes, served by werkzeug on 127.0.0.1, with a
    ScriptedWorker that runs one job at a time.

    The world moves between calls: before each API call one fake second passes (the worker
    takes a step), as time would pass between a client's looks at a job; the API's own waits
    step it too, through the fake clock. Every API answer is checked against
    ``contracts/openapi.yaml`` (its route, its status, its JSON body); what does not match is
    kept in ``problems``, which must be empty when the test ends.

    The one stand-in on the wire is the bucket: the fake blob store's signed URLs lead nowhere,
    so here a signed URL points at ``/bucket/...`` on ``localhost`` (another host name than the
    API's, as a bucket's is), answered from the fake blob store."""

    fakes: Fakes
    worker: ScriptedWorker
    key: str
    """Alice's API key."""
    api: Flask
    port: int = 0
    calls: list[Call] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    bucket_reads: list[str] = field(default_factory=list)
    bucket_reads_with_auth: list[bool] = field(default_factory=list)
    jobs_open_at_bucket_read: list[int] = field(default_factory=list)
    """How many item jobs had not finished when each bucket read came."""
    before_call: list[Callable[[Call], None]] = field(default_factory=list)
    hold: Callable[[], bool] = lambda: False
    """While true, calls do not move the world."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def signed_url(self, path: str, *, ttl_s: int, method: str = "GET") -> str:
        bucket = self.fakes.blobs.bucket
        return f"http://localhost:{self.port}/bucket/{bucket}/{path}?X-Goog-Expires={ttl_s}"

    def requests_to(self, method: str, pattern: str) -> list[Call]:
        return [c for c in self.calls if c.method == method and re.fullmatch(pattern, c.path)]

    def jobs_of_mode(self, mode: str) -> list[StoredJob]:
        return [j for j in self.fakes.jobs.all() if j.request.mode.value == mode]

    def __call__(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        body = request.get_data()
        environ["wsgi.input"] = io.BytesIO(body)  # for the app, which reads it again
        if request.path.startswith("/bucket/"):
            return self.bucket(request)(environ, start_response)
        call = Call(
            request.method, request.path, request.args.to_dict(), dict(request.headers), body
        )
        self.calls.append(call)
        for hook in self.before_call:
            hook(call)
        if not self.hold():
            self.fakes.clock.sleep(1.0)
        response = Response.from_app(self.api, environ)
        self.check(call, response)
        return response(environ, start_response)

    def check(self, call: Call, response: Response) -> None:
        body = None
        if response.mimetype == "application/json":
            body = json.loads(response.get_data())
        try:
            validate_response(call.method, call.path, response.status_code, body)
        except (AssertionError, ValidationError) as exc:
            first = str(exc).splitlines()[0]
            self.problems.append(f"{call.method} {call.path} {response.status_code}: {first}")

    def bucket(self, request: Request) -> Response:
        self.bucket_reads.append(request.path)
        self.bucket_reads_with_auth.append("Authorization" in request.headers)
        items = [j for j in self.fakes.jobs.all() if j.parent_id and j.request.mode.value != "join"]
        self.jobs_open_at_bucket_read.append(sum(not j.state.terminal for j in items))
        path = request.path.removeprefix(f"/bucket/{self.fakes.blobs.bucket}/")
        if path not in self.fakes.blobs.objects:
            return Response(b"<Error>NoSuchKey</Error>", status=404, mimetype="application/xml")
        data, content_type = self.fakes.blobs.objects[path]
        return Response(data, content_type=content_type)


class QuietHandler(WSGIRequestHandler):
    """No access log: werkzeug would write it to whatever sys.stderr is when it first logs,
    which inside CliRunner is the command's captured stderr."""

    def log(self, type: str, message: str, *args: Any) -> None:
        pass


@pytest.fixture
def served(
    gateway: Gateway, fakes: Fakes, alice: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Served]:
    it = Served(
        fakes=fakes,
        worker=ScriptedWorker(fakes, gateway=gateway, capacity=1),
        key=alice["Authorization"].removeprefix("Bearer "),
        api=create_api(gateway),
    )
    # One request at a time, as the command line makes them: the fakes see no two at once.
    server = make_server("127.0.0.1", 0, it, request_handler=QuietHandler)
    it.port = server.server_port
    monkeypatch.setattr(fakes.blobs, "signed_url", it.signed_url)
    # shutdown() waits for the loop to look, every 0.5 s by default.
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield it
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)
    assert it.problems == [], "answers that are not as contracts/openapi.yaml says"


def qtts(
    served: Served, *args: str, key: str | None = None, env: dict[str, str] | None = None
) -> Result:
    """The command as alice (or with ``key``; ``""`` is none), with a short poll interval: its
    own polling runs in real time."""
    env = {"QTTS_API_KEY": served.key if key is None else key, **(env or {})}
    return CliRunner().invoke(
        app, ["--base-url", served.url, "--poll-interval", "0.01", *args], env=env
    )


def assert_one_line_error(result: Result, expected: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert lines[0].startswith("qtts: ")
    assert "Traceback" not in result.output


def the_job(served: Served, mode: str) -> StoredJob:
    (job,) = served.jobs_of_mode(mode)
    return job


# -- say ----------------------------------------------------------------------------------------


def test_say_writes_the_audio_it_gets(served: Served, tmp_path: Path) -> None:
    out = tmp_path / "hi.mp3"
    result = qtts(served, "say", "Hello.", "-o", str(out))
    assert result.exit_code == 0, result.output
    job = the_job(served, "custom_voice")
    assert out.read_bytes() == f"<{job.id}:whole>".encode()
    assert f"(job {job.id})" in result.stderr
    (call,) = served.requests_to("POST", "/v1/audio/speech")
    assert call.headers["Authorization"] == f"Bearer {served.key}"
    assert json.loads(call.body) == {
        "model": "tts-1",
        "input": "Hello.",
        "voice": "vivian",
        "response_format": "mp3",
    }
    assert not list(tmp_path.glob(".*.part"))


def test_say_takes_the_format_from_the_extension_unless_told(
    served: Served, tmp_path: Path
) -> None:
    ogg = qtts(
        served, "say", "Hi.", "-o", str(tmp_path / "a.ogg"), "--voice", "Ryan", "--speed", "1.5"
    )
    assert ogg.exit_code == 0, ogg.output
    flac = qtts(
        served,
        "say",
        "Hi.",
        "-o",
        str(tmp_path / "b.ogg"),
        "--format",
        "flac",
        "--instructions",
        "calm",
        "--model",
        "x-CustomVoice",
    )
    assert flac.exit_code == 0, flac.output
    first, second = (json.loads(c.body) for c in served.requests_to("POST", "/v1/audio/speech"))
    assert first["response_format"] == "opus"
    assert (first["voice"], first["speed"]) == ("Ryan", 1.5)
    assert second["response_format"] == "flac"
    assert (second["instructions"], second["model"]) == ("calm", "x-CustomVoice")
    # What the gateway made of them.
    made = sorted(served.jobs_of_mode("custom_voice"), key=lambda j: j.created_at)
    assert [output_format(j.request) for j in made] == ["opus", "flac"]
    unknown = qtts(served, "say", "Hi.", "-o", str(tmp_path / "c.xyz"))
    assert_one_line_error(unknown, "pass --format")


def test_say_to_stdout_writes_the_bytes_there(served: Served) -> None:
    result = qtts(served, "say", "Hello.", "-o", "-")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == f"<{the_job(served, 'custom_voice').id}:whole>".encode()


def busy_until_polled(served: Served) -> None:
    """No worker takes the job while the gateway waits, so its wait runs out (it answers with
    the job: a 202, or a 504 ``still_running`` naming it); one does once the command line comes
    back to look."""
    worker = served.worker
    worker.idle_steps = 10**9

    def back_to_work(call: Call) -> None:
        if call.method == "GET":
            worker.idle_steps = 0

    served.before_call.append(back_to_work)


def test_say_past_the_gateways_wait_polls_the_job_then_downloads_its_audio(
    served: Served, tmp_path: Path
) -> None:
    busy_until_polled(served)
    out = tmp_path / "long.wav"
    result = qtts(served, "say", "A long text.", "-o", str(out))
    assert result.exit_code == 0, result.output
    job = the_job(served, "custom_voice")
    assert out.read_bytes() == f"<{job.id}:whole>".encode()
    assert "taking longer than the gateway waits" in result.stderr
    assert f"job {job.id}" in result.stderr
    assert served.requests_to("GET", f"/v1/jobs/{job.id}")
    assert served.requests_to("GET", f"/v1/jobs/{job.id}/audio")
    assert served.bucket_reads_with_auth == [False]


def test_say_stream_writes_the_pieces_as_they_come(served: Served, tmp_path: Path) -> None:
    out = tmp_path / "s.pcm"
    result = qtts(served, "say", "Streamed.", "-o", str(out), "--stream")
    assert result.exit_code == 0, result.output
    job = the_job(served, "custom_voice")
    assert out.read_bytes() == f"<{job.id}:0><{job.id}:1><{job.id}:2>".encode()
    (call,) = served.requests_to("POST", "/v1/audio/speech")
    assert json.loads(call.body)["stream_format"] == "audio"
    assert json.loads(call.body)["response_format"] == "pcm"


def test_say_stream_past_the_gateways_wait_picks_it_up_from_the_job(
    served: Served, tmp_path: Path
) -> None:
    busy_until_polled(served)
    out = tmp_path / "s.pcm"
    result = qtts(served, "say", "Streamed.", "-o", str(out), "--stream")
    assert result.exit_code == 0, result.output
    job = the_job(served, "custom_voice")
    assert out.read_bytes() == f"<{job.id}:0><{job.id}:1><{job.id}:2>".encode()
    (call,) = served.requests_to("GET", f"/v1/jobs/{job.id}/stream")
    assert call.query == {"stream_format": "audio"}


def test_an_error_body_is_one_line_and_exit_1(served: Served, tmp_path: Path) -> None:
    out = tmp_path / "x.mp3"
    result = qtts(served, "say", "Hi.", "-o", str(out), "--voice", "nobody")
    assert_one_line_error(
        result, "unknown voice 'nobody': use a built-in speaker, an OpenAI voice name, or"
    )
    assert "(HTTP 400)" in result.stderr
    assert not out.exists()
    assert not served.fakes.jobs.all()


def test_a_missing_or_wrong_key_and_an_unreachable_gateway_are_one_line(
    served: Served, tmp_path: Path
) -> None:
    result = qtts(served, "say", "Hi.", "-o", str(tmp_path / "x.mp3"), key="")
    assert_one_line_error(result, "set QTTS_API_KEY or pass --api-key")
    assert "(HTTP 401)" in result.stderr
    wrong = qtts(served, "jobs", "list", key="qtts_not-a-key")
    assert_one_line_error(wrong, "invalid API key (HTTP 401)")
    assert "QTTS_API_KEY" not in wrong.stderr  # a key was given: it is the key that is wrong
    gone = CliRunner().invoke(
        app, ["--base-url", "http://127.0.0.1:9", "jobs", "get", "x"], env={"QTTS_API_KEY": "k"}
    )
    assert_one_line_error(gone, "cannot reach the gateway at http://127.0.0.1:9")


def test_the_console_script_reports_usage_errors_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["say", "--speed", "9", "Hi.", "-o", "x.mp3"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("qtts: ")
    assert "--speed" in err


# -- render -------------------------------------------------------------------------------------


CHAPTER = "The first paragraph.\n\nThe second one, a bit longer.\n\nAnd the third."


def write_chapter(tmp_path: Path, text: str = CHAPTER) -> Path:
    book = tmp_path / "chapter1.txt"
    book.write_text(text)
    return book


def render(
    served: Served, book: Path, out: Path, *extra: str, env: dict[str, str] | None = None
) -> Result:
    return qtts(served, "render", str(book), "-o", str(out), *extra, env=env)


def items_by_key(served: Served, batch_id: str) -> dict[str, StoredJob]:
    batch = served.fakes.jobs.get(batch_id)
    assert batch is not None
    assert isinstance(batch.request, BatchRequest)
    children = served.fakes.jobs.get_many(batch.request.children)
    return {
        str(key): children[child]
        for key, child in zip(batch.request.keys, batch.request.children, strict=True)
    }


def audio_of(job: StoredJob) -> bytes:
    return f"<{job.id}:whole>".encode()


def test_render_submits_one_batch_and_downloads_each_item_as_it_finishes(
    served: Served, tmp_path: Path
) -> None:
    book, out = write_chapter(tmp_path), tmp_path / "out"
    result = render(served, book, out, "--voice", "Serena", "--format", "wav")
    assert result.exit_code == 0, result.output
    assert "3 succeeded, 0 failed" in result.stdout

    (call,) = served.requests_to("POST", "/v1/tts/batch")
    items = json.loads(call.body)["items"]
    assert [i["key"] for i in items] == ["chapter1-0001", "chapter1-0002", "chapter1-0003"]
    assert items[0] == {
        "key": "chapter1-0001",
        "text": "The first paragraph.",
        "format": "wav",
        "mode": "custom_voice",
        "speaker": "Serena",
    }
    assert re.fullmatch(r"[0-9a-f]{64}", call.headers["Idempotency-Key"])
    assert call.headers["Idempotency-Key"] == idempotency_key(items)

    batch = the_job(served, "batch")
    made = items_by_key(served, batch.id)
    for item in items:
        assert (out / f"{item['key']}.wav").read_bytes() == audio_of(made[item["key"]])
    # The first item was fetched while the others were still being made.
    assert len(served.bucket_reads) == 3
    assert served.jobs_open_at_bucket_read[0] > 0
    assert served.bucket_reads_with_auth == [False, False, False]
    assert not list(out.glob(".*"))
    record = json.loads((out / "render.json").read_text())
    assert record["batch_id"] == batch.id
    assert record["keys"] == [i["key"] for i in items]


def test_render_again_downloads_only_what_is_missing_from_the_same_batch(
    served: Served, tmp_path: Path
) -> None:
    book, out = write_chapter(tmp_path), tmp_path / "out"
    assert render(served, book, out).exit_code == 0
    assert len(served.bucket_reads) == 3

    again = render(served, book, out)
    assert again.exit_code == 0, again.output
    assert "already" in again.stdout
    assert len(served.bucket_reads) == 3

    (out / "chapter1-0002.mp3").unlink()
    third = render(served, book, out)
    assert third.exit_code == 0, third.output
    submits = served.requests_to("POST", "/v1/tts/batch")
    assert len(submits) == 2
    assert submits[0].headers["Idempotency-Key"] == submits[1].headers["Idempotency-Key"]
    batch = the_job(served, "batch")  # the same batch was found, not a second one made
    second = items_by_key(served, batch.id)["chapter1-0002"]
    assert len(served.bucket_reads) == 4
    assert second.id in served.bucket_reads[-1]
    assert (out / "chapter1-0002.mp3").read_bytes() == audio_of(second)
    assert "1 downloaded now" in third.stdout


def test_render_reports_failed_items_and_can_try_them_in_a_new_batch(
    served: Served, tmp_path: Path
) -> None:
    add_voice(served.fakes, name="My Narrator", owner="alice", voice_id="ab" * 12)
    book, out = write_chapter(tmp_path), tmp_path / "out"
    served.worker.fail_texts = {"The second one, a bit longer."}
    result = render(served, book, out, "--voice", "My Narrator")
    assert result.exit_code == 1
    assert "2 succeeded, 1 failed" in result.stdout
    assert "chapter1-0002: scripted synthesis_failed (synthesis_failed)" in result.stderr
    assert "Traceback" not in result.output
    assert not (out / "chapter1-0002.mp3").exists()
    first_items = json.loads(served.requests_to("POST", "/v1/tts/batch")[0].body)["items"]
    assert {i["mode"] for i in first_items} == {"clone_prompt"}
    assert {i["voice"] for i in first_items} == {"My Narrator"}

    served.worker.fail_texts = set()
    retry = render(served, book, out, "--voice", "My Narrator", "--new-batch")
    assert retry.exit_code == 0, retry.output
    call = served.requests_to("POST", "/v1/tts/batch")[1]
    assert [i["key"] for i in json.loads(call.body)["items"]] == ["chapter1-0002"]
    assert call.headers["Idempotency-Key"] != idempotency_key(first_items)
    first, second = sorted(served.jobs_of_mode("batch"), key=lambda j: j.created_at)
    again = items_by_key(served, second.id)["chapter1-0002"]
    assert (out / "chapter1-0002.mp3").read_bytes() == audio_of(again)
    assert json.loads((out / "render.json").read_text())["batches"] == [first.id, second.id]


def test_render_join_fetches_the_whole_chapter_once_and_resumes_without_asking_again(
    served: Served, tmp_path: Path
) -> None:
    book, out = write_chapter(tmp_path), tmp_path / "out"
    result = render(served, book, out, "--join", "--gap-ms", "300")
    assert result.exit_code == 0, result.output
    (call,) = served.requests_to("POST", "/v1/tts/batch")
    assert (json.loads(call.body)["join"], json.loads(call.body)["join_gap_ms"]) == (True, 300)
    joined = out / f"{book.stem}.mp3"
    assert joined.read_bytes() == audio_of(the_job(served, "join"))
    assert f"joined into {joined}" in result.output

    again = render(served, book, out, "--join")
    assert again.exit_code == 0, again.output
    assert len(served.requests_to("POST", "/v1/tts/batch")) == 1  # all on disk: nothing asked
    # A plain render of the same chapter is another batch than the joined one.
    (out / f"{book.stem}-0001.mp3").unlink()
    assert render(served, book, out).exit_code == 0
    assert len(served.jobs_of_mode("batch")) == 2
    joined.unlink()
    refused = render(served, book, out, "--join", "--new-batch")
    assert refused.exit_code != 0
    assert "--new-batch" in refused.output


def test_render_captions_the_joined_file_beside_it_and_says_what_the_checks_found(
    served: Served, tmp_path: Path
) -> None:
    Aligner(
        served.fakes,
        gap_s=0.3,
        remade={"The first paragraph."},
        failing={"The second one, a bit longer."},
    )
    book, out = write_chapter(tmp_path), tmp_path / "out"
    result = render(served, book, out, "--join", "--gap-ms", "300", "--captions", "vtt")
    assert result.exit_code == 0, result.output
    (submitted,) = served.requests_to("POST", "/v1/tts/batch")
    # Checked by default: the gateway's default for items, so nothing is sent for it.
    assert all("verify" not in item for item in json.loads(submitted.body)["items"])
    captions = out / f"{book.stem}.vtt"
    assert f"captions in {captions}" in result.stdout
    (fetched,) = served.requests_to("GET", r"/v1/jobs/[^/]+/captions")
    assert fetched.query == {"format": "vtt"}
    cues = webvtt.from_string(captions.read_text())
    assert " ".join(c.text.replace("\n", " ") for c in cues) == " ".join(split_chapter(CHAPTER))
    starts = [c.start_time.in_milliseconds() for c in cues]
    assert starts == sorted(starts)
    assert f"{book.stem}: 3 chunks, 2 re-made, 1 below threshold: item 2" in result.stdout

    again = render(served, book, out, "--join", "--gap-ms", "300", "--captions", "vtt")
    assert again.exit_code == 0, again.output
    assert len(served.requests_to("POST", "/v1/tts/batch")) == 1  # all on disk: nothing asked
    captions.unlink()
    third = render(served, book, out, "--join", "--gap-ms", "300", "--captions", "vtt")
    assert third.exit_code == 0, third.output
    assert captions.exists()
    assert len(served.jobs_of_mode("batch")) == 1  # the same batch, found again


def test_render_captions_need_the_joined_file_and_checks(served: Served, tmp_path: Path) -> None:
    book, out = write_chapter(tmp_path), tmp_path / "out"
    refused = render(served, book, out, "--captions", "srt")
    assert_one_line_error(refused, "--captions are timed against the joined file: add --join")
    assert not served.requests_to("POST", "/v1/tts/batch")

    # Unchecked items have no word times: the audio is made, the captions are refused.
    result = render(served, book, out, "--join", "--no-verify", "--captions", "srt")
    assert result.exit_code == 1, result.output
    (submitted,) = served.requests_to("POST", "/v1/tts/batch")
    assert {item["verify"] for item in json.loads(submitted.body)["items"]} == {False}
    assert (out / f"{book.stem}.mp3").exists()
    assert not (out / f"{book.stem}.srt").exists()
    assert "captions: " in result.stderr
    assert "verify: true" in result.stderr
    assert "chunks" not in result.stdout  # nothing was checked: no line about it


def test_render_keeps_the_clock_moving_while_the_gateway_joins(
    served: Served, tmp_path: Path
) -> None:
    # The join job is held back for 1.2 s of wall-clock time once it exists: the bar's clock
    # (whole seconds) must be seen to move while the command line waits for it.
    appeared: list[float] = []
    held_calls: list[str] = []

    def joining() -> bool:
        if not served.jobs_of_mode("join"):
            return False
        if not appeared:
            appeared.append(time.monotonic())
        held = time.monotonic() - appeared[0] < 1.2
        if held:
            held_calls.append(served.calls[-1].path)
        return held

    served.hold = joining
    book, out = write_chapter(tmp_path, FOUR_PARAGRAPHS), tmp_path / "out"
    # A terminal, as a person's: the bar is drawn live (frame after frame) on stderr.
    terminal = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "120"}
    result = render(served, book, out, "--join", env=terminal)
    assert result.exit_code == 0, result.output
    assert (out / f"{book.stem}.mp3").read_bytes() == audio_of(the_job(served, "join"))
    held_reads = [path for path in held_calls if path.endswith("/manifest")]
    assert len(held_reads) >= 3
    # The items are done (4 of 4, the join is the 5th step) and the clock goes on: one frame
    # at least for each look at the batch, and the elapsed time in them moves.
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stderr)  # colours, cursor moves
    frames = re.findall(r"4/5\s+joining\s+(\d+:\d\d:\d\d)", drawn)
    assert len(frames) >= len(held_reads)
    assert len(set(frames)) >= 2, frames
    assert re.search(r"5/5\s+\d+:\d\d:\d\d", drawn)


def test_render_of_an_empty_file_is_one_line(served: Served, tmp_path: Path) -> None:
    result = render(served, write_chapter(tmp_path, "\n\n"), tmp_path / "out")
    assert_one_line_error(result, "holds no text")


# -- jobs ---------------------------------------------------------------------------------------


def submit_jobs(served: Served, texts: list[str]) -> list[str]:
    """Jobs of alice's, made by the gateway itself (its test client: no worker step)."""
    client = served.api.test_client()
    headers = {"Authorization": f"Bearer {served.key}"}
    ids = []
    for text in texts:
        response = submit(client, headers, {"text": text, "speaker": "ryan"})
        assert response.status_code == 202, response.text
        ids.append(str(response.get_json()["id"]))
    return ids


def test_jobs_list_follows_the_pages(served: Served) -> None:
    # More than one page of 50: the command line asks for 50 at a time.
    served.worker.idle_steps = 10**9  # nobody runs them: they stay queued
    ids = submit_jobs(served, [f"Line {i}." for i in range(53)])
    result = qtts(
        served, "jobs", "list", "--state", "queued", "--created-after", NOW, "--limit", "60"
    )
    assert result.exit_code == 0, result.output
    listed = [line.split()[0] for line in result.stdout.splitlines()]
    assert sorted(listed) == sorted(ids)
    first, second = served.requests_to("GET", "/v1/jobs")
    assert first.query == {"page_size": "50", "state": "queued", "created_after": NOW}
    assert second.query.pop("page_token")
    assert second.query == first.query

    limited = qtts(served, "jobs", "list", "--limit", "3")
    assert len(limited.stdout.splitlines()) == 3
    bad = qtts(served, "jobs", "list", "--created-after", "yesterday")
    assert_one_line_error(bad, "not an ISO 8601")


def test_jobs_get_and_cancel(served: Served) -> None:
    served.worker.idle_steps = 10**9  # nobody runs them: they stay queued
    (waiting,) = submit_jobs(served, ["Wait."])
    got = qtts(served, "jobs", "get", waiting)
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["state"] == "queued"
    assert qtts(served, "jobs", "cancel", waiting).stdout.strip() == f"{waiting}: canceled"
    again = qtts(served, "jobs", "cancel", waiting)
    assert_one_line_error(again, f"job {waiting} is already canceled (HTTP 409)")
    assert_one_line_error(qtts(served, "jobs", "get", "nope"), "no job 'nope' (HTTP 404)")


# -- voices -------------------------------------------------------------------------------------


def wav_clip(seconds: float = 2.0) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as clip:
        clip.setnchannels(1)
        clip.setsampwidth(2)
        clip.setframerate(24_000)
        tone = (
            round(8000 * math.sin(2 * math.pi * 220 * i / 24_000))
            for i in range(int(24_000 * seconds))
        )
        clip.writeframes(b"".join(struct.pack("<h", s) for s in tone))
    return buffer.getvalue()


def test_voices_create_uploads_the_clip_waits_and_prints_the_voice_id(
    served: Served, tmp_path: Path
) -> None:
    clip = tmp_path / "ref.wav"
    clip.write_bytes(wav_clip())
    result = qtts(
        served,
        "voices",
        "create",
        "Narrator",
        "--audio",
        str(clip),
        "--ref-text",
        "Hello.",
        "--character",
        "Ann",
        "--tags",
        "book,calm",
    )
    assert result.exit_code == 0, result.output
    job = the_job(served, "create_voice")
    assert result.stdout.strip() == job.voice_id
    voice = served.fakes.voices.get(job.voice_id)
    assert voice is not None
    assert (voice.name, voice.owner, voice.ref_text) == ("Narrator", "alice", "Hello.")
    assert (voice.traits.character, voice.traits.tags) == ("Ann", ("book", "calm"))
    (call,) = served.requests_to("POST", "/v1/voices")
    assert call.headers["Content-Type"].startswith("multipart/form-data")
    assert b'filename="ref.wav"' in call.body
    assert b"x_vector_only" not in call.body

    neither = qtts(served, "voices", "create", "N", "--audio", str(clip))
    assert_one_line_error(neither, "--ref-text")
    missing = qtts(
        served, "voices", "create", "N", "--audio", str(tmp_path / "no.wav"), "--x-vector-only"
    )
    assert_one_line_error(missing, "No such file")


def test_voices_list_and_delete(served: Served) -> None:
    voice_id = "ab" * 12
    voice = add_voice(served.fakes, name="Narrator", owner="alice", voice_id=voice_id)
    traits = VoiceTraits(character="Ann", emotion="calm", tags=("book",))
    served.fakes.voices.update(voice_id, lambda _: voice.model_copy(update={"traits": traits}))
    listed = qtts(served, "voices", "list", "--q", "nar")
    assert listed.exit_code == 0, listed.output
    (line,) = listed.stdout.splitlines()
    assert line.split()[:3] == [voice_id, "prompt", "Narrator"]
    assert line.endswith("Ann / calm  [book]")
    everyone = qtts(served, "voices", "list").stdout.splitlines()
    assert everyone[0].split() == ["vivian", "builtin", "Vivian"]
    assert served.requests_to("GET", "/v1/voices")[0].query == {"page_size": "200", "q": "nar"}
    deleted = qtts(served, "voices", "delete", voice_id)
    assert deleted.stdout.strip() == f"deleted {voice_id}"
    assert served.fakes.voices.get(voice_id) is None
    gone = qtts(served, "voices", "delete", voice_id)
    assert_one_line_error(gone, f"no voice '{voice_id}' (HTTP 404)")


def test_a_body_of_the_wrong_shape_is_an_api_error_not_a_crash() -> None:
    with pytest.raises(ApiError, match="'items' list"):
        Manifest.parse({"job_id": "b1", "state": "running"})
    with pytest.raises(ApiError, match="string 'state'"):
        Job.parse({"id": "j1", "mode": "batch"})
    item = {"key": None, "job_id": "b1c0", "state": "queued", "audio_url": None, "error": None}
    assert (
        Manifest.parse({"job_id": "b1", "state": "running", "items": [item]}).items[0].key is None
    )
