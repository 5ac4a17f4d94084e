"""The ``.pt`` file that holds a Qwen3-TTS voice clone prompt, and its safe loader.

Users drop these files into a bucket, so every byte is untrusted. A ``.pt`` file is a zip whose
``data.pkl`` is a pickle, and unpickling can run arbitrary code; so :func:`loads` only ever calls
``torch.load(weights_only=True)``, which refuses every global outside torch's tensor allowlist.
That includes qwen's ``VoiceClonePromptItem``, which is why the file holds plain dicts.

The zip is inspected before torch reads it, so that a small upload cannot make the loader inflate
gigabytes. The loaded value is then checked field by field because the engine hands the tensors
straight to the model: a wrong shape or dtype, a NaN or a negative code would fail later on the GPU
(or poison the audio) far from the upload that caused it. Every failure is an
:class:`~shared.errors.InvalidVoiceFile` whose ``reason`` goes into the quarantine record.

What a file's tensors must fit depends on the model that speaks it (:func:`check_fits`): its
codes index the model's codebook embeddings, one column per code group, and its speaker
embedding joins the model's own. The registry checks a file against the models the backends
advertise; the worker checks it again against the model it has loaded.

The official qwen-tts demo saves ``{"items": [dataclasses.asdict(item), ...]}``; that shape loads
too, with empty metadata.
"""

from __future__ import annotations

import io
import math
import pickle
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeVar

import torch

from shared.domain.backends import ModelFacts
from shared.domain.errors import InvalidVoiceFile

FORMAT = "qwen3-tts-voice-prompt"
VERSION = 1
DEFAULT_MAX_BYTES = 16 * 1024 * 1024

MAX_ITEMS = 8
MAX_METADATA_KEYS = 64
MAX_NAME_CHARS = 200  # metadata keys and the model id
MAX_TEXT_CHARS = 2000  # metadata values and ref_text
MAX_EMBEDDING_ELEMENTS = 8192
MAX_CODE_ELEMENTS = 1_000_000
MAX_ARCHIVE_MEMBERS = 1000
MAX_COMPRESSION_RATIO = 100
CODEC_FRAME_RATE_HZ = 12.5
"""The "12 Hz" speech tokenizer of every released model: 12.5 code frames a second."""

_FLOAT_DTYPES = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})
_INT_DTYPES = frozenset({torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64})
_ITEM_KEYS = ("ref_code", "ref_spk_embedding", "x_vector_only_mode", "icl_mode", "ref_text")
_FILE_KEYS = frozenset({"format", "version", "model", "metadata", "items"})
_ZIP_MAGIC = b"PK\x03\x04"
# What torch 2.11 raises, found by fuzzing, for a zip or a pickle it cannot parse (as opposed to
# one it refuses, which is pickle.UnpicklingError): the reader and the weights-only unpickler let
# these escape raw.
_UNREADABLE = (
    RuntimeError,
    EOFError,
    ValueError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    AttributeError,
    AssertionError,
)

_T = TypeVar("_T")


@dataclass(frozen=True, kw_only=True, eq=False)  # eq=False: == on tensors is not a bool
class PromptItem:
    """One reference voice; the fields of qwen's ``VoiceClonePromptItem``, validated."""

    ref_code: torch.Tensor | None
    ref_spk_embedding: torch.Tensor
    x_vector_only_mode: bool
    icl_mode: bool
    ref_text: str | None = None

    def __post_init__(self) -> None:
        emb = self.ref_spk_embedding
        if not _is_dense(emb, _FLOAT_DTYPES, (1,), MAX_EMBEDDING_ELEMENTS):
            raise _bad(
                f"ref_spk_embedding must be a 1-D float tensor of 1..{MAX_EMBEDDING_ELEMENTS} "
                f"elements, got {_describe(emb)}"
            )
        if not bool(torch.isfinite(emb).all()):
            raise _bad("ref_spk_embedding has NaN or infinite values")
        code = self.ref_code
        if code is not None:
            if not _is_dense(code, _INT_DTYPES, (1, 2), MAX_CODE_ELEMENTS):
                raise _bad(
                    f"ref_code must be a 1-D or 2-D integer tensor of 1..{MAX_CODE_ELEMENTS} "
                    f"elements, got {_describe(code)}"
                )
            # A negative index into the codec embedding is a device-side assert on the GPU.
            if bool((code < 0).any()):
                raise _bad("ref_code has negative codes")
        if self.ref_text is not None and len(self.ref_text) > MAX_TEXT_CHARS:
            raise _bad(f"ref_text is longer than {MAX_TEXT_CHARS} characters")
        if self.icl_mode and self.x_vector_only_mode:
            raise _bad("icl_mode and x_vector_only_mode are exclusive")
        if self.icl_mode and (code is None or not self.ref_text):
            raise _bad("icl_mode needs ref_code and a non-empty ref_text")

    def as_kwargs(self) -> dict[str, object]:
        """The keyword arguments of ``VoiceClonePromptItem(...)``."""
        return {
            "ref_code": self.ref_code,
            "ref_spk_embedding": self.ref_spk_embedding,
            "x_vector_only_mode": self.x_vector_only_mode,
            "icl_mode": self.icl_mode,
            "ref_text": self.ref_text,
        }

    @classmethod
    def from_fields(cls, obj: object) -> PromptItem:
        """Copy any object with those attributes, such as one of qwen's own prompt items."""
        return _item({key: getattr(obj, key, None) for key in _ITEM_KEYS})


@dataclass(frozen=True, kw_only=True, eq=False)
class VoicePromptFile:
    """The content of one voice prompt file."""

    items: tuple[PromptItem, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    model: str | None = None  # the model id the prompt was made with

    def __post_init__(self) -> None:
        if not 1 <= len(self.items) <= MAX_ITEMS:
            raise _bad(f"a voice file holds 1..{MAX_ITEMS} items, got {len(self.items)}")
        _metadata(self.metadata)
        if self.model is not None:
            _text(self.model, "model", MAX_NAME_CHARS)


def max_frames(max_reference_s: float) -> int:
    """The most code frames a prompt made from a reference of at most ``max_reference_s``
    seconds (``voices.max_reference_s``) can hold."""
    return math.ceil(max_reference_s * CODEC_FRAME_RATE_HZ)


def check_fits(file: VoicePromptFile, facts: ModelFacts, *, frames: int) -> None:
    """Raise :class:`InvalidVoiceFile` unless every item of ``file`` fits the model ``facts``
    describe, with at most ``frames`` code frames. A code at or past the codebook size is a
    device-side assert on a GPU (the process is lost with it); the other mismatches fail
    every job that uses the voice."""
    if facts.speaker_embedding_dim is None:
        raise InvalidVoiceFile(
            f"{facts.model} is a {facts.model_type} model: it speaks no voice prompt",
            reason="wrong_model",
        )
    check_length(file, frames=frames)
    for index, item in enumerate(file.items):
        where = f"items[{index}]"
        size = item.ref_spk_embedding.numel()
        if size != facts.speaker_embedding_dim:
            raise InvalidVoiceFile(
                f"{where}: the speaker embedding has {size} values; {facts.model} takes "
                f"{facts.speaker_embedding_dim}",
                reason="wrong_embedding_size",
            )
        code = item.ref_code
        if code is None:
            continue
        if code.dim() != 2 or code.shape[1] != facts.num_code_groups:
            raise InvalidVoiceFile(
                f"{where}: ref_code has shape {tuple(code.shape)}; {facts.model} takes "
                f"(frames, {facts.num_code_groups}), one column per code group",
                reason="wrong_code_groups",
            )
        highest = int(code.max())
        if highest >= facts.codebook_size:
            raise InvalidVoiceFile(
                f"{where}: ref_code has code {highest}; {facts.model}'s codebook has "
                f"{facts.codebook_size} entries (0..{facts.codebook_size - 1})",
                reason="code_out_of_range",
            )


def check_length(file: VoicePromptFile, *, frames: int) -> None:
    """Raise :class:`InvalidVoiceFile` if an item holds more than ``frames`` code frames: the
    part of :func:`check_fits` that needs no model."""
    for index, item in enumerate(file.items):
        code = item.ref_code
        if code is not None and code.shape[0] > frames:
            raise InvalidVoiceFile(
                f"items[{index}]: ref_code has {code.shape[0]} frames, more than the {frames} "
                "of the longest reference allowed",
                reason="too_long",
            )


def dumps(file: VoicePromptFile) -> bytes:
    """Serialize to ``.pt`` bytes of plain containers, which ``weights_only`` loading accepts."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "model": file.model,
        "metadata": dict(file.metadata),
        "items": [
            {
                **item.as_kwargs(),
                "ref_code": None if item.ref_code is None else _compact(item.ref_code),
                "ref_spk_embedding": _compact(item.ref_spk_embedding),
            }
            for item in file.items
        ],
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def loads(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> VoicePromptFile:
    """Parse untrusted bytes; raise :class:`InvalidVoiceFile` with a ``reason`` if unusable."""
    if len(data) > max_bytes:
        raise InvalidVoiceFile(
            f"the file has {len(data)} bytes, more than {max_bytes}", reason="too_large"
        )
    _check_archive(data, max_bytes)
    try:
        payload: object = torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        raise InvalidVoiceFile(
            "torch refused to unpickle the file: it needs more than plain data", reason="unsafe"
        ) from exc
    except _UNREADABLE as exc:
        raise InvalidVoiceFile(
            f"torch cannot read the file ({type(exc).__name__})", reason="not_a_prompt_file"
        ) from exc
    return _parse(payload)


def _check_archive(data: bytes, max_bytes: int) -> None:
    # torch.load also reads the legacy non-zip format, whose size nothing here could check.
    if not data.startswith(_ZIP_MAGIC):
        raise InvalidVoiceFile("not a zip-format torch file", reason="not_a_prompt_file")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, ValueError, NotImplementedError) as exc:
        raise InvalidVoiceFile(
            f"not a readable zip ({type(exc).__name__})", reason="not_a_prompt_file"
        ) from exc
    # The central directory's sizes are what torch's reader allocates, so bounding them bounds
    # its memory without decompressing anything here.
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise _too_large(f"the archive has {len(members)} members")
    total = sum(member.file_size for member in members)
    if total > max_bytes:
        raise _too_large(f"the archive unpacks to {total} bytes, more than {max_bytes}")
    for member in members:
        if member.file_size > MAX_COMPRESSION_RATIO * max(member.compress_size, 1):
            raise _too_large(f"archive member {member.filename!r} is compressed too much")


def _parse(payload: object) -> VoicePromptFile:
    if not isinstance(payload, dict):
        raise _bad(f"the top level must be a dict, got {type(payload).__name__}")
    keys = set(payload)
    metadata: dict[str, str] = {}
    model: str | None = None
    if keys == _FILE_KEYS:
        if not isinstance(payload["format"], str) or payload["format"] != FORMAT:
            raise _bad(f"format must be {FORMAT!r}")
        version = payload["version"]
        if type(version) is not int or version != VERSION:
            raise _bad(f"unsupported version; this reader knows version {VERSION}")
        metadata = _metadata(payload["metadata"])
        if payload["model"] is not None:
            model = _text(payload["model"], "model", MAX_NAME_CHARS)
    elif keys != {"items"}:  # {"items"} alone is the qwen-tts demo's file
        raise _bad(f"the top-level keys must be {sorted(_FILE_KEYS)} or just ['items']")
    raw_items = payload["items"]
    if not isinstance(raw_items, list | tuple) or not 1 <= len(raw_items) <= MAX_ITEMS:
        raise _bad(f"items must be a list of 1..{MAX_ITEMS} items")
    items = []
    for index, raw in enumerate(raw_items):
        try:
            items.append(_item(_typed(raw, dict, "an item")))
        except InvalidVoiceFile as exc:
            raise _bad(f"items[{index}]: {exc.message}") from exc
    return VoicePromptFile(items=tuple(items), metadata=metadata, model=model)


def _item(raw: Mapping[object, object]) -> PromptItem:
    if set(raw) != set(_ITEM_KEYS):
        raise _bad(f"an item must have exactly the keys {list(_ITEM_KEYS)}")
    code, text = raw["ref_code"], raw["ref_text"]
    return PromptItem(
        ref_code=None if code is None else _typed(code, torch.Tensor, "ref_code").detach(),
        ref_spk_embedding=_typed(
            raw["ref_spk_embedding"], torch.Tensor, "ref_spk_embedding"
        ).detach(),
        x_vector_only_mode=_typed(raw["x_vector_only_mode"], bool, "x_vector_only_mode"),
        icl_mode=_typed(raw["icl_mode"], bool, "icl_mode"),
        ref_text=None if text is None else _typed(text, str, "ref_text"),
    )


def _metadata(value: object) -> dict[str, str]:
    metadata = _typed(value, dict, "metadata")
    if len(metadata) > MAX_METADATA_KEYS:
        raise _bad(f"metadata has more than {MAX_METADATA_KEYS} keys")
    return {
        _text(key, "a metadata key", MAX_NAME_CHARS): _text(item, "a metadata value")
        for key, item in metadata.items()
    }


def _text(value: object, what: str, limit: int = MAX_TEXT_CHARS) -> str:
    text = _typed(value, str, what)
    if len(text) > limit:
        raise _bad(f"{what} is longer than {limit} characters")
    return text


def _typed(value: object, kind: type[_T], what: str) -> _T:
    if not isinstance(value, kind):
        raise _bad(f"{what} must be a {kind.__name__}, got {type(value).__name__}")
    return value


def _is_dense(
    tensor: torch.Tensor, dtypes: frozenset[torch.dtype], ndims: tuple[int, ...], limit: int
) -> bool:
    return (
        tensor.layout == torch.strided
        and tensor.dtype in dtypes
        and tensor.dim() in ndims
        and 1 <= tensor.numel() <= limit
    )


def _describe(tensor: torch.Tensor) -> str:
    return f"{tuple(tensor.shape)} {tensor.dtype} {tensor.layout}"


def _compact(tensor: torch.Tensor) -> torch.Tensor:
    # torch.save writes a view's whole storage; a fresh contiguous copy holds only its elements.
    return tensor.detach().to("cpu").clone(memory_format=torch.contiguous_format)


def _bad(message: str) -> InvalidVoiceFile:
    return InvalidVoiceFile(message, reason="bad_structure")


def _too_large(message: str) -> InvalidVoiceFile:
    return InvalidVoiceFile(message, reason="archive_too_large")
