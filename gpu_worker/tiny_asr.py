"""Tiny, randomly initialised Qwen3-ASR and Qwen3-ForcedAligner model directories, built offline.

Plumbing only, like ``gpu_worker.tiny_model`` for the TTS side. Each directory has the on-disk
layout of a ``Qwen/Qwen3-ASR-0.6B`` or ``Qwen/Qwen3-ForcedAligner-0.6B`` snapshot (config,
byte-level BPE tokenizer, Whisper feature extractor, chat template, safetensors weights) and
loads through qwen-asr's own ``Qwen3ASRModel.from_pretrained`` and
``Qwen3ForcedAligner.from_pretrained``; but every layer is a few dozen units wide and the
weights are random, so what the ASR "hears" is a string of random bytes and the aligner's times
are arbitrary. It exists so that tests and ``make run MODEL=tiny`` run the real listening path
(feature extraction, prompt, batched generation, decoding, word splitting, timestamp
classification) on a CPU in well under a second, without downloading weights.

What is faithful to the real checkpoints:

* the model code, config classes and processor: qwen-asr's own (``qwen3_asr``; the aligner's
  thinker is ``qwen3_forced_aligner`` with a ``classify_num``-way timestamp head);
* the audio front end: 16 kHz input, a 128-bin Whisper log-mel feature extractor, the encoder's
  100-frame windows (``n_window`` 50) and 3 stride-2 convolutions (13 audio tokens a second);
* the prompt: Qwen's chat markup, ``<|audio_start|><|audio_pad|><|audio_end|>`` for the audio,
  ``language X<asr_text>`` when the language is forced, ``<timestamp>`` slots for the aligner,
  and ``timestamp_segment_time`` 80 ms a class;
* the text tokenizer's kind: a byte-level BPE with Qwen2's split pattern and Qwen's special
  tokens, loaded as ``Qwen2TokenizerFast``. (qwen-asr asks for ``fix_mistral_regex=True``;
  transformers 4.57 considers that patch only for vocabularies over 100,000, so the real
  tokenizer goes through it and this one does not.)

What is not:

* the ids: the vocabulary is the 256 byte tokens, a few merges and the special tokens (about
  320), not Qwen's 151,936. qwen-asr's ``generate`` stops at Qwen's own end ids (151643,
  151645), which this vocabulary does not reach, so the tiny ASR says random bytes until its
  ``max_new_tokens``;
* the chat template: a minimal one that renders qwen-asr's messages (a system turn, a user
  turn holding the audio, the assistant's turn opened) in that markup, not the released one;
* the aligner's head has 128 classes (about 10 s), not 5000 (400 s); its times are random,
  and only qwen-asr's own repair (longest increasing run) orders them;
* the sizes and weights (see ``_text_config`` and ``_audio_config``).

Building both takes about 0.1 s once torch and qwen_asr are imported; each directory is about
250 kB.
"""

from __future__ import annotations

import json
import pathlib
from enum import StrEnum
from typing import Any, Final

from gpu_worker.tiny_model import atomic_write, byte_level_bpe, json_bytes, safetensors_bytes

_BUILDER_VERSION: Final = 1
"""Bump whenever the bytes written change, so that stale directories get rebuilt."""
_MARKER: Final = "tiny_asr.json"

SAMPLE_RATE: Final = 16000
NUM_MEL_BINS: Final = 128
TIMESTAMP_SEGMENT_MS: Final = 80
"""Milliseconds per timestamp class, as in the real aligner."""
ALIGNER_CLASSES: Final = 128
"""Timestamp classes of the tiny aligner's head (the real one has 5000)."""

_HIDDEN: Final = 32

# Qwen's special tokens that qwen-asr's prompts and parsing use. "<asr_text>" and "<timestamp>"
# are plain added tokens: the transcript keeps "<asr_text>" through skip_special_tokens.
_SPECIAL_TOKENS: Final = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|audio_start|>",
    "<|audio_end|>",
    "<|audio_pad|>",
)
_PLAIN_ADDED_TOKENS: Final = ("<asr_text>", "<timestamp>")
_MERGED_WORDS: Final = ("assistant", "user", "system", "language")

# Renders what Qwen3-ASR's template renders for qwen-asr's messages: a system turn (the
# context), a user turn holding the audio, and the assistant's turn opened.
_CHAT_TEMPLATE: Final = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'audio' -%}{{- '<|audio_start|><|audio_pad|><|audio_end|>' -}}"
    "{%- elif part['type'] == 'text' -%}{{- part['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


class TinyListener(StrEnum):
    ASR = "asr"
    ALIGNER = "aligner"


_MODEL_FILES: Final = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "preprocessor_config.json",
    "chat_template.json",
)


def build_tiny_asr(
    target_dir: pathlib.Path, *, kind: TinyListener = TinyListener.ASR, seed: int = 0
) -> pathlib.Path:
    """Write a tiny random Qwen3-ASR (``asr``) or Qwen3-ForcedAligner (``aligner``) into
    ``target_dir``; it loads with ``Qwen3ASRModel.from_pretrained(str(path))`` or
    ``Qwen3ForcedAligner.from_pretrained(str(path))``.

    Deterministic for a given ``kind`` and ``seed``; global RNG state is left untouched. A
    directory that already holds the same tiny model is returned as is; otherwise each file is
    written atomically, the marker last.
    """
    kind = TinyListener(kind)  # a plain string from a caller raises ValueError here
    target = pathlib.Path(target_dir)
    marker = {
        "builder": "gpu_worker.tiny_asr",
        "version": _BUILDER_VERSION,
        "kind": kind,
        "seed": seed,
    }
    if _is_complete(target, marker):
        return target

    files = _render(kind, seed)
    (target / _MARKER).unlink(missing_ok=True)
    files[_MARKER] = json_bytes(marker)
    for name, payload in files.items():
        atomic_write(target / name, payload)
    return target


def _is_complete(target: pathlib.Path, marker: dict[str, Any]) -> bool:
    try:
        found = json.loads((target / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return found == marker and all((target / name).is_file() for name in _MODEL_FILES)


def _render(kind: TinyListener, seed: int) -> dict[str, bytes]:
    import torch

    text = byte_level_bpe(
        merged_words=_MERGED_WORDS, special=_SPECIAL_TOKENS, plain=_PLAIN_ADDED_TOKENS
    )
    files = text.files(
        processor_class="Qwen3ASRProcessor",
        # Read by Qwen3ASRProcessor as tokenizer.audio_token and so on.
        extra_special_tokens={
            "audio_token": "<|audio_pad|>",
            "audio_bos_token": "<|audio_start|>",
            "audio_eos_token": "<|audio_end|>",
        },
    )
    config = _model_config(kind, text.ids, text.rows)
    files["config.json"] = json_bytes(config)
    files["preprocessor_config.json"] = json_bytes(_feature_extractor_config())
    files["chat_template.json"] = json_bytes({"chat_template": _CHAT_TEMPLATE})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        files["model.safetensors"] = _model_weights(config)
    return files


def _model_config(kind: TinyListener, ids: dict[str, int], vocab_size: int) -> dict[str, Any]:
    from gpu_worker.verify.listening import import_qwen_asr

    import_qwen_asr()  # first, for the floating-point environment it keeps
    from qwen_asr.inference.utils import SUPPORTED_LANGUAGES

    thinker: dict[str, Any] = {
        "audio_config": _audio_config(),
        "text_config": _text_config(vocab_size),
        "audio_token_id": ids["<|audio_pad|>"],
        "audio_start_token_id": ids["<|audio_start|>"],
        "audio_end_token_id": ids["<|audio_end|>"],
        "user_token_id": ids["user"],
        "initializer_range": 0.02,
    }
    config: dict[str, Any] = {
        "architectures": ["Qwen3ASRForConditionalGeneration"],
        "model_type": "qwen3_asr",
        "support_languages": list(SUPPORTED_LANGUAGES),
        "thinker_config": thinker,
    }
    if kind is TinyListener.ALIGNER:
        thinker["model_type"] = "qwen3_forced_aligner"
        thinker["classify_num"] = ALIGNER_CLASSES
        config["timestamp_token_id"] = ids["<timestamp>"]
        config["timestamp_segment_time"] = TIMESTAMP_SEGMENT_MS
    return config


def _audio_config() -> dict[str, Any]:
    return {
        "num_mel_bins": NUM_MEL_BINS,
        "d_model": _HIDDEN,
        "encoder_layers": 1,
        "encoder_attention_heads": 2,
        "encoder_ffn_dim": 64,
        "max_source_positions": 1500,
        # The processor counts audio tokens for 100-frame windows: n_window must stay 50.
        "n_window": 50,
        "n_window_infer": 800,
        "conv_chunksize": 500,
        "downsample_hidden_size": 8,
        "output_dim": _HIDDEN,
        "activation_function": "gelu",
        "scale_embedding": False,
    }


def _text_config(vocab_size: int) -> dict[str, Any]:
    return {
        "vocab_size": vocab_size,
        "hidden_size": _HIDDEN,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "head_dim": 16,
        "hidden_act": "silu",
        "max_position_embeddings": 65536,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000,
        # Interleaved multimodal RoPE over head_dim / 2 = 8 frequencies (real: [24, 20, 20]).
        "rope_scaling": {"rope_type": "default", "mrope_section": [4, 2, 2], "interleaved": True},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "tie_word_embeddings": False,
        "initializer_range": 0.02,
    }


def _feature_extractor_config() -> dict[str, Any]:
    return {
        "feature_extractor_type": "WhisperFeatureExtractor",
        "processor_class": "Qwen3ASRProcessor",
        "feature_size": NUM_MEL_BINS,
        "sampling_rate": SAMPLE_RATE,
        "hop_length": 160,
        "n_fft": 400,
        "chunk_length": 30,
        "n_samples": 480000,
        "nb_max_frames": 3000,
        "padding_side": "right",
        "padding_value": 0.0,
        "return_attention_mask": True,
        "dither": 0.0,
    }


def _model_weights(config: dict[str, Any]) -> bytes:
    from gpu_worker.verify.listening import import_qwen_asr

    import_qwen_asr()  # first, for the floating-point environment it keeps
    from qwen_asr.core.transformers_backend import (
        Qwen3ASRConfig,
        Qwen3ASRForConditionalGeneration,
    )

    model = Qwen3ASRForConditionalGeneration(Qwen3ASRConfig(**config)).eval()
    return safetensors_bytes(model.state_dict())
