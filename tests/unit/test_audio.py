from __future__ import annotations

import io
import math
import struct

import av
import numpy as np
import pytest
import soundfile as sf

from gpu_worker.audio.encoding import StreamEncoder, Waveform, encode, stretch
from shared.domain.audio_formats import FORMATS, STREAMING_FORMATS, AudioFormat
from shared.domain.errors import SynthesisFailed

RATE = 24000
LOSSY = (AudioFormat.MP3, AudioFormat.OPUS, AudioFormat.AAC)
LOSSLESS = (AudioFormat.WAV, AudioFormat.FLAC, AudioFormat.PCM)
CODEC_PADDING_S = {
    # Neither bare MPEG frames nor ADTS can say how much priming and padding they carry, so a
    # decoder returns it: LAME's 1105-sample delay plus up to a 576-sample frame; AAC's
    # 1024-sample priming plus up to a 1024-sample frame.
    AudioFormat.MP3: (1105 + 576) / RATE,
    AudioFormat.AAC: 2 * 1024 / RATE,
}
"""Extra audio a streamed file may decode to; Ogg Opus and PCM are trimmed exactly."""


def tone(seconds: float, *, start: float = 0.0) -> Waveform:
    t = (np.arange(round(seconds * RATE)) + round(start * RATE)) / RATE
    return Waveform(
        samples=(0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sample_rate=RATE
    )


def av_decode(data: bytes) -> tuple[np.ndarray, int]:
    """All the samples PyAV decodes, as float mono, at the decoder's own rate."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        frames = [frame.to_ndarray().reshape(-1) for frame in container.decode(stream)]
        rate = stream.codec_context.sample_rate
    samples = np.concatenate(frames) if frames else np.zeros(0, dtype=np.float32)
    if samples.dtype == np.int16:
        return samples / 32768.0, rate
    return samples.astype(np.float64), rate


def pcm_decode(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2") / 32768.0


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    pad = 8 * len(samples)  # zero-padding: a finer grid than the 1/duration bin width
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)), n=pad))
    return float(np.argmax(spectrum)) * rate / pad


def rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples))))


@pytest.mark.parametrize("fmt", list(AudioFormat))
def test_every_format_decodes_back_at_24_khz_with_its_duration(fmt: AudioFormat) -> None:
    wave = tone(1.25)
    audio = encode(wave, fmt=fmt)
    assert audio.format is fmt
    assert audio.content_type == FORMATS[fmt].content_type
    assert audio.extension == FORMATS[fmt].extension
    assert audio.sample_rate == RATE
    assert audio.duration_s == 1.25
    if fmt is AudioFormat.PCM:
        samples, rate = pcm_decode(audio.data), RATE
    elif fmt is AudioFormat.AAC:  # libsndfile has no AAC
        samples, rate = av_decode(audio.data)
    else:  # libsndfile reports Ogg Opus at its header's input rate, PyAV always at 48 kHz
        samples, rate = sf.read(io.BytesIO(audio.data))
    assert rate == RATE
    padding = 2 * 1024 if fmt is AudioFormat.AAC else 0
    assert len(wave.samples) <= len(samples) <= len(wave.samples) + padding


@pytest.mark.parametrize("fmt", [f for f in AudioFormat if f is not AudioFormat.PCM])
def test_every_container_decodes_with_ffmpeg(fmt: AudioFormat) -> None:
    wave = tone(1.25)
    samples, rate = av_decode(encode(wave, fmt=fmt).data)
    padding_s = 2 * 1024 / RATE if fmt is AudioFormat.AAC else 0.0
    assert 1.25 <= len(samples) / rate <= 1.25 + padding_s


@pytest.mark.parametrize("fmt", LOSSY)
def test_lossy_formats_keep_the_tone(fmt: AudioFormat) -> None:
    samples, rate = av_decode(encode(tone(1.25), fmt=fmt).data)
    assert dominant_hz(samples, rate) == pytest.approx(440, abs=3)
    assert rms(samples[: int(1.25 * rate)]) == pytest.approx(0.5 / math.sqrt(2), rel=0.1)


@pytest.mark.parametrize("fmt", LOSSLESS)
def test_lossless_formats_keep_every_sample_to_one_lsb(fmt: AudioFormat) -> None:
    wave = tone(1.25)
    data = encode(wave, fmt=fmt).data
    if fmt is AudioFormat.PCM:
        decoded = np.frombuffer(data, dtype="<i2").astype(np.int32)
    else:
        decoded = sf.read(io.BytesIO(data), dtype="int16")[0].astype(np.int32)
    expected = np.round(wave.samples * 32767).astype(np.int32)
    assert len(decoded) == len(expected)
    assert np.abs(decoded - expected).max() <= 1


def test_pcm_is_two_little_endian_bytes_per_sample_and_nothing_else() -> None:
    wave = Waveform(samples=np.array([0.0, 0.5, -0.5, 1.0], dtype=np.float32), sample_rate=RATE)
    data = encode(wave, fmt=AudioFormat.PCM).data
    assert len(data) == 2 * len(wave.samples)
    assert np.frombuffer(data, dtype="<i2").tolist() == [0, 16384, -16384, 32767]


def test_pcm_refuses_a_rate_it_cannot_state() -> None:
    with pytest.raises(ValueError, match="24000"):
        encode(Waveform(samples=tone(0.1).samples, sample_rate=16000), fmt=AudioFormat.PCM)


def test_wav_is_16_bit_pcm_and_clipped() -> None:
    loud = Waveform(samples=np.full(2400, 3.0, dtype=np.float32), sample_rate=24000)
    audio = encode(loud, fmt=AudioFormat.WAV)
    info = sf.info(io.BytesIO(audio.data))
    assert (info.format, info.subtype, info.channels) == ("WAV", "PCM_16", 1)
    samples, _ = sf.read(io.BytesIO(audio.data))
    assert samples.max() <= 1.0


@pytest.mark.parametrize(
    "samples",
    [np.zeros(0, dtype=np.float32), np.zeros((2, 10), dtype=np.float32),
     np.array([0.0, np.nan], dtype=np.float32)],
)  # fmt: skip
@pytest.mark.parametrize("fmt", [AudioFormat.WAV, AudioFormat.AAC])
def test_unusable_model_output_is_a_permanent_failure(
    samples: np.ndarray, fmt: AudioFormat
) -> None:
    with pytest.raises(SynthesisFailed):
        encode(Waveform(samples=samples, sample_rate=24000), fmt=fmt)


@pytest.mark.parametrize("speed", [0.5, 2.0, 0.25, 4.0, 1.25])
def test_stretch_changes_the_duration_and_keeps_the_pitch(speed: float) -> None:
    wave = tone(2.0)
    out = stretch(wave, speed=speed)
    assert out.sample_rate == RATE
    assert out.samples.dtype == np.float32
    assert out.samples.ndim == 1
    assert out.duration_s == pytest.approx(2.0 / speed, rel=0.03)
    assert len(out.samples) == round(len(wave.samples) / speed)
    assert dominant_hz(out.samples, RATE) == pytest.approx(440, rel=0.02)


@pytest.mark.parametrize("speed", [0.25, 0.5, 2.0, 4.0])
def test_stretch_keeps_a_clip_shorter_than_atempos_window(speed: float) -> None:
    out = stretch(tone(0.02), speed=speed)  # atempo alone returns nothing for this
    assert len(out.samples) == round(0.02 * RATE / speed)
    assert rms(out.samples) > 0.1


def test_stretch_at_normal_speed_is_the_same_wave() -> None:
    wave = tone(0.5)
    assert stretch(wave, speed=1.0) is wave


@pytest.mark.parametrize("speed", [0.2, 4.5, 0.0, -1.0, math.nan, math.inf])
def test_stretch_refuses_speeds_out_of_range(speed: float) -> None:
    with pytest.raises(ValueError, match="speed"):
        stretch(tone(0.5), speed=speed)


def stream(fmt: AudioFormat, pieces_s: tuple[float, ...]) -> list[bytes]:
    """Feeds consecutive slices of one continuous tone; the last chunk is finish()'s."""
    encoder = StreamEncoder(fmt, sample_rate=RATE)
    chunks, start = [], 0.0
    for seconds in pieces_s:
        chunks.append(encoder.feed(tone(seconds, start=start)))
        start += seconds
    return [*chunks, encoder.finish()]


@pytest.mark.parametrize("fmt", STREAMING_FORMATS)
def test_a_stream_concatenates_into_one_file_with_every_sample(fmt: AudioFormat) -> None:
    data = b"".join(stream(fmt, (0.5, 0.7, 0.3)))
    if fmt is AudioFormat.PCM:
        samples, rate = pcm_decode(data), RATE
    else:
        samples, rate = av_decode(data)
    assert 1.5 <= len(samples) / rate <= 1.5 + CODEC_PADDING_S.get(fmt, 0.0)
    assert dominant_hz(samples, rate) == pytest.approx(440, abs=3)
    if fmt in LOSSLESS:  # the pieces join without a gap or an overlap
        expected = np.round(tone(1.5).samples * 32767)
        assert np.abs(np.round(samples * 32768) - expected).max() <= 1


@pytest.mark.parametrize("fmt", LOSSY)
def test_a_stream_hands_out_audio_before_it_finishes(fmt: AudioFormat) -> None:
    chunks = stream(fmt, (0.5, 0.7, 0.3))
    assert chunks[0], "the first piece produced nothing"
    samples, rate = av_decode(b"".join(chunks[:-1]))
    # Only the codec's lookahead and the last partial frame or page may wait for finish().
    assert len(samples) / rate >= 1.2


def test_a_streamed_wav_header_says_its_length_is_unknown() -> None:
    data = b"".join(stream(AudioFormat.WAV, (0.5, 0.7, 0.3)))
    header = struct.unpack("<4sI4s4sIHHIIHH4sI", data[:44])
    unknown = 0xFFFFFFFF
    # RIFF size, then fmt: PCM, mono, 24 kHz, 48000 bytes/s, 2-byte frames, 16 bits; data size.
    assert header == (b"RIFF", unknown, b"WAVE", b"fmt ", 16, 1, 1, RATE, 2 * RATE, 2, 16,
                      b"data", unknown)  # fmt: skip
    assert len(data) == 44 + 2 * int(1.5 * RATE)
    samples, rate = sf.read(io.BytesIO(data))  # libsndfile reads to the end of the stream
    assert (len(samples), rate) == (int(1.5 * RATE), RATE)


def test_flac_cannot_stream() -> None:
    with pytest.raises(ValueError, match="wav, mp3, opus, aac, pcm"):
        StreamEncoder(AudioFormat.FLAC, sample_rate=RATE)


def test_a_stream_rejects_misuse() -> None:
    encoder = StreamEncoder(AudioFormat.MP3, sample_rate=RATE)
    with pytest.raises(ValueError, match="Hz"):
        encoder.feed(Waveform(samples=tone(0.1).samples, sample_rate=16000))
    with pytest.raises(SynthesisFailed):
        encoder.feed(Waveform(samples=np.array([np.inf], dtype=np.float32), sample_rate=RATE))
    encoder.feed(tone(0.1))
    encoder.finish()
    with pytest.raises(ValueError, match="finished"):
        encoder.feed(tone(0.1))
    with pytest.raises(ValueError, match="finished"):
        encoder.finish()


def test_a_stream_refuses_a_rate_its_codec_cannot_encode() -> None:
    with pytest.raises(ValueError, match="44100"):
        StreamEncoder(AudioFormat.OPUS, sample_rate=44100)
