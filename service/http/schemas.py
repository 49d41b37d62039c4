"""The HTTP contract as pydantic models: every route's 200 body and the one error body
(design §5). They are what /openapi.json publishes; tests/test_contract.py checks running
responses against it with schemathesis.

Fields that later issues add go here as optional fields (default None), so older clients
and bundles keep working: e.g. `probabilities_by_modality`.
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from service.http.error_codes import ERRORS

ErrorCode = Literal[tuple(ERRORS)]  # type: ignore[valid-type]

Probabilities = dict[str, float]
_PROBS = "class name -> probability, over the bundle's classes (GET /v1/models), summing to 1"


class ErrorBody(BaseModel):
    code: ErrorCode = Field(description="machine-readable reason (docs/http-api.md, \"Errors\")")
    message: str = Field(description="for people; never a trace or a server path")
    request_id: str = Field(description="the X-Request-ID of the request, also in every log line")


class ErrorResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"example": {"error": {
        "code": "unsupported_container", "message": "container 'png_pipe' is not accepted",
        "request_id": "3f2a9c0d4b1e4f7a8c6d5e4f3a2b1c0d"}}})

    error: ErrorBody


class Modalities(BaseModel):
    audio: Literal["used", "out_of_domain", "silent", "missing"] = Field(
        description="used; out_of_domain: used, but the voice is unlike those the model was trained on, so its "
                    "answer was flattened by `reliability.audio` and the face (if any) weighs more; silent: an "
                    "audio stream without signal; missing: no audio stream")
    face: Literal["detected", "low_quality", "not_found", "missing"] = Field(
        description="detected; low_quality: used, but every face found was turned away or blurred (no frame "
                    "showed a better one), so the face's answer is less sure than for a frontal, sharp face; "
                    "not_found: no sampled frame showed a face, and the clip was answered from its audio alone; "
                    "missing: no video stream (e.g. an audio file)")


class Reliability(BaseModel):
    audio: float | None = Field(
        None, ge=0, le=1, description="trust in the voice: 1 for a voice like the training corpora's, down to 0.1 "
                                      "for one far from them (its probabilities are raised to this power before "
                                      "they are served or fused); null without a voice")


class SummaryFrame(BaseModel):
    t: float = Field(ge=0, description="seconds from the start of the clip")
    face_detected: bool


class ModelRef(BaseModel):
    name: str
    version: str


class TimelineSegment(BaseModel):
    start_s: float = Field(ge=0)
    end_s: float = Field(ge=0)
    label: str
    probabilities: Probabilities = Field(description=_PROBS)


class ModalityProbabilities(BaseModel):
    """Each modality's own (calibrated) probabilities beside the fused ones; null where the
    modality is absent from the clip or the bundle has no view for it."""

    audio: Probabilities | None = None
    face: Probabilities | None = None


class VoiceAdaptationInfo(BaseModel):
    n_clips: int = Field(description="recordings with a voice whose statistics the voice was adapted to")
    method: str
    source: str = Field(description="what the batch was (e.g. the CLI's inputs)")


class Adaptation(BaseModel):
    voice: VoiceAdaptationInfo | None = None


class PredictResponse(BaseModel):
    label: str = Field(description="the most probable class")
    probabilities: Probabilities = Field(description=_PROBS)
    modalities: Modalities
    reliability: Reliability = Field(default_factory=Reliability)
    summary_frames: list[SummaryFrame] = Field(description="the K summary frames, in time order (empty: no video)")
    duration_s: float = Field(ge=0)
    model: ModelRef
    timeline: list[TimelineSegment] | None = Field(
        None, description="per-segment probabilities: clips longer than EMOTION_TIMELINE_AFTER_S or ?timeline=true")
    probabilities_by_modality: ModalityProbabilities | None = Field(
        None, description="each present modality's own calibrated probabilities: audio from the bundle's audio head "
                          "(else the classifier without the face), face from its face head (else the classifier "
                          "without the audio); "
                          "null for a modality the clip does not have")
    adaptation: Adaptation | None = Field(
        None, description="set when the answer was made with the voice adapted to a batch of recordings "
                          "(emotion-av predict --adapt-voice); never by POST /predict")
    timings_ms: dict[str, float] = Field(description="wall time per stage in ms (stages overlap)")


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    status: Literal["ready"]
    model: str


class ArtifactInfo(BaseModel):
    file: str
    sha256: str
    providers: list[str] = Field(description="what ONNX Runtime runs this session on (empty: verified, not opened)")


class ExecutionProviders(BaseModel):
    requested: list[str]
    available: list[str]
    in_use: list[str]


class ModelSummary(BaseModel):
    name: str
    version: str
    created: str | None = None
    schema_version: int
    classes: list[str]
    label_set: str | None = None
    manifest_sha256: str = Field(description="sha256 of manifest.json: names the whole bundle")
    artifacts: dict[str, ArtifactInfo]
    execution_providers: ExecutionProviders
    metrics: dict[str, dict[str, float]] = Field(
        description="headline held-out figures of the served classifier per view (n, accuracy, macro_f1, uar)")
    report: str = Field(description="path of the full evaluation report")


class ModelsResponse(BaseModel):
    models: list[ModelSummary]


class ModelReport(BaseModel):
    name: str
    version: str
    metrics: dict[str, Any] = Field(description="the bundle's whole evaluation (manifest `metrics`)")
    provenance: dict[str, Any] = Field(default_factory=dict)
