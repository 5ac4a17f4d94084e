"""The smallest RunPod handler: lets the tests drive the real SDK without a model or a GPU."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import runpod

GATE_TIMEOUT_S = 60.0


def handler(job: dict[str, Any]) -> dict[str, Any]:
    job_input = job["input"]
    if isinstance(job_input, dict) and job_input.get("fail"):
        # The SDK reads an "error" key in the returned dict as a failed job.
        return {"error": "asked to fail"}
    if isinstance(job_input, dict) and job_input.get("gate"):
        # Held in progress until the test creates the file the input names.
        gate = Path(job_input["gate"])
        deadline = time.monotonic() + GATE_TIMEOUT_S
        while not gate.exists():
            if time.monotonic() > deadline:
                return {"error": f"the gate {gate} never opened"}
            time.sleep(0.02)
    return {"echo": job_input}


if __name__ == "__main__":
    runpod.serverless.start({"handler": handler})
