"""Preprocessing parameters shared by trainer and service.

A bundle's manifest stores one `PipelineConfig` (under "preprocessing"); the service
rebuilds it from there, so features at serving time are computed exactly as at training
time. Limits on untrusted input (`MediaLimits`) are deployment settings, not model
parameters, and live apart from it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class PipelineConfig:
    # Audio (paper Alg. 1): 16 kHz mono, peak-normalised, 13 MFCCs per 10 ms hop.
    sample_rate: int = 16_000
    n_mfcc: int = 13
    n_fft: int = 512
    win_length: int = 400
    hop_length: int = 160
    n_mels: int = 40
    audio_code_dim: int = 32
    # The autoencoder's frame input: "mfcc" = the paper's n_mfcc MFCCs; "rich" =
    # n_mels log-mel bands + spectral shape, energy, pitch, voicing, with deltas.
    audio_features: str = "mfcc"
    # Speech-activity gate: code statistics are taken over frames within this many dB of
    # the loudest frame (mel energy, widened by 50 ms each side); 0 = every frame (paper).
    speech_gate_db: float = 0.0
    # Per-utterance statistics of the codes over speech-active frames, as a side input
    # repeated in every fusion step ("" = none): comma-separated of mean,std,p10,p50,p90.
    audio_utterance_stats: str = ""
    # What those statistics summarise: "codes" (the autoencoder's) or "frames" (the
    # frame features themselves, before the bottleneck; measured better).
    audio_utterance_source: str = "codes"
    # Window of audio codes summarised around each summary frame (seconds).
    audio_window_s: float = 1.0
    # A pretrained speech encoder's pooled hidden states beside the hand-made statistics in the
    # utterance block (service/pipeline/voice.py): "" = none; "whisper-tiny.en" = the bundle's
    # `voice_encoder` artifact, fed Whisper's 80-band log-mel (n_fft 400) of the peak-normalised
    # signal in windows of at most `voice_max_frames` frames (30 s), never padded. It returns the
    # hidden states named in `voice_layers` (0 = after the conv stem, i = after block i),
    # `voice_dim` wide each; their `voice_stats` over the speech-active states join the block.
    voice_encoder: str = ""
    voice_layers: str = ""
    voice_stats: str = "mean,std"
    voice_dim: int = 384
    voice_n_mels: int = 80
    voice_n_fft: int = 400
    voice_max_frames: int = 3000
    # Frames (paper Alg. 2): sampled at `frame_fps`, at most `max_frames` per clip (long
    # clips are sampled more sparsely), decoded with the long side at most `frame_max_side`.
    frame_fps: float = 4.0
    max_frames: int = 48
    frame_max_side: int = 360
    # Faces (design §2 step 3): BlazeFace, the bundle's `face_detector`, on each sampled
    # frame letterboxed to 128 px. Detections scoring under `face_score_threshold` are
    # dropped, overlapping ones merged (weighted NMS, IoU `face_nms_iou`); the largest is used.
    face_score_threshold: float = 0.5
    face_nms_iou: float = 0.3
    # A frame where no face is found is searched again in 2x2 overlapping tiles of this
    # fraction of its long side (the short-range model misses faces under ~1/8 of its input):
    # CREMA-D frames shrunk to half size in a frame of the same size, 0.20 -> 1.00 found.
    face_tile_fraction: float = 0.6
    # ... and when that finds none either, in the frame's mirror image, then its histogram-equalised
    # grey: held-out silent stills with no face found 9 of 792 -> 4 (RAF-DB photos the mirror finds,
    # a low-contrast FER2013 face the equalisation does); faceless test patterns stay faceless.
    face_retry: bool = True
    # Aligned crop: rotated so the eyes are level, square, side = face_crop_scale x the face
    # size (eye distance + eye-midpoint-to-mouth distance, from the keypoints), centred
    # face_crop_offset x face size below the eye midpoint. Measured on FER2013 train (592
    # faces) and CK+48 (300) by `python -m trainer.face.detector framing` (medians: FER 1.333 /
    # 0.145, CK+ 1.316 / 0.133), so a video crop is framed like the faces the backbone learns from.
    face_crop_scale: float = 1.33
    face_crop_offset: float = 0.14
    # A detected face is flagged (not used) when its box is narrower than `face_min_size`
    # pixels of the decoded frame; when it is turned: |yaw| (nose tip off the eye midpoint,
    # in eye distances) over `face_max_yaw`, or pitch (nose below the eye line, in eye-mouth
    # distances) outside [face_min_pitch, face_max_pitch] (FER2013: |yaw| 96th percentile,
    # pitch 0.5th-99.5th); or when the aligned crop is blurrier (variance of the Laplacian
    # over the variance) than `face_min_sharpness` (under FER2013's 1st percentile).
    face_min_size: int = 32
    face_max_yaw: float = 0.5
    face_min_pitch: float = 0.25
    face_max_pitch: float = 0.75
    face_min_sharpness: float = 0.05
    # A clip's faces are used when they are seen in at least `face_min_frames` sampled frames
    # (all of them, for a clip with fewer) or one scores `face_sure_score` or more: a single
    # middling detection is more often a pattern than a face (testsrc2: 0.5-0.6, one frame in
    # 8), while a real face stays in view (held-out FER2013 and RAF-DB stills: every frame).
    face_min_frames: int = 2
    face_sure_score: float = 0.7
    # Turned or blurred faces answer a clip without a usable one only when seen in at least this
    # share of its sampled frames (or one scores `face_sure_score`): the held-out stills show
    # theirs in every frame, ffmpeg's mandelbrot pattern a middling "face" in 3 of 16.
    face_fallback_share: float = 0.5
    # Frame autoencoder input: grey face thumbnails of `frame_ae_size`², scaled to [0, 1].
    frame_ae_size: int = 32
    frame_code_dim: int = 32
    # K summary frames = steps of the fusion sequence.
    k_summary: int = 8
    kmeans_seed: int = 0
    # ResNet-50 input (paper Alg. 3): grey face replicated to 3 channels, (p - mean) / std.
    image_size: int = 64
    pixel_mean: float = 127.5
    pixel_std: float = 127.5
    image_feature_dim: int = 2048

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PipelineConfig":
        known = {f.name for f in fields(cls)}
        data = {k: v for k, v in data.items() if k not in RETIRED}
        unknown = sorted(set(data) - known)
        if unknown:
            # A newer trainer wrote parameters this code does not implement: refuse
            # rather than silently compute different features.
            raise ValueError(f"unknown preprocessing parameters: {', '.join(unknown)}")
        return cls(**data)

    # --- the fusion step layout (design §2 step 5) -------------------------------------
    @property
    def flag_names(self) -> tuple[str, ...]:
        return FLAG_NAMES

    @property
    def utterance_stats(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.audio_utterance_stats.split(",") if s.strip())

    @property
    def audio_frame_dim(self) -> int:
        """Width of one frame of the autoencoder's input (13 MFCC, or 2 x (n_mels + 8) rich)."""
        return self.n_mfcc if self.audio_features == "mfcc" else 2 * (self.n_mels + 8)

    @property
    def hand_utterance_dim(self) -> int:
        """Width of the hand-made statistics at the head of the utterance block."""
        width = self.audio_frame_dim if self.audio_utterance_source == "frames" else self.audio_code_dim
        return len(self.utterance_stats) * width

    @property
    def voice_layer_list(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.voice_layers.split(",") if s.strip()) if self.voice_encoder else ()

    @property
    def voice_stat_names(self) -> tuple[str, ...]:
        return tuple(s.strip() for s in self.voice_stats.split(",") if s.strip())

    @property
    def voice_utterance_dim(self) -> int:
        """Width of the speech encoder's pooled states after the hand-made statistics (0: no encoder)."""
        return len(self.voice_layer_list) * self.voice_dim * len(self.voice_stat_names)

    @property
    def utterance_dim(self) -> int:
        return self.hand_utterance_dim + self.voice_utterance_dim

    @property
    def step_dim(self) -> int:
        return self.image_feature_dim + 2 * self.audio_code_dim + self.utterance_dim + len(FLAG_NAMES)

    def layout(self) -> dict[str, list[int]]:
        """Half-open [start, end) column ranges of each block in a fusion step. The
        "audio_utterance" block exists only when `audio_utterance_stats` names statistics."""
        img = self.image_feature_dim
        aud = self.audio_code_dim
        out = {
            "image": [0, img],
            "audio_mean": [img, img + aud],
            "audio_std": [img + aud, img + 2 * aud],
        }
        end = img + 2 * aud
        if self.utterance_dim:
            out["audio_utterance"] = [end, end + self.utterance_dim]
            end += self.utterance_dim
        out["flags"] = [end, self.step_dim]
        return out

    @property
    def flag_columns(self) -> list[int]:
        start, end = self.layout()["flags"]
        return list(range(start, end))


# Parameters of older bundles that no longer change the features; dropped when read.
RETIRED = {
    "face_margin": "margin around a Haar-cascade box; the BlazeFace crop framing is measured instead",
}

# Presence flags at the end of every fusion step: a missing modality is explicit.
FLAG_NAMES = ("audio_present", "video_present", "face_detected")


# Containers accepted from uploads: FFmpeg's demuxer name -> the usual file extensions.
# Joined by commas, the names are also the decoder's `format_whitelist` (nested demuxers inherit
# it). Video files give audio and faces; the audio-only ones are answered from the voice
# alone (`modalities.face = "missing"`). docs/http-api.md "Accepted files" lists the same table.
VIDEO_FORMATS: dict[str, tuple[str, ...]] = {
    "mov,mp4,m4a,3gp,3g2,mj2": ("mp4", "mov", "m4a"),
    "matroska,webm": ("mkv", "webm"),
    "avi": ("avi",),
    "flv": ("flv",),
}
AUDIO_FORMATS: dict[str, tuple[str, ...]] = {
    "wav": ("wav",),
    "flac": ("flac",),
    "mp3": ("mp3",),
    "ogg": ("ogg", "opus", "oga"),
}
ACCEPTED_FORMATS: tuple[str, ...] = (*VIDEO_FORMATS, *AUDIO_FORMATS)


@dataclass(frozen=True)
class MediaLimits:
    """Bounds on untrusted media, checked by the probe (`media.open_media`) before decoding. These
    defaults are the service's defaults (service/settings.py reads them from here)."""

    max_duration_s: float = 900.0
    max_width: int = 3840
    max_height: int = 2160
    max_frames: int = 200_000
    timeout_s: float = 60.0
    allowed_formats: tuple[str, ...] = ACCEPTED_FORMATS
