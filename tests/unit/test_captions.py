"""Captions and checks: words grouped into cues, SRT and WebVTT read back by the standard parsers
(``srt``, ``webvtt-py``), the captions route over a speech job and a joined batch, the job
view's ``timestamps`` and ``verification``, ``verify`` on every speech door, and Kokoro's
captioned speech. Stored jobs are built with their words directly where no worker is needed."""

from __future__ import annotations

import base64
import html
import itertools
from dataclasses import dataclass

import pytest
import srt
import webvtt
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.adapters.firestore import to_document
from shared.domain.captions import (
    CaptionFormat,
    Cue,
    captions,
    group_cues,
    render_captions,
)
from shared.domain.jobs import JobState
from shared.domain.synthesis import SpeechFields
from shared.domain.verification import WordTiming
from shared.wire.results import JobResultMessage
from tests.support.api import GOOD, checked, submit
from tests.support.contracts import validate_schema
from tests.support.firestore import as_json
from tests.support.gateway import Fakes
from tests.support.timings import (
    Aligner,
    Item,
    audio,
    report,
    stored_batch,
    stored_speech,
    words_of,
)
from tests.support.worker import ScriptedWorker

CHAPTER = (
    "The rain had not stopped for three days, and the river below the mill ran brown and "
    "fast. Anna stood at the window and counted the boats that passed, as her father had "
    "taught her when she was small enough to sit on the sill. They will come tonight, said "
    "Mr. Hale from the doorway! He did not take off his coat."
)


def spoken(text: str, *, word_s: float = 0.4, gap_s: float = 0.05) -> list[WordTiming]:
    out, at = [], 0.0
    for word in text.split():
        out.append(WordTiming(word=word, start_s=at, end_s=at + word_s))
        at += word_s + gap_s
    return out


def words_in(cues: tuple[Cue, ...] | list[Cue]) -> list[str]:
    return [w for cue in cues for line in cue.lines for w in line.split()]


# -- grouping -----------------------------------------------------------------------------------


def test_cues_hold_two_lines_of_42_characters_for_6_seconds_and_every_word_in_order() -> None:
    words = spoken(CHAPTER)
    cues = group_cues([words])
    assert words_in(cues) == CHAPTER.split()
    for cue in cues:
        assert 1 <= len(cue.lines) <= 2
        assert all(len(line) <= 42 for line in cue.lines), cue.lines
        assert cue.end_s - cue.start_s <= 6.0
    # Two lines are balanced, never a full line over a stub.
    for cue in cues:
        if len(cue.lines) == 2:
            assert abs(len(cue.lines[0]) - len(cue.lines[1])) <= 12, cue.lines


def test_a_sentence_end_starts_a_new_cue_and_a_full_one_ends_at_its_last_clause() -> None:
    cues = group_cues([spoken(CHAPTER)])
    texts = [" ".join(c.lines) for c in cues]
    for cue, following in itertools.pairwise(texts):
        if cue.endswith((".", "!")):
            continue
        # A cue cut for room ends at a comma when it holds one, not one word into a sentence.
        assert cue.endswith(",") or "," not in cue, (cue, following)
    assert any(t.startswith("Anna stood") for t in texts)
    assert any(t.startswith("He did not") for t in texts)
    # No sentence's last words stranded in a cue of their own; "Mr." ends no sentence.
    assert not any(t in {"fast.", "sill.", "on the sill.", "coat."} for t in texts)
    assert "They will come tonight, said Mr. Hale from the doorway!" in texts


def test_a_pause_starts_a_new_cue_and_a_short_cue_stays_up_until_the_next() -> None:
    words = [
        WordTiming(word="Wait", start_s=0.0, end_s=0.2),
        WordTiming(word="for", start_s=2.0, end_s=2.2),  # 1.8 s of silence before it
        WordTiming(word="it", start_s=2.25, end_s=2.4),
    ]
    first, second = group_cues([words], duration_s=2.5)
    assert (first.lines, second.lines) == (("Wait",), ("for it",))
    assert first.end_s == pytest.approx(0.7)  # held for the minimum, into the silence
    assert second.end_s == pytest.approx(2.5)  # held, but never past the audio


def test_chinese_words_join_without_spaces_and_punctuation_sticks_to_its_word() -> None:
    chinese = [
        WordTiming(word=w, start_s=i * 0.3, end_s=i * 0.3 + 0.25)
        for i, w in enumerate(["我们", "今天", "去", "公园", "。"])
    ]
    english = [
        WordTiming(word=w, start_s=5 + i * 0.3, end_s=5 + i * 0.3 + 0.25)
        for i, w in enumerate(["Well", ",", "fine", "."])
    ]
    cues = group_cues([chinese, english])
    assert [c.lines for c in cues] == [("我们今天去公园。",), ("Well, fine.",)]


def test_every_item_of_a_joined_file_starts_a_cue_of_its_own() -> None:
    first = spoken("A paragraph that ends without a stop")
    second = [w.shifted(first[-1].end_s + 0.1) for w in spoken("and the next paragraph.")]
    cues = group_cues([first, second])
    assert [" ".join(c.lines) for c in cues] == [
        "A paragraph that ends without a stop",
        "and the next paragraph.",
    ]


@st.composite
def aligned(draw: st.DrawFn) -> tuple[list[list[WordTiming]], float]:
    """Words as an aligner might report them: out of order, overlapping, zero-length, past the
    end of the audio; in one to three segments."""
    times = st.floats(min_value=0, max_value=40, allow_nan=False)
    text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1)
    segments = []
    for _ in range(draw(st.integers(1, 3))):
        segment = []
        for start, length, word in draw(st.lists(st.tuples(times, times, text), max_size=30)):
            segment.append(WordTiming(word=word, start_s=start, end_s=start + length / 8))
        segments.append(segment)
    return segments, draw(st.floats(min_value=0.5, max_value=45))


@given(aligned())
@settings(max_examples=150, deadline=None)
def test_times_only_move_forward_and_stay_within_the_audio(
    case: tuple[list[list[WordTiming]], float],
) -> None:
    segments, duration_s = case
    cues = group_cues(segments, duration_s=duration_s)
    previous_end = 0.0
    for cue in cues:
        assert previous_end <= cue.start_s <= cue.end_s <= duration_s
        assert all(line.strip() and "\n" not in line for line in cue.lines)
        previous_end = cue.end_s
    for fmt in CaptionFormat:
        render_captions(cues, fmt=fmt)  # never raises, whatever the words hold


# -- writing, read back by the standard parsers ------------------------------------------------


@dataclass(frozen=True)
class ReadBack:
    start_s: float
    end_s: float
    text: str


def read_srt(text: str) -> list[ReadBack]:
    return [
        ReadBack(s.start.total_seconds(), s.end.total_seconds(), s.content) for s in srt.parse(text)
    ]


def read_vtt(text: str) -> list[ReadBack]:
    # webvtt-py leaves cue text as written: entities are the caller's to decode.
    return [
        ReadBack(
            c.start_time.in_milliseconds() / 1000,
            c.end_time.in_milliseconds() / 1000,
            html.unescape(c.text),
        )
        for c in webvtt.from_string(text)
    ]


READERS = {CaptionFormat.SRT: read_srt, CaptionFormat.VTT: read_vtt}
WORD_JOINER = "\u2060"


@pytest.mark.parametrize("fmt", list(CaptionFormat))
def test_captions_read_back_as_written(fmt: CaptionFormat) -> None:
    words = spoken("Tom & <Jerry> said {hello} to C:\\new and --> left. Next one here.")
    cues = group_cues([words], duration_s=30)
    document = render_captions(cues, fmt=fmt)
    read = READERS[fmt](document)
    assert [r.text.replace(WORD_JOINER, "") for r in read] == [c.text for c in cues]
    assert [(r.start_s, r.end_s) for r in read] == [
        (round(c.start_s, 3), round(c.end_s, 3)) for c in cues
    ]
    if fmt is CaptionFormat.VTT:
        assert document.startswith("WEBVTT\n")
        assert "&lt;Jerry&gt;" in document
        assert "--&gt;" in document


def test_caption_formats_name_their_content_types() -> None:
    assert CaptionFormat.SRT.content_type == "application/x-subrip"
    assert CaptionFormat.VTT.content_type == "text/vtt; charset=utf-8"
    assert captions([], fmt=CaptionFormat.SRT) == ""
    assert captions([], fmt=CaptionFormat.VTT).startswith("WEBVTT")


# -- the captions route ------------------------------------------------------------------------


def get_captions(
    client: FlaskClient, headers: dict[str, str], job_id: str, fmt: str | None = None
) -> object:
    path = f"/v1/jobs/{job_id}/captions"
    query = {} if fmt is None else {"format": fmt}
    return checked("GET", path, client.get(path, query_string=query, headers=headers))


def assert_ordered_within(read: list[ReadBack], *, duration_s: float) -> None:
    previous_end = 0.0
    for cue in read:
        assert previous_end <= cue.start_s <= cue.end_s <= duration_s + 0.0005
        previous_end = cue.end_s


@pytest.mark.parametrize(
    ("fmt", "content_type"),
    [
        (None, "application/x-subrip"),
        ("srt", "application/x-subrip"),
        ("vtt", "text/vtt; charset=utf-8"),
    ],
)
def test_a_speech_jobs_captions_come_in_either_format(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes, fmt: str | None, content_type: str
) -> None:
    text = "Chapter one. It was a dark and stormy night, and the rain fell in torrents."
    result = audio("j1", duration_s=6.0, words=words_of(text, duration_s=6.0))
    stored_speech(fakes, job_id="j1", text=text, result=result)
    response = get_captions(client, alice, "j1", fmt)
    assert response.status_code == 200  # type: ignore[attr-defined]
    assert response.headers["Content-Type"] == content_type  # type: ignore[attr-defined]
    extension = fmt or "srt"
    assert f'filename="j1.{extension}"' in response.headers["Content-Disposition"]  # type: ignore[attr-defined]
    read = READERS[CaptionFormat(extension)](response.get_data(as_text=True))  # type: ignore[attr-defined]
    assert " ".join(r.text.replace("\n", " ") for r in read) == text
    assert read[0].text == "Chapter one."
    assert_ordered_within(read, duration_s=6.0)


ITEMS = [
    Item(text="The first paragraph, long enough to need two cues of its own.", duration_s=4.2),
    Item(text="A short one.", duration_s=1.1),
    Item(text="And the last paragraph ends the chapter without a full stop", duration_s=3.3),
]


@pytest.mark.parametrize("fmt", list(CaptionFormat))
def test_a_joined_batch_is_captioned_over_its_joined_file_with_the_gaps_between_items(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes, fmt: CaptionFormat
) -> None:
    gap_s = 0.75
    batch = stored_batch(fakes, batch_id="b1", items=ITEMS, gap_s=gap_s)
    assert batch.result is not None
    total = batch.result.duration_s
    assert total == pytest.approx(4.2 + 1.1 + 3.3 + 2 * gap_s)
    response = get_captions(client, alice, "b1", fmt.value)
    assert response.status_code == 200, response.json  # type: ignore[attr-defined]
    read = READERS[fmt](response.get_data(as_text=True))  # type: ignore[attr-defined]
    assert_ordered_within(read, duration_s=total)
    said = " ".join(r.text.replace("\n", " ") for r in read)
    assert said == " ".join(item.text for item in ITEMS)
    # Each cue lies inside one item's stretch of the joined file, none in a gap between two.
    spans, at = [], 0.0
    for item in ITEMS:
        spans.append((at, at + item.duration_s))
        at += item.duration_s + gap_s
    for cue in read:
        assert any(
            start - 0.0005 <= cue.start_s and cue.end_s <= end + 0.0005 for start, end in spans
        ), cue
    firsts = [next(r for r in read if r.start_s >= start - 0.0005) for start, _ in spans]
    assert [f.text.split()[0] for f in firsts] == ["The", "A", "And"]
    assert firsts[1].start_s == pytest.approx(4.2 + gap_s, abs=0.001)


def test_captions_refused_with_a_reason(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    stored_speech(fakes, job_id="run1", text="Hi.", result=None, state=JobState.RUNNING)
    stored_speech(fakes, job_id="bare1", text="Hi.", result=audio("bare1", duration_s=1.0))
    stored_speech(
        fakes,
        job_id="bob1",
        text="Hi.",
        result=audio("bob1", duration_s=1.0, words=words_of("Hi.", duration_s=1.0)),
        owner="bob",
    )
    stored_batch(fakes, batch_id="plain1", items=ITEMS[:2], gap_s=0, join=False)
    holes = [ITEMS[0], Item(text="No words here.", duration_s=1.0, words=False)]
    stored_batch(fakes, batch_id="holes1", items=holes, gap_s=0.5)

    def error(job_id: str, fmt: str | None = None) -> tuple[int, dict[str, object]]:
        response = get_captions(client, alice, job_id, fmt)
        return response.status_code, response.json["error"]  # type: ignore[attr-defined]

    status, body = error("run1")
    assert (status, body["code"], body["state"]) == (409, "job_not_succeeded", "running")
    status, body = error("bare1")
    assert (status, body["code"]) == (409, "no_word_timings")
    assert "verify: true" in str(body["message"])
    status, body = error("plain1")
    assert (status, body["code"]) == (409, "no_joined_file")
    status, body = error("holes1")
    assert (status, body["code"], body["items"]) == (409, "no_word_timings", ["holes1i1"])
    status, body = error("bob1")  # someone else's: as if it did not exist
    assert (status, body["code"]) == (404, "not_found")
    status, body = error("bare1", "ass")
    assert (status, body["code"], body["field"]) == (400, "invalid_caption_format", "format")


# -- the job view and the manifest -------------------------------------------------------------


def test_a_verified_jobs_view_has_its_word_times_and_its_report(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    texts = ["One chunk.", "Two chunk.", "Three chunk."]
    checks = report(texts, remade=frozenset({1}), failing=frozenset({2}))
    words = words_of(" ".join(texts), duration_s=3.0)
    result = audio("v1", duration_s=3.0, words=words, verification=checks)
    stored_speech(fakes, job_id="v1", text=" ".join(texts), result=result)
    stored_speech(fakes, job_id="p1", text="Plain.", result=audio("p1", duration_s=1.0))

    view = checked("GET", "/v1/jobs/v1", client.get("/v1/jobs/v1", headers=alice)).json
    assert view["timestamps"][0] == {"word": "One", "start_s": 0.0, "end_s": 0.4}  # type: ignore[index]
    assert [t["word"] for t in view["timestamps"]] == " ".join(texts).split()  # type: ignore[index]
    verification = view["verification"]  # type: ignore[index]
    assert verification["summary"] == {
        "passed": False,
        "chunks": 3,
        "remade": 2,
        "below_threshold": [2],
    }
    assert verification["checks"][-1] == "intelligibility"
    remade = verification["chunks"][1]
    assert (remade["index"], remade["text"], remade["passed"], remade["kept"]) == (
        1,
        "Two chunk.",
        True,
        1,
    )
    assert [a["seed"] for a in remade["attempts"]] == [None, 8]
    assert [a["passed"] for a in remade["attempts"]] == [False, True]
    failed = remade["attempts"][0]["measures"][-1]
    assert failed == {
        "check": "intelligibility",
        "value": 0.4,
        "bound": 0.15,
        "low": None,
        "passed": False,
    }
    assert remade["attempts"][0]["transcript"] == "heard"

    plain = checked("GET", "/v1/jobs/p1", client.get("/v1/jobs/p1", headers=alice)).json
    assert (plain["timestamps"], plain["verification"]) == ([], None)  # type: ignore[index]

    # A page of jobs stays small: each keeps its summary, not its words or chunks.
    listed = checked("GET", "/v1/jobs", client.get("/v1/jobs", headers=alice)).json
    (brief,) = [j for j in listed["jobs"] if j["id"] == "v1"]  # type: ignore[index]
    assert brief["timestamps"] == []
    assert brief["verification"]["summary"] == verification["summary"]
    assert brief["verification"]["chunks"] == []


def test_the_manifest_gives_each_items_checks_in_numbers(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    items = [*ITEMS[:2], Item(text="Unchecked.", duration_s=1.0, words=False)]
    stored_batch(fakes, batch_id="m1", items=items, gap_s=0)
    path = "/v1/jobs/m1/manifest"
    listed = checked("GET", path, client.get(path, headers=alice)).json
    summaries = [i["verification"] for i in listed["items"]]  # type: ignore[index]
    one = {"passed": True, "chunks": 1, "remade": 0, "below_threshold": []}
    assert summaries == [one, one, None]
    assert listed["joined"]["verification"] is None  # type: ignore[index]


def test_a_checked_job_matches_the_stored_document_and_the_result_message(
    fakes: Fakes,
) -> None:
    texts = ["One chunk.", "Two chunk."]
    result = audio(
        "d1",
        duration_s=2.0,
        words=words_of(" ".join(texts), duration_s=2.0),
        verification=report(texts, remade=frozenset({0}), failing=frozenset({1})),
    )
    job = stored_speech(fakes, job_id="d1", text=" ".join(texts), result=result)
    for document in (job.model_dump(mode="json"), as_json(to_document(job.model_dump()))):
        validate_schema("job-document.schema.json", document)
    validate_schema("job-result.schema.json", JobResultMessage.of(job).model_dump(mode="json"))
    batch = stored_batch(fakes, batch_id="d2", items=ITEMS, gap_s=0.5)
    validate_schema("job-document.schema.json", batch.model_dump(mode="json"))


# -- verify on the way in ----------------------------------------------------------------------


def stored_verify(fakes: Fakes, job_id: str) -> bool:
    job = fakes.jobs.get(job_id)
    assert job is not None
    assert isinstance(job.request, SpeechFields)
    return job.request.verify


def test_a_single_job_is_checked_only_when_it_asks(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    plain = submit(client, alice).json
    asked = submit(client, alice, {**GOOD, "verify": True}).json
    assert stored_verify(fakes, plain["id"]) is False  # type: ignore[index]
    assert stored_verify(fakes, asked["id"]) is True  # type: ignore[index]
    refused = submit(client, alice, {**GOOD, "verify": "yes"})
    assert refused.status_code == 422


def test_batch_items_are_checked_unless_they_say_not(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    items = [
        {"key": "a", "text": "One.", "speaker": "ryan"},
        {"key": "b", "text": "Two.", "speaker": "ryan", "verify": False},
        {"key": "c", "mode": "voice_design", "text": "Three.", "instruct": "calm"},
    ]
    response = checked(
        "POST", "/v1/tts/batch", client.post("/v1/tts/batch", json={"items": items}, headers=alice)
    )
    assert response.status_code == 202
    batch_id = response.json["id"]  # type: ignore[index]
    assert [stored_verify(fakes, f"{batch_id}i{n}") for n in range(3)] == [True, False, True]


SPEECH = "/v1/audio/speech"
CAPTIONED = "/dev/captioned_speech"


def test_openai_speech_takes_verify_as_it_takes_seed(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    ScriptedWorker(fakes)
    for verify in (None, True):
        body = {"model": "tts-1", "input": "Hi.", "voice": "alloy"}
        if verify is not None:
            body["verify"] = verify
        response = checked("POST", SPEECH, client.post(SPEECH, json=body, headers=alice))
        assert response.status_code == 200
        assert stored_verify(fakes, response.headers["X-Job-Id"]) is bool(verify)


# -- Kokoro's captioned speech -----------------------------------------------------------------


def captioned(client: FlaskClient, headers: dict[str, str], **body: object) -> object:
    payload = {"model": "kokoro", "input": "Hello there, captioned world.", "voice": "ryan", **body}
    return checked("POST", CAPTIONED, client.post(CAPTIONED, json=payload, headers=headers))


def test_captioned_speech_answers_the_audio_and_each_words_time_in_kokoros_shape(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    ScriptedWorker(fakes)
    Aligner(fakes)
    response = captioned(client, alice, stream=True, stream_format="audio")
    assert response.status_code == 200, response.json  # type: ignore[attr-defined]
    job_id = response.headers["X-Job-Id"]  # type: ignore[attr-defined]
    answer = response.json  # type: ignore[attr-defined]
    assert base64.b64decode(answer["audio"]) == f"<{job_id}:whole>".encode()
    assert answer["audio_format"] == "mp3"
    assert [t["word"] for t in answer["timestamps"]] == ["Hello", "there,", "captioned", "world."]
    first = answer["timestamps"][0]
    assert (first["start_time"], first["end_time"]) == (0.0, pytest.approx(0.25))
    job = fakes.jobs.get(job_id)
    assert job is not None
    assert isinstance(job.request, SpeechFields)
    # Always checked (its words are timed only then) and made whole, whatever was asked.
    assert (job.request.verify, job.request.stream) == (True, False)


def test_captioned_speech_without_an_aligning_worker_has_no_timestamps(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    ScriptedWorker(fakes)
    response = captioned(client, alice, response_format="wav")
    assert response.status_code == 200  # type: ignore[attr-defined]
    assert response.json["timestamps"] == []  # type: ignore[attr-defined]
    assert response.json["audio_format"] == "wav"  # type: ignore[attr-defined]


def test_captioned_speech_errors_are_openais_and_need_a_key(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    ScriptedWorker(fakes, fail_with="synthesis_failed")
    failed = captioned(client, alice)
    assert failed.status_code == 502  # type: ignore[attr-defined]
    assert failed.json["error"]["type"] == "server_error"  # type: ignore[attr-defined]
    unknown = captioned(client, alice, voice="nobody-at-all")
    assert unknown.status_code == 400  # type: ignore[attr-defined]
    assert unknown.json["error"]["param"] == "voice"  # type: ignore[attr-defined]
    anonymous = captioned(client, {})
    assert anonymous.status_code == 401  # type: ignore[attr-defined]
