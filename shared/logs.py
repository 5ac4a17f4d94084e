"""Structured JSON logs on stderr, the shape Cloud Logging parses into fields."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    """Add one JSON handler to the root logger; calling it again changes nothing."""
    root = logging.getLogger()
    root.setLevel(level)
    if any(isinstance(h.formatter, JsonFormatter) for h in root.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)


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
