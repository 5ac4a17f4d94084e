"""``qtts``: the chapter splitter, and every command over real HTTP against a small fake
gateway (werkzeug on 127.0.0.1) that implements just the routes the command line uses, with
the contract's shapes, the batch routes included."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result
from werkzeug.serving import WSGIRequestHandler, make_server
from werkzeug.wrappers import Request, Response

from cli.http import ApiError, Job, Manifest
from cli.main import app, main
from cli.render import RenderOptions, chapter_items, idempotency_key
from cli.split import DEFAULT_MAX_CHARS, paragraphs, split_chapter

KEY = "test-key"
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


# -- a fake gateway over real HTTP ---------------------------------------------------------------


def job_body(
    job_id: str, state: str, *, mode: str = "custom_voice", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": job_id,
        "state": state,
        "mode": mode,
        "status_url": f"/v1/jobs/{job_id}",
        "attempts": 1,
        "created_at": NOW,
        "updated_at": NOW,
        "audio": None,
        "voice_id": None,
        "voice_url": None,
        "progress": None,
        "error": None,
    }
    if state == "succeeded" and mode != "create_voice":
        body["audio"] = {
            "url": f"/v1/jobs/{job_id}/audio",
            "format": "mp3",
            "content_type": "audio/mpeg",
            "sample_rate": 24000,
            "duration_s": 1.0,
            "bytes": 10,
            "parts": 0,
        }
    return body | extra


def error(status: int, code: str, message: str) -> Response:
    return Response(
        json.dumps({"error": {"code": code, "message": message}}),
        status=status,
        mimetype="application/json",
    )


def reply(body: object, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body), status=status, headers=headers, mimetype="application/json")


@dataclass
class Child:
    key: str
    job_id: str
    done_at_poll: int
    fails: bool


@dataclass
class FakeGateway:
    """The gateway's routes that qtts calls, answering as the contract says. Jobs finish after
    ``polls_to_finish`` reads; batch child ``i`` finishes at the batch's manifest read ``i + 1``,
    so the items finish one by one while the client polls."""

    port: int = 0
    speech: str = "audio"
    polls_to_finish: int = 2
    jobs_page_max: int = 2
    fail_keys: set[str] = field(default_factory=set)
    seen: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    events: list[str] = field(default_factory=list)
    signed_with_auth: list[bool] = field(default_factory=list)
    polls: dict[str, int] = field(default_factory=dict)
    batches: dict[str, str] = field(default_factory=dict)
    joined: set[str] = field(default_factory=set)
    """Batches submitted with ``join``."""
    join_s: float = 0.0
    """Wall-clock seconds a join job runs, at the least, once it appears."""
    join_started: dict[str, float] = field(default_factory=dict)
    children: dict[str, list[Child]] = field(default_factory=dict)
    listed_jobs: list[dict[str, Any]] = field(
        default_factory=lambda: [job_body(f"j{i}", "succeeded") for i in range(5)]
    )
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests_to(self, method: str, pattern: str) -> list[tuple[str, dict[str, str], bytes]]:
        return [(p, h, b) for m, p, h, b in self.seen if m == method and re.fullmatch(pattern, p)]

    def __call__(self, environ: Any, start_response: Any) -> Any:
        request = Request(environ)
        with self.lock:
            response = self.route(request)
        return response(environ, start_response)

    def route(self, request: Request) -> Response:
        path, method = request.path, request.method
        body = request.get_data()
        self.seen.append((method, request.full_path.rstrip("?"), dict(request.headers), body))
        if path.startswith("/signed/"):
            # The bucket: a signed URL needs no bearer key, and must not be sent one.
            self.signed_with_auth.append("Authorization" in request.headers)
            self.events.append(f"download {path.removeprefix('/signed/')}")
            return Response(self.audio_of(path.removeprefix("/signed/")), mimetype="audio/mpeg")
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return error(401, "unauthenticated", "a valid API key is required")
        if method == "POST" and path == "/v1/audio/speech":
            return self.speech_route()
        if method == "POST" and path == "/v1/tts/batch":
            return self.submit_batch(request)
        if method == "POST" and path == "/v1/voices":
            assert request.files["ref_audio"].read() == b"RIFF-clip"
            self.polls["v1"] = 0
            return reply(job_body("v1", "queued", mode="create_voice"), 202)
        if method == "GET" and path == "/v1/voices":
            voices = [{"id": "vivian", "kind": "builtin", "name": "Vivian", "tags": []}]
            voices.append(
                {
                    "id": "ab" * 12,
                    "kind": "prompt",
                    "name": "Narrator",
                    "character": "Ann",
                    "emotion": "calm",
                    "tags": ["book"],
                }
            )
            return reply({"voices": voices, "next_page_token": None})
        if method == "DELETE" and path.startswith("/v1/voices/"):
            return Response(status=204)
        if method == "GET" and path == "/v1/jobs":
            return self.list_jobs(request)
        if match := re.fullmatch(r"/v1/jobs/([^/]+)/manifest", path):
            return self.manifest(match.group(1))
        if match := re.fullmatch(r"/v1/jobs/([^/]+)/audio", path):
            job_id = match.group(1)
            if self.state_of(job_id, advance=False) != "succeeded":
                return error(409, "not_ready", f"job {job_id} has not succeeded")
            # Another host name than the API's, as a bucket's signed URL would be.
            return Response(
                status=302,
                headers={"Location": f"http://localhost:{self.port}/signed/{job_id}?sig=x"},
            )
        if match := re.fullmatch(r"/v1/jobs/([^/]+)/cancel", path):
            job_id = match.group(1)
            if job_id == "done":
                return error(409, "job_finished", "job done has already finished (succeeded)")
            return reply(job_body(job_id, "canceled"))
        if match := re.fullmatch(r"/v1/jobs/([^/]+)", path):
            job_id = match.group(1)
            if job_id not in self.polls:
                return error(404, "not_found", f"no job {job_id}")
            state = self.state_of(job_id, advance=True)
            if job_id == "v1" and state == "succeeded":
                return reply(job_body("v1", state, mode="create_voice", voice_id="cd" * 12))
            return reply(job_body(job_id, state))
        return error(404, "not_found", f"no route {method} {path}")

    def speech_route(self) -> Response:
        if self.speech == "error":
            return Response(
                json.dumps(
                    {
                        "error": {
                            "message": "unknown voice 'nobody'; use a built-in speaker\nor a voice",
                            "type": "invalid_request_error",
                            "param": "voice",
                            "code": "unknown_voice",
                        }
                    }
                ),
                status=400,
                mimetype="application/json",
            )
        if self.speech == "accepted":
            self.polls["s1"] = 0
            return reply(job_body("s1", "queued"), 202, {"Location": "/v1/jobs/s1"})
        if self.speech == "stream":
            chunks = iter([b"part-1|", b"part-2|", b"part-3"])
            return Response(chunks, mimetype="audio/mpeg", headers={"X-Job-Id": "st1"})
        return Response(b"ID3 whole mp3", mimetype="audio/mpeg", headers={"X-Job-Id": "w1"})

    def state_of(self, job_id: str, *, advance: bool) -> str:
        if job_id.endswith("j") and job_id[:-1] in self.joined:
            return "succeeded"  # asked for only once the manifest lists it as made
        for batch_children in self.children.values():
            for child in batch_children:
                if child.job_id == job_id:
                    return self.child_state(job_id.split("c")[0], child)
        if advance:
            self.polls[job_id] = self.polls.get(job_id, 0) + 1
        return "succeeded" if self.polls.get(job_id, 0) >= self.polls_to_finish else "running"

    def audio_of(self, job_id: str) -> bytes:
        for batch_children in self.children.values():
            for child in batch_children:
                if child.job_id == job_id:
                    return f"audio of {child.key}".encode()
        return f"audio of {job_id}".encode()

    def submit_batch(self, request: Request) -> Response:
        key = request.headers.get("Idempotency-Key", "")
        if key not in self.batches:
            batch_id = f"b{len(self.batches) + 1}"
            self.batches[key] = batch_id
            self.polls[batch_id] = 0
            self.children[batch_id] = [
                Child(
                    key=item["key"],
                    job_id=f"{batch_id}c{i}",
                    done_at_poll=i + 1,
                    fails=item["key"] in self.fail_keys,
                )
                for i, item in enumerate(request.get_json()["items"])
            ]
        batch_id = self.batches[key]
        if request.get_json().get("join"):
            self.joined.add(batch_id)
        children = self.children[batch_id]
        progress = {
            "total": len(children),
            "succeeded": 0,
            "failed": 0,
            "children": [c.job_id for c in children],
        }
        body = job_body(batch_id, "queued", mode="batch", progress=progress)
        return reply(body, 202, {"Location": f"/v1/jobs/{batch_id}"})

    def child_state(self, batch_id: str, child: Child) -> str:
        if self.polls[batch_id] < child.done_at_poll:
            return "queued" if self.polls[batch_id] + 1 < child.done_at_poll else "running"
        return "failed" if child.fails else "succeeded"

    def manifest(self, batch_id: str) -> Response:
        self.polls[batch_id] += 1
        items = []
        for child in self.children[batch_id]:
            state = self.child_state(batch_id, child)
            items.append(
                {
                    "key": child.key,
                    "job_id": child.job_id,
                    "state": state,
                    "audio_url": f"/v1/jobs/{child.job_id}/audio" if state == "succeeded" else None,
                    "duration_s": 1.0 if state == "succeeded" else None,
                    "error": {"code": "synthesis_runaway", "message": "the model did not stop"}
                    if state == "failed"
                    else None,
                }
            )
        finished = all(i["state"] in {"succeeded", "failed"} for i in items)
        self.events.append(f"manifest {batch_id} {'finished' if finished else 'running'}")
        state = "running" if not finished else "succeeded"
        body: dict[str, object] = {"job_id": batch_id, "state": state, "items": items}
        if batch_id in self.joined and finished:
            # The join job appears once the items are done, and finishes a read later (and
            # no sooner than ``join_s`` after it appeared).
            started = self.join_started.setdefault(batch_id, time.monotonic())
            made = (
                self.polls[batch_id] > len(items) + 1 and time.monotonic() - started >= self.join_s
            )
            body["joined"] = {
                "key": None,
                "job_id": f"{batch_id}j",
                "state": "succeeded" if made else "running",
                "audio_url": f"/v1/jobs/{batch_id}j/audio" if made else None,
                "duration_s": 3.0 if made else None,
                "error": None,
            }
            if not made:
                body["state"] = "running"
        return reply(body)

    def list_jobs(self, request: Request) -> Response:
        size = min(int(request.args.get("page_size", 50)), self.jobs_page_max)
        start = int(request.args.get("page_token", 0))
        page = self.listed_jobs[start : start + size]
        more = start + size < len(self.listed_jobs)
        return reply({"jobs": page, "next_page_token": str(start + size) if more else None})


class QuietHandler(WSGIRequestHandler):
    """No access log: werkzeug would write it to whatever sys.stderr is when it first logs,
    which inside CliRunner is the command's captured stderr."""

    def log(self, type: str, message: str, *args: Any) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    fake = FakeGateway()
    server = make_server("127.0.0.1", 0, fake, threaded=True, request_handler=QuietHandler)
    fake.port = server.server_port
    # A short poll interval: shutdown() waits for the loop to look, 0.5 s by default.
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield fake
    server.shutdown()
    thread.join(timeout=5)


def qtts(
    gateway: FakeGateway, *args: str, key: str | None = KEY, env: dict[str, str] | None = None
) -> Result:
    env = {"QTTS_API_KEY": key or "", **(env or {})}
    return CliRunner().invoke(
        app, ["--base-url", gateway.url, "--poll-interval", "0.01", *args], env=env
    )


def assert_one_line_error(result: Result, expected: str) -> None:
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert lines[0].startswith("qtts: ")
    assert "Traceback" not in result.output


# -- say ----------------------------------------------------------------------------------------


def test_say_writes_the_audio_it_gets(gateway: FakeGateway, tmp_path: Path) -> None:
    out = tmp_path / "hi.mp3"
    result = qtts(gateway, "say", "Hello.", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == b"ID3 whole mp3"
    assert "(job w1)" in result.stderr
    ((_, headers, body),) = gateway.requests_to("POST", "/v1/audio/speech")
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert json.loads(body) == {
        "model": "tts-1",
        "input": "Hello.",
        "voice": "vivian",
        "response_format": "mp3",
    }
    assert not list(tmp_path.glob(".*.part"))


def test_say_takes_the_format_from_the_extension_unless_told(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    qtts(gateway, "say", "Hi.", "-o", str(tmp_path / "a.ogg"), "--voice", "Ryan", "--speed", "1.5")
    qtts(
        gateway,
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
    first, second = (json.loads(b) for _, _, b in gateway.requests_to("POST", "/v1/audio/speech"))
    assert first["response_format"] == "opus"
    assert (first["voice"], first["speed"]) == ("Ryan", 1.5)
    assert second["response_format"] == "flac"
    assert (second["instructions"], second["model"]) == ("calm", "x-CustomVoice")
    unknown = qtts(gateway, "say", "Hi.", "-o", str(tmp_path / "c.xyz"))
    assert_one_line_error(unknown, "pass --format")


def test_say_to_stdout_writes_the_bytes_there(gateway: FakeGateway) -> None:
    result = qtts(gateway, "say", "Hello.", "-o", "-")
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == b"ID3 whole mp3"


def test_say_on_202_polls_the_job_then_downloads_its_audio(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    gateway.speech = "accepted"
    out = tmp_path / "long.wav"
    result = qtts(gateway, "say", "A long text.", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == b"audio of s1"
    assert "job s1" in result.stderr
    assert len(gateway.requests_to("GET", "/v1/jobs/s1")) == gateway.polls_to_finish
    assert gateway.requests_to("GET", "/v1/jobs/s1/audio")
    assert gateway.signed_with_auth == [False]


def test_say_stream_writes_the_pieces_as_they_come(gateway: FakeGateway, tmp_path: Path) -> None:
    gateway.speech = "stream"
    out = tmp_path / "s.pcm"
    result = qtts(gateway, "say", "Streamed.", "-o", str(out), "--stream")
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == b"part-1|part-2|part-3"
    ((_, _, body),) = gateway.requests_to("POST", "/v1/audio/speech")
    assert json.loads(body)["stream_format"] == "audio"
    assert json.loads(body)["response_format"] == "pcm"


def test_an_error_body_is_one_line_and_exit_1(gateway: FakeGateway, tmp_path: Path) -> None:
    gateway.speech = "error"
    out = tmp_path / "x.mp3"
    result = qtts(gateway, "say", "Hi.", "-o", str(out), "--voice", "nobody")
    assert_one_line_error(result, "unknown voice 'nobody'; use a built-in speaker or a voice")
    assert "(HTTP 400)" in result.stderr
    assert not out.exists()


def test_a_missing_key_and_an_unreachable_gateway_are_one_line(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    result = qtts(gateway, "say", "Hi.", "-o", str(tmp_path / "x.mp3"), key=None)
    assert_one_line_error(result, "set QTTS_API_KEY or pass --api-key")
    gone = CliRunner().invoke(
        app, ["--base-url", "http://127.0.0.1:9", "jobs", "get", "x"], env={"QTTS_API_KEY": KEY}
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
    gateway: FakeGateway, book: Path, out: Path, *extra: str, env: dict[str, str] | None = None
) -> Result:
    return qtts(gateway, "render", str(book), "-o", str(out), *extra, env=env)


def test_render_submits_one_batch_and_downloads_each_item_as_it_finishes(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    book, out = write_chapter(tmp_path), tmp_path / "out"
    result = render(gateway, book, out, "--voice", "Serena", "--format", "wav")
    assert result.exit_code == 0, result.output
    assert "3 succeeded, 0 failed" in result.stdout

    ((_, headers, body),) = gateway.requests_to("POST", "/v1/tts/batch")
    items = json.loads(body)["items"]
    assert [i["key"] for i in items] == ["chapter1-0001", "chapter1-0002", "chapter1-0003"]
    assert items[0] == {
        "key": "chapter1-0001",
        "text": "The first paragraph.",
        "format": "wav",
        "mode": "custom_voice",
        "speaker": "Serena",
    }
    assert re.fullmatch(r"[0-9a-f]{64}", headers["Idempotency-Key"])
    assert headers["Idempotency-Key"] == idempotency_key(items)

    for i, item in enumerate(items):
        assert (out / f"{item['key']}.wav").read_bytes() == f"audio of {item['key']}".encode()
        assert f"download b1c{i}" in gateway.events
    # The first item was fetched while the others were still being made.
    assert gateway.events.index("download b1c0") < gateway.events.index("manifest b1 finished")
    assert gateway.signed_with_auth == [False, False, False]
    assert not list(out.glob(".*"))
    record = json.loads((out / "render.json").read_text())
    assert record["batch_id"] == "b1"
    assert record["keys"] == [i["key"] for i in items]


def test_render_again_downloads_only_what_is_missing_from_the_same_batch(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    book, out = write_chapter(tmp_path), tmp_path / "out"
    assert render(gateway, book, out).exit_code == 0
    downloads = len(gateway.requests_to("GET", r"/signed/.*"))
    assert downloads == 3

    again = render(gateway, book, out)
    assert again.exit_code == 0, again.output
    assert "already" in again.stdout
    assert len(gateway.requests_to("GET", r"/signed/.*")) == downloads

    (out / "chapter1-0002.mp3").unlink()
    third = render(gateway, book, out)
    assert third.exit_code == 0, third.output
    submits = gateway.requests_to("POST", "/v1/tts/batch")
    assert len(submits) == 2
    assert submits[0][1]["Idempotency-Key"] == submits[1][1]["Idempotency-Key"]
    assert len(gateway.batches) == 1  # the same batch was found, not a second one made
    fetched = [p for p, _, _ in gateway.requests_to("GET", r"/signed/.*")][downloads:]
    assert fetched == ["/signed/b1c1?sig=x"]
    assert (out / "chapter1-0002.mp3").read_bytes() == b"audio of chapter1-0002"
    assert "1 downloaded now" in third.stdout


def test_render_reports_failed_items_and_can_try_them_in_a_new_batch(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    book, out = write_chapter(tmp_path), tmp_path / "out"
    gateway.fail_keys = {"chapter1-0002"}
    result = render(gateway, book, out, "--voice", "My Narrator")
    assert result.exit_code == 1
    assert "2 succeeded, 1 failed" in result.stdout
    assert "chapter1-0002: the model did not stop (synthesis_runaway)" in result.stderr
    assert "Traceback" not in result.output
    assert not (out / "chapter1-0002.mp3").exists()
    first_items = json.loads(gateway.requests_to("POST", "/v1/tts/batch")[0][2])["items"]
    assert {i["mode"] for i in first_items} == {"clone_prompt"}
    assert {i["voice"] for i in first_items} == {"My Narrator"}

    gateway.fail_keys = set()
    retry = render(gateway, book, out, "--voice", "My Narrator", "--new-batch")
    assert retry.exit_code == 0, retry.output
    _, headers, body = gateway.requests_to("POST", "/v1/tts/batch")[1]
    assert [i["key"] for i in json.loads(body)["items"]] == ["chapter1-0002"]
    assert headers["Idempotency-Key"] != idempotency_key(first_items)
    assert (out / "chapter1-0002.mp3").read_bytes() == b"audio of chapter1-0002"
    assert json.loads((out / "render.json").read_text())["batches"] == ["b1", "b2"]


def test_render_join_fetches_the_whole_chapter_once_and_resumes_without_asking_again(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    book, out = write_chapter(tmp_path), tmp_path / "out"
    result = render(gateway, book, out, "--join", "--gap-ms", "300")
    assert result.exit_code == 0, result.output
    ((_, _, body),) = gateway.requests_to("POST", "/v1/tts/batch")
    assert (json.loads(body)["join"], json.loads(body)["join_gap_ms"]) == (True, 300)
    joined = out / f"{book.stem}.mp3"
    assert joined.read_bytes() == b"audio of b1j"
    assert f"joined into {joined}" in result.output

    again = render(gateway, book, out, "--join")
    assert again.exit_code == 0, again.output
    assert len(gateway.requests_to("POST", "/v1/tts/batch")) == 1  # all on disk: nothing asked
    # A plain render of the same chapter is another batch than the joined one.
    (out / f"{book.stem}-0001.mp3").unlink()
    assert render(gateway, book, out).exit_code == 0
    assert len(gateway.batches) == 2
    joined.unlink()
    refused = render(gateway, book, out, "--join", "--new-batch")
    assert refused.exit_code != 0
    assert "--new-batch" in refused.output


def test_render_keeps_the_clock_moving_while_the_gateway_joins(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    gateway.join_s = 1.2
    book, out = write_chapter(tmp_path, FOUR_PARAGRAPHS), tmp_path / "out"
    # A terminal, as a person's: the bar is drawn live (frame after frame) on stderr.
    terminal = {"TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1", "COLUMNS": "120"}
    result = render(gateway, book, out, "--join", env=terminal)
    assert result.exit_code == 0, result.output
    assert (out / f"{book.stem}.mp3").read_bytes() == b"audio of b1j"
    join_reads = sum(1 for e in gateway.events if e == "manifest b1 finished")
    assert join_reads >= 3
    # The items are done (4 of 4, the join is the 5th step) and the clock goes on: one frame
    # at least for each look at the batch, and the elapsed time in them moves.
    drawn = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", result.stderr)  # colours, cursor moves
    frames = re.findall(r"4/5\s+joining\s+(\d+:\d\d:\d\d)", drawn)
    assert len(frames) >= join_reads
    assert len(set(frames)) >= 2, frames
    assert re.search(r"5/5\s+\d+:\d\d:\d\d", drawn)


def test_render_of_an_empty_file_is_one_line(gateway: FakeGateway, tmp_path: Path) -> None:
    result = render(gateway, write_chapter(tmp_path, "\n\n"), tmp_path / "out")
    assert_one_line_error(result, "holds no text")


# -- jobs ---------------------------------------------------------------------------------------


def test_jobs_list_follows_the_pages(gateway: FakeGateway) -> None:
    result = qtts(gateway, "jobs", "list", "--state", "succeeded", "--created-after", NOW)
    assert result.exit_code == 0, result.output
    assert [line.split()[0] for line in result.stdout.splitlines()] == [f"j{i}" for i in range(5)]
    pages = [p for p, _, _ in gateway.requests_to("GET", r"/v1/jobs\?.*")]
    assert len(pages) == 3
    assert "state=succeeded" in pages[0]
    assert "created_after=2025-01-01T00%3A00%3A00Z" in pages[0]
    assert "page_token=2" in pages[1]
    assert "page_token=4" in pages[2]

    limited = qtts(gateway, "jobs", "list", "--limit", "3")
    assert len(limited.stdout.splitlines()) == 3
    bad = qtts(gateway, "jobs", "list", "--created-after", "yesterday")
    assert_one_line_error(bad, "not an ISO 8601")


def test_jobs_get_and_cancel(gateway: FakeGateway) -> None:
    gateway.polls["s9"] = 5
    got = qtts(gateway, "jobs", "get", "s9")
    assert got.exit_code == 0, got.output
    assert json.loads(got.stdout)["state"] == "succeeded"
    assert qtts(gateway, "jobs", "cancel", "s8").stdout.strip() == "s8: canceled"
    assert_one_line_error(
        qtts(gateway, "jobs", "cancel", "done"), "already finished (succeeded) (HTTP 409)"
    )
    assert_one_line_error(qtts(gateway, "jobs", "get", "nope"), "no job nope (HTTP 404)")


# -- voices -------------------------------------------------------------------------------------


def test_voices_create_uploads_the_clip_waits_and_prints_the_voice_id(
    gateway: FakeGateway, tmp_path: Path
) -> None:
    clip = tmp_path / "ref.wav"
    clip.write_bytes(b"RIFF-clip")
    result = qtts(
        gateway,
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
    assert result.stdout.strip() == "cd" * 12
    ((_, headers, body),) = gateway.requests_to("POST", "/v1/voices")
    assert headers["Content-Type"].startswith("multipart/form-data")
    for part in (
        b'name="name"',
        b"Narrator",
        b'name="ref_text"',
        b"book,calm",
        b'filename="ref.wav"',
    ):
        assert part in body
    assert b"x_vector_only" not in body

    neither = qtts(gateway, "voices", "create", "N", "--audio", str(clip))
    assert_one_line_error(neither, "--ref-text")
    missing = qtts(
        gateway, "voices", "create", "N", "--audio", str(tmp_path / "no.wav"), "--x-vector-only"
    )
    assert_one_line_error(missing, "No such file")


def test_voices_list_and_delete(gateway: FakeGateway) -> None:
    listed = qtts(gateway, "voices", "list", "--q", "nar")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["vivian", "builtin", "Vivian"]
    assert "Ann / calm  [book]" in lines[1]
    assert "q=nar" in gateway.requests_to("GET", r"/v1/voices\?.*")[0][0]
    deleted = qtts(gateway, "voices", "delete", "ab" * 12)
    assert deleted.stdout.strip() == f"deleted {'ab' * 12}"
    assert gateway.requests_to("DELETE", f"/v1/voices/{'ab' * 12}")


def test_a_body_of_the_wrong_shape_is_an_api_error_not_a_crash() -> None:
    with pytest.raises(ApiError, match="'items' list"):
        Manifest.parse({"job_id": "b1", "state": "running"})
    with pytest.raises(ApiError, match="string 'state'"):
        Job.parse({"id": "j1", "mode": "batch"})
    item = {"key": None, "job_id": "b1c0", "state": "queued", "audio_url": None, "error": None}
    assert (
        Manifest.parse({"job_id": "b1", "state": "running", "items": [item]}).items[0].key is None
    )
