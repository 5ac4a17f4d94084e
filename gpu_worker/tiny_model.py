"""A tiny, randomly initialised Qwen3-TTS model directory, built fully offline.

This is plumbing only. The model it writes has the exact on-disk layout of a real
``Qwen/Qwen3-TTS-12Hz-1.7B-*`` snapshot (config, generation config, BPE text tokenizer,
safetensors weights and a 12 Hz speech tokenizer) and loads through the real
``qwen_tts.Qwen3TTSModel.from_pretrained(path)``, but every layer is a few dozen units wide
and its weights are random, so what it "speaks" is noise, about half a second of it (the
talker is biased to stop, see ``_make_talker_stop``). It exists so that tests and
``make run MODEL=tiny`` exercise the whole worker path (load, validation of speakers and
languages, instruct, voice design, voice cloning, decode to 24 kHz float32 audio) on a CPU
in well under a second per request, without downloading gigabytes of weights.

What is faithful to the real checkpoints:

* the nine CustomVoice speakers and their dialects (``spk_id`` / ``spk_is_dialect``, keyed
  lower-case as in the real config; ``qwen_tts`` lower-cases the name it is given);
* the ten languages plus the two Chinese dialect tags (``codec_language_id``);
* the relative layout of the codec control tokens (pad, bos, eos, think, language and
  speaker ids), shifted down so that they sit just above a 64-entry codebook;
* ``tts_model_size == "1b7"``, so CustomVoice honours ``instruct`` (``qwen_tts`` drops
  ``instruct`` for any size string that is a substring of ``"0b6"``);
* a 12.5 Hz speech tokenizer (1920 samples per frame at 24 kHz) with 16 code groups.

Building takes about 0.1 s once torch and qwen_tts are imported (the imports themselves take a
few seconds); the directory is about 1.2 MB (1.4 MB for ``base``, which adds a speaker encoder).
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from shared.domain.modes import ModelType

if TYPE_CHECKING:
    import torch
    from qwen_tts.core.models.modeling_qwen3_tts import Qwen3TTSTalkerForConditionalGeneration
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import (
        Qwen3TTSTokenizerV2Decoder,
    )
    from tokenizers import Tokenizer

_BUILDER_VERSION: Final = 3
"""Bump whenever the bytes written change, so that stale directories get rebuilt."""
_MARKER: Final = "tiny_model.json"

CODEBOOK_SIZE: Final = 64
"""Entries per codebook (the real models have 2048)."""
NUM_CODE_GROUPS: Final = 16
"""Code groups per 12.5 Hz frame, as in the real models."""
SAMPLE_RATE: Final = 24000
SAMPLES_PER_FRAME: Final = 1920

# Real talker vocab is 3072 = 2048 codes + 1024 control ids; keep the 1024 control ids and
# shift every real control id down by the difference in codebook size.
_TALKER_VOCAB: Final = CODEBOOK_SIZE + 1024
_SHIFT: Final = 2048 - CODEBOOK_SIZE

_CODEC_IDS: Final[dict[str, int]] = {
    "codec_pad_id": 2148 - _SHIFT,
    "codec_bos_id": 2149 - _SHIFT,
    "codec_eos_token_id": 2150 - _SHIFT,
    "codec_think_id": 2154 - _SHIFT,
    "codec_nothink_id": 2155 - _SHIFT,
    "codec_think_bos_id": 2156 - _SHIFT,
    "codec_think_eos_id": 2157 - _SHIFT,
}
_LANGUAGE_IDS: Final[dict[str, int]] = {
    "chinese": 2055 - _SHIFT,
    "english": 2050 - _SHIFT,
    "german": 2053 - _SHIFT,
    "italian": 2070 - _SHIFT,
    "portuguese": 2071 - _SHIFT,
    "spanish": 2054 - _SHIFT,
    "japanese": 2058 - _SHIFT,
    "korean": 2064 - _SHIFT,
    "french": 2061 - _SHIFT,
    "russian": 2069 - _SHIFT,
    "beijing_dialect": 2074 - _SHIFT,
    "sichuan_dialect": 2062 - _SHIFT,
}
_SPEAKER_IDS: Final[dict[str, int]] = {
    "serena": 3066 - _SHIFT,
    "vivian": 3065 - _SHIFT,
    "uncle_fu": 3010 - _SHIFT,
    "ryan": 3061 - _SHIFT,
    "aiden": 2861 - _SHIFT,
    "ono_anna": 2873 - _SHIFT,
    "sohee": 2864 - _SHIFT,
    "eric": 2875 - _SHIFT,
    "dylan": 2878 - _SHIFT,
}
_SPEAKER_DIALECTS: Final[dict[str, str | bool]] = {
    "serena": False,
    "vivian": False,
    "uncle_fu": False,
    "ryan": False,
    "aiden": False,
    "ono_anna": False,
    "sohee": False,
    "eric": "sichuan_dialect",
    "dylan": "beijing_dialect",
}

# Text side: a byte-level BPE with Qwen2's pre-tokenizer split and Qwen's special tokens.
_QWEN2_SPLIT: Final = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_MERGED_WORDS: Final = ("assistant", "user", "system")
_SPECIAL_TOKENS: Final = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|tts_pad|>",
    "<|tts_text_bos|>",
    "<|tts_text_eod|>",
)

_TALKER_HIDDEN: Final = 32
_EOS_CARRIER_DIM: Final = 0
EOS_LOGIT: Final = 2.25
"""Nominal EOS logit at each decode step (about 2.1 in practice, the code logits sit near 0).

Against the 49 codes that top-k 50 keeps, at temperature 0.9, that is p(EOS) ~ 0.17 a step:
speech lasts 2 frames (``min_new_tokens``) plus a geometric tail, median 5 frames, and reaches
50 frames with probability ~1e-4.
"""
SPEAKING_EOS_LOGIT: Final = 0.7
"""An EOS logit for lines nearer speech's length: a median of 14 frames (1.1 s; a voice takes
about three times that for a short sentence), one line in sixty past 90 frames, far inside the
token budget of a 40-character line (240 frames). For benchmarks that weigh a line's generation
against fixed costs (``bench/speech.py``): the default's half-second lines make any fixed cost
look some three times larger than it would beside real speech."""
_GENERATION_DEFAULTS: Final[dict[str, Any]] = {
    "do_sample": True,
    "top_k": 50,
    "top_p": 1.0,
    "temperature": 0.9,
    "repetition_penalty": 1.05,
    "subtalker_dosample": True,
    "subtalker_top_k": 50,
    "subtalker_top_p": 1.0,
    "subtalker_temperature": 0.9,
    # A safety cap only: the talker's weights make about one sampled step in six emit EOS.
    "max_new_tokens": 256,
}

_MODEL_FILES: Final = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "speech_tokenizer/config.json",
    "speech_tokenizer/model.safetensors",
    "speech_tokenizer/preprocessor_config.json",
)


def build_tiny_model(
    target_dir: pathlib.Path,
    *,
    model_type: ModelType = ModelType.CUSTOM_VOICE,
    seed: int = 0,
    eos_logit: float = EOS_LOGIT,
) -> pathlib.Path:
    """Write a tiny random Qwen3-TTS model of ``model_type`` into ``target_dir``.

    The result loads with ``Qwen3TTSModel.from_pretrained(str(path))`` and supports the
    generate method matching its type (``generate_custom_voice``, ``generate_voice_design``,
    or ``create_voice_clone_prompt`` + ``generate_voice_clone``). The output is audible noise.

    ``eos_logit`` sets how soon a line ends (``SPEAKING_EOS_LOGIT``: about as long as speech).
    The build is deterministic for a given ``seed`` and leaves global RNG state untouched.
    If ``target_dir`` already holds a complete tiny model of the same type and seed it is
    returned as is; otherwise the model files are (re)written there, each one atomically,
    with the marker file written last.
    """
    model_type = ModelType(model_type)  # a plain string from a caller raises ValueError here
    target = pathlib.Path(target_dir)
    marker = _marker(model_type, seed, eos_logit)
    if _is_complete(target, marker):
        return target

    files = _render(model_type, seed, eos_logit)
    # Drop any stale marker first, so an interrupted rewrite never looks complete.
    (target / _MARKER).unlink(missing_ok=True)
    files[_MARKER] = json_bytes(marker)
    for name, payload in files.items():
        atomic_write(target / name, payload)
    return target


def _marker(model_type: ModelType, seed: int, eos_logit: float) -> dict[str, Any]:
    marker: dict[str, Any] = {
        "builder": "gpu_worker.tiny_model",
        "version": _BUILDER_VERSION,
        "model_type": model_type,
        "seed": seed,
    }
    if eos_logit != EOS_LOGIT:  # the default's marker is the one already on disk
        marker["eos_logit"] = eos_logit
    return marker


def _is_complete(target: pathlib.Path, marker: dict[str, Any]) -> bool:
    try:
        found = json.loads((target / _MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return found == marker and all((target / name).is_file() for name in _MODEL_FILES)


def atomic_write(path: pathlib.Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise


def json_bytes(obj: Any) -> bytes:
    return (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def _render(model_type: ModelType, seed: int, eos_logit: float) -> dict[str, bytes]:
    """Every file of the model directory, keyed by its relative path."""
    import torch

    text = byte_level_bpe(merged_words=_MERGED_WORDS, special=_SPECIAL_TOKENS)
    files = text.files()
    config = _model_config(model_type, text.ids, text.rows)
    speech_config = _speech_tokenizer_config()
    files["config.json"] = json_bytes(config)
    files["generation_config.json"] = json_bytes(_GENERATION_DEFAULTS)
    files["speech_tokenizer/config.json"] = json_bytes(speech_config)
    files["speech_tokenizer/preprocessor_config.json"] = json_bytes(
        {
            "feature_extractor_type": "EncodecFeatureExtractor",
            "feature_size": 1,
            "sampling_rate": SAMPLE_RATE,
            "padding_side": "right",
            "padding_value": 0.0,
            "return_attention_mask": True,
            "chunk_length_s": None,
            "overlap": None,
        }
    )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        files["model.safetensors"] = _model_weights(config, eos_logit=eos_logit)
        files["speech_tokenizer/model.safetensors"] = _speech_tokenizer_weights(speech_config)
    return files


def _model_config(
    model_type: ModelType, special_ids: dict[str, int], text_vocab_size: int
) -> dict[str, Any]:
    custom = model_type is ModelType.CUSTOM_VOICE
    head_dim = 16
    return {
        "architectures": ["Qwen3TTSForConditionalGeneration"],
        "model_type": "qwen3_tts",
        "tokenizer_type": "qwen3_tts_tokenizer_12hz",
        "tts_model_size": "1b7",
        "tts_model_type": model_type,
        "im_start_token_id": special_ids["<|im_start|>"],
        "im_end_token_id": special_ids["<|im_end|>"],
        "tts_pad_token_id": special_ids["<|tts_pad|>"],
        "tts_bos_token_id": special_ids["<|tts_text_bos|>"],
        "tts_eos_token_id": special_ids["<|tts_text_eod|>"],
        "speaker_encoder_config": {
            "mel_dim": 128,
            "enc_dim": _TALKER_HIDDEN,
            "enc_channels": [32, 32, 32, 32, 96],
            "enc_kernel_sizes": [5, 3, 3, 3, 1],
            "enc_dilations": [1, 2, 3, 4, 1],
            "enc_attention_channels": 16,
            "enc_res2net_scale": 4,
            "enc_se_channels": 16,
            "sample_rate": SAMPLE_RATE,
        },
        "talker_config": {
            "vocab_size": _TALKER_VOCAB,
            "text_vocab_size": text_vocab_size,
            "hidden_size": _TALKER_HIDDEN,
            "text_hidden_size": _TALKER_HIDDEN,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": 32768,
            "rms_norm_eps": 1e-06,
            "rope_theta": 1000000,
            "rope_scaling": {
                "interleaved": True,
                "mrope_section": [4, 2, 2],
                "rope_type": "default",
                "type": "default",
            },
            "attention_bias": False,
            "attention_dropout": 0.0,
            "use_cache": True,
            "use_sliding_window": False,
            "tie_word_embeddings": False,
            "initializer_range": 0.02,
            "num_code_groups": NUM_CODE_GROUPS,
            "position_id_per_seconds": 13,
            **_CODEC_IDS,
            "codec_language_id": dict(_LANGUAGE_IDS),
            "spk_id": dict(_SPEAKER_IDS) if custom else {},
            "spk_is_dialect": dict(_SPEAKER_DIALECTS) if custom else {},
            "code_predictor_config": {
                "vocab_size": CODEBOOK_SIZE,
                "hidden_size": 16,
                "intermediate_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 2,
                "num_key_value_heads": 1,
                "head_dim": 8,
                "hidden_act": "silu",
                "max_position_embeddings": 65536,
                "rms_norm_eps": 1e-06,
                "rope_theta": 1000000,
                "rope_scaling": None,
                "attention_bias": False,
                "attention_dropout": 0.0,
                "use_cache": True,
                "use_sliding_window": False,
                "sliding_window": None,
                "max_window_layers": 28,
                "layer_types": ["full_attention"],
                "tie_word_embeddings": False,
                "initializer_range": 0.02,
                "num_code_groups": NUM_CODE_GROUPS,
            },
        },
    }


def _speech_tokenizer_config() -> dict[str, Any]:
    return {
        "architectures": ["Qwen3TTSTokenizerV2Model"],
        "model_type": "qwen3_tts_tokenizer_12hz",
        "encoder_valid_num_quantizers": NUM_CODE_GROUPS,
        "input_sample_rate": SAMPLE_RATE,
        "output_sample_rate": SAMPLE_RATE,
        "decode_upsample_rate": SAMPLES_PER_FRAME,
        "encode_downsample_rate": SAMPLES_PER_FRAME,
        "encoder_config": {
            "sampling_rate": SAMPLE_RATE,
            "frame_rate": 12.5,
            "audio_channels": 1,
            "hidden_size": 16,
            "num_filters": 4,
            "num_residual_layers": 1,
            "upsampling_ratios": [8, 6, 5, 4],
            "kernel_size": 7,
            "last_kernel_size": 3,
            "residual_kernel_size": 3,
            "dilation_growth_rate": 2,
            "use_causal_conv": True,
            "pad_mode": "constant",
            "compress": 2,
            "trim_right_ratio": 1.0,
            "codebook_size": CODEBOOK_SIZE,
            "codebook_dim": 16,
            "num_quantizers": 2 * NUM_CODE_GROUPS,
            "num_semantic_quantizers": 1,
            "vector_quantization_hidden_dimension": 16,
            "upsample_groups": 16,
            "num_hidden_layers": 1,
            "intermediate_size": 32,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "hidden_act": "gelu",
            "max_position_embeddings": 8000,
            "sliding_window": 250,
            "rope_theta": 10000.0,
            "norm_eps": 1e-05,
            "layer_scale_initial_scale": 0.01,
            "use_cache": False,
            "use_streaming": False,
        },
        "decoder_config": {
            "codebook_size": CODEBOOK_SIZE,
            "codebook_dim": 16,
            "hidden_size": 16,
            "latent_dim": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 2,
            "head_dim": 8,
            "hidden_act": "silu",
            "max_position_embeddings": 8000,
            "rope_theta": 10000,
            "sliding_window": 72,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "layer_scale_initial_scale": 0.01,
            "rms_norm_eps": 1e-05,
            "num_quantizers": NUM_CODE_GROUPS,
            "upsample_rates": [8, 5, 4, 3],
            "upsampling_ratios": [2, 2],
            "decoder_dim": 32,
        },
    }


@dataclass(frozen=True)
class TinyTokenizer:
    """A byte-level BPE text tokenizer with Qwen2's split pattern and Qwen's special tokens."""

    tokenizer: Tokenizer
    vocab: dict[str, int]
    """The base vocabulary: the 256 byte tokens, then each merge's result."""
    merges: tuple[tuple[str, str], ...]
    special: tuple[str, ...]
    plain: tuple[str, ...]
    ids: dict[str, int]
    """The id of every added token and every merged word."""
    rows: int
    """Embedding rows: the vocabulary with the added tokens, rounded up to a multiple of 64."""

    def files(
        self,
        *,
        processor_class: str | None = None,
        extra_special_tokens: dict[str, str] | None = None,
    ) -> dict[str, bytes]:
        """``tokenizer.json``, ``tokenizer_config.json``, ``vocab.json`` and ``merges.txt``."""
        # The extras go where the builders always put them: key order is part of the bytes.
        config: dict[str, Any] = {"tokenizer_class": "Qwen2Tokenizer"}
        if processor_class is not None:
            config["processor_class"] = processor_class
        config.update(
            {
                "model_max_length": 131072,
                "errors": "replace",
                "bos_token": None,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "unk_token": None,
                "clean_up_tokenization_spaces": False,
                "split_special_tokens": False,
                "add_prefix_space": False,
                "added_tokens_decoder": {
                    str(self.ids[tok]): {
                        "content": tok,
                        "lstrip": False,
                        "normalized": False,
                        "rstrip": False,
                        "single_word": False,
                        "special": tok in self.special,
                    }
                    for tok in (*self.special, *self.plain)
                },
                "additional_special_tokens": list(self.special[1:]),
            }
        )
        if extra_special_tokens is not None:
            config["extra_special_tokens"] = extra_special_tokens
        merges = "".join(f"{a} {b}\n" for a, b in self.merges)
        return {
            "tokenizer.json": self.tokenizer.to_str(pretty=True).encode("utf-8") + b"\n",
            "tokenizer_config.json": json_bytes(config),
            "vocab.json": (json.dumps(self.vocab, ensure_ascii=False) + "\n").encode("utf-8"),
            "merges.txt": ("#version: 0.2\n" + merges).encode("utf-8"),
        }


def byte_level_bpe(
    *, merged_words: tuple[str, ...], special: tuple[str, ...], plain: tuple[str, ...] = ()
) -> TinyTokenizer:
    """A byte-level BPE over the 256 byte tokens, merged up to each of ``merged_words``, with
    ``special`` then ``plain`` added tokens; ``special[0]`` is the end-of-text token."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )

    byte_chars = sorted(pre_tokenizers.ByteLevel.alphabet(), key=_byte_of)
    vocab: dict[str, int] = {char: index for index, char in enumerate(byte_chars)}
    merges: list[tuple[str, str]] = []
    for word in merged_words:
        left = word[0]
        for char in word[1:]:
            merged = left + char
            if merged not in vocab:
                merges.append((left, char))
                vocab[merged] = len(vocab)
            left = merged

    tokenizer = Tokenizer(
        models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False)
    )
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_QWEN2_SPLIT), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens(
        [AddedToken(tok, special=True, normalized=False) for tok in special]
    )
    if plain:
        tokenizer.add_tokens([AddedToken(tok, special=False, normalized=False) for tok in plain])
    ids = {
        tok: _require_id(tokenizer.token_to_id(tok), tok)
        for tok in (*special, *plain, *merged_words)
    }
    total = tokenizer.get_vocab_size(with_added_tokens=True)
    return TinyTokenizer(
        tokenizer=tokenizer,
        vocab=vocab,
        merges=tuple(merges),
        special=special,
        plain=plain,
        ids=ids,
        rows=-(-total // 64) * 64,
    )


def _byte_of(char: str) -> int:
    """Inverse of GPT-2's bytes_to_unicode for one printable stand-in character."""
    code = ord(char)
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    if code in printable:
        return code
    return [b for b in range(256) if b not in printable][code - 256]


def _require_id(token_id: int | None, token: str) -> int:
    if token_id is None:
        raise RuntimeError(f"tokenizer lost special token {token}")
    return token_id


def _model_weights(config: dict[str, Any], *, eos_logit: float) -> bytes:
    from qwen_tts.core.models import Qwen3TTSConfig, Qwen3TTSForConditionalGeneration

    model = Qwen3TTSForConditionalGeneration(Qwen3TTSConfig(**config)).eval()
    _make_talker_stop(
        model.talker, config["talker_config"]["codec_eos_token_id"], eos_logit=eos_logit
    )
    return safetensors_bytes(model.state_dict())


def _make_talker_stop(
    talker: Qwen3TTSTalkerForConditionalGeneration, eos_id: int, *, eos_logit: float
) -> None:
    """Give the talker a steady EOS logit of about ``eos_logit``, so that the noise ends soon.

    Random weights leave EOS no likelier than any code (~1/50 a step), so generation ran on to
    ``max_new_tokens``. Every talker input carries a text projection (a text, pad or eos
    embedding); a bias there dwarfs everything else (~0.08) on one residual dimension, which the
    final RMSNorm then holds near sqrt(hidden) whatever the codes, and only EOS reads it.
    """
    import torch

    with torch.no_grad():
        talker.text_projection.linear_fc2.bias[_EOS_CARRIER_DIM] = 1.0
        talker.codec_head.weight[:, _EOS_CARRIER_DIM] = 0.0
        talker.codec_head.weight[eos_id, _EOS_CARRIER_DIM] = eos_logit / _TALKER_HIDDEN**0.5


def _speech_tokenizer_weights(speech_config: dict[str, Any]) -> bytes:
    import torch
    from qwen_tts.core import Qwen3TTSTokenizerV2Config, Qwen3TTSTokenizerV2Model

    model = Qwen3TTSTokenizerV2Model(Qwen3TTSTokenizerV2Config(**speech_config)).eval()
    with torch.no_grad():
        _randomise_decoder(model.decoder)
        # Mimi's codebooks start at zero, which would encode every reference clip to code 0.
        for name, buffer in model.encoder.named_buffers():
            if name.endswith("embed_sum"):
                buffer.normal_(0.0, 1.0)
    return safetensors_bytes(model.state_dict())


def _randomise_decoder(decoder: Qwen3TTSTokenizerV2Decoder) -> None:
    """Make the code-to-wave decoder turn different codes into different, audible noise.

    Its stock init (zero codebooks, small weights, biases that dominate) decodes every code
    sequence to the same faint pattern. Variance-preserving weights, zero biases and random
    codebooks fix that; the last convolution is then scaled so the output RMS is about 0.1.
    """
    import torch
    from qwen_tts.core.tokenizer_12hz.modeling_qwen3_tts_tokenizer_v2 import EuclideanCodebook
    from torch import nn

    for module in decoder.modules():
        if isinstance(module, nn.Conv1d):
            fan_in = module.in_channels // module.groups * module.kernel_size[0]
        elif isinstance(module, nn.ConvTranspose1d):
            fan_in = module.in_channels * module.kernel_size[0] // module.stride[0]
        elif isinstance(module, nn.Linear):
            fan_in = module.in_features
        else:
            if isinstance(module, EuclideanCodebook):
                module.embedding_sum.normal_(0.0, 1.0)
                module.cluster_usage.fill_(1.0)
            continue
        module.weight.normal_(0.0, fan_in**-0.5)
        if module.bias is not None:
            module.bias.zero_()

    last = decoder.decoder[-1].conv
    captured: list[torch.Tensor] = []
    hook = last.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        codes = torch.randint(0, CODEBOOK_SIZE, (1, NUM_CODE_GROUPS, 16))
        decoder(codes)
    finally:
        hook.remove()
    # Rounded so that last-bit differences between CPUs cannot change the written bytes.
    last.weight.mul_(float(f"{0.1 / float(captured[0].std()):.3g}"))


def safetensors_bytes(state_dict: dict[str, torch.Tensor]) -> bytes:
    from safetensors.torch import save

    tensors = {
        name: tensor.detach().to("cpu").contiguous().clone()
        for name, tensor in sorted(state_dict.items())
    }
    return save(tensors, metadata={"format": "pt"})
