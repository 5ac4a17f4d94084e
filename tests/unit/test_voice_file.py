"""The voice prompt file: round trips, qwen compatibility, and hostile uploads."""

from __future__ import annotations

import io
import pickle
import random
import re
import time
import tracemalloc
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
import torch

from shared.domain.errors import InvalidVoiceFile
from shared.domain.voice_file import (
    DEFAULT_MAX_BYTES,
    FORMAT,
    VERSION,
    PromptItem,
    VoicePromptFile,
    dumps,
    loads,
)


def save(obj: object, **kwargs: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def raw_item(**overrides: object) -> dict[str, object]:
    item: dict[str, object] = {
        "ref_code": torch.randint(0, 2048, (30, 16)),
        "ref_spk_embedding": torch.randn(1024),
        "x_vector_only_mode": False,
        "icl_mode": True,
        "ref_text": "Hello there.",
    }
    return {**item, **overrides}


def raw_file(**overrides: object) -> dict[str, object]:
    payload: dict[str, object] = {
        "format": FORMAT,
        "version": VERSION,
        "model": "Qwen/Qwen3-TTS-12Hz-1.7B-Base",
        "metadata": {"name": "narrator"},
        "items": [raw_item()],
    }
    return {**payload, **overrides}


def reason_of(data: bytes, **kwargs: Any) -> str:
    with pytest.raises(InvalidVoiceFile) as caught:
        loads(data, **kwargs)
    return caught.value.reason


@pytest.fixture(scope="module")
def qwen_item_cls() -> type[Any]:
    from qwen_tts.inference.qwen3_tts_model import VoiceClonePromptItem  # slow: import once

    cls: type[Any] = VoiceClonePromptItem
    return cls


class TouchFile:
    """Unpickling this creates ``marker``: a stand-in for running any code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Callable[..., object], tuple[object, ...]]:
        return (Path.touch, (self.marker,))


# Round trips and qwen compatibility


def test_round_trip_keeps_tensors_metadata_and_model() -> None:
    icl = PromptItem(
        ref_code=torch.randint(0, 2048, (40, 16), dtype=torch.int64),
        ref_spk_embedding=torch.randn(1024, dtype=torch.bfloat16),
        x_vector_only_mode=False,
        icl_mode=True,
        ref_text="The quick brown fox.",
    )
    xvec = PromptItem(
        ref_code=None, ref_spk_embedding=torch.randn(2048), x_vector_only_mode=True, icl_mode=False
    )
    original = VoicePromptFile(items=(icl, xvec), metadata={"name": "fox"}, model="m/1")

    loaded = loads(dumps(original))

    assert loaded.metadata == {"name": "fox"}
    assert loaded.model == "m/1"
    assert len(loaded.items) == 2
    for before, after in zip(original.items, loaded.items, strict=True):
        assert after.ref_spk_embedding.dtype == before.ref_spk_embedding.dtype
        assert torch.equal(after.ref_spk_embedding, before.ref_spk_embedding)
        assert (after.x_vector_only_mode, after.icl_mode, after.ref_text) == (
            before.x_vector_only_mode,
            before.icl_mode,
            before.ref_text,
        )
    assert loaded.items[0].ref_code is not None
    assert icl.ref_code is not None
    assert torch.equal(loaded.items[0].ref_code, icl.ref_code)
    assert loaded.items[1].ref_code is None


def test_dumps_writes_only_the_elements_of_a_view() -> None:
    big = torch.randn(4_000_000)
    item = PromptItem(
        ref_code=None, ref_spk_embedding=big[:8], x_vector_only_mode=True, icl_mode=False
    )
    data = dumps(VoicePromptFile(items=(item,)))
    assert len(data) < 10_000  # not the 16 MB storage behind the view
    assert torch.equal(loads(data).items[0].ref_spk_embedding, big[:8])


def test_items_convert_to_and_from_qwen_prompt_items(qwen_item_cls: type[Any]) -> None:
    qwen_item = qwen_item_cls(
        ref_code=torch.randint(0, 2048, (25, 16)),
        ref_spk_embedding=torch.randn(1024),
        x_vector_only_mode=False,
        icl_mode=True,
        ref_text="Reference words.",
    )
    item = PromptItem.from_fields(qwen_item)
    rebuilt = qwen_item_cls(**loads(dumps(VoicePromptFile(items=(item,)))).items[0].as_kwargs())

    assert isinstance(rebuilt, qwen_item_cls)
    assert torch.equal(rebuilt.ref_code, qwen_item.ref_code)
    assert torch.equal(rebuilt.ref_spk_embedding, qwen_item.ref_spk_embedding)
    assert (rebuilt.x_vector_only_mode, rebuilt.icl_mode, rebuilt.ref_text) == (
        False,
        True,
        "Reference words.",
    )


def test_accepts_the_official_demo_shape(qwen_item_cls: type[Any]) -> None:
    demo_item = qwen_item_cls(
        ref_code=None,
        ref_spk_embedding=torch.randn(1024),
        x_vector_only_mode=True,
        icl_mode=False,
        ref_text=None,
    )
    loaded = loads(save({"items": [asdict(demo_item)]}))
    assert loaded.metadata == {}
    assert loaded.model is None
    assert torch.equal(loaded.items[0].ref_spk_embedding, demo_item.ref_spk_embedding)
    assert loaded.items[0].x_vector_only_mode


def test_from_fields_validates_like_loading() -> None:
    class Half:
        ref_spk_embedding = torch.randn(4)

    with pytest.raises(InvalidVoiceFile, match="x_vector_only_mode must be a bool") as caught:
        PromptItem.from_fields(Half())
    assert caught.value.reason == "bad_structure"


# Hostile files


def test_a_code_running_pickle_inside_a_torch_zip_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = save(TouchFile(marker))
    assert data.startswith(b"PK\x03\x04")

    assert reason_of(data) == "unsafe"
    assert not marker.exists()

    # Control: the same bytes do run code when loaded unsafely.
    torch.load(io.BytesIO(data), weights_only=False)
    assert marker.exists()


def test_a_raw_pickle_is_refused_without_being_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    data = pickle.dumps(TouchFile(marker))

    assert reason_of(data) == "not_a_prompt_file"
    assert not marker.exists()

    pickle.loads(data)  # control: the payload is live
    assert marker.exists()


def test_a_pickled_qwen_prompt_item_is_refused(qwen_item_cls: type[Any]) -> None:
    item = qwen_item_cls(
        ref_code=None,
        ref_spk_embedding=torch.randn(16),
        x_vector_only_mode=True,
        icl_mode=False,
    )
    assert reason_of(save({"items": [item]})) == "unsafe"
    assert reason_of(save(item)) == "unsafe"


def zip_of(members: Iterator[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, content in members:
            archive.writestr(name, content)
    return buffer.getvalue()


def deflate_bomb() -> bytes:
    buffer = io.BytesIO()
    with (
        zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive,
        archive.open("archive/data.pkl", "w", force_zip64=True) as member,
    ):
        chunk = bytes(1 << 20)
        for _ in range(200):  # 200 MB of zeros
            member.write(chunk)
    return buffer.getvalue()


def two_symbol_noise() -> bytes:
    # About 1 bit per byte: deflates roughly 7x, well under the ratio limit.
    rng = random.Random(0)
    return zip_of(iter([("archive/data/0", bytes(rng.choice(b"ab") for _ in range(1 << 20)))]))


@pytest.mark.parametrize(
    ("build", "max_bytes", "match"),
    [
        pytest.param(deflate_bomb, 1 << 40, "compressed too much", id="ratio"),
        pytest.param(two_symbol_noise, 500_000, "unpacks to", id="total-size"),
        pytest.param(
            lambda: zip_of(((f"archive/{i}", b"") for i in range(1001)), zipfile.ZIP_STORED),
            DEFAULT_MAX_BYTES,
            "1001 members",
            id="members",
        ),
    ],
)
def test_zip_bombs_are_refused_before_anything_is_inflated(
    build: Callable[[], bytes], max_bytes: int, match: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = build()
    assert len(data) < max_bytes

    def must_not_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("torch.load reached")

    monkeypatch.setattr(torch, "load", must_not_load)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(InvalidVoiceFile, match=match) as caught:
            loads(data, max_bytes=max_bytes)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert caught.value.reason == "archive_too_large"
    assert peak < 4 * 1024 * 1024
    assert time.perf_counter() - started < 1.0


def test_a_file_over_the_byte_limit_is_too_large() -> None:
    data = save(raw_file())
    assert reason_of(data, max_bytes=len(data) - 1) == "too_large"
    assert len(loads(data, max_bytes=len(data)).items) == 1


def without(mapping: dict[str, object], key: str) -> dict[str, object]:
    return {k: v for k, v in mapping.items() if k != key}


def sparse_embedding() -> torch.Tensor:
    return torch.randn(8).to_sparse()


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        pytest.param({"foo": 1}, "top-level keys", id="foreign-dict"),
        pytest.param([raw_item()], "top level must be a dict", id="list"),
        pytest.param(torch.randn(3), "top level must be a dict", id="tensor"),
        pytest.param(raw_file(extra="x"), "top-level keys", id="extra-top-key"),
        pytest.param(without(raw_file(), "version"), "top-level keys", id="missing-version"),
        pytest.param(raw_file(format="other"), "format must be", id="format"),
        pytest.param(raw_file(version=2), "unsupported version", id="version-2"),
        pytest.param(raw_file(version=True), "unsupported version", id="version-bool"),
        pytest.param(raw_file(model=7), "model must be a str", id="model-type"),
        pytest.param(raw_file(metadata=[]), "metadata must be a dict", id="metadata-type"),
        pytest.param(raw_file(metadata={"k": 1}), "metadata value must be", id="metadata-int"),
        pytest.param(
            raw_file(metadata={str(i): "" for i in range(65)}), "more than 64 keys", id="meta-keys"
        ),
        pytest.param(raw_file(metadata={"k": "x" * 2001}), "longer than", id="meta-value-len"),
        pytest.param({"items": []}, "1..8 items", id="no-items"),
        pytest.param({"items": [raw_item()] * 9}, "1..8 items", id="nine-items"),
        pytest.param({"items": raw_item()}, "1..8 items", id="items-dict"),
        pytest.param({"items": ["x"]}, "an item must be a dict", id="item-str"),
        pytest.param({"items": [raw_item(speaker="x")]}, "exactly the keys", id="item-extra"),
        pytest.param({"items": [without(raw_item(), "icl_mode")]}, "exactly the keys", id="miss"),
        pytest.param(
            {"items": [raw_item(ref_spk_embedding=[0.1, 0.2])]}, "must be a Tensor", id="emb-list"
        ),
        pytest.param(
            {"items": [raw_item(ref_spk_embedding=torch.ones(8, dtype=torch.int64))]},
            "1-D float tensor",
            id="emb-int",
        ),
        pytest.param(
            {"items": [raw_item(ref_spk_embedding=torch.randn(2, 4, 8))]},
            "1-D float tensor",
            id="emb-3d",
        ),
        pytest.param(
            {"items": [raw_item(ref_spk_embedding=torch.randn(8193))]},
            "1-D float tensor",
            id="emb-long",
        ),
        pytest.param(
            {"items": [raw_item(ref_spk_embedding=torch.randn(0))]},
            "1-D float tensor",
            id="emb-empty",
        ),
        pytest.param(
            {"items": [raw_item(ref_spk_embedding=sparse_embedding())]},
            "1-D float tensor",
            id="emb-sparse",
            marks=pytest.mark.filterwarnings("ignore:Sparse invariant checks"),
        ),
        pytest.param(
            {"items": [raw_item(ref_spk_embedding=torch.tensor([0.0, float("nan")]))]},
            "NaN",
            id="emb-nan",
        ),
        pytest.param(
            {"items": [raw_item(ref_spk_embedding=torch.tensor([float("inf"), 1.0]))]},
            "NaN",
            id="emb-inf",
        ),
        pytest.param(
            {"items": [raw_item(ref_code=torch.rand(30, 16))]}, "integer tensor", id="code-float"
        ),
        pytest.param(
            {"items": [raw_item(ref_code=torch.zeros(2, 3, 4, dtype=torch.int64))]},
            "integer tensor",
            id="code-3d",
        ),
        pytest.param(
            {"items": [raw_item(ref_code=torch.zeros(1_000_001, dtype=torch.int8))]},
            "integer tensor",
            id="code-huge",
        ),
        pytest.param(
            {"items": [raw_item(ref_code=torch.tensor([[1, -1]]))]}, "negative", id="code-neg"
        ),
        pytest.param({"items": [raw_item(ref_code=None)]}, "icl_mode needs", id="icl-no-code"),
        pytest.param({"items": [raw_item(ref_text=None)]}, "icl_mode needs", id="icl-no-text"),
        pytest.param({"items": [raw_item(ref_text="")]}, "icl_mode needs", id="icl-empty-text"),
        pytest.param({"items": [raw_item(x_vector_only_mode=True)]}, "exclusive", id="both-modes"),
        pytest.param({"items": [raw_item(icl_mode=1)]}, "icl_mode must be a bool", id="int-bool"),
        pytest.param({"items": [raw_item(ref_text=b"hi")]}, "ref_text must be a str", id="bytes"),
        pytest.param({"items": [raw_item(ref_text="x" * 2001)]}, "longer than", id="long-text"),
    ],
)
def test_a_torch_file_of_the_wrong_shape_is_bad_structure(payload: object, match: str) -> None:
    with pytest.raises(InvalidVoiceFile, match=re.escape(match)) as caught:
        loads(save(payload))
    assert caught.value.reason == "bad_structure"


def truncated_pickle() -> bytes:
    with zipfile.ZipFile(io.BytesIO(save(raw_file()))) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    return zip_of(
        (
            (name, content[:-10] if name.endswith("data.pkl") else content)
            for name, content in members
        ),
        zipfile.ZIP_STORED,
    )


@pytest.mark.parametrize(
    ("build", "cause"),
    [
        pytest.param(lambda: b"", type(None), id="empty"),
        pytest.param(lambda: random.Random(0).randbytes(4096), type(None), id="random"),
        pytest.param(
            lambda: save(raw_file(), _use_new_zipfile_serialization=False), type(None), id="legacy"
        ),
        pytest.param(
            lambda: (data := save(raw_file()))[: len(data) // 2],
            zipfile.BadZipFile,
            id="truncated",
        ),
        # These two get past the zip checks and fail inside torch.load.
        pytest.param(lambda: zip_of(iter([("notes.txt", b"hi")])), RuntimeError, id="foreign-zip"),
        pytest.param(truncated_pickle, EOFError, id="truncated-pickle"),
    ],
)
def test_bytes_that_are_not_a_torch_file_are_not_a_prompt_file(
    build: Callable[[], bytes], cause: type[BaseException]
) -> None:
    with pytest.raises(InvalidVoiceFile) as caught:
        loads(build())
    assert caught.value.reason == "not_a_prompt_file"
    assert type(caught.value.__cause__) is cause


def test_constructing_an_invalid_file_fails_the_same_way() -> None:
    item = PromptItem(
        ref_code=None, ref_spk_embedding=torch.randn(8), x_vector_only_mode=True, icl_mode=False
    )
    with pytest.raises(InvalidVoiceFile, match=r"1\.\.8 items"):
        VoicePromptFile(items=())
    with pytest.raises(InvalidVoiceFile, match=r"1\.\.8 items"):
        VoicePromptFile(items=(item,) * 9)
    with pytest.raises(InvalidVoiceFile, match="NaN"):
        PromptItem(
            ref_code=None,
            ref_spk_embedding=torch.full((4,), float("nan")),
            x_vector_only_mode=True,
            icl_mode=False,
        )
