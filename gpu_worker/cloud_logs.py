"""The home worker's lines, also sent to Cloud Logging (only the worker installs its client)."""

from __future__ import annotations

import logging

from shared.logs import JsonFormatter


def send_to_cloud_logging(project_id: str, *, log_name: str, node_id: str) -> None:
    """Also send every line to Cloud Logging, as the same JSON (its ``jsonPayload``), for a
    process outside Google Cloud whose stderr nobody collects: the home worker. Its lines then
    feed the same log-based metrics as the functions' (``infra/terraform/monitoring.tf``).
    Batched in a background thread; calling it again changes nothing. Needs
    ``roles/logging.logWriter``."""
    from google.cloud.logging import Client
    from google.cloud.logging.handlers import CloudLoggingHandler, setup_logging
    from google.cloud.logging_v2.resource import Resource

    if any(isinstance(h, CloudLoggingHandler) for h in logging.getLogger().handlers):
        return
    resource = Resource(
        type="generic_node",
        labels={
            "project_id": project_id,
            "location": "global",
            "namespace": "tts",
            "node_id": node_id,
        },
    )
    client = Client(project=project_id)  # type: ignore[no-untyped-call]
    handler = CloudLoggingHandler(client, name=log_name, resource=resource)
    handler.setFormatter(JsonFormatter())
    # The library's own loggers are kept off the handler (no line about sending lines).
    setup_logging(handler, log_level=logging.INFO)  # type: ignore[no-untyped-call]
