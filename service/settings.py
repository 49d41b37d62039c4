"""One typed settings object, read from `EMOTION_*` environment variables (design §5)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .pipeline.config import MediaLimits

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[1] / "models" / "default"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMOTION_", protected_namespaces=())

    model_dir: Path = Field(DEFAULT_MODEL_DIR, description="bundle directory (manifest.json + ONNX files)")
    host: str = "127.0.0.1"
    port: int = 8000
    providers: Annotated[list[str], NoDecode] = Field(
        default=["CUDAExecutionProvider", "CPUExecutionProvider"], min_length=1,
        description="ONNX Runtime execution providers in order of preference, comma-separated or a JSON "
                    "list (unavailable ones are skipped; /v1/models shows the ones each session uses)",
    )
    ort_threads: int = Field(0, ge=0, description="intra-op threads per ONNX session; 0 = number of CPUs")
    max_upload_mb: float = Field(100.0, gt=0, description="largest accepted upload")
    max_duration_s: float = Field(900.0, gt=0, description="longest accepted clip")
    max_width: int = Field(3840, gt=0)
    max_height: int = Field(2160, gt=0)
    max_frames: int = Field(200_000, gt=0, description="frame count limit declared by the container")
    decode_timeout_s: float = Field(60.0, gt=0, description="timeout of each ffprobe/ffmpeg child")
    request_timeout_s: float = Field(120.0, gt=0, description="processing budget of one request -> 504")
    max_concurrency: int = Field(2, ge=1, description="requests processed at once")
    max_queue: int = Field(8, ge=0, description="requests waiting beyond those; more get 503")
    timeline_after_s: float = Field(30.0, gt=0, description="clips longer than this get a timeline by default")
    segment_s: float = Field(10.0, gt=0, description="default timeline segment length")
    upload_timeout_s: float = Field(60.0, gt=0, description="time allowed to receive an upload -> 408")
    tmp_dir: Path | None = Field(None, description="where uploads are spooled (default: the system temp dir)")
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="comma-separated keys accepted for /predict in X-API-Key or Authorization: Bearer (empty: open)")
    log_format: str = Field("json", pattern="^(json|text)$", description="json lines or plain text")

    numba_cache_seed: Path | None = Field(
        None, description="read-only directory of precompiled numba kernels (the image's, made at build) "
                          "copied into NUMBA_CACHE_DIR at start: no JIT compilation on a read-only root")

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [p.strip() for p in text.split(",") if p.strip()]
        return value

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return [k.strip() for k in value.split(",") if k.strip()]
        return value

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def media_limits(self) -> MediaLimits:
        return MediaLimits(
            max_duration_s=self.max_duration_s, max_width=self.max_width, max_height=self.max_height,
            max_frames=self.max_frames, timeout_s=self.decode_timeout_s,
        )
