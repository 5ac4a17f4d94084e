"""A cache hit in as few round trips as its data allows, over fakes: the in-process caches are
bounded and still miss on a model change; the hit's audio is read once, beside its job's write;
its announcement goes out after the answer, and a process that never sends it leaves it owed
for the monitor; a voice is read once per call; work beside a request is bounded."""

from __future__ import annotations

import contextvars
import dataclasses
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from flask.testing import FlaskClient

from functions.api.app import create_api
from shared.adapters.backend_cache import CachedBackendStore
from shared.adapters.background import ThreadedRunner
from shared.adapters.cache_entries import CachedAudioEntries
from shared.adapters.ttl_cache import TtlCache
from shared.domain.backends import BackendHeartbeat
from shared.domain.jobs import AudioResult, JobState
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import CustomVoiceRequest
from shared.domain.voices import Voice
from shared.usecases import cache, speech
from shared.usecases.beside import AfterAnswer, run_now
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import job_id_for, submit_job
from shared.usecases.ports import CachedAudio
from shared.usecases.results import announce_pending
from shared.wire.openai import SpeechCreateBody
from tests.support.backends import heartbeat
from tests.support.fakes import InMemoryAudioCache, InMemoryBackendStore, InMemoryVoiceStore
from tests.support.gateway import Fakes, add_voice, issue_key
from tests.support.worker import ScriptedWorker

T = TypeVar("T")
ALICE = Principal(owner="alice", scopes=frozenset({Scope.USER}))
T0 = datetime(2026, 1, 1, tzinfo=UTC)
RESULT = AudioResult(
    uri="gs://test-bucket/audio/j1.wav", format="wav", content_type="audio/wav",
    sample_rate=24000, duration_s=1.0, bytes=4,
)  # fmt: skip
BODY = {"model": "tts-1", "input": "Hello again.", "voice": "vivian", "seed": 5}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


# -- the in-process caches -----------------------------------------------------------------


def test_a_ttl_cache_drops_the_least_recently_used_past_its_bound_and_expires() -> None:
    clock = Clock()
    memo: TtlCache[str, int] = TtlCache(ttl_s=10, max_entries=2, monotonic=clock)
    memo.put("a", 1)
    memo.put("b", 2)
    assert memo.get("a") == (True, 1)  # "a" is now the most recently used
    memo.put("c", 3)
    assert (memo.get("b"), memo.get("a"), memo.get("c")) == ((False, None), (True, 1), (True, 3))
    assert len(memo) == 2
    clock.now = 10
    assert memo.get("a") == (False, None)
    assert len(memo) == 1  # found expired, dropped
    off: TtlCache[str, int] = TtlCache(ttl_s=0, max_entries=2, monotonic=clock)
    off.put("a", 1)
    assert off.get("a") == (False, None)


class CountingCache(InMemoryAudioCache):
    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def get(self, key: str) -> CachedAudio | None:
        self.reads += 1
        return super().get(key)


def entry(key: str, job_id: str = "j1") -> CachedAudio:
    return CachedAudio(key=key, job_id=job_id, result=RESULT, created_at=T0)


def test_audio_cache_entries_are_kept_bounded_and_a_miss_is_always_read_again() -> None:
    clock = Clock()
    inner = CountingCache()
    entries = CachedAudioEntries(inner, ttl_s=60, max_entries=2, monotonic=clock)
    assert entries.get("k1") is None
    inner.put(entry("k1"))  # made by another process meanwhile
    assert entries.get("k1") == entry("k1")  # a miss was not remembered: found at once
    assert entries.get("k1") == entry("k1")
    assert inner.reads == 2
    entries.put(entry("k2"))  # written through, and kept
    entries.put(entry("k3"))
    assert inner.get("k2") == entry("k2")
    inner.reads = 0
    entries.get("k3")
    entries.get("k2")
    entries.get("k1")  # dropped past the bound of two: read again
    assert inner.reads == 1
    inner.put(entry("k1", job_id="j9"))  # replaced elsewhere: seen once the copy runs out
    assert entries.get("k1") == entry("k1")
    clock.now = 60
    assert entries.get("k1") == entry("k1", job_id="j9")


class CountingBackends(InMemoryBackendStore):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    def get_many(self, backend_ids: Sequence[str]) -> dict[str, BackendHeartbeat]:
        self.calls.append(list(backend_ids))
        return super().get_many(backend_ids)


def test_backends_that_ran_out_are_read_again_together_and_the_cache_is_bounded() -> None:
    clock = Clock()
    inner = CountingBackends()
    inner.heartbeat(heartbeat(backend_id="a"))
    inner.heartbeat(heartbeat(backend_id="b"))
    backends = CachedBackendStore(inner, ttl_s=2, max_entries=3, monotonic=clock)
    assert set(backends.get_many(["a", "b", "never"])) == {"a", "b"}
    assert backends.get("a") == heartbeat(backend_id="a")
    assert inner.calls == [["a", "b", "never"]]  # one read for all three
    backends.get("c")  # past the bound of three: the least recently used ("b") goes
    clock.now = 1
    backends.get_many(["a", "b"])
    assert inner.calls[-1] == ["b"]
    clock.now = 5
    backends.get_many(["a", "b"])
    assert inner.calls[-1] == ["a", "b"]


def cached_gateway(gateway: Gateway, fakes: Fakes, clock: Clock) -> Gateway:
    """``gateway`` with the caches the bootstrap puts in front of Firestore, on ``clock``."""
    return dataclasses.replace(
        gateway,
        backends=CachedBackendStore(fakes.backends, ttl_s=2, monotonic=clock),
        cache=CachedAudioEntries(fakes.cache, ttl_s=300, max_entries=16, monotonic=clock),
    )


def test_a_backend_that_changed_its_models_misses_the_cache_through_the_process_caches(
    gateway: Gateway, fakes: Fakes
) -> None:
    """Another process's heartbeat (the worker's) is seen once the backend copy runs out; the
    entry copy is keyed by the models, so it never answers for the new ones."""
    clock = Clock()
    gw = cached_gateway(gateway, fakes, clock)
    fakes.backends.heartbeat(heartbeat(models=("Qwen/Qwen3-TTS-12Hz-0.6B-CustomVoice",)))
    request = CustomVoiceRequest(text="Upgrade.", speaker="ryan", seed=3)
    first = submit_job(gw, principal=ALICE, request=request)
    ScriptedWorker(fakes, gateway=gw).step()
    ScriptedWorker(fakes, gateway=gw).step()
    done = fakes.jobs.get(first.id)
    assert done is not None
    assert done.state is JobState.SUCCEEDED
    cache.remember(gw, done)
    assert submit_job(gw, principal=ALICE, request=request).state is JobState.SUCCEEDED
    fakes.backends.heartbeat(heartbeat(models=("Qwen/Qwen3-TTS-12Hz-1.7B-CustomVoice",)))
    clock.now = 2  # the backend copy has run out; the entry copy has not
    again = submit_job(gw, principal=ALICE, request=request)
    assert (again.state, again.cached_from) == (JobState.QUEUED, None)


# -- the hit through the synchronous speech route ------------------------------------------


def make_hit(client: FlaskClient, headers: dict[str, str], fakes: Fakes, gw: Gateway) -> str:
    """A first call synthesized and remembered; the id of the job that made the audio."""
    ScriptedWorker(fakes)
    first = client.post("/v1/audio/speech", json=BODY, headers=headers)
    assert first.status_code == 200
    made = fakes.jobs.get(first.headers["X-Job-Id"])
    assert made is not None
    cache.remember(gw, made)
    return made.id


def results_for(fakes: Fakes, job_id: str) -> list[bytes]:
    return [
        m.data
        for m in fakes.publisher.messages
        if m.topic == "tts-results" and m.attributes.get("job_id") == job_id
    ]


def test_a_hit_reads_its_audio_once_and_its_job_exists_and_is_announced(
    gateway: Gateway, client: FlaskClient, alice: dict[str, str], fakes: Fakes
) -> None:
    source = make_hit(client, alice, fakes, gateway)
    fakes.blobs.downloads.clear()
    response = client.post("/v1/audio/speech", json=BODY, headers=alice)
    assert response.status_code == 200
    assert response.data == f"<{source}:whole>".encode()
    hit = fakes.jobs.get(response.headers["X-Job-Id"])
    assert hit is not None
    assert (hit.state, hit.cached_from) == (JobState.SUCCEEDED, source)
    assert sum(fakes.blobs.downloads.values()) == 1  # read beside the write, not again
    # The announcement went out (here inline), and the job no longer owes it.
    assert results_for(fakes, hit.id)
    assert not hit.result_pending


class DroppingRunner:
    """Runs what the answer waits for and drops what was handed off after it: a process that
    dies (or is frozen) the moment it has answered."""

    def __init__(self) -> None:
        self.dropped = 0

    def submit(self, task: Callable[[], T], /) -> Future[T]:
        if isinstance(task, AfterAnswer):
            self.dropped += 1
            future: Future[T] = Future()
            future.cancel()
            return future
        return run_now(task)


def test_a_hit_answered_by_a_process_that_then_dies_is_announced_by_the_monitor(
    gateway: Gateway, fakes: Fakes
) -> None:
    runner = DroppingRunner()
    gw = dataclasses.replace(gateway, tasks=runner)
    client = create_api(gw).test_client()
    alice = issue_key(gw, "alice")
    make_hit(client, alice, fakes, gw)
    response = client.post("/v1/audio/speech", json=BODY, headers=alice)
    assert response.status_code == 200
    hit_id = response.headers["X-Job-Id"]
    assert runner.dropped == 1
    owed = fakes.jobs.get(hit_id)
    assert owed is not None
    assert owed.result_pending  # the record says what is still owed
    assert not results_for(fakes, hit_id)
    fakes.clock.advance(gw.settings.monitor.announce_grace_s + 1)
    assert hit_id in announce_pending(gw)
    assert results_for(fakes, hit_id)
    announced = fakes.jobs.get(hit_id)
    assert announced is not None
    assert not announced.result_pending


def test_an_idempotent_retry_whose_job_made_its_own_audio_ignores_a_hits_read(
    client: FlaskClient, alice: dict[str, str], fakes: Fakes, gateway: Gateway
) -> None:
    """The key's job was made before the audio was cached (and ran on): its retry finds a hit,
    reads that audio beside the write, and still answers with its own job's audio."""
    headers = {**alice, "Idempotency-Key": "once"}
    waited = client.post("/v1/audio/speech", json=BODY, headers=headers)  # no worker yet
    assert waited.status_code >= 400
    keyed = job_id_for(gateway, owner="alice", idempotency_key="once")
    assert fakes.jobs.get(keyed) is not None
    make_hit(client, alice, fakes, gateway)  # its worker runs the keyed job too
    fakes.blobs.downloads.clear()
    response = client.post("/v1/audio/speech", json=BODY, headers=headers)
    assert response.status_code == 200
    assert response.headers["X-Job-Id"] == keyed
    assert response.data == f"<{keyed}:whole>".encode()
    assert sum(fakes.blobs.downloads.values()) == 2  # the hit's read, unused; its own audio


# -- a voice read once per call --------------------------------------------------------------


class CountingVoices(InMemoryVoiceStore):
    def __init__(self, inner: InMemoryVoiceStore) -> None:
        super().__init__()
        self.__dict__.update(inner.__dict__)
        self.reads = 0

    def get(self, voice_id: str) -> Voice | None:
        self.reads += 1
        return super().get(voice_id)

    def query(self, **filters: Any) -> list[Voice]:
        self.reads += 1
        return super().query(**filters)


def test_a_call_naming_a_registered_voice_reads_it_once(gateway: Gateway, fakes: Fakes) -> None:
    add_voice(fakes, name="Narrator", owner="alice", voice_id="v0000000001")
    voices = CountingVoices(fakes.voices)
    gw = dataclasses.replace(gateway, voices=voices)
    body = SpeechCreateBody.model_validate({**BODY, "voice": "narrator"})
    job = speech.submit_speech(gw, principal=ALICE, body=body)
    assert job.cache_key is not None
    # Once by the name as an id (not one), once by name; then never again for this call
    # (three lookups of the record by id before: the mode, the request, the cache key).
    assert voices.reads == 2
    speech.submit_speech(gw, principal=ALICE, body=body)
    assert voices.reads == 4  # the next call reads afresh: an overwrite counts from there


# -- work beside a request -------------------------------------------------------------------


def test_the_threaded_runner_works_beside_the_caller_and_runs_inline_when_full() -> None:
    runner = ThreadedRunner(workers=1, max_pending=1)
    release = threading.Event()
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="none")
    marker.set("request")

    def slow() -> str:
        release.wait(5)
        return f"{threading.current_thread().name}:{marker.get()}"

    beside = runner.submit(slow)
    assert not beside.done()  # the caller goes on meanwhile
    full = runner.submit(lambda: threading.current_thread().name)
    assert full.result(0) == threading.current_thread().name  # no room: done by the caller
    release.set()
    assert beside.result(5) == "beside-0:request"  # in the submitter's context
    assert runner.drain(5)

    def broken() -> None:
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        runner.submit(broken).result(5)
    assert runner.drain(5)
