"""What every engine shares, written once: ``Synthesizer`` wraps one ``Engine``; a ``ModelSet``
holds the synthesizers (one per model) a worker serves.

Seeds under batching. A seed promises the same audio for the same request on the same engine,
model and device. A batch cannot keep that promise for its members (padding to the longest
line and one random stream shared by all make each line's audio depend on the others), so
seeded work is never batched: a seeded job is said line by line (chunk *i* with ``seed + i``),
alone under the lock, whatever else is queued. Unseeded lines (other jobs' and a long job's own
chunks) are batched, up to ``batch_size`` in one engine call.

Seeds across models. Each model has its own lock, but ``torch.manual_seed`` and both libraries'
sampling use the process's one generator per device (neither library's generate takes a
``torch.Generator``: qwen-tts passes its kwargs to transformers' ``generate``, which samples
with ``torch.multinomial`` and no generator; faster-qwen3-tts samples the same way and inside
its predictor graph). So a seeded line runs alone in the process (``GENERATION.alone``), from
its seed to its last sample, while unseeded lines of different models still run side by side
(``GENERATION.shared``): another model's draws never fall between a seed and its samples.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Generator, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
import torch

from gpu_worker.audio.encoding import Waveform
from gpu_worker.batching import BatchQueue
from gpu_worker.engine import (
    CODEC_FRAME_RATE_HZ,
    Clone,
    Design,
    Engine,
    Line,
    Speaker,
    Voice,
    engine_info,
    token_budget,
)
from shared.domain.backends import EngineInfo, ModelFacts
from shared.domain.catalog import Language
from shared.domain.errors import (
    ConfigurationError,
    GatewayError,
    GpuOutOfMemory,
    LineOutOfMemory,
    SynthesisFailed,
    SynthesisRunaway,
    WorkerPoisoned,
)
from shared.domain.modes import MODES_BY_MODEL_TYPE, Mode, ModelType, modes_offered
from shared.domain.voice_file import PromptItem, VoicePromptFile

Spoken = Waveform | GatewayError
"""A line's own outcome in a batch: its audio, or the error that fails its job alone."""


@dataclass(frozen=True, slots=True)
class _Bound:
    budget: int
    """The frames this text may need at most; reaching it means the model did not stop."""
    limit: int
    """What the engine is given: the budget, or the caller's lower cap."""


class GenerationLock:
    """Shared by any number of unseeded generations, or held by one seeded generation alone.

    A seeded generation waiting for it keeps new shared holders out, so that a steady flow of
    unseeded work on other models cannot starve it. Take it inside a model's own lock, never
    while holding it already (a thread that waits for it while holding it waits forever).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._sharing = 0
        self._alone = False
        self._waiting_alone = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            self._cond.wait_for(lambda: not self._alone and not self._waiting_alone)
            self._sharing += 1
        try:
            yield
        finally:
            with self._cond:
                self._sharing -= 1
                self._cond.notify_all()

    @contextmanager
    def alone(self) -> Iterator[None]:
        with self._cond:
            self._waiting_alone += 1
            try:
                self._cond.wait_for(lambda: not self._alone and not self._sharing)
            finally:
                self._waiting_alone -= 1
            self._alone = True
        try:
            yield
        finally:
            with self._cond:
                self._alone = False
                self._cond.notify_all()

    def held_for(self, seed: int | None) -> AbstractContextManager[None]:
        """Alone for a seeded generation, shared for an unseeded one."""
        return self.alone() if seed is not None else self.shared()


GENERATION = GenerationLock()
"""The process's one: every synthesizer's generations take it (module docstring)."""


class Synthesizer:
    """One engine behind the rules that hold for every engine:

    * token budget: each line's ``max_new_tokens`` is bounded by its text (``token_budget``)
      under the worker's cap;
    * sequence fit: the engine measures each line before generating (``PromptTooLong``);
    * runaway guard, per line: audio that reaches its bound did not stop (``SynthesisRunaway``),
      which fails that line's job and no other;
    * seeding, under the lock and alone in the process (``GENERATION``), so that nothing draws
      from the generator between seed and sample;
    * locking: one engine call at a time (the GPU is the bottleneck, and both libraries keep
      per-call state on the model);
    * error translation: an input the model rejects fails its line; out of GPU memory splits
      the batch and tries again once, failing only a line that does not fit alone
      (``LineOutOfMemory``); a CUDA fault (``WorkerPoisoned``) fails the whole call, and every
      later one without touching the GPU: the process's CUDA context is broken for good.
    """

    def __init__(
        self,
        *,
        engine: Engine,
        max_new_tokens: int,
        batch_size: int = 1,
        batch_window_s: float = 0.0,
    ) -> None:
        self.engine = engine
        self._cap = max_new_tokens
        self._lock = threading.Lock()
        self._fault: WorkerPoisoned | None = None
        # Looked up at each call, not bound once, so that a wrapped ``speak`` sees batches too.
        self.queue: BatchQueue[Line, Spoken] = BatchQueue(
            run=lambda lines: self.speak(lines),
            size=batch_size,
            window_s=batch_window_s,
            key=_voice_kind,
        )

    # -- the engine's identity --------------------------------------------------------------

    def load(self) -> None:
        self.engine.load()

    @property
    def model_source(self) -> str:
        return self.engine.model_source

    @property
    def device(self) -> str:
        return self.engine.device

    @property
    def model_type(self) -> ModelType:
        return self.engine.model_type

    @property
    def modes(self) -> tuple[Mode, ...]:
        return MODES_BY_MODEL_TYPE[self.model_type]

    @property
    def facts(self) -> ModelFacts:
        return self.engine.facts

    # -- lines ------------------------------------------------------------------------------

    def speak(self, lines: Sequence[Line], *, seed: int | None = None) -> list[Spoken]:
        """Every line in one engine call (where the engine batches); each line's own audio or
        its own error. A seed here seeds the call as a whole: pass one line for a promise."""
        bounds = [self._bound(line) for line in lines]
        results: list[Spoken | None] = [None] * len(lines)
        with self._lock:
            ready = []
            for index, line in enumerate(lines):
                try:
                    with self._engine_call():
                        self.engine.check_fits(line, max_new_tokens=bounds[index].limit)
                except WorkerPoisoned:
                    raise
                except GatewayError as exc:
                    results[index] = exc
                else:
                    ready.append(index)
            if ready:
                self._call(lines, bounds, ready, seed=seed, results=results)
        return [r if r is not None else SynthesisFailed("no result") for r in results]

    def say(self, line: Line, *, seed: int | None = None) -> Waveform:
        """One line alone: its audio, or its error raised."""
        result = self.speak([line], seed=seed)[0]
        if isinstance(result, GatewayError):
            raise result
        return result

    def stream(self, line: Line, *, seed: int | None = None) -> Generator[Waveform]:
        """One line in pieces as the engine makes them. The engine is held until the pieces
        run out or the iterator is closed: close it (``contextlib.closing``) if you stop early."""
        bound = self._bound(line)
        frames = 0.0
        with self._lock, GENERATION.held_for(seed), self._engine_call():
            self.engine.check_fits(line, max_new_tokens=bound.limit)
            self._seed(seed)
            for piece in self.engine.stream(line, max_new_tokens=bound.limit):
                frames += piece.duration_s * CODEC_FRAME_RATE_HZ
                yield piece
        if _ran_away(frames, bound):
            raise _runaway(frames / CODEC_FRAME_RATE_HZ, bound, line)

    def create_voice_prompt(
        self, *, reference: Waveform, ref_text: str | None, x_vector_only: bool
    ) -> tuple[PromptItem, ...]:
        with self._lock, self._engine_call():
            return self.engine.create_voice_prompt(
                reference=reference, ref_text=ref_text, x_vector_only=x_vector_only
            )

    def speaker_embedding(self, wave: Waveform) -> npt.NDArray[np.float32]:
        with self._lock, self._engine_call():
            return self.engine.speaker_embedding(wave)

    # -- one line by mode (keyword-only, typed) ---------------------------------------------

    def generate_custom_voice(
        self,
        *,
        text: str,
        speaker: str,
        language: Language,
        instruct: str | None = None,
        seed: int | None = None,
        max_new_tokens: int | None = None,
    ) -> Waveform:
        voice = Speaker(name=speaker, instruct=instruct)
        return self.say(_line(text, language, voice, max_new_tokens), seed=seed)

    def generate_voice_design(
        self,
        *,
        text: str,
        instruct: str,
        language: Language,
        seed: int | None = None,
        max_new_tokens: int | None = None,
    ) -> Waveform:
        voice = Design(instruct=instruct)
        return self.say(_line(text, language, voice, max_new_tokens), seed=seed)

    def generate_from_prompt(
        self,
        *,
        text: str,
        language: Language,
        prompt: VoicePromptFile,
        seed: int | None = None,
        max_new_tokens: int | None = None,
    ) -> Waveform:
        voice = Clone(prompt=prompt)
        return self.say(_line(text, language, voice, max_new_tokens), seed=seed)

    # -- inside ------------------------------------------------------------------------------

    def _bound(self, line: Line) -> _Bound:
        budget = token_budget(line.text, cap=self._cap)
        # A caller's own lower cap truncates by request; only our bound signals a runaway.
        cap = line.max_new_tokens
        return _Bound(budget=budget, limit=budget if cap is None else min(budget, cap))

    def _call(
        self,
        lines: Sequence[Line],
        bounds: Sequence[_Bound],
        ready: Sequence[int],
        *,
        seed: int | None,
        results: list[Spoken | None],
        retried: bool = False,
    ) -> None:
        try:
            # Released before any retry below takes it again.
            with GENERATION.held_for(seed), self._engine_call():
                self._seed(seed)
                waves = self.engine.synthesize(
                    [_budgeted(lines[i], bounds[i]) for i in ready],
                    max_new_tokens=max(bounds[i].limit for i in ready),
                )
        except WorkerPoisoned:
            raise
        except GpuOutOfMemory as exc:
            _free_cached_memory()
            if len(ready) > 1:
                # Half the batch needs about half the memory; each half is tried again.
                half = len(ready) // 2
                for part in (ready[:half], ready[half:]):
                    self._call(lines, bounds, part, seed=seed, results=results, retried=True)
            elif not retried:
                self._call(lines, bounds, ready, seed=seed, results=results, retried=True)
            else:
                results[ready[0]] = _out_of_memory(lines[ready[0]], exc)
            return
        except GatewayError as exc:
            if len(ready) == 1:
                results[ready[0]] = exc
                return
            # One bad line must not fail the others: each alone finds its own fate.
            for index in ready:
                self._call(lines, bounds, [index], seed=seed, results=results)
            return
        for index, wave in zip(ready, waves, strict=True):
            results[index] = _guarded(wave, bounds[index], lines[index])

    @staticmethod
    def _seed(seed: int | None) -> None:
        if seed is not None:
            torch.manual_seed(seed)

    @contextmanager
    def _engine_call(self) -> Iterator[None]:
        """Around every engine call: its errors translated; once a CUDA fault has broken the
        process's context, refused without touching the GPU (its next call could only fail
        again, or worse, seem to work on corrupted memory)."""
        if self._fault is not None:
            raise WorkerPoisoned(f"an earlier CUDA fault broke this worker: {self._fault.message}")
        try:
            with translated_errors():
                yield
        except WorkerPoisoned as exc:
            self._fault = exc
            raise


class ModelSet:
    """The models one worker serves, at most one per model type; modes follow from them."""

    def __init__(self, synthesizers: Sequence[Synthesizer]) -> None:
        by_type: dict[ModelType, Synthesizer] = {}
        for synth in synthesizers:
            if synth.model_type in by_type:
                raise ConfigurationError(
                    f"two {synth.model_type} models configured: "
                    f"{by_type[synth.model_type].model_source} and {synth.model_source}"
                )
            by_type[synth.model_type] = synth
        self._by_type = by_type

    @property
    def modes(self) -> tuple[Mode, ...]:
        return modes_offered(self._by_type)

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(s.model_source for s in self._by_type.values())

    @property
    def facts(self) -> tuple[ModelFacts, ...]:
        return tuple(s.facts for s in self._by_type.values())

    @property
    def device(self) -> str:
        return next(iter(self._by_type.values())).device

    @property
    def engine(self) -> EngineInfo | None:
        """The implementation running the models (one per worker); ``None`` with none."""
        return next((engine_info(s.engine) for s in self._by_type.values()), None)

    def get(self, model_type: ModelType) -> Synthesizer | None:
        return self._by_type.get(model_type)

    def of_type(self, model_type: ModelType) -> Synthesizer:
        try:
            return self._by_type[model_type]
        except KeyError:
            raise SynthesisFailed(
                f"this worker has no {model_type} model (it has {sorted(self._by_type)})"
            ) from None


def _line(text: str, language: Language, voice: Voice, max_new_tokens: int | None) -> Line:
    return Line(text=text, language=language, voice=voice, max_new_tokens=max_new_tokens)


def _budgeted(line: Line, bound: _Bound) -> Line:
    """``line`` as an engine is given it: carrying its own limit, for an engine that can stop
    each line of a call on its own (the call's ``max_new_tokens`` is the largest of them)."""
    if line.max_new_tokens == bound.limit:
        return line
    return replace(line, max_new_tokens=bound.limit)


def _voice_kind(line: Line) -> type:
    return type(line.voice)


def _guarded(wave: Waveform, bound: _Bound, line: Line) -> Spoken:
    # An engine whose library takes one limit per call gives every line the largest; a line
    # with a lower limit is cut to what it would have been given alone.
    allowed = math.ceil(bound.limit * wave.sample_rate / CODEC_FRAME_RATE_HZ)
    if len(wave.samples) > allowed:
        wave = Waveform(
            samples=np.ascontiguousarray(wave.samples[:allowed]), sample_rate=wave.sample_rate
        )
    frames = wave.duration_s * CODEC_FRAME_RATE_HZ
    if _ran_away(frames, bound):
        return _runaway(wave.duration_s, bound, line)
    return wave


def _ran_away(frames: float, bound: _Bound) -> bool:
    return bound.limit == bound.budget and frames >= bound.budget - 1


def _runaway(duration_s: float, bound: _Bound, line: Line) -> SynthesisRunaway:
    return SynthesisRunaway(
        f"the model did not stop: {duration_s:.1f} s of audio for {len(line.text)} "
        f"characters reached the {bound.budget}-frame bound set for that text",
        details={"duration_s": round(duration_s, 3), "chars": len(line.text)},
    )


def _out_of_memory(line: Line, exc: GpuOutOfMemory) -> LineOutOfMemory:
    return LineOutOfMemory(
        f"a line of {len(line.text)} characters does not fit the GPU's memory even alone; "
        f"shorten it ({exc.message})",
        details={"chars": len(line.text)},
    )


def _free_cached_memory() -> None:
    # The failed call's blocks go back to the device, so the retry is not refused for what
    # the allocator still holds.
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


_ACCELERATOR_ERRORS: tuple[type[RuntimeError], ...] = tuple(
    cls
    for cls in (getattr(torch, "AcceleratorError", None),)
    if isinstance(cls, type) and issubclass(cls, RuntimeError)
)
"""torch's class for a failed CUDA call (torch 2.8 and later; before, a plain RuntimeError)."""
_FAULT_MARKS = (
    "CUDA error",
    "device-side assert",
    "illegal memory access",
    "CUBLAS_STATUS_",
    "CUDNN_STATUS_",
)
"""How a CUDA fault reads where it comes as a plain RuntimeError."""


@contextmanager
def translated_errors() -> Iterator[None]:
    """Out of GPU memory is worth retrying (smaller, or later); a CUDA fault is the worker's,
    not the request's; any other error the model raises is its input's fault, not worth
    retrying."""
    try:
        yield
    except torch.OutOfMemoryError as exc:
        raise GpuOutOfMemory(f"GPU out of memory: {exc}") from exc
    except RuntimeError as exc:  # torch.AcceleratorError is one
        raise runtime_error(exc) from exc
    except (ValueError, IndexError, KeyError) as exc:
        raise SynthesisFailed(f"the model rejected the request: {exc}") from exc


def runtime_error(exc: RuntimeError) -> GatewayError:
    """What a ``RuntimeError`` from the model means: out of memory (some CUDA calls report it
    as "CUDA error: out of memory"), a CUDA fault, or an input the model rejects."""
    text = str(exc)
    if "out of memory" in text.lower():
        return GpuOutOfMemory(f"GPU out of memory: {text}")
    if isinstance(exc, _ACCELERATOR_ERRORS) or any(mark in text for mark in _FAULT_MARKS):
        return WorkerPoisoned(f"CUDA fault: {text}")
    return SynthesisFailed(f"the model rejected the request: {text}")
