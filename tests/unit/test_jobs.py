"""The job state machine: every legal move, and the illegal ones refused."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from shared.domain.errors import InvalidTransition
from shared.domain.jobs import AudioResult, Job, JobError, JobState
from shared.domain.synthesis import CustomVoiceRequest

T0 = datetime(2026, 1, 1, tzinfo=UTC)
RESULT = AudioResult(
    uri="gs://b/audio/j.wav",
    format="wav",
    content_type="audio/wav",
    sample_rate=24000,
    duration_s=1.0,
    bytes=48044,
)
ERROR = JobError(code="synthesis_failed", message="bad")


def queued(backend: str = "home-4090") -> Job:
    return Job(
        id="j1",
        owner="alice",
        request=CustomVoiceRequest(text="hi", speaker="Vivian"),
        backend=backend,
        created_at=T0,
        updated_at=T0,
        state_times={JobState.QUEUED: T0},
    )


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_claim_grants_a_lease_and_counts_the_attempt() -> None:
    job = queued().claim("w1", backend="home-4090", now=T0, lease_s=60)
    assert job.state is JobState.RUNNING
    assert job.attempts == 1
    assert job.lease is not None
    assert job.lease.owner == "w1"
    assert job.lease.expires_at == later(60)
    assert job.state_times[JobState.RUNNING] == T0


def test_a_live_lease_blocks_other_workers_and_a_second_claim() -> None:
    job = queued().claim("w1", backend="home-4090", now=T0, lease_s=60)
    with pytest.raises(InvalidTransition, match="leased by w1"):
        job.claim("w2", backend="home-4090", now=later(30), lease_s=60)
    with pytest.raises(InvalidTransition, match="already running"):
        job.claim("w1", backend="home-4090", now=later(30), lease_s=60)


def test_an_expired_lease_lets_another_worker_take_over() -> None:
    job = queued().claim("w1", backend="home-4090", now=T0, lease_s=60)
    taken = job.claim("w2", backend="home-4090", now=later(61), lease_s=60)
    assert taken.lease is not None
    assert taken.lease.owner == "w2"
    assert taken.attempts == 2
    with pytest.raises(InvalidTransition, match="leased by w2"):
        taken.succeed("w1", attempt=2, result=RESULT, now=later(62))


def test_expire_lease_returns_the_job_to_queued() -> None:
    job = queued().claim("w1", backend="home-4090", now=T0, lease_s=60)
    with pytest.raises(InvalidTransition):
        job.expire_lease(now=later(59))
    requeued = job.expire_lease(now=later(61))
    assert requeued.state is JobState.QUEUED
    assert requeued.lease is None


def test_a_job_routed_elsewhere_is_not_claimable() -> None:
    with pytest.raises(InvalidTransition, match="routed to runpod"):
        queued(backend="runpod").claim("w1", backend="home-4090", now=T0, lease_s=60)


@pytest.mark.parametrize(
    "finish",
    [
        lambda j: j.succeed("w1", attempt=1, result=RESULT, now=later(5)),
        lambda j: j.fail("w1", attempt=1, error=ERROR, now=later(5)),
        lambda j: j.cancel(now=later(5)),
    ],
)
def test_terminal_states_never_change(finish) -> None:  # type: ignore[no-untyped-def]
    done = finish(queued().claim("w1", backend="home-4090", now=T0, lease_s=60))
    assert done.state.terminal
    assert done.lease is None
    with pytest.raises(InvalidTransition):
        done.claim("w2", backend="home-4090", now=later(500), lease_s=60)
    with pytest.raises(InvalidTransition):
        done.cancel(now=later(500))
    with pytest.raises(InvalidTransition):
        done.succeed("w1", attempt=1, result=RESULT, now=later(500))
    with pytest.raises(InvalidTransition):
        done.fail("w1", attempt=1, error=ERROR, now=later(500))


def test_only_the_lease_holder_extends_finishes_or_releases() -> None:
    job = queued().claim("w1", backend="home-4090", now=T0, lease_s=60)
    for move in (
        lambda: job.extend_lease("w2", attempt=1, now=later(1), lease_s=60),
        lambda: job.succeed("w2", attempt=1, result=RESULT, now=later(1)),
        lambda: job.fail("w2", attempt=1, error=ERROR, now=later(1)),
        lambda: job.release("w2", attempt=1, error=ERROR, now=later(1)),
    ):
        with pytest.raises(InvalidTransition, match="leased by w1"):
            move()
    extended = job.extend_lease("w1", attempt=1, now=later(40), lease_s=60)
    assert extended.lease is not None
    assert extended.lease.expires_at == later(100)


def test_release_requeues_with_the_error_kept() -> None:
    job = queued().claim("w1", backend="home-4090", now=T0, lease_s=60)
    released = job.release("w1", attempt=1, error=ERROR, now=later(2))
    assert released.state is JobState.QUEUED
    assert released.error == ERROR
    again = released.claim("w2", backend="home-4090", now=later(3), lease_s=60)
    assert again.attempts == 2


def test_queued_jobs_cannot_be_finished_without_a_claim() -> None:
    with pytest.raises(InvalidTransition, match="not running"):
        queued().succeed("w1", attempt=1, result=RESULT, now=T0)


def test_a_run_of_an_earlier_attempt_finishes_nothing_even_on_the_same_worker() -> None:
    # Cancel, retry and claim again on the one worker: the first run, still going, holds
    # attempt 1 and must not finish attempt 2, though the lease names the same worker.
    first = queued().claim("w1", backend="home-4090", now=T0, lease_s=60)
    again = (
        first.cancel(now=later(1))
        .retry(now=later(2))
        .claim("w1", backend="home-4090", now=later(3), lease_s=60)
    )
    assert again.attempts == 3  # the retry started attempt 2; the claim, 3
    assert not again.wanted(attempt=1)
    assert again.wanted(attempt=3)
    for move in (
        lambda: again.succeed("w1", attempt=1, result=RESULT, now=later(4)),
        lambda: again.fail("w1", attempt=1, error=ERROR, now=later(4)),
        lambda: again.release("w1", attempt=1, error=ERROR, now=later(4)),
        lambda: again.extend_lease("w1", attempt=1, now=later(4), lease_s=60),
    ):
        with pytest.raises(InvalidTransition, match="attempt 3, not 1"):
            move()
    assert again.succeed("w1", attempt=3, result=RESULT, now=later(4)).state is JobState.SUCCEEDED


def test_a_retry_keeps_counting_attempts_but_resets_the_tries_a_limit_counts() -> None:
    job = queued().claim("w1", backend="home-4090", now=T0, lease_s=60)
    job = job.fail("w1", attempt=1, error=ERROR, now=later(1)).retry(now=later(2))
    assert (job.attempts, job.tries) == (2, 0)
    job = job.claim("w1", backend="home-4090", now=later(3), lease_s=60)
    assert (job.attempts, job.tries) == (3, 1)


def test_a_batch_or_cast_parent_is_never_claimed_even_by_its_own_empty_backend() -> None:
    # Found by the lifecycle model: a parent is routed to no backend (""), and a claim that
    # named that backend ran the parent and let it succeed while its children still ran.
    from shared.domain.jobs import PARENT_BACKEND
    from shared.domain.synthesis import BatchRequest

    parent = queued(backend=PARENT_BACKEND).model_copy(
        update={"request": BatchRequest(children=("j1i0",), keys=(None,), fingerprint="f")}
    )
    with pytest.raises(InvalidTransition, match="parent is not run by a worker"):
        parent.claim("w1", backend=PARENT_BACKEND, now=T0, lease_s=60)
