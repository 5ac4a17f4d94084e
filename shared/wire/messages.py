"""The job message on the jobs topic (contracts/schemas/job-message.schema.json).

The body names the job; routing lives in attributes so subscriptions can filter on them.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.domain.backends import API_VERSION
from shared.domain.errors import InvalidRequest
from shared.domain.modes import Mode

BACKEND_ATTRIBUTE = "backend"
MODE_ATTRIBUTE = "mode"
API_VERSION_ATTRIBUTE = "api_version"
MAX_MESSAGE_BYTES = 4096


class JobMessage(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str = Field(min_length=1, max_length=128)
    api_version: int = API_VERSION

    def encode(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def decode(cls, data: bytes) -> JobMessage:
        if len(data) > MAX_MESSAGE_BYTES:
            raise InvalidRequest(f"job message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise InvalidRequest(f"malformed job message: {exc.errors()[0]['msg']}") from exc


def job_attributes(*, backend: str, mode: Mode) -> Mapping[str, str]:
    return {
        BACKEND_ATTRIBUTE: backend,
        MODE_ATTRIBUTE: mode.value,
        API_VERSION_ATTRIBUTE: str(API_VERSION),
    }
