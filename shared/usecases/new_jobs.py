"""A new job record: the one place a ``Job`` is first put together from a request.

Apart from the jobs use case so that completion (which starts a batch's join job) can make
one without importing the use cases that themselves finish jobs.
"""

from __future__ import annotations

from datetime import timedelta

from shared.domain.errors import ConfigurationError, Forbidden, InvalidRequest
from shared.domain.jobs import Job, JobState
from shared.domain.keys import Principal
from shared.domain.synthesis import JobRequest
from shared.domain.webhooks import Webhook, parse_webhook_url
from shared.usecases import cache
from shared.usecases.gateway import Gateway
from shared.usecases.webhooks import owner_secret
from shared.wire.bodies import JobOptions

NO_OPTIONS = JobOptions()


def new_job(
    gw: Gateway,
    *,
    job_id: str,
    principal: Principal,
    request: JobRequest,
    backend: str,
    key: str | None,
    options: JobOptions = NO_OPTIONS,
    parent_id: str | None = None,
) -> Job:
    now = gw.clock()
    if options.reply_topic is not None:
        _check_reply_topic(gw, principal=principal, topic=options.reply_topic)
    webhook = None
    if options.webhook is not None:
        webhook = _webhook(gw, owner=principal.owner, options=options)
    deadline = None
    if options.deadline_s is not None:
        deadline = now + timedelta(seconds=options.deadline_s)
    return Job(
        id=job_id,
        owner=principal.owner,
        request=request,
        backend=backend,
        idempotency_key=key,
        created_at=now,
        updated_at=now,
        state_times={JobState.QUEUED: now},
        expires_at=now + timedelta(days=gw.settings.retention.job_days),
        deadline=deadline,
        correlation=dict(options.correlation),
        reply_topic=options.reply_topic,
        parent_id=parent_id,
        webhook=webhook,
        cache_key=cache.cache_key(
            gw, owner=principal.owner, request=request, backend=backend, wanted=options.cache
        ),
    )


def _check_reply_topic(gw: Gateway, *, principal: Principal, topic: str) -> None:
    """A reply topic is one the caller's key lists; the deployment's own list still bounds it,
    since it is what the gateway was granted to publish to (a topic dropped there since)."""
    allowed = sorted(principal.reply_topics & set(gw.settings.reply_topics))
    if topic not in allowed:
        raise InvalidRequest(
            f"reply_topic {topic!r} is not one of this key's reply topics",
            field="reply_topic",
            details={"allowed": allowed},
        )


def _webhook(gw: Gateway, *, owner: str, options: JobOptions) -> Webhook:
    assert options.webhook is not None
    try:
        owner_secret(gw, owner)
        parse_webhook_url(
            options.webhook,
            allow_http=gw.settings.webhooks.allow_http,
            allow_private=gw.settings.webhooks.allow_private,
        )
    except (ConfigurationError, Forbidden) as exc:
        raise InvalidRequest(exc.message, field="webhook") from exc
    return Webhook(url=options.webhook, events=options.webhook_events_filter)
