"""Stored documents and API views, dumped from the real models, match contracts/ (and only they)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jsonschema import ValidationError

from shared.adapters.firestore import to_document
from shared.domain.jobs import AudioResult, Job, JobError, JobState, Lease
from shared.domain.synthesis import (
    AudioRef,
    CastRequest,
    ClonePromptRequest,
    CreateVoiceRequest,
    CustomVoiceRequest,
    DesignVoiceRequest,
    JobRequest,
    NormalizeRequest,
    VoiceCloneRequest,
    VoiceDesignRequest,
    VoiceTraits,
)
from shared.domain.voices import Voice, VoiceState, voice_id_for
from shared.wire.views import JobView, VoiceListView, VoiceView
from tests.support.contracts import validate_schema
from tests.support.firestore import as_json

NOW = datetime(2026, 1, 1, tzinfo=UTC)
VOICE_ID = voice_id_for(bucket="test-bucket", object_name="voice-prompts/abc.pt")
REFERENCE = AudioRef(path="uploads/j1/reference.wav", container="wav", bytes=1234)
TRAITS = VoiceTraits(
    character="Ann", emotion="happy", intensity="high", description="bright", tags=("a", "b")
)

REQUESTS: dict[str, JobRequest] = {
    "custom_voice": CustomVoiceRequest(
        text="Hello.", speaker="vivian", language="en", instruct="calm", seed=7
    ),
    "voice_design": VoiceDesignRequest(text="Hello.", instruct="a warm old man", seed=None),
    "voice_clone": VoiceCloneRequest(text="Hello.", reference=REFERENCE, ref_text="Hi there."),
    "voice_clone_x_vector": VoiceCloneRequest(
        text="Hello.", reference=REFERENCE, x_vector_only=True
    ),
    "clone_prompt": ClonePromptRequest(text="Hello.", voice_id=VOICE_ID, seed=4294967295),
    "create_voice": CreateVoiceRequest(
        voice_id=VOICE_ID,
        name="Captain",
        reference=AudioRef(path="voice-prompts/j1.ref.ogg", container="ogg", bytes=99),
        ref_text="Ahoy.",
        traits=TRAITS,
    ),
    "design_voice": DesignVoiceRequest(
        text="Hello.",
        instruct="Ann, speaking happily",
        voice_id=VOICE_ID,
        name="Ann (happy, high)",
        traits=TRAITS,
        parent_id="p1",
        seed=3,
    ),
    "normalize": NormalizeRequest(
        source=AudioRef(path="uploads/j1/source.flac", container="flac", bytes=5),
        target_lufs=-23.0,
        peak_dbfs=-2.0,
    ),
    "cast": CastRequest(character="Ann", children=("p1c0", "p1c1"), fingerprint="0" * 64),
}


def job(request: JobRequest, **changes: Any) -> Job:
    base = Job(
        id="j1",
        owner="alice",
        request=request,
        backend="" if request.mode == "cast" else "home-4090",
        created_at=NOW,
        updated_at=NOW,
        state_times={JobState.QUEUED: NOW},
    )
    return base.model_copy(update=changes)


def finished(request: JobRequest) -> list[Job]:
    """The job queued, running, succeeded (with audio and a voice) and failed."""
    later = NOW + timedelta(seconds=5)
    result = AudioResult(
        uri="gs://test-bucket/audio/j1.wav",
        format="wav",
        content_type="audio/wav",
        sample_rate=24000,
        duration_s=1.5,
        bytes=72044,
    )
    return [
        job(request),
        job(
            request,
            state=JobState.RUNNING,
            attempts=1,
            lease=Lease(owner="w1", expires_at=later),
            idempotency_key="k",
        ),
        job(
            request,
            state=JobState.SUCCEEDED,
            attempts=1,
            result=result,
            voice_id=VOICE_ID,
            state_times={JobState.QUEUED: NOW, JobState.SUCCEEDED: later},
        ),
        job(
            request,
            state=JobState.FAILED,
            error=JobError(code="synthesis_runaway", message="did not stop"),
            attempts=3,
            retried_after=2,
        ),
    ]


def voice(**changes: Any) -> Voice:
    base = Voice(
        id=VOICE_ID,
        name="Captain",
        owner="alice",
        bucket="test-bucket",
        object_name="voice-prompts/abc.pt",
        generation=1700000000000000,
        size=2048,
        md5="abc==",
        model="Qwen/Qwen3-TTS-12Hz-1.7B-Base",
        ref_text="Ahoy.",
        reference_path="voice-prompts/abc.ref.wav",
        traits=TRAITS,
        created_at=NOW,
        updated_at=NOW,
    )
    return base.model_copy(update=changes)


VOICES = [
    voice(),
    voice(owner=None, traits=VoiceTraits(), model=None, md5=None, reference_path=None),
    voice(
        object_name="quarantine/voice-prompts/abc.pt",
        state=VoiceState.QUARANTINED,
        quarantine_reason="unsafe: torch refused to unpickle the file",
        traits=VoiceTraits(),
    ),
    voice(state=VoiceState.DELETED, x_vector_only=True, ref_text=None),
]


def stored_forms(model: Job | Voice) -> list[Any]:
    """As the models dump to JSON, and as the Firestore adapter writes them (read back)."""
    return [model.model_dump(mode="json"), as_json(to_document(model.model_dump()))]


@pytest.mark.parametrize("mode", sorted(REQUESTS))
def test_every_job_request_mode_matches_the_job_document(mode: str) -> None:
    for stored in finished(REQUESTS[mode]):
        for document in stored_forms(stored):
            validate_schema("job-document.schema.json", document)
            validate_schema("synthesis-request.schema.json", document["request"])


@pytest.mark.parametrize("mode", sorted(REQUESTS))
def test_every_job_view_matches_the_openapi_job(mode: str) -> None:
    for stored in finished(REQUESTS[mode]):
        view = JobView.of(stored).model_dump(mode="json")
        validate_schema("openapi.yaml#/components/schemas/Job", view)


def test_voice_documents_and_views_match() -> None:
    for stored in VOICES:
        for document in stored_forms(stored):
            validate_schema("voice-document.schema.json", document)
    views = [VoiceView.builtin("Uncle_Fu"), *(VoiceView.of(v) for v in VOICES)]
    listing = VoiceListView(voices=tuple(views), next_page_token="NTA=")
    validate_schema("openapi.yaml#/components/schemas/VoiceList", listing.model_dump(mode="json"))


def _good_job() -> dict[str, Any]:
    document: dict[str, Any] = finished(REQUESTS["design_voice"])[2].model_dump(mode="json")
    return document


def _mutations() -> list[tuple[str, dict[str, Any]]]:
    cases: list[tuple[str, dict[str, Any]]] = []

    def case(label: str, change: Any) -> None:
        document = copy.deepcopy(_good_job())
        change(document)
        cases.append((label, document))

    case("unknown mode", lambda d: d["request"].update(mode="sing"))
    case("cast mode with design fields", lambda d: d["request"].update(mode="cast"))
    case("request missing voice_id", lambda d: d["request"].pop("voice_id"))
    case("request missing mode", lambda d: d["request"].pop("mode"))
    case("bad voice id", lambda d: d["request"].update(voice_id="Not-An-Id"))
    case("seed out of range", lambda d: d["request"].update(seed=2**32))
    case("unknown trait", lambda d: d["request"]["traits"].update(mood="x"))
    case("too many tags", lambda d: d["request"]["traits"].update(tags=["t"] * 21))
    case("missing owner", lambda d: d.pop("owner"))
    case("retried_after negative", lambda d: d.update(retried_after=-1))
    case("unknown field", lambda d: d.update(surprise=1))
    return cases


@pytest.mark.parametrize(
    "document", [d for _, d in _mutations()], ids=[label for label, _ in _mutations()]
)
def test_an_invalid_job_document_is_rejected(document: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        validate_schema("job-document.schema.json", document)


def test_a_clone_without_transcript_or_x_vector_is_rejected() -> None:
    document = REQUESTS["voice_clone"].model_dump(mode="json")
    document["ref_text"] = None
    with pytest.raises(ValidationError):
        validate_schema("synthesis-request.schema.json", document)


@pytest.mark.parametrize(
    "change",
    [
        {"state": "gone"},
        {"id": "NOT-HEX"},
        {"generation": "1"},
        {"quarantine_reason": "because"},
        {"traits": {"tags": []}},
    ],
)
def test_an_invalid_voice_document_is_rejected(change: dict[str, Any]) -> None:
    document = {**voice().model_dump(mode="json"), **change}
    with pytest.raises(ValidationError):
        validate_schema("voice-document.schema.json", document)


def test_a_voice_document_missing_a_field_is_rejected() -> None:
    document = voice().model_dump(mode="json")
    document.pop("object_name")
    with pytest.raises(ValidationError):
        validate_schema("voice-document.schema.json", document)
