"""Voice prompt fetch: what a clone-prompt job pays to get its prompt, cold and warm.

Against the GCS emulator, interleaved, one realistic prompt (about 10 s of reference: 125 x 16
codes and a 2048-float speaker embedding):
- bare: one object download, the least any design that keeps prompts in GCS can pay;
- miss: the worker's cache on a miss: download + safe load (zip checks, weights_only) + schema;
- hit: the worker's cache on a hit.

Prints p50 of each and the ratios against bare. Usage: python bench/prompt_cache.py [--n N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.emulators import Emulators


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    with Emulators() as emulators:
        os.environ.update(emulators.env)
        bare, miss, hit, size = run(args.n)
    p50 = {
        name: statistics.median(xs) for name, xs in (("bare", bare), ("miss", miss), ("hit", hit))
    }
    print(f"prompt file: {size} bytes, n={args.n}")
    for name, value in p50.items():
        print(f"{name:<5} p50={value:8.3f} ms")
    cold, warm = p50["miss"] / p50["bare"], p50["hit"] / p50["bare"]
    print(f"ratio miss/bare: {cold:.2f}x   hit/bare: {warm:.4f}x")


def run(n: int) -> tuple[list[float], list[float], list[float], int]:
    # Imported after the emulator variables are set: the clients read them when built.
    import torch

    from gpu_worker.prompt_cache import PromptCache
    from shared.adapters.clients import blob_store, storage_client
    from shared.domain.voice_file import PromptItem, VoicePromptFile, dumps
    from shared.settings import Settings

    settings = Settings()
    storage_client(settings).create_bucket(settings.bucket)
    blobs = blob_store(settings)
    item = PromptItem(
        ref_code=torch.randint(0, 2048, (125, 16)),
        ref_spk_embedding=torch.randn(2048),
        x_vector_only_mode=False,
        icl_mode=True,
        ref_text="A reference line of about ten seconds, spoken clearly and evenly.",
    )
    data = dumps(VoicePromptFile(items=(item,), metadata={"name": "bench"}))
    stored = blobs.put("voice-prompts/bench.pt", data, content_type="application/octet-stream")
    generation = stored.generation or 0

    def download() -> bytes:
        return blobs.get("voice-prompts/bench.pt")

    warm = PromptCache(max_bytes=1 << 30, max_file_bytes=1 << 24)
    warm.fetch("voice-prompts/bench.pt", generation=generation, download=download)

    bare: list[float] = []
    miss: list[float] = []
    hit: list[float] = []
    for _ in range(n):
        started = time.perf_counter()
        blobs.get("voice-prompts/bench.pt")
        bare.append((time.perf_counter() - started) * 1000)

        cold = PromptCache(max_bytes=1 << 30, max_file_bytes=1 << 24)
        started = time.perf_counter()
        cold.fetch("voice-prompts/bench.pt", generation=generation, download=download)
        miss.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        warm.fetch("voice-prompts/bench.pt", generation=generation, download=download)
        hit.append((time.perf_counter() - started) * 1000)
    return bare, miss, hit, len(data)


if __name__ == "__main__":
    main()
