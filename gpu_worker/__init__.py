"""The GPU side: the qwen-tts engine, the job runner and its two entrypoints."""
