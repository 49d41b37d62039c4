"""The bundle manifest (design §4) as one typed, versioned model: the contract between the
trainer (which fills and writes it) and the service (which loads, verifies and serves it).

The trainer imports this module, never the reverse. Everything that reads a manifest
(`service.model.bundle`, `/v1/models`, the trainer's report, the tests) reads fields of
`Manifest`, so a renamed or missing key fails at load with a clear message instead of
as a KeyError deep in a request.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

SCHEMA_VERSION = 1
MANIFEST_FILE = "manifest.json"


class ManifestError(ValueError):
    """A manifest that cannot be read or does not follow this schema."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class TensorSpec(_Model):
    name: str
    shape: list[int | None]            # None: a dynamic axis


class Artifact(_Model):
    """One ONNX file of the bundle."""

    file: str
    sha256: str
    bytes: int
    input: TensorSpec
    output: TensorSpec
    outputs: list[TensorSpec] | None = None    # every output, for graphs with several (the face detector)
    parity_max_abs_diff: float | None = None   # Keras vs ONNX Runtime at export (None: not exported by us)
    fp16_weights: bool = False
    licence: str | None = None                 # for artifacts that come from elsewhere (e.g. a detector)
    source: dict[str, Any] | str | None = None


class FeatureLayout(_Model):
    step_dim: int
    steps: int
    layout: dict[str, list[int]]               # block -> half-open [start, end) columns
    flags: list[str]


class FeatureMask(_Model):
    method: str
    selected: list[int]
    n_selected: int
    n_total: int
    fitness: float
    cv_error: float


class ViewCalibration(_Model):
    temperature: float
    n_validation: int = 0
    n_test: int | None = None
    ece_before: float | None = None
    ece_after: float | None = None
    nll_before: float | None = None
    nll_after: float | None = None


class Calibration(_Model):
    """Temperature per served view (fused, audio, face), fitted on validation speakers."""

    method: Literal["temperature"] = "temperature"
    fitted_on: str = "validation speakers"
    views: dict[str, ViewCalibration] = Field(default_factory=dict)

    def temperature(self, view: str) -> float:
        entry = self.views.get(view)
        return entry.temperature if entry else 1.0


class Fusion(_Model):
    """How the served answer combines audio and face when both are present: "sequence" (the
    classifier on the fused sequence, then the fused temperature) or "late_weighted" (the
    classifier's audio-only and face-only answers pooled, p ∝ p_audio^w_audio · p_face^w_face).
    The trainer picks the one more accurate on validation speakers."""

    method: Literal["sequence", "late_weighted"] = "sequence"
    w_audio: float = 1.0
    w_face: float = 1.0
    chosen_by: str | None = None


class AudioDomain(_Model):
    """Thresholds on the `audio_domain` graph's distance (trainer/voice/domain.py): up to
    `inside` a voice is trusted as the audio head answers, from `outside` on hardly at all."""

    inside: float
    outside: float
    fitted_on: str = "training utterances; thresholds from validation speakers"
    n_train: int = 0
    n_validation: int = 0
    # Mean and standard deviation of the training utterances (the audio head's input), per
    # column: what a batch's voices are mapped onto when the caller adapts the voice's
    # normalisation to them (service/model/voice_adaptation.py). Empty in older bundles.
    train_mean: list[float] = Field(default_factory=list)
    train_std: list[float] = Field(default_factory=list)


class Provenance(_Model):
    model_config = ConfigDict(extra="allow")
    profile: str
    data_dir: str
    samples_per_split: dict[str, dict[str, int]]
    splits: str
    fusion_training: str
    options: dict[str, Any] = Field(default_factory=dict)
    build_seconds: float | None = None
    # Pretrained weights in the bundle, by artifact role: where they came from and their licence.
    pretrained: dict[str, str] = Field(default_factory=dict)


class Manifest(_Model):
    schema_version: Literal[1] = SCHEMA_VERSION
    name: str
    version: str
    created: str
    trainer_version: str
    label_set: str
    classes: list[str]
    preprocessing: dict[str, Any]              # service.pipeline.config.PipelineConfig.to_dict()
    features: FeatureLayout
    mask: FeatureMask
    artifacts: dict[str, Artifact]
    metrics: dict[str, Any] = Field(default_factory=dict)
    report_figures: list[str] = Field(default_factory=list)
    provenance: Provenance
    calibration: Calibration | None = None      # absent: probabilities served as the classifier gives them
    fusion: Fusion = Field(default_factory=Fusion)  # absent: the classifier on the fused sequence
    audio_domain: AudioDomain | None = None     # absent: every voice is trusted as the head answers

    # --- files -------------------------------------------------------------------------
    @classmethod
    def read(cls, bundle_dir: Path) -> tuple["Manifest", str]:
        """The manifest of `bundle_dir` and the sha256 of the very bytes parsed."""
        file = Path(bundle_dir) / MANIFEST_FILE
        if not file.is_file():
            raise ManifestError(f"no {MANIFEST_FILE} in {bundle_dir}")
        raw = file.read_bytes()
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"{file} is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("schema_version") != SCHEMA_VERSION:
            got = data.get("schema_version") if isinstance(data, dict) else None
            raise ManifestError(f"manifest schema {got!r} is not supported (this service reads schema {SCHEMA_VERSION})")
        try:
            return cls.model_validate(data), hashlib.sha256(raw).hexdigest()
        except ValidationError as exc:
            raise ManifestError(f"{file} does not follow manifest schema {SCHEMA_VERSION}: {exc}") from exc

    def write(self, bundle_dir: Path) -> Path:
        """Write atomically (a reader never sees half a manifest)."""
        bundle_dir = Path(bundle_dir)
        fd, tmp = tempfile.mkstemp(prefix=".manifest.", suffix=".tmp", dir=bundle_dir)
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(self.model_dump(mode="json", exclude_none=True), indent=2) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, bundle_dir / MANIFEST_FILE)
        return bundle_dir / MANIFEST_FILE

    # --- what readers ask ------------------------------------------------------------------
    def missing_roles(self, required: tuple[str, ...]) -> list[str]:
        return [r for r in required if r not in self.artifacts]
