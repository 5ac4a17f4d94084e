"""The smallest RunPod handler: lets the tests drive the real SDK without a model or a GPU."""

from __future__ import annotations

from typing import Any

import runpod


def handler(job: dict[str, Any]) -> dict[str, Any]:
    job_input = job["input"]
    if isinstance(job_input, dict) and job_input.get("fail"):
        # The SDK reads an "error" key in the returned dict as a failed job.
        return {"error": "asked to fail"}
    return {"echo": job_input}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
