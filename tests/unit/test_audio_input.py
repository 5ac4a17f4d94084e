from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from gpu_worker.audio.ops import decode
from shared.domain.audio_input import AudioContainer, sniff_container
from shared.domain.errors import InvalidRequest

ROOT = Path(__file__).resolve().parents[2]
RATE = 24000
WRITERS = {
    AudioContainer.WAV: ("WAV", "PCM_16"),
    AudioContainer.FLAC: ("FLAC", "PCM_16"),
    AudioContainer.OGG: ("OGG", "VORBIS"),
    AudioContainer.MP3: ("MP3", "MPEG_LAYER_III"),
}


def tone(seconds: float, *, rate: int = RATE, channels: int = 1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    return mono if channels == 1 else np.stack([mono] * channels, axis=1)


def encoded(
    container: AudioContainer, samples: np.ndarray, *, rate: int = RATE, subtype: str = ""
) -> bytes:
    fmt, default_subtype = WRITERS[container]
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format=fmt, subtype=subtype or default_subtype)
    return buffer.getvalue()


def rejected(data: bytes, *, max_duration_s: float = 30.0) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        decode(data, max_duration_s=max_duration_s)
    assert info.value.field == "audio"
    return info.value


@pytest.mark.parametrize("container", list(AudioContainer))
def test_each_format_is_sniffed_and_decoded_with_its_duration(container: AudioContainer) -> None:
    data = encoded(container, tone(1.5))
    assert sniff_container(data) is container
    wave = decode(data, max_duration_s=30)
    assert wave.sample_rate == RATE
    assert wave.samples.dtype == np.float32
    assert wave.samples.ndim == 1
    assert wave.duration_s == pytest.approx(1.5, rel=0.01)
    assert 0.4 < np.abs(wave.samples).max() <= 1.0


def test_ogg_opus_decodes() -> None:
    data = encoded(AudioContainer.OGG, tone(1.0), subtype="OPUS")
    assert decode(data, max_duration_s=30).duration_s == pytest.approx(1.0, rel=0.01)


def test_stereo_is_downmixed_to_mono() -> None:
    stereo = np.stack([tone(1.0), np.zeros(RATE, dtype=np.float32)], axis=1)
    wave = decode(encoded(AudioContainer.WAV, stereo), max_duration_s=30)
    assert wave.samples.shape == (RATE,)
    assert np.abs(wave.samples).max() == pytest.approx(0.25, abs=1e-3)


def test_resamples_only_when_asked() -> None:
    data = encoded(AudioContainer.FLAC, tone(1.0, rate=44100), rate=44100)
    assert decode(data, max_duration_s=30).sample_rate == 44100
    wave = decode(data, max_duration_s=30, target_rate=RATE)
    assert (wave.sample_rate, len(wave.samples)) == (RATE, RATE)
    assert wave.samples.dtype == np.float32


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", AudioContainer.WAV),
        (b"fLaC\x00\x00\x00\x22", AudioContainer.FLAC),
        (b"OggS\x00\x02", AudioContainer.OGG),
        (b"ID3\x04\x00\x00", AudioContainer.MP3),
        (b"\xff\xfb\x90\xc4", AudioContainer.MP3),  # MPEG-1 layer III
        (b"\xff\xf1\x50\x80", None),  # AAC/ADTS: same sync, layer bits 00
        (b"\xff\xfb\xf0\xc4", None),  # bitrate index 15 is reserved
        (b"RIFF\x00\x00\x00\x00AVI ", None),
        (b"\x00\x00\x00\x20ftypM4A ", None),
        (b"", None),
        (b"\xff", None),
    ],
)
def test_sniffing_reads_magic_bytes_only(header: bytes, expected: AudioContainer | None) -> None:
    assert sniff_container(header) is expected


def test_garbage_is_rejected_naming_the_accepted_formats() -> None:
    error = rejected(b"definitely not audio" * 50)
    assert "wav, flac, ogg, mp3" in error.message


def test_empty_bytes_are_rejected() -> None:
    assert "empty" in rejected(b"").message


def test_a_header_without_samples_is_empty() -> None:
    assert "empty" in rejected(encoded(AudioContainer.WAV, tone(1.0))[:44]).message


@pytest.mark.parametrize("container", [AudioContainer.FLAC, AudioContainer.OGG, AudioContainer.MP3])
def test_truncated_files_are_rejected(container: AudioContainer) -> None:
    data = encoded(container, tone(1.5))
    error = rejected(data[: len(data) // 2])
    assert "truncated" in error.message
    assert "BytesIO" not in str(error.details)


def test_a_magic_number_alone_is_rejected() -> None:
    rejected(b"\xff\xfb\x90\x00" + bytes(1000))


def test_too_long_is_rejected_from_the_header_without_decoding(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = encoded(AudioContainer.FLAC, tone(3.0))

    def no_read(*args: object, **kwargs: object) -> None:
        raise AssertionError("decoded samples of a file the header already condemned")

    monkeypatch.setattr(sf.SoundFile, "read", no_read)
    error = rejected(data, max_duration_s=2.0)
    assert error.details["duration_s"] == pytest.approx(3.0)


def test_silence_is_rejected() -> None:
    assert "silent" in rejected(encoded(AudioContainer.WAV, np.zeros(RATE))).message


def test_absurd_sample_rates_are_rejected() -> None:
    error = rejected(encoded(AudioContainer.WAV, tone(1.0, rate=4000), rate=4000))
    assert error.details["sample_rate"] == 4000


def test_non_finite_float_wav_is_rejected() -> None:
    samples = tone(1.0)
    samples[100] = np.nan
    rejected(encoded(AudioContainer.WAV, samples, subtype="FLOAT"))


def test_sniffing_module_stays_light() -> None:
    """The HTTP functions deploy without numpy; importing the sniffer must not need it."""
    code = (
        "import sys, shared.domain.audio_input\n"
        "print(sorted({'numpy', 'soundfile', 'scipy'} & set(sys.modules)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("fmt", "subtype", "declared"),
    [
        ("WAV", "PCM_16", True),
        ("WAV", "FLOAT", True),
        ("FLAC", "PCM_16", True),
        ("OGG", "VORBIS", False),
    ],
)
def test_the_declared_duration_is_read_from_the_header(
    fmt: str, subtype: str, declared: bool
) -> None:
    from shared.domain.audio_input import declared_duration_s

    rate, seconds = 22050, 2.5
    buffer = io.BytesIO()
    t = np.arange(int(rate * seconds)) / rate
    sf.write(
        buffer, np.stack([np.sin(t), np.cos(t)], axis=1) * 0.1, rate, format=fmt, subtype=subtype
    )
    data = buffer.getvalue()
    container = sniff_container(data)
    assert container is not None
    duration = declared_duration_s(data, container)
    if declared:
        assert duration == pytest.approx(seconds, abs=1e-3)
    else:
        assert duration is None
    assert declared_duration_s(data[:20], container) is None  # a cut header declares nothing
