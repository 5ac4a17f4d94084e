"""Turning the model's samples into the bytes the API serves, whole or piece by piece.

Worker-side only: the Cloud Functions never import numpy or the codec libraries. Whole files go
through libsndfile (soundfile) where it does the job well; its MP3s carry a LAME tag, so they
decode to their exact length. FFmpeg (PyAV) does what libsndfile cannot: AAC, the
pitch-preserving speed change, and streams, whose header goes out before the length is known
and can never be patched. It also writes Ogg Opus, which libsndfile does too but nearly four
times slower for the same libopus output (measured: 1.9 s against 0.5 s for 30 s of speech).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Literal

import av
import numpy as np
import numpy.typing as npt
import soundfile as sf
from av.filter import Graph

from shared.domain.audio_formats import FORMATS, SAMPLE_RATE, STREAMING_FORMATS, AudioFormat
from shared.domain.errors import SynthesisFailed

MIN_SPEED = 0.25
MAX_SPEED = 4.0

_ATEMPO_FLUSH_S = 0.2
"""Silence pushed after the clip: atempo emits its last window only once later input pushes it
out, so without it a clip loses up to a window (about 40 ms) of its end, and a clip shorter
than a window comes out empty. The output is then cut to the clip's exact new length."""

_ATEMPO_CLEAN = (0.5, 2.0)
"""Where one ``atempo`` does its best: it takes nothing under 0.5, and above 2 it skips samples
rather than blending them (FFmpeg's docs). Speeds outside run as two chained instances at the
square root, which for 0.25-4 lands back inside."""


@dataclass(frozen=True, slots=True)
class Waveform:
    samples: npt.NDArray[np.float32]
    """Mono, float32 in [-1, 1]."""
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True, slots=True)
class EncodedAudio:
    data: bytes
    format: AudioFormat
    content_type: str
    extension: str
    sample_rate: int
    duration_s: float


@dataclass(frozen=True, slots=True)
class _Soundfile:
    """A whole file written by libsndfile. MP3 keeps its default, VBR, which for speech at
    24 kHz mono measured 45-80 kb/s."""

    format: str
    subtype: str
    endian: Literal["FILE", "LITTLE"] = "FILE"


@dataclass(frozen=True, slots=True)
class _Ffmpeg:
    """A stream written by one FFmpeg encoder and muxer."""

    muxer: str
    codec: Literal["pcm_s16le", "libmp3lame", "aac", "libopus"]
    sample_format: str
    """A float format where the codec takes one, so nothing is rounded before it encodes."""
    bit_rate: int | None = None
    """The target. MP3 sits within libsndfile's VBR range, so a streamed file sounds like a
    whole one; Opus at 32 kb/s is what libsndfile's default gives; FFmpeg's AAC-LC needs about
    twice Opus's bits for speech, and overshoots its target (64 kb/s gives about 80)."""
    muxer_options: dict[str, str] = field(default_factory=dict)


_SOUNDFILE: dict[AudioFormat, _Soundfile] = {
    AudioFormat.WAV: _Soundfile("WAV", "PCM_16"),
    AudioFormat.FLAC: _Soundfile("FLAC", "PCM_16"),
    AudioFormat.MP3: _Soundfile("MP3", "MPEG_LAYER_III"),
    # RAW's default byte order is the CPU's; the format is defined as little-endian.
    AudioFormat.PCM: _Soundfile("RAW", "PCM_16", endian="LITTLE"),
}

_FFMPEG: dict[AudioFormat, _Ffmpeg] = {
    # On an output it cannot seek, FFmpeg's wav muxer writes the canonical 44-byte header with
    # the RIFF and data sizes at 0xFFFFFFFF, the customary "unknown length" that libsndfile,
    # FFmpeg and browsers read to the end of the stream.
    AudioFormat.WAV: _Ffmpeg("wav", "pcm_s16le", "s16"),
    AudioFormat.PCM: _Ffmpeg("s16le", "pcm_s16le", "s16"),
    # Bare MPEG frames: an ID3 tag adds nothing, and the Xing/LAME frame that would give the
    # exact length is written only once the muxer can seek back to it, which a stream cannot.
    # A set bit rate makes LAME's CBR, from which players estimate the length instead.
    AudioFormat.MP3: _Ffmpeg(
        "mp3",
        "libmp3lame",
        "fltp",
        bit_rate=64_000,
        muxer_options={"id3v2_version": "0", "write_xing": "0"},
    ),
    AudioFormat.AAC: _Ffmpeg("adts", "aac", "fltp", bit_rate=64_000),
    # The ogg muxer holds packets until a page spans page_duration (default 1 s, so a short
    # piece would come out only with the next); 100 ms pages cost about 2.5 kb/s of headers.
    AudioFormat.OPUS: _Ffmpeg(
        "ogg", "libopus", "flt", bit_rate=32_000, muxer_options={"page_duration": "100000"}
    ),
}

_BITEXACT = {"fflags": "+bitexact"}
"""No library version strings in the output: the bytes depend on the audio alone."""


def encode(wave: Waveform, *, fmt: AudioFormat) -> EncodedAudio:
    """Encode one whole clip; the bytes are a complete file of ``fmt``."""
    samples = _checked(wave)
    _check_rate(fmt, wave.sample_rate)
    spec = FORMATS[fmt]
    by_soundfile = _SOUNDFILE.get(fmt)
    if by_soundfile is None:
        stream = StreamEncoder(fmt, sample_rate=wave.sample_rate)
        data = stream.feed(wave) + stream.finish()
    else:
        buffer = io.BytesIO()
        sf.write(
            buffer,
            samples,
            wave.sample_rate,
            format=by_soundfile.format,
            subtype=by_soundfile.subtype,
            endian=by_soundfile.endian,
        )
        data = buffer.getvalue()
    return EncodedAudio(
        data=data,
        format=fmt,
        content_type=spec.content_type,
        extension=spec.extension,
        sample_rate=wave.sample_rate,
        duration_s=round(wave.duration_s, 6),
    )


def stretch(wave: Waveform, *, speed: float) -> Waveform:
    """Play ``speed`` times faster at the same pitch, with FFmpeg's atempo.

    The result has exactly ``round(len(samples) / speed)`` samples (at least one).
    """
    if not MIN_SPEED <= speed <= MAX_SPEED:
        raise ValueError(f"speed must be in [{MIN_SPEED}, {MAX_SPEED}], got {speed}")
    if speed == 1.0:
        return wave
    samples = _checked(wave)
    rate = wave.sample_rate
    low, high = _ATEMPO_CLEAN
    tempos = [speed] if low <= speed <= high else [speed**0.5] * 2

    graph = Graph()
    source = graph.add_abuffer(
        sample_rate=rate, format="flt", layout="mono", time_base=Fraction(1, rate)
    )
    stages = [graph.add("atempo", tempo=repr(tempo)) for tempo in tempos]
    graph.link_nodes(source, *stages, graph.add("abuffersink")).configure()

    flush = np.zeros(round(_ATEMPO_FLUSH_S * rate), dtype=np.float32)
    graph.push(_frame(np.concatenate([samples, flush]), rate=rate, pts=0))
    graph.push(None)
    pieces: list[npt.NDArray[np.float32]] = []
    while True:
        try:
            frame = graph.pull()
        except EOFError:
            break
        if not isinstance(frame, av.AudioFrame):
            raise TypeError(f"atempo returned a {type(frame).__name__}")
        pieces.append(frame.to_ndarray().astype(np.float32, copy=False).reshape(-1))
    out = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    length = max(1, round(len(samples) / speed))
    # Measured never short at 0.25-4x from one sample up; the pad only guards the promise.
    out = np.pad(out[:length], (0, max(0, length - len(out))))
    return Waveform(samples=np.clip(out, -1.0, 1.0), sample_rate=rate)


def decode_output(data: bytes, *, fmt: AudioFormat, max_duration_s: float) -> Waveform:
    """Read back a file ``encode`` or ``StreamEncoder`` wrote (the inverse of both), as mono
    float32 at ``SAMPLE_RATE``: FFmpeg reads every container the gateway writes, including the
    AAC and unknown-length streams libsndfile cannot; raw PCM has no container to probe."""
    limit = round(max_duration_s * SAMPLE_RATE)
    if fmt is AudioFormat.PCM:
        pcm = np.frombuffer(data[: (len(data) // 2) * 2], dtype="<i2")
        if len(pcm) > limit:
            raise SynthesisFailed(f"the audio is longer than {max_duration_s:g} s")
        return Waveform(samples=(pcm / 32768.0).astype(np.float32), sample_rate=SAMPLE_RATE)
    resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
    pieces: list[npt.NDArray[np.float32]] = []
    count = 0
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    pieces.append(out.to_ndarray().astype(np.float32, copy=False).reshape(-1))
                    count += len(pieces[-1])
                if count > limit:
                    raise SynthesisFailed(f"the audio is longer than {max_duration_s:g} s")
            for out in resampler.resample(None):
                pieces.append(out.to_ndarray().astype(np.float32, copy=False).reshape(-1))
    except av.FFmpegError as exc:
        raise SynthesisFailed(f"stored {fmt} audio cannot be read: {exc}") from exc
    samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
    return Waveform(samples=np.clip(samples, -1.0, 1.0), sample_rate=SAMPLE_RATE)


class StreamEncoder:
    """Encodes consecutive clips as one file, handing out its bytes as they are ready.

    Everything ``feed`` and ``finish`` return, concatenated, is one valid file holding all the
    samples fed (lossy codecs add their usual priming and padding: MP3 and ADTS have nowhere to
    say how much). Not thread-safe; use one per output.
    """

    def __init__(self, fmt: AudioFormat, *, sample_rate: int) -> None:
        if not FORMATS[fmt].streams:
            names = ", ".join(STREAMING_FORMATS)
            raise ValueError(f"{fmt} cannot be streamed; the streaming formats are {names}")
        _check_rate(fmt, sample_rate)
        spec = _FFMPEG[fmt]
        rates = av.Codec(spec.codec, "w").audio_rates
        if rates is not None and sample_rate not in rates:
            raise ValueError(f"{spec.codec} cannot encode {sample_rate} Hz; it takes {rates}")
        self._rate = sample_rate
        self._next_pts = 0
        self._finished = False
        self._sink = _Sink()
        # The sink has no seek, so muxers write for a stream and flush after every packet.
        self._container = av.open(
            self._sink,
            mode="w",
            format=spec.muxer,
            options={**_BITEXACT, "flush_packets": "1", **spec.muxer_options},
        )
        self._stream = self._container.add_stream(
            spec.codec, rate=sample_rate, options={"flags": "+bitexact"}
        )
        self._stream.layout = "mono"
        self._stream.format = spec.sample_format
        if spec.bit_rate is not None:
            self._stream.bit_rate = spec.bit_rate
        # Opens the codec and writes the header now, so a bad setting fails here, not mid-job.
        self._container.start_encoding()

    def feed(self, wave: Waveform) -> bytes:
        """Encode the next clip; returns the bytes completed so far (b"" while a codec buffers)."""
        if self._finished:
            raise ValueError("the stream is finished")
        samples = _checked(wave)
        if wave.sample_rate != self._rate:
            raise ValueError(f"the stream is at {self._rate} Hz, the clip at {wave.sample_rate}")
        frame = _frame(samples, rate=self._rate, pts=self._next_pts)
        self._next_pts += len(samples)
        self._container.mux(self._stream.encode(frame))
        return self._sink.take()

    def finish(self) -> bytes:
        """Flush the encoder and close the file; returns the last bytes."""
        if self._finished:
            raise ValueError("the stream is finished")
        self._finished = True
        self._container.mux(self._stream.encode(None))
        self._container.close()
        return self._sink.take()


class _Sink:
    """A write-only file for PyAV: having no ``seek`` is what makes FFmpeg write a stream."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        return len(data)

    def take(self) -> bytes:
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


def _checked(wave: Waveform) -> npt.NDArray[np.float32]:
    if wave.samples.ndim != 1 or len(wave.samples) == 0:
        raise SynthesisFailed(f"expected non-empty mono audio, got shape {wave.samples.shape}")
    if not np.isfinite(wave.samples).all():
        raise SynthesisFailed("the model produced non-finite samples")
    return np.clip(wave.samples, -1.0, 1.0).astype(np.float32, copy=False)


def _check_rate(fmt: AudioFormat, sample_rate: int) -> None:
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    # Raw PCM carries no header, so its rate is part of the format's definition.
    if fmt is AudioFormat.PCM and sample_rate != SAMPLE_RATE:
        raise ValueError(f"pcm is defined at {SAMPLE_RATE} Hz, got {sample_rate}")


def _frame(samples: npt.NDArray[np.float32], *, rate: int, pts: int) -> av.AudioFrame:
    frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
    frame.sample_rate = rate
    frame.time_base = Fraction(1, rate)
    frame.pts = pts
    return frame
