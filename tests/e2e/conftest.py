"""End-to-end fixtures: one local stack for this package, shared by the modules whose tests run
on the same settings (all the tiny models, a heartbeat a second, the cloud's monitor tick).

Each such module calls it with a key of its own owner's, so the jobs, batches and voices it
lists are its own. Every process of the shared stack must be alive after each test on it, but
for a test marked ``stops_shared_stack``: it stops one for good, and runs after every other
test on the stack. (Starting a worker again is no way out: the Pub/Sub emulator keeps the
streaming pull of a worker that stopped cleanly as a live subscriber, its handler of the
client's RST_STREAM fails with a NoSuchMethodError in ``pubsub.log``, and it leases every other
message to it for a minute or more, on the same subscription or on one made anew.)

A module that needs other settings, or kills a process mid-job, runs a stack of its own by
defining its own ``stack`` fixture: ``test_cli_render`` (one job at a time in the worker),
``test_worker_crash`` (a short lease, no monitor), ``test_stack_runpod`` (RunPod). Those run
first, so that no two stacks run at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gpu_worker.tiny_asr import TinyListener
from infra.devstack import DevStack, listener_env

SHARED_ENV = {"TTS_WORKER__HEARTBEAT_S": "1"}
STOPS = "stops_shared_stack"
HERE = Path(__file__).parent


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{STOPS}: stops a process of the shared e2e stack; runs after every other test on it",
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The end-to-end tests in this order, each group in its collected order: those on stacks
    of their own, then those on the shared stack, then those that stop part of it."""

    def rank(item: pytest.Item) -> int:
        if "shared_stack" not in getattr(item, "fixturenames", ()):
            return 0
        return 2 if item.get_closest_marker(STOPS) else 1

    places = [i for i, item in enumerate(items) if HERE in item.path.parents]
    ordered = sorted((items[i] for i in places), key=rank)
    for place, item in zip(places, ordered, strict=True):
        items[place] = item


@pytest.fixture(scope="package")  # stopped after the last end-to-end test, not at the end
def shared_stack(
    tiny_models_dir: dict[str, str], tiny_listeners_dir: dict[TinyListener, Path]
) -> Iterator[DevStack]:
    """Every model a deployed worker loads, tiny: the three TTS models, and the ASR model and
    forced aligner that check the audio of jobs that ask and time their words."""
    models = tuple(tiny_models_dir.values())
    listening = listener_env(
        asr=tiny_listeners_dir[TinyListener.ASR], aligner=tiny_listeners_dir[TinyListener.ALIGNER]
    )
    with DevStack(models=models, extra_env={**SHARED_ENV, **listening}) as running:
        yield running


@pytest.fixture(scope="module")
def stack(shared_stack: DevStack, request: pytest.FixtureRequest) -> DevStack:
    """The shared stack, called with a key of this module's own owner."""
    return shared_stack.for_owner(request.module.__name__.rpartition(".")[2])


@pytest.fixture(autouse=True)
def _shared_stack_stays_up(request: pytest.FixtureRequest) -> Iterator[None]:
    if "shared_stack" not in request.fixturenames or request.node.get_closest_marker(STOPS):
        yield
        return
    shared: DevStack = request.getfixturevalue("shared_stack")
    yield
    stopped = [
        f"{p.name} exited with {p.process.returncode}: {p.last_error() or p.log_tail()}"
        for p in shared.processes
        if not p.alive
    ]
    assert not stopped, f"the shared stack lost a process (mark {STOPS} if on purpose): {stopped}"
