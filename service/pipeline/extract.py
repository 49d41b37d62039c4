"""The feature pipeline end to end: file -> fusion sequence (design §2 steps 1-5).

One code path for trainer and service. The learned stages (audio encoder, frame
encoder, ResNet-50) come in through `Encoders`, in practice ONNX Runtime sessions of
the bundle; the trainer runs the very same sessions after exporting them, so training
features and serving features cannot drift apart.

Decoding is streamed: audio blocks become mel frames (`audio.AudioAccumulator`) and each
sampled frame becomes an aligned 64x64 face crop as soon as it is decoded, so what a clip
keeps in memory is small per second and bounded in total (at most `max_frames` crops, or
`k_summary` per timeline segment). The file is opened once and demuxed once, audio and
frames in the same pass (`media.Source.decode`); in the service that pass runs in a decoder
worker process (`decoder_pool`), which keeps decoding the next frames while faces are
detected (BlazeFace, the bundle's `face_detector`) on the ones already decoded, so
`face_detection` runs inside `decode`.

A frame without a usable face contributes nothing to the face side: `FaceTrack` holds the
frames with a face only (and counts the others); a clip without any is answered from audio.
"""
from __future__ import annotations

import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from service.pipeline import audio, audio_frames, fusion, media, visual, voice
from service.pipeline.budget import Budget
from service.pipeline.config import MediaLimits, PipelineConfig
from service.pipeline.face_detector import BlazeFace
from service.pipeline.timing import StageTimer


class Encoders(Protocol):
    def encode_audio(self, mfcc: np.ndarray) -> np.ndarray: ...          # [n, n_mfcc] -> [n, audio_code_dim]
    def encode_frames(self, thumbs: np.ndarray) -> np.ndarray: ...       # [n, ae_size²] -> [n, frame_code_dim]
    def image_features(self, batch: np.ndarray) -> np.ndarray: ...       # [n, s, s, 3] -> [n, 2048]
    def encode_voice(self, log_mel: np.ndarray) -> np.ndarray: ...       # [1, T, 80] -> [1, ceil(T/2), width]


@dataclass
class FaceTrack:
    """Aligned face crops of the sampled frames that show a usable face, in time order.
    Frames without one are only counted: `frames` sampled in all, `flagged` by reason
    (a face was found but is too small, turned or blurred), the rest had no face. When no
    frame shows a usable face, the turned or blurred ones are the crops (`low_quality`)."""

    crops: list[visual.FaceCrop]
    times: np.ndarray                     # seconds on the owner's clock [N]
    index: np.ndarray                     # numbers of these frames among the clip's sampled frames [N]
    latents: np.ndarray | None = None     # frame-autoencoder codes [N, code_dim], once encoded
    frames: int = 0                       # frames sampled (with a face or not)
    flagged: dict[str, int] = field(default_factory=dict)
    frame_times: np.ndarray | None = None  # times of every sampled frame (segments count from them)
    low_quality: bool = False             # the crops are flagged faces (visual.FALLBACK_REASONS)

    def __len__(self) -> int:
        return len(self.crops)

    @property
    def without_face(self) -> int:
        return self.frames - len(self.crops) - sum(self.flagged.values())

    def slice(self, start_s: float, end_s: float) -> "FaceTrack":
        keep = np.flatnonzero((self.times >= start_s) & (self.times < end_s))
        all_times = self.frame_times if self.frame_times is not None else self.times
        inside = all_times[(all_times >= start_s) & (all_times < end_s)]
        return FaceTrack([self.crops[i] for i in keep], self.times[keep] - start_s, self.index[keep],
                         None if self.latents is None else self.latents[keep], len(inside),
                         frame_times=inside - start_s, low_quality=self.low_quality)


@dataclass
class DecodedClip:
    info: media.MediaInfo
    audio: audio.AudioTrack | None        # None: no audio stream
    faces: FaceTrack

    def segment(self, start_s: float, end_s: float, cfg: PipelineConfig) -> "DecodedClip":
        """The part within [start, end), on its own clock starting at 0."""
        track = self.audio.slice(start_s, end_s, cfg) if self.audio is not None else None
        return DecodedClip(replace(self.info, duration_s=end_s - start_s), track, self.faces.slice(start_s, end_s))


@dataclass
class ClipFeatures:
    sequence: np.ndarray               # float32 [K, step_dim]
    summary_times: np.ndarray          # seconds [K], time-ordered
    face_detected: np.ndarray          # bool [K]
    audio_used: bool
    video_used: bool                   # face features are in the sequence (some frame showed a usable face)
    duration_s: float
    timings: StageTimer = field(default_factory=StageTimer)
    frames: int = 0                    # video frames sampled
    frames_with_face: int = 0          # ... of which showed a usable face
    flagged: dict[str, int] = field(default_factory=dict)  # ... faces found but not used, by reason
    face_low_quality: bool = False     # the faces used are all turned or blurred (none better was found)


def frame_rate(info: media.MediaInfo, cfg: PipelineConfig, segment_s: float | None = None) -> float:
    """Sampling rate of frames: `frame_fps`, lowered so a clip yields at most `max_frames`,
    but (for a timeline) high enough to give each segment `k_summary` frames."""
    rate = cfg.max_frames / max(info.duration_s, 1e-3)
    if segment_s:
        rate = max(rate, cfg.k_summary / segment_s)
    return min(cfg.frame_fps, rate)


def frame_sampling(info: media.MediaInfo, cfg: PipelineConfig, segment_s: float | None) -> tuple[float, int]:
    """(frames per second, most frames) of a clip: a timeline keeps every sampled frame."""
    rate = frame_rate(info, cfg, segment_s)
    cap = max(cfg.max_frames, int(math.ceil(rate * info.duration_s)) + 1) if segment_s else cfg.max_frames
    return rate, cap


class Decoder(Protocol):
    """Opens a file for one decode pass: `media.InProcess` or the service's `DecoderPool`."""
    def open(self, path: Path, limits: MediaLimits, budget: Budget | None = None) -> media.Source: ...


def warm_up_faces(cfg: PipelineConfig, detector: BlazeFace | None = None) -> None:
    """Run the face detector once before the first request needs it (ONNX Runtime's first
    run allocates). Without a detector there is nothing to warm up."""
    if detector is not None:
        visual.detect_face(np.full((120, 160), 128, np.uint8), detector, cfg)


class FaceCollector:
    """Aligned face crops of the sampled frames, each frame run through the detector as it
    arrives (memory stays bounded: one frame at a time, whatever the clip length). A live
    stream (service/live) detects each frame once as it comes and adds the detections of each
    rolling window (`add_detection`), on the window's clock."""

    def __init__(self, rate: float, duration_s: float, cfg: PipelineConfig, detector: BlazeFace | None):
        self.rate, self.duration_s, self.cfg, self.detector = rate, duration_s, cfg, detector
        self.all_times: list[float] = []
        self.found: list[tuple[float, int, visual.FaceCrop]] = []  # every detection kept (used or flagged)
        self.detect_ms = 0.0

    def add(self, frame: np.ndarray) -> None:
        t = min(len(self.all_times) / self.rate, self.duration_s)  # the fps filter's output frame i is at i / rate
        start = time.perf_counter()
        crop = visual.detect_face(frame, self.detector, self.cfg)
        self.detect_ms += (time.perf_counter() - start) * 1000.0
        self.add_detection(t, crop)

    def add_detection(self, t: float, crop: visual.FaceCrop | None) -> None:
        """A frame whose face was detected already (None: it showed none)."""
        i = len(self.all_times)
        self.all_times.append(t)
        if crop is not None:
            self.found.append((t, i, crop))

    def _steady(self, faces: list[tuple[float, int, visual.FaceCrop]], min_share: float = 0.0) -> bool:
        """A face seen in one sampled frame only (or, for `min_share`, in fewer than that share
        of them), with a middling score, is more often a pattern than a face (testsrc2's moving
        shapes score 0.5-0.6 now and then); a real face stays in view, and a still shows it in
        every frame."""
        if not faces:
            return False
        frames = len(self.all_times)
        enough = max(min(self.cfg.face_min_frames, frames), min_share * frames)
        return len(faces) >= enough or max(c.score for _, _, c in faces) >= self.cfg.face_sure_score

    def track(self) -> FaceTrack:
        used, low_quality = [f for f in self.found if f[2].detected], False
        if not self._steady(used):
            fallback = [f for f in self.found if f[2].reason in visual.FALLBACK_REASONS]
            used, low_quality = [], False
            # flagged faces stand in only when they hold the view: a zooming fractal shows a
            # middling "turned face" in 3 of 16 frames, a turned person in most of them
            if self._steady(fallback, self.cfg.face_fallback_share):
                used, low_quality = [(t, i, replace(c, detected=True)) for t, i, c in fallback], True
        kept = {i for _, i, _ in used}
        flagged: dict[str, int] = {}
        for _, i, c in self.found:
            if i not in kept:
                reason = c.reason or visual.UNSTEADY
                flagged[reason] = flagged.get(reason, 0) + 1
        return FaceTrack([c for _, _, c in used], np.asarray([t for t, _, _ in used], np.float64),
                         np.asarray([i for _, i, _ in used], np.int64), frames=len(self.all_times), flagged=flagged,
                         frame_times=np.asarray(self.all_times, np.float64), low_quality=low_quality)


SegmentChoice = float | Callable[[media.MediaInfo], float | None] | None


def decode_clip(path: Path, cfg: PipelineConfig, limits: MediaLimits, timer: StageTimer | None = None,
                budget: Budget | None = None, segment_s: SegmentChoice = None, detector: BlazeFace | None = None,
                decoder: Decoder | None = None, video: bool = True) -> DecodedClip:
    """Open the file once (the probe: refused here when out of bounds), then decode audio (to
    mel frames) and sampled frames (to aligned face crops, through `detector`) in one demux
    pass of the same open file. `segment_s`: sample frames densely enough for a timeline with
    segments of that length, or a function of the probed file that says so. A file with a
    video stream needs the detector: no face is ever guessed. `decoder`: where the decoding
    runs (the service's worker pool), in this thread by default. `video=False`: the audio alone
    (no frame is decoded, no face looked for).

    Stage timings: `probe` (the file opened and checked), `decode` (the pass), and inside it
    `face_detection`: a worker decodes the next frames while this thread detects faces."""
    timer = timer or StageTimer()
    budget = budget or Budget()
    decoder = decoder or media.InProcess()
    with timer.stage("probe"):
        source = decoder.open(path, limits, budget)
    with source:
        info = source.info
        segment = segment_s(info) if callable(segment_s) else segment_s
        if info.has_video and video and detector is None:
            raise ValueError("a video needs a face detector: the bundle's face_detector artifact "
                             "(trainer.face.detector adds one to a bundle that lacks it)")
        rate, cap = frame_sampling(info, cfg, segment)
        sampling = media.FrameSampling(rate, cap, cfg.frame_max_side) if info.has_video and video else None
        acc = audio.AudioAccumulator(cfg) if info.has_audio else None
        faces = FaceCollector(rate, info.duration_s, cfg, detector)
        with timer.stage("decode"):
            for kind, data in source.decode(cfg.sample_rate if acc is not None else None, sampling):
                if kind == "audio":
                    acc.feed(data)
                else:
                    faces.add(data)
        timer.add("face_detection", faces.detect_ms)
    track = acc.finish() if acc is not None else None
    if (track is None or track.n_samples == 0) and not faces.all_times:
        raise media.MediaError("no_usable_stream", "no audio samples or video frames could be decoded")
    return DecodedClip(info, track, faces.track())


def audio_mfcc(signal: np.ndarray, cfg: PipelineConfig) -> tuple[np.ndarray, np.ndarray]:
    """MFCC frames and their times of a whole signal; empty when missing or silent."""
    return audio.mfcc_frames(signal, cfg)


def audio_codes(mfcc: np.ndarray, cfg: PipelineConfig, encoders: Encoders, batch: int = 6000) -> np.ndarray:
    """Audio-autoencoder codes per MFCC frame, in batches (ONNX Runtime's buffers grow with
    the batch: a 10-minute track in one call would cost tens of MB)."""
    if len(mfcc) == 0:
        return np.zeros((0, cfg.audio_code_dim), np.float32)
    return np.concatenate([encoders.encode_audio(mfcc[a:a + batch]) for a in range(0, len(mfcc), batch)])


def track_codes(track: audio.AudioTrack | None, cfg: PipelineConfig,
                encoders: Encoders) -> tuple[np.ndarray, np.ndarray]:
    """Audio codes of a decoded track and their times (empty: no usable audio)."""
    codes, times, _, _ = track_codes_gated(track, cfg, encoders)
    return codes, times


def track_codes_gated(track: audio.AudioTrack | None, cfg: PipelineConfig,
                      encoders: Encoders) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Audio codes of a decoded track's frame features (`cfg.audio_features`), their times,
    the speech-active mask (`cfg.speech_gate_db`; all True when the gate is off) and the
    frame features themselves."""
    if track is None:
        feats = np.zeros((0, audio.audio_dim(cfg)), np.float32)
        return audio_codes(feats, cfg, encoders), np.zeros(0), np.zeros(0, bool), feats
    feats, times = track.frame_features(cfg)
    return audio_codes(feats, cfg, encoders), times, track.speech_active(cfg), feats


def encode_latents(faces: FaceTrack, cfg: PipelineConfig, encoders: Encoders) -> None:
    """Frame-autoencoder codes of every crop, once per clip (segments share them)."""
    if faces.latents is None and len(faces):
        faces.latents = encoders.encode_frames(visual.thumbnails(faces.crops, cfg))


def summary_indices(faces: FaceTrack, cfg: PipelineConfig) -> np.ndarray:
    """Positions in `faces` of the K summary frames (time-ordered), chosen by k-means
    among at most `max_frames` evenly spread candidates."""
    candidates = np.arange(len(faces))
    if len(candidates) > cfg.max_frames:
        candidates = candidates[np.linspace(0, len(candidates) - 1, cfg.max_frames).round().astype(np.int64)]
    chosen = visual.select_summary(faces.latents[candidates], cfg.k_summary, cfg.kmeans_seed)
    return candidates[chosen]


class CropFeatures:
    """Image features of face crops by the crop object itself, kept across clips: a live stream's
    rolling windows (service/live) share most of their faces, each computed once. `keep` forgets
    every crop not given (the ones out of the window)."""

    def __init__(self) -> None:
        self.features: dict[int, tuple[visual.FaceCrop, np.ndarray]] = {}

    def get(self, crop: visual.FaceCrop) -> np.ndarray | None:
        hit = self.features.get(id(crop))
        return hit[1] if hit is not None and hit[0] is crop else None

    def put(self, crop: visual.FaceCrop, feature: np.ndarray) -> None:
        self.features[id(crop)] = (crop, feature)

    def keep(self, crops: list[visual.FaceCrop]) -> None:
        kept = {id(c) for c in crops}
        self.features = {k: v for k, v in self.features.items() if k in kept}


class ImageFeatures:
    """ResNet-50 features of a clip's face crops by frame number, each computed once and in
    batches (the clip and its timeline segments often share summary frames; `shared` holds
    features from earlier clips, by crop)."""

    def __init__(self, faces: FaceTrack, cfg: PipelineConfig, encoders: Encoders, batch: int = 32,
                 shared: CropFeatures | None = None):
        self.crops = dict(zip(faces.index.tolist(), faces.crops))
        self.cfg, self.encoders, self.batch, self.shared = cfg, encoders, batch, shared
        self.done: dict[int, np.ndarray] = {}

    def __call__(self, frame_numbers: np.ndarray) -> np.ndarray:
        missing = sorted({int(i) for i in frame_numbers} - self.done.keys())
        if self.shared is not None:
            for i in missing:
                hit = self.shared.get(self.crops[i])
                if hit is not None:
                    self.done[i] = hit
            missing = [i for i in missing if i not in self.done]
        for a in range(0, len(missing), self.batch):
            part = missing[a:a + self.batch]
            feats = self.encoders.image_features(visual.resnet_input([self.crops[i] for i in part], self.cfg))
            self.done.update(zip(part, feats))
            if self.shared is not None:
                for i, f in zip(part, feats):
                    self.shared.put(self.crops[i], f)
        return np.stack([self.done[int(i)] for i in frame_numbers])


def assemble(cfg: PipelineConfig, codes: np.ndarray, code_times: np.ndarray, image_feats: np.ndarray | None,
             face_detected: np.ndarray, times: np.ndarray, active: np.ndarray | None = None,
             frames: np.ndarray | None = None, voice_states: np.ndarray | None = None) -> np.ndarray:
    """Fusion sequence from audio codes and the K summary faces' features (None: no video) at `times`.
    `active`: speech-active codes (None: all), for the window statistics and the utterance side input;
    `frames`: the frame features, needed when `cfg.audio_utterance_source` is "frames";
    `voice_states`: the speech encoder's pooled states (`voice.embedding`), needed when the
    config has an encoder: they follow the hand-made statistics in the utterance block."""
    stats, present = fusion.audio_window_stats(codes, code_times, times, cfg.audio_window_s, active)
    utterance = None
    if cfg.utterance_dim and len(codes):
        source = frames if cfg.audio_utterance_source == "frames" else codes
        if source is None:
            raise ValueError("audio_utterance_source='frames' needs the frame features")
        utterance = audio_frames.utterance_stats(source, active, cfg.utterance_stats)
        if cfg.voice_encoder:
            if voice_states is None or len(voice_states) != cfg.voice_utterance_dim:
                raise ValueError("the config has a speech encoder: pass its pooled states")
            utterance = np.concatenate([utterance, voice_states]).astype(np.float32)
    return fusion.build_sequence(cfg, image_feats, face_detected, stats, present, utterance)


def clip_features(clip: DecodedClip, cfg: PipelineConfig, encoders: Encoders, timer: StageTimer | None = None,
                  images: ImageFeatures | None = None) -> ClipFeatures:
    """The fusion sequence of a decoded clip (or of one segment of it: pass the clip's
    `images` so shared frames are not run through ResNet-50 twice)."""
    timer = timer or StageTimer()
    # The speech encoder runs beside the face work (ONNX Runtime releases the GIL): on two cores
    # a clip's answer waits for the longer of the two, not their sum.
    pending_voice = _VOICE_THREADS.submit(_timed_voice, clip.audio, cfg, encoders, timer) if cfg.voice_encoder else None
    try:
        with timer.stage("audio_features"):
            codes, code_times, active, frames = track_codes_gated(clip.audio, cfg, encoders)
        seq, times, detected, image_feats = _face_sequence(
            clip, cfg, encoders, timer, images, codes, code_times, active, frames, pending_voice)
    finally:
        if pending_voice is not None:
            pending_voice.cancel()
    return ClipFeatures(
        sequence=seq,
        summary_times=np.asarray(times, np.float64),
        face_detected=detected,
        audio_used=len(codes) > 0,
        video_used=image_feats is not None,
        duration_s=clip.info.duration_s,
        timings=timer,
        frames=clip.faces.frames,
        frames_with_face=len(clip.faces),
        flagged=dict(clip.faces.flagged),
        face_low_quality=clip.faces.low_quality and image_feats is not None,
    )


# Threads for the speech encoder beside a request's face work; the service's gate bounds how
# many requests (hence voices) are in flight at once.
_VOICE_THREADS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="voice")


def _timed_voice(track: audio.AudioTrack | None, cfg: PipelineConfig, encoders: Encoders,
                 timer: StageTimer) -> np.ndarray:
    with timer.stage("voice_encoder"):
        return voice.embedding(track, cfg, encoders.encode_voice)


def _face_sequence(clip: DecodedClip, cfg: PipelineConfig, encoders: Encoders, timer: StageTimer,
                   images: ImageFeatures | None, codes: np.ndarray, code_times: np.ndarray, active: np.ndarray,
                   frames: np.ndarray, pending_voice: Future | None):
    """The summary faces' features and the fusion sequence (the voice's states joined last)."""
    image_feats = None
    detected = np.zeros(cfg.k_summary, bool)
    if len(clip.faces):
        with timer.stage("summary_selection"):
            encode_latents(clip.faces, cfg, encoders)
            chosen = summary_indices(clip.faces, cfg)
        with timer.stage("image_features"):
            images = images or ImageFeatures(clip.faces, cfg, encoders)
            image_feats = images(clip.faces.index[chosen])
        times = clip.faces.times[chosen]
        detected = np.array([clip.faces.crops[i].detected for i in chosen])
    else:  # no face in any frame: the audio-only view, exactly as the classifier learned it
        times = fusion.step_times(clip.info.duration_s, cfg.k_summary)
    voice_states = pending_voice.result() if pending_voice is not None else None
    seq = assemble(cfg, codes, code_times, image_feats, detected, times, active, frames, voice_states)
    return seq, times, detected, image_feats


def extract_file(path: Path, cfg: PipelineConfig, encoders: Encoders, limits: MediaLimits | None = None,
                 timer: StageTimer | None = None, detector: BlazeFace | None = None) -> ClipFeatures:
    """Decode a media file and compute its fusion sequence: the single entry point that
    both `trainer build` (for audio-visual corpora) and `POST /predict` use. The face
    detector comes with the encoders (`EncoderSessions.face_detector`) unless given."""
    timer = timer or StageTimer()
    detector = detector or getattr(encoders, "face_detector", None)
    clip = decode_clip(path, cfg, limits or MediaLimits(), timer, detector=detector)
    return clip_features(clip, cfg, encoders, timer)
