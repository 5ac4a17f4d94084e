"""A model-based test of the job lifecycle: random interleavings of what users, workers, crashes
and the monitor do, on the real use cases over the Firestore emulator, checked after every step.

The rules are the real use cases (submit a job, a batch with or without its joined file, a cast;
cancel and retry any job or parent; the monitor's pass) and what a worker does, step by step, as
``gpu_worker.runner`` does it (claim, publish a piece, succeed, fail, release), each finish also
in a form that crashes between the state change and what follows it, and a worker that dies
holding its lease. Time moves only when a rule moves it (leases run out, deadlines pass).

``make test`` runs a bounded number of examples; ``make fuzz`` runs many more and prints how
many steps it took (``TTS_LIFECYCLE_EXAMPLES``, ``TTS_LIFECYCLE_STEPS``). Every failure it has
found is kept as an explicit example (``tests/unit/test_jobs.py``: a parent is never claimed).
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from pydantic import TypeAdapter

from shared.adapters.clients import firestore_client
from shared.adapters.firestore import FirestoreJobStore
from shared.bootstrap import build_gateway
from shared.domain.audio_formats import FORMATS, audio_object_name, part_object_name
from shared.domain.errors import Conflict, InvalidTransition, NotFound
from shared.domain.jobs import PARENT_BACKEND, AudioResult, Job, JobError, JobOutput, JobState
from shared.domain.keys import Principal, Scope
from shared.domain.synthesis import children_of, output_format
from shared.settings import Settings
from shared.usecases import completion, parents
from shared.usecases.batch import retry_job, submit_batch
from shared.usecases.casting import cast_voices
from shared.usecases.gateway import Gateway
from shared.usecases.jobs import cancel_job, submit_job
from shared.usecases.monitor import run_monitor
from shared.wire.bodies import BatchBody, CastBody, SpeechBody
from shared.wire.results import JobResultMessage
from tests.support.gateway import make_fakes

ALICE = Principal(owner="alice", scopes=frozenset({Scope.USER}))
LEASE_S = 30.0
WORKERS = ("w1", "w2")
STEPS: list[int] = [0]
"""Steps taken by every example of this session, printed by ``make fuzz``."""

_SPEECH: TypeAdapter[SpeechBody] = TypeAdapter(SpeechBody)


@dataclass(frozen=True, kw_only=True)
class Run:
    """A worker holding one attempt of one job, as the runner holds it between its steps."""

    worker: str
    job: Job
    """The job as its claim returned it (its ``attempts`` is the run's fencing token)."""

    @property
    def key(self) -> tuple[str, int]:
        return (self.job.id, self.job.attempts)


@pytest.fixture(scope="module", autouse=True)
def step_count() -> Iterator[None]:
    yield
    print(f"\nlifecycle model: {STEPS[0]} steps")


@pytest.fixture(scope="module")
def settings_for_model(emulator_env: dict[str, str]) -> Settings:
    return Settings(bucket="test-bucket", collection_prefix="model_")


class Lifecycle(RuleBasedStateMachine):
    cloud: Settings

    def __init__(self) -> None:
        super().__init__()
        self.fakes = make_fakes()
        # A collection of its own per example: what one example left cannot meet the next.
        store = FirestoreJobStore(
            firestore_client(self.cloud), collection=f"lc{uuid.uuid4().hex[:10]}_jobs"
        )
        self.gw: Gateway = build_gateway(
            self.cloud,
            jobs=store,
            blobs=self.fakes.blobs,
            publisher=self.fakes.publisher,
            keys=self.fakes.keys,
            backends=self.fakes.backends,
            voices=self.fakes.voices,
            events=self.fakes.events,
            clock=self.fakes.clock,
            sleep=self.fakes.clock.sleep,
            webhooks=self.fakes.webhooks,
            cache=self.fakes.cache,
        )
        self.ids: list[str] = []
        """Every job the model made, children included, in the order they appeared."""
        self.runs: dict[tuple[str, int], Run] = {}
        self.ended_runs: list[Run] = []
        self.terminal_seen: dict[tuple[str, int], JobState] = {}
        self.lines = 0

    # -- helpers ----------------------------------------------------------------------------

    def _job(self, job_id: str) -> Job:
        job = self.gw.jobs.get(job_id)
        assert job is not None, job_id
        return job

    def _jobs(self) -> dict[str, Job]:
        return self.gw.jobs.get_many(self.ids)

    def _learn(self, parent: Job) -> None:
        for job_id in (parent.id, *children_of(parent.request)):
            if job_id not in self.ids:
                self.ids.append(job_id)

    def _text(self) -> str:
        self.lines += 1
        return f"Line {self.lines}."

    def _output(self, run: Run) -> JobOutput:
        """What the worker stores for its attempt: bytes that name the attempt."""
        job = run.job
        fmt = output_format(job.request)
        if fmt is None:  # a cast child registers a voice
            return JobOutput(voice_id=f"v{job.id}")
        path = audio_object_name(prefix="audio/", job_id=job.id, attempt=job.attempts, fmt=fmt)
        data = f"{job.id}:{job.attempts}".encode()
        stored = self.gw.blobs.put(path, data, content_type=FORMATS[fmt].content_type)
        audio = AudioResult(
            uri=stored.uri,
            format=fmt,
            content_type=FORMATS[fmt].content_type,
            sample_rate=24000,
            duration_s=1.0,
            bytes=len(data),
        )
        return JobOutput(audio=audio)

    def _step(self) -> None:
        STEPS[0] += 1
        for job in self._jobs().values():
            if job.state.terminal:
                seen = self.terminal_seen.setdefault((job.id, job.attempts), job.state)
                assert seen is job.state, f"{job.id} attempt {job.attempts}: {seen} then {job}"

    # -- users ------------------------------------------------------------------------------

    @rule()
    def submit_one(self) -> None:
        body = _SPEECH.validate_python({"text": self._text(), "speaker": "ryan"})
        self._learn(submit_job(self.gw, principal=ALICE, request=body))
        self._step()

    @rule(items=st.integers(1, 4), join=st.booleans())
    def submit_a_batch(self, items: int, join: bool) -> None:
        body = BatchBody.model_validate(
            {
                "items": [{"text": self._text(), "speaker": "ryan"} for _ in range(items)],
                "join": join,
            }
        )
        self._learn(submit_batch(self.gw, principal=ALICE, body=body))
        self._step()

    @rule(items=st.integers(1, 3))
    def submit_a_cast(self, items: int) -> None:
        body = CastBody(
            character="Ann",
            base_description="A calm voice",
            text=self._text(),
            items=tuple({"emotion": f"e{i}"} for i in range(items)),  # type: ignore[misc]
        )
        self._learn(cast_voices(self.gw, principal=ALICE, body=body))
        self._step()

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self.ids))
        try:
            cancel_job(self.gw, principal=ALICE, job_id=job_id)
        except Conflict:
            assert self._job(job_id).state.terminal
        except NotFound:
            assert self.gw.jobs.get(job_id) is None  # a join job not made yet
        self._step()

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        job_id = data.draw(st.sampled_from(self.ids))
        try:
            retry_job(self.gw, principal=ALICE, job_id=job_id)
        except Conflict:
            assert self._job(job_id).state not in {JobState.FAILED, JobState.CANCELED}
        except NotFound:
            assert self.gw.jobs.get(job_id) is None  # a join job not made yet
        self._step()

    @precondition(lambda self: self.ids)
    @rule(data=st.data())
    def deadline_passes(self, data: st.DataObject) -> None:
        """A job (or parent) whose ``Cancel-After`` runs out now."""
        job_id = data.draw(st.sampled_from(self.ids))
        now = self.fakes.clock()
        with contextlib.suppress(InvalidTransition, NotFound):
            self.gw.jobs.update(
                job_id,
                lambda j: _checked(not j.state.terminal, j).model_copy(update={"deadline": now}),
            )
        self.fakes.clock.advance(1)
        self._step()

    # -- workers ----------------------------------------------------------------------------

    @precondition(lambda self: self.ids)
    @rule(data=st.data(), worker=st.sampled_from(WORKERS))
    def claim(self, data: st.DataObject, worker: str) -> None:
        """A job message delivered (again, perhaps): only a claimable job is claimed."""
        job_id = data.draw(st.sampled_from(self.ids))
        before = self.gw.jobs.get(job_id)
        if before is None:  # a join job not made yet
            return
        try:
            job = self.gw.jobs.update(
                job_id,
                lambda j: j.claim(
                    worker, backend=j.backend, now=self.fakes.clock(), lease_s=LEASE_S
                ),
            )
        except InvalidTransition:
            assert before.backend == PARENT_BACKEND or before.claimable_by(
                worker, backend=before.backend, now=self.fakes.clock()
            ), f"a claimable job refused: {before}"
        else:
            assert job.attempts == before.attempts + 1
            self.runs[(job.id, job.attempts)] = Run(worker=worker, job=job)
        self._step()

    def _pick_run(self, data: st.DataObject) -> Run:
        key = data.draw(st.sampled_from(sorted(self.runs)))
        return self.runs[key]

    @precondition(lambda self: self.runs)
    @rule(data=st.data())
    def publish_a_piece(self, data: st.DataObject) -> None:
        """Between pieces a run checks that its attempt is still wanted, as the worker does."""
        run = self._pick_run(data)
        current = self._job(run.job.id)
        fmt = output_format(run.job.request)
        if current.wanted(attempt=run.job.attempts) and fmt is not None:
            path = part_object_name(
                prefix="audio/", job_id=run.job.id, attempt=run.job.attempts, index=0, fmt=fmt
            )
            self.gw.blobs.put(path, f"{run.job.id}:{run.job.attempts}:0".encode(), content_type="x")
        elif not current.wanted(attempt=run.job.attempts):
            del self.runs[run.key]  # it stops
            self.ended_runs.append(run)
        self._step()

    @precondition(lambda self: self.runs)
    @rule(data=st.data(), crash=st.booleans())
    def succeed(self, data: st.DataObject, crash: bool) -> None:
        run = self._pick_run(data)
        output = self._output(run)
        if crash:
            # The move is made, then the process dies before announcing or settling.
            with contextlib.suppress(InvalidTransition):
                self.gw.jobs.update(
                    run.job.id,
                    lambda j: j.succeed(
                        run.worker,
                        attempt=run.job.attempts,
                        result=output.audio,
                        voice_id=output.voice_id,
                        now=self.fakes.clock(),
                    ),
                )
        else:
            finished = completion.succeed(self.gw, run.job, worker=run.worker, output=output)
            now = self._job(run.job.id)
            assert finished == (
                now.state is JobState.SUCCEEDED and now.attempts == run.job.attempts
            )
        del self.runs[run.key]
        self.ended_runs.append(run)
        self._step()

    @precondition(lambda self: self.runs)
    @rule(data=st.data(), crash=st.booleans(), transient=st.booleans())
    def fail(self, data: st.DataObject, crash: bool, transient: bool) -> None:
        run = self._pick_run(data)
        error = JobError(code="synthesis_failed", message="scripted", retryable=transient)
        if crash:
            with contextlib.suppress(InvalidTransition):
                self.gw.jobs.update(
                    run.job.id,
                    lambda j: j.fail(
                        run.worker, attempt=run.job.attempts, error=error, now=self.fakes.clock()
                    ),
                )
        elif transient:
            completion.release(self.gw, run.job, worker=run.worker, error=error)
        else:
            completion.fail(self.gw, run.job, worker=run.worker, error=error)
        del self.runs[run.key]
        self.ended_runs.append(run)
        self._step()

    @precondition(lambda self: self.ended_runs)
    @rule(data=st.data())
    def finish_delivered_again(self, data: st.DataObject) -> None:
        """A run that already ended reports again (a redelivered message, a slow duplicate):
        nothing changes."""
        run = data.draw(st.sampled_from(self.ended_runs))
        before = self._job(run.job.id)
        if completion.succeed(self.gw, run.job, worker=run.worker, output=self._output(run)):
            assert before.state is JobState.RUNNING
            assert before.attempts == run.job.attempts
        self._step()

    @precondition(lambda self: self.runs)
    @rule(data=st.data())
    def worker_dies(self, data: st.DataObject) -> None:
        run = self._pick_run(data)
        del self.runs[run.key]
        self._step()

    @rule(seconds=st.sampled_from([5.0, LEASE_S + 1, 200.0]))
    def time_passes(self, seconds: float) -> None:
        self.fakes.clock.advance(seconds)
        self._step()

    @rule()
    def monitor_pass(self) -> None:
        run_monitor(self.gw)
        self._step()

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def announcements_are_one_per_terminal_attempt(self) -> None:
        states: dict[str, set[str]] = defaultdict(set)
        for message in self.fakes.publisher.messages:
            if message.topic != self.cloud.results_topic:
                continue
            body = JobResultMessage.model_validate_json(message.data)
            assert message.attributes["announcement_id"] == body.announcement_id
            states[body.announcement_id].add(body.state)
        clashing = {key: found for key, found in states.items() if len(found) > 1}
        assert not clashing, clashing

    @invariant()
    def parents_agree_with_their_children(self) -> None:
        jobs = self._jobs()
        for job in jobs.values():
            children = children_of(job.request)
            if not children:
                continue
            kids = [jobs[c] for c in children if c in jobs]
            counted = parents.progress(self.gw, job)
            assert counted is not None
            assert counted.succeeded == sum(k.state is JobState.SUCCEEDED for k in kids)
            assert counted.failed == sum(
                k.state in {JobState.FAILED, JobState.CANCELED} for k in kids
            )
            if job.state.terminal:
                running = [k.id for k in kids if not k.state.terminal]
                assert not running, f"{job.id} is {job.state} while {running} run"

    @invariant()
    def served_audio_is_the_succeeding_attempts(self) -> None:
        for job in self._jobs().values():
            if job.state is not JobState.SUCCEEDED or job.result is None:
                continue
            source = job
            if children_of(job.request):  # a joined batch serves its join job's audio
                join = job.request.join  # type: ignore[union-attr]
                source = self._job(join.job_id)
            expected = audio_object_name(
                prefix="audio/", job_id=source.id, attempt=source.attempts, fmt=job.result.format
            )
            assert self.gw.object_path(job.result.uri) == expected
            data = self.gw.blobs.get(expected)
            assert data == f"{source.id}:{source.attempts}".encode()

    def teardown(self) -> None:
        # A quiet end: every worker gone, time enough for leases, graces and republishing,
        # and the monitor's passes. Nothing may be left stuck.
        self.fakes.clock.advance(LEASE_S + 400)
        run_monitor(self.gw)
        self.fakes.clock.advance(400)
        run_monitor(self.gw)
        jobs = self._jobs()
        for job in jobs.values():
            assert not job.result_pending, f"{job.id} never announced"
            if job.state.terminal:
                assert (job.id, job.attempts) in {
                    (m.attributes["job_id"], int(m.attributes["announcement_id"].rsplit(".", 1)[1]))
                    for m in self.fakes.publisher.messages
                    if m.topic == self.cloud.results_topic
                }, f"{job.id} ended unannounced"
                continue
            if job.state is JobState.RUNNING and job.backend != PARENT_BACKEND:
                raise AssertionError(f"{job.id} still running after every worker left")
            children = children_of(job.request)
            if children:
                kids = [jobs[c] for c in children if c in jobs]
                assert any(not k.state.terminal for k in kids) or len(kids) < len(children), (
                    f"{job.id} is {job.state} with every child ended: {kids}"
                )


def _checked(ok: bool, job: Job) -> Job:
    if not ok:
        raise InvalidTransition(f"job {job.id} is {job.state}")
    return job


def test_the_job_lifecycle_keeps_its_promises(settings_for_model: Settings) -> None:
    Lifecycle.cloud = settings_for_model
    machine = Lifecycle.TestCase
    machine.settings = settings(
        max_examples=int(os.environ.get("TTS_LIFECYCLE_EXAMPLES", "8")),
        stateful_step_count=int(os.environ.get("TTS_LIFECYCLE_STEPS", "30")),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        derandomize=os.environ.get("TTS_LIFECYCLE_RANDOM") is None,
        phases=[Phase.explicit, Phase.reuse, Phase.generate]
        + ([] if os.environ.get("TTS_LIFECYCLE_NO_SHRINK") else [Phase.shrink]),
    )
    machine().runTest()
