"""One live session: the media it has received, its rolling window and its answers.

The event loop only files media (`add_audio`, `add_frame`: byte copies and counters, no
decoding); `take_window` snapshots the window an update is due for, and `compute` (in a
worker thread) decodes and detects the new frames, then answers the window with the very
function `POST /predict` answers a file with (`predictor.predict_clip`, on a `DecodedClip`
built from the window's samples and faces). Everything kept is bounded: audio of the last
`window_s` (+ one interval), detections of the frames in it, `max_pending` frames waiting for
detection (the oldest dropped beyond), one window in work and one due.
"""
from __future__ import annotations

import math
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.live.images import ImageError, decode_image
from service.live.protocol import SAMPLE_RATE, Media, OpenOptions
from service.model.predictor import predict_clip
from service.pipeline import audio, media, visual
from service.pipeline.config import MediaLimits
from service.pipeline.errors import MediaError
from service.pipeline.extract import CropFeatures, DecodedClip, FaceCollector

FRAME_DROP_REASONS = ("rate", "late", "backlog", "bad_time", "undecodable", "too_large")
CLOCK_EPS = 1e-6       # media times within this are equal (100 ms chunks add up to 0.999...)
MAX_CLOCK_JUMP_S = 2.0  # a frame may lead the session's media clock by this much, no more


@dataclass(frozen=True)
class SessionLimits:
    max_fps: float             # frames per second of wall time a client may send (more: dropped, "rate")
    max_pending: int           # frames waiting for detection (more: the oldest dropped, "backlog")
    media: MediaLimits         # image size bounds


@dataclass
class Window:
    """What one update answers: a snapshot taken on the event loop."""

    seq: int
    start_s: float
    end_s: float
    samples: np.ndarray | None          # float32 of [start, end) (None: audio not in the session)
    samples_t0: float                   # time of samples[0]
    frames: list[tuple[float, str, bytes]]  # new frames to decode and detect (time, format, payload)
    last_media_at: float                # time.monotonic() of the last media message it covers
    final: bool = False


class EMA:
    """Exponential smoothing of probability vectors by media time: alpha = 1 - exp(-dt / tau)."""

    def __init__(self, tau_s: float):
        self.tau_s = tau_s
        self.state: dict[str, np.ndarray] = {}

    def __call__(self, key: str, probs: dict[str, float] | None, dt: float) -> dict[str, float] | None:
        if probs is None:
            return None
        x = np.array(list(probs.values()))
        prev = self.state.get(key)
        alpha = 1.0 if prev is None or self.tau_s <= 0 else 1.0 - math.exp(-dt / self.tau_s)
        self.state[key] = x if prev is None else prev + alpha * (x - prev)
        return {c: round(float(v), 5) for c, v in zip(probs, self.state[key])}


@dataclass
class LiveSession:
    bundle: Any
    options: OpenOptions
    limits: SessionLimits
    dropped: Counter = field(default_factory=Counter)
    seq: int = 0
    updates_skipped: int = 0             # update times passed while the previous one was still computed

    def __post_init__(self) -> None:
        self.cfg = self.bundle.config
        self.wants_audio = "audio" in self.options.modalities
        self.wants_face = "face" in self.options.modalities
        self.keep_s = self.options.window_s + self.options.update_interval_s
        self.samples = np.zeros(0, np.float32)   # the last keep_s of audio
        self.samples_t0 = 0.0
        self.audio_samples = 0                   # audio received (the audio clock, counted exactly)
        self.audio_s = 0.0
        self.frame_t = -math.inf                 # time of the last frame kept
        self.pending: deque[tuple[float, str, bytes]] = deque()
        self.detections: deque[tuple[float, visual.FaceCrop | None]] = deque()  # worker thread only
        self.frame_size = (0, 0)
        self.next_update_s = self.options.update_interval_s
        self.last_media_at = time.monotonic()
        self.last_update_s = 0.0
        self.answered: list[tuple[float, np.ndarray]] = []  # (length, fused probabilities) of each window
        self._wall_frames: deque[float] = deque()
        self.ema = EMA(self.options.smoothing_s)
        self.features = CropFeatures()           # image features of the faces still in the window (worker thread)

    # --- the event loop's side: filing media ---------------------------------------------
    @property
    def clock_s(self) -> float:
        """The session's media time: the end of the audio, or the last frame's time."""
        return max(self.audio_s, self.frame_t if self.frame_t > -math.inf else 0.0)

    def add_audio(self, chunk: Media, received: float) -> None:
        x = np.frombuffer(chunk.payload, "<i2").astype(np.float32) / 32768.0  # swr's s16 -> flt
        self.samples = np.concatenate([self.samples, x])
        self.audio_samples += len(x)
        self.audio_s = self.audio_samples / SAMPLE_RATE
        surplus = len(self.samples) - int(self.keep_s * SAMPLE_RATE)
        if surplus > 0:
            self.samples = self.samples[surplus:]
        self.samples_t0 = self.audio_s - len(self.samples) / SAMPLE_RATE
        self.last_media_at = received

    def add_frame(self, frame: Media, received: float) -> None:
        t = frame.t_ms / 1000.0
        while self._wall_frames and received - self._wall_frames[0] > 1.0:
            self._wall_frames.popleft()
        if len(self._wall_frames) >= self.limits.max_fps:
            self.dropped["rate"] += 1  # more frames per second of wall time than allowed
            return
        self._wall_frames.append(received)
        if t > self.clock_s + MAX_CLOCK_JUMP_S:
            self.dropped["bad_time"] += 1  # far ahead of the stream: it would skip the window forward
            return
        if t < self.clock_s - self.options.window_s:
            self.dropped["late"] += 1
            return
        if t < self.frame_t + 0.9 / self.cfg.frame_fps:
            self.dropped["rate"] += 1  # denser than the pipeline samples frames (frame_fps)
            return
        if len(self.pending) >= self.limits.max_pending:
            self.pending.popleft()
            self.dropped["backlog"] += 1
        self.pending.append((t, frame.fmt, frame.payload))
        self.frame_t = t
        self.last_media_at = received

    def due(self) -> bool:
        return self.clock_s >= self.next_update_s - CLOCK_EPS

    def has_new_media(self) -> bool:
        return self.clock_s > self.last_update_s + 1e-6

    def take_window(self, final: bool = False) -> Window:
        end = self.clock_s
        start = max(0.0, end - self.options.window_s)
        interval = self.options.update_interval_s
        if end >= self.next_update_s - CLOCK_EPS:
            self.updates_skipped += math.floor((end - self.next_update_s) / interval + CLOCK_EPS)
        self.next_update_s = (math.floor(end / interval + CLOCK_EPS) + 1) * interval
        samples = None
        if self.wants_audio:
            a = max(0, int(round((start - self.samples_t0) * SAMPLE_RATE)))
            samples = self.samples[a:].copy()
        frames = list(self.pending)
        self.pending.clear()
        self.seq += 1
        return Window(self.seq, start, end, samples, max(start, self.samples_t0), frames, self.last_media_at, final)

    # --- the worker thread's side: the answer of a window ----------------------------------
    def _detect(self, window: Window) -> None:
        cfg, detector = self.cfg, self.bundle.face_detector
        for t, fmt, payload in window.frames:
            if t < window.start_s:
                self.dropped["late"] += 1
                continue
            try:
                image = decode_image(payload, fmt, cfg.frame_max_side, self.limits.media)
            except ImageError as exc:
                self.dropped[exc.reason] += 1
                continue
            self.frame_size = image.shape[1], image.shape[0]
            self.detections.append((t, visual.detect_face(image, detector, cfg)))
        while self.detections and self.detections[0][0] < window.end_s - self.keep_s:
            self.detections.popleft()
        self.features.keep([crop for _, crop in self.detections if crop is not None])

    def clip(self, window: Window) -> DecodedClip:
        """The window as a decoded clip on its own clock (0 = window start)."""
        cfg = self.cfg
        duration = max(window.end_s - window.start_s, 1e-3)
        track = None
        if window.samples is not None and len(window.samples):
            track = audio.track_of(window.samples, cfg)
        faces = FaceCollector(cfg.frame_fps, duration, cfg, None)
        for t, crop in self.detections:
            if window.start_s <= t <= window.end_s:
                faces.add_detection(t - window.start_s, crop)
        width, height = self.frame_size
        info = media.MediaInfo("live", duration, track is not None, bool(faces.all_times), width, height,
                               cfg.frame_fps)
        return DecodedClip(info, track, faces.track())

    def compute(self, window: Window) -> dict[str, Any]:
        """The update for a window (runs in a worker thread)."""
        started = time.perf_counter()
        self._detect(window)
        clip = self.clip(window)
        try:
            answer = predict_clip(self.bundle, clip, shared=self.features)
        except MediaError as exc:
            if exc.code != "no_usable_stream":
                raise
            answer = None  # neither a voice nor a face in the window: nothing to say
        dt = window.end_s - self.last_update_s
        self.last_update_s = window.end_s
        update = self._update(window, clip, answer, dt)
        update["compute_ms"] = round((time.perf_counter() - started) * 1000.0, 1)
        return update

    def _update(self, window: Window, clip: DecodedClip, answer: dict[str, Any] | None, dt: float) -> dict[str, Any]:
        by_modality = (answer or {}).get("probabilities_by_modality") or {}
        modalities = answer["modalities"] if answer else {
            "audio": ("silent" if clip.audio is not None else "missing") if self.wants_audio else "not_requested",
            "face": ("not_found" if clip.info.has_video else "missing") if self.wants_face else "not_requested"}
        fused = answer["probabilities"] if answer else None
        smoothed = self.ema("fused", fused, dt)
        if fused is not None:
            self.answered.append((window.end_s - window.start_s, np.array(list(fused.values()))))
        return {
            "type": "update", "seq": window.seq, "final": window.final,
            "window": {"start_s": round(window.start_s, 3), "end_s": round(window.end_s, 3),
                       "audio_s": round(clip.audio.n_samples / SAMPLE_RATE, 3) if clip.audio is not None else 0.0,
                       "frames": clip.faces.frames, "frames_with_face": len(clip.faces)},
            "label": max(smoothed, key=smoothed.get) if smoothed else None,
            "probabilities": smoothed,
            "window_label": answer["label"] if answer else None,
            "window_probabilities": fused,
            "probabilities_by_modality": {m: self.ema(m, by_modality.get(m), dt) for m in ("audio", "face")},
            "modalities": modalities,
            "face_found": modalities["face"] in ("detected", "low_quality"),
            "audio_used": modalities["audio"] in ("used", "out_of_domain"),
            "audio_out_of_domain": modalities["audio"] == "out_of_domain",
            "reliability": (answer or {}).get("reliability", {"audio": None}),
            "dropped": self.drop_counts(),
            "updates_skipped": self.updates_skipped,
        }

    def drop_counts(self) -> dict[str, int]:
        return {reason: self.dropped[reason] for reason in FRAME_DROP_REASONS}

    def summary(self) -> dict[str, Any]:
        """The whole session's answer: the mean of its full-length windows' fused probabilities
        (the first windows, shorter while the session fills its first window, see what a later
        full one sees again); a session shorter than one window has none, and its last window,
        which covers all of it, is its answer: the one POST /predict gives the same media."""
        classes = self.bundle.classes
        full = [p for length, p in self.answered if length >= self.options.window_s - CLOCK_EPS]
        chosen = full or [p for _, p in self.answered[-1:]]
        mean = np.mean(chosen, axis=0) if chosen else None
        return {
            "type": "summary", "updates": self.seq, "answered": len(self.answered), "summarised": len(chosen),
            "media_s": round(self.clock_s, 3),
            "label": classes[int(np.argmax(mean))] if mean is not None else None,
            "probabilities": {c: round(float(v), 5) for c, v in zip(classes, mean)} if mean is not None else None,
            "dropped": self.drop_counts(), "updates_skipped": self.updates_skipped,
        }
