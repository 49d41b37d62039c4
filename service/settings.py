"""One typed settings object: everything the service reads from `EMOTION_*` environment
variables (design §5). docs/settings.md lists the same variables with the same defaults
(tests/test_contract.py compares them)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service.pipeline.config import MediaLimits

# ONNX Runtime providers in order of preference: the one place this list is written.
DEFAULT_PROVIDERS: tuple[str, ...] = ("CUDAExecutionProvider", "CPUExecutionProvider")
# The shipped bundle, relative to the working directory (the repository root, or /app in
# the images); a source checkout also finds it beside the package, and a wheel carries it as
# the package `emotion_av_models` (setup.py).
DEFAULT_MODEL_DIR = Path("models") / "default"
_CHECKOUT_MODEL_DIR = Path(__file__).resolve().parents[1] / DEFAULT_MODEL_DIR
BUNDLE_PACKAGE = "emotion_av_models"
_LIMITS = MediaLimits()  # media-limit defaults are defined once, in the pipeline


def installed_model_dir() -> Path | None:
    """The bundle a wheel installed (`emotion_av_models/default`), if any."""
    spec = importlib.util.find_spec(BUNDLE_PACKAGE)
    for root in (spec.submodule_search_locations or []) if spec else []:
        if (Path(root) / "default" / "manifest.json").is_file():
            return Path(root) / "default"
    return None


def default_model_dir() -> Path:
    """`models/default` under the working directory, else beside a source checkout (an
    editable install run from elsewhere), else the one a wheel installed, else the relative
    path: loading then fails with a message naming EMOTION_MODEL_DIR (`missing_bundle_message`)."""
    for candidate in (Path.cwd() / DEFAULT_MODEL_DIR, _CHECKOUT_MODEL_DIR, installed_model_dir()):
        if candidate is not None and (candidate / "manifest.json").is_file():
            return candidate
    return DEFAULT_MODEL_DIR


def missing_bundle_message(model_dir: Path) -> str:
    return (f"no model bundle at {model_dir} (no manifest.json there): set EMOTION_MODEL_DIR "
            f"(or --model-dir) to a bundle directory, or start from the repository root, where "
            f"{DEFAULT_MODEL_DIR} is the shipped bundle")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMOTION_", protected_namespaces=())

    model_dir: Path = Field(default_factory=default_model_dir,
                            description="bundle directory (manifest.json + ONNX files)")
    host: str = Field("127.0.0.1", description="address to listen on")
    port: int = Field(8000, ge=0, le=65535, description="port to listen on")
    providers: Annotated[list[str], NoDecode] = Field(
        default=list(DEFAULT_PROVIDERS), min_length=1,
        description="ONNX Runtime execution providers in order of preference, comma-separated or a JSON "
                    "list (unavailable ones are skipped; /v1/models shows the ones each session uses)",
    )
    ort_threads: int = Field(0, ge=0, description="intra-op threads per ONNX session; 0 = number of CPUs")
    max_upload_mb: float = Field(100.0, gt=0, description="largest accepted upload")
    max_duration_s: float = Field(_LIMITS.max_duration_s, gt=0, description="longest accepted clip")
    max_width: int = Field(_LIMITS.max_width, gt=0)
    max_height: int = Field(_LIMITS.max_height, gt=0)
    max_frames: int = Field(_LIMITS.max_frames, gt=0, description="frame count limit declared by the container")
    decode_timeout_s: float = Field(_LIMITS.timeout_s, gt=0,
                                    description="time a decoder worker may take over one file (probe and decode)")
    decode_workers: int = Field(0, ge=0, description="decoder worker processes; 0 = max_concurrency")
    decode_threads: int = Field(1, ge=0, description="threads of each decoder worker's video decoder; 0 = one per CPU")
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
    stream_max_sessions: int = Field(4, ge=1, description="live sessions (/v1/stream) open at once; more are "
                                                           "closed with 1013")
    stream_workers: int = Field(2, ge=1, description="live updates computed at once (threads shared by all sessions)")
    stream_max_message_kb: int = Field(512, ge=16, description="largest /v1/stream message (a frame or an audio "
                                                               "chunk); larger: close 1009")
    stream_max_session_s: float = Field(1800.0, gt=0, description="longest live session (close 1008)")
    stream_idle_timeout_s: float = Field(15.0, gt=0, description="a live session without any message this long is "
                                                                 "closed (1008)")
    stream_send_timeout_s: float = Field(10.0, gt=0, description="a live client that reads no update this long is "
                                                                 "dropped")
    stream_ping_s: float = Field(20.0, gt=0, description="live sessions are pinged this often; a client that does "
                                                         "not answer within as long is dropped")
    stream_max_fps: float = Field(15.0, gt=0, description="video frames per second a live client may send; more "
                                                          "are dropped (counted)")
    stream_max_pending_frames: int = Field(16, ge=1, description="live frames waiting for face detection; beyond, "
                                                                 "the oldest are dropped (counted)")
    stream_min_update_interval_s: float = Field(0.25, gt=0, description="shortest update interval a live client "
                                                                        "may ask for")
    stream_max_window_s: float = Field(4.0, gt=0, description="longest rolling window a live client may ask for")
    log_format: Literal["json", "text"] = Field("json", description="json lines or plain text")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field("info", description="log level")
    numba_cache_seed: Path | None = Field(
        None, description="read-only directory of precompiled numba kernels copied into NUMBA_CACHE_DIR at "
                          "start (the serving path no longer uses numba; kept for images that set it)")

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

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _lower(cls, value: object) -> object:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def media_limits(self) -> MediaLimits:
        return MediaLimits(
            max_duration_s=self.max_duration_s, max_width=self.max_width, max_height=self.max_height,
            max_frames=self.max_frames, timeout_s=self.decode_timeout_s,
        )
