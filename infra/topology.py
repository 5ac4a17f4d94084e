"""Typed view of ``topology.yaml`` and an idempotent ``apply`` for the emulators.

The cloud is deployed by ``infra/terraform``, which decodes the same file; ``apply`` only creates
what the local stack and the tests need (topics, subscriptions, the bucket).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import google.cloud.pubsub_v1 as pubsub_v1
import google.cloud.storage as storage
import yaml
from google.api_core import exceptions as gexc
from google.protobuf import duration_pb2
from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

TOPOLOGY_FILE = Path(__file__).with_name("topology.yaml")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


Principal = Literal["functions", "home-worker"]
"""The gateway's own identities (Terraform's service accounts): the functions' runtime account
and the home 4090 worker's."""


class Topic(_Model):
    name: str
    publishers: tuple[Principal, ...] = ()
    """Who may publish here (Pub/Sub itself publishes to dead letters; Cloud Scheduler to ticks)."""


class DeadLetter(_Model):
    topic: str
    max_delivery_attempts: int


class Retry(_Model):
    minimum_backoff_s: int
    maximum_backoff_s: int


class Subscription(_Model):
    name: str
    topic: str
    filter: str = ""
    ack_deadline_s: int = 60
    message_retention_s: int = 604800
    dead_letter: DeadLetter | None = None
    retry: Retry | None = None
    push_function: str | None = None
    """Deliver by push to this declared function (its URL is known only once deployed)."""
    subscribers: tuple[Principal, ...] = ()
    """Who pulls from it (a push subscription's function is called by Pub/Sub instead)."""


class Schedule(_Model):
    name: str
    topic: str
    cron: str

    @property
    def every_s(self) -> int:
        """Seconds between two ticks, for a cron that fires at one fixed step all day long:
        ``* * * * *`` or ``*/N * * * *`` with N dividing 60. The local stack ticks at this
        interval instead of running Cloud Scheduler; any other cron has no single interval, so
        it is refused rather than approximated."""
        minute, *rest = self.cron.split()
        step = "1" if minute == "*" else minute[2:] if minute.startswith("*/") else ""
        if rest != ["*"] * 4 or not step.isdigit() or int(step) == 0 or 60 % int(step):
            raise ValueError(
                f"schedule {self.name}: cron {self.cron!r} is not a fixed step of minutes"
            )
        return int(step) * 60


class ExpiryRule(_Model):
    prefix: str
    age_days: int


class Bucket(_Model):
    name_setting: str
    location: str
    soft_delete_days: int | None = Field(default=None, ge=0, le=90)
    """Days GCS keeps deleted objects restorable (and billed); ``0`` turns soft delete off,
    unset leaves Google's default (7)."""
    expire: tuple[ExpiryRule, ...] = ()
    """Objects under these prefixes are deleted by GCS after so many days."""


class VoicesBucket(_Model):
    """The voice files' own bucket, in the main bucket's location: storage triggers filter by
    bucket only, so only writes here wake the voice-registry functions."""

    name_setting: str
    prefixes: tuple[str, ...]
    """Object prefixes the code keeps here (Settings.voices.prefix and quarantine_prefix)."""
    soft_delete_days: int | None = Field(default=None, ge=0, le=90)


class Function(_Model):
    name: str
    source: str
    entry_point: str
    trigger: str
    """``http``, ``topic:<name>``, or ``storage:finalized`` / ``storage:deleted`` on the bucket."""
    memory: str = "512Mi"
    cpu: str | None = None
    """vCPUs per instance; unset: what the memory size implies. Concurrency above 1 needs 1+."""
    concurrency: int = Field(default=1, ge=1, le=1000)
    """Requests one instance serves at once; the framework's threads are set to match."""
    timeout_s: int = Field(default=60, gt=0, le=3600)
    retry: bool = False
    """Redeliver an event the function failed on (event triggers only)."""
    extra_requirements: tuple[str, ...] = ()
    """Installed on top of the functions' ``requirements.txt`` for this function only."""
    secrets: dict[str, str] = {}
    """Environment variable -> Secret Manager secret, mounted at deploy (never in env vars)."""
    public: bool = False
    """Reachable without Google IAM: the API (its own keys) and the RunPod webhook (tokens)."""

    @property
    def module(self) -> str:
        return self.source.removesuffix(".py").replace("/", ".")


Database = Literal["default", "keys"]
"""``default``: Firestore's ``(default)`` database; ``keys``: ``Firestore.keys_database``."""


class TtlField(_Model):
    collection: str
    field: str
    database: Database = "default"


class IndexField(_Model):
    path: str
    array: bool = False
    """``array_contains`` on this field instead of an ascending order."""


class CompositeIndex(_Model):
    collection: str
    fields: tuple[IndexField, ...]


class Firestore(_Model):
    """Deployed by Terraform only: the emulator has no TTL and enforces no index."""

    keys_database: str = "(default)"
    """Where API keys and intake signatures live (Settings.keys_database): a database of their
    own, so an account granted only ``(default)`` cannot read or write keys."""
    ttl: tuple[TtlField, ...] = ()
    indexes: tuple[CompositeIndex, ...] = ()


class Topology(_Model):
    topics: tuple[Topic, ...]
    subscriptions: tuple[Subscription, ...]
    bucket: Bucket
    voices_bucket: VoicesBucket | None = None
    functions: tuple[Function, ...]
    schedules: tuple[Schedule, ...] = ()
    firestore: Firestore = Firestore()

    def subscription(self, name: str) -> Subscription:
        return next(s for s in self.subscriptions if s.name == name)

    def schedule_of(self, function: Function) -> Schedule:
        """The schedule whose tick, published to a topic, triggers ``function``."""
        for schedule in self.schedules:
            if function.trigger == f"topic:{schedule.topic}":
                return schedule
        raise LookupError(f"no schedule publishes to the topic that triggers {function.name}")


def load(path: Path = TOPOLOGY_FILE) -> Topology:
    return Topology.model_validate(yaml.safe_load(path.read_text()))


def apply(
    topology: Topology,
    *,
    project_id: str,
    bucket: str,
    publisher: pubsub_v1.PublisherClient,
    subscriber: pubsub_v1.SubscriberClient,
    storage_client: storage.Client,
    push_endpoints: Mapping[str, str] | None = None,
    voices_bucket: str | None = None,
) -> None:
    """Create whatever is missing. Existing resources are left as they are.

    ``push_endpoints`` maps function names to URLs; a push subscription whose function has no
    URL yet is created as pull (deploy switches it to push once the function exists).
    ``voices_bucket``: the voice files' bucket (Settings.voices_bucket), when it is not
    ``bucket`` itself. Soft delete is Terraform's: the emulator has none.
    """
    for topic in topology.topics:
        path = publisher.topic_path(project_id, topic.name)
        try:
            publisher.create_topic(name=path)
            log.info("created topic %s", topic.name)
        except gexc.AlreadyExists:
            pass
    for sub in topology.subscriptions:
        create_subscription(
            sub,
            project_id=project_id,
            publisher=publisher,
            subscriber=subscriber,
            push_endpoint=(push_endpoints or {}).get(sub.push_function or ""),
        )
    try:
        created = storage_client.create_bucket(bucket, location=topology.bucket.location)
        log.info("created bucket %s", bucket)
    except gexc.Conflict:
        created = storage_client.bucket(bucket)
        created.reload()
    wanted = [
        {
            "action": {"type": "Delete"},
            "condition": {"age": r.age_days, "matchesPrefix": [r.prefix]},
        }
        for r in topology.bucket.expire
    ]
    if list(created.lifecycle_rules) != wanted:
        created.lifecycle_rules = wanted
        created.patch()
        log.info("set lifecycle rules on %s", bucket)
    if voices_bucket and voices_bucket != bucket:
        try:
            storage_client.create_bucket(voices_bucket, location=topology.bucket.location)
            log.info("created bucket %s", voices_bucket)
        except gexc.Conflict:
            pass


def create_subscription(
    sub: Subscription,
    *,
    project_id: str,
    publisher: pubsub_v1.PublisherClient,
    subscriber: pubsub_v1.SubscriberClient,
    push_endpoint: str | None = None,
) -> None:
    request: dict[str, object] = {
        "name": subscriber.subscription_path(project_id, sub.name),
        "topic": publisher.topic_path(project_id, sub.topic),
        "ack_deadline_seconds": sub.ack_deadline_s,
        "message_retention_duration": duration_pb2.Duration(seconds=sub.message_retention_s),
    }
    if sub.filter:
        request["filter"] = sub.filter
    if sub.dead_letter:
        request["dead_letter_policy"] = {
            "dead_letter_topic": publisher.topic_path(project_id, sub.dead_letter.topic),
            "max_delivery_attempts": sub.dead_letter.max_delivery_attempts,
        }
    if push_endpoint:
        request["push_config"] = {"push_endpoint": push_endpoint}
    if sub.retry:
        request["retry_policy"] = {
            "minimum_backoff": duration_pb2.Duration(seconds=sub.retry.minimum_backoff_s),
            "maximum_backoff": duration_pb2.Duration(seconds=sub.retry.maximum_backoff_s),
        }
    try:
        subscriber.create_subscription(request=request)
        log.info("created subscription %s", sub.name)
    except gexc.AlreadyExists:
        pass
