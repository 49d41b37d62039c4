"""Model bundles: `manifest.json` + ONNX artifacts (design §4), loaded into ONNX Runtime.

The manifest is the single source of truth between trainer and service. Loading
verifies the schema version, every artifact's sha256, and that each ONNX graph's
input/output names and shapes are the ones the manifest promises; a bundle this code
cannot honour is refused with a `BundleError`.
"""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from service.model.calibration import apply_temperature, confidence_pool, flattened, log_linear_pool, reliability
from service.model.manifest import MANIFEST_FILE as MANIFEST
from service.model.manifest import SCHEMA_VERSION, Artifact, Manifest, ManifestError
from service.pipeline.config import PipelineConfig
from service.pipeline.face_detector import BlazeFace
from service.pipeline.fusion import face_rows, modality_view, utterance_of
from service.settings import DEFAULT_PROVIDERS, missing_bundle_message

__all__ = ["SCHEMA_VERSION", "MANIFEST", "Manifest", "Bundle", "BundleError", "load_bundle", "open_session"]
# Roles the service needs; a bundle may carry more (e.g. the baselines).
REQUIRED_ROLES = ("audio_encoder", "frame_encoder", "image_features", "classifier", "face_detector")
# Served when the bundle has them (older bundles answer audio-only from the classifier).
OPTIONAL_ROLES = ("audio_head", "face_head", "audio_domain", "voice_encoder")
SERVING_ROLES = REQUIRED_ROLES + OPTIONAL_ROLES

log = logging.getLogger("service.model.bundle")


class BundleError(Exception):
    pass


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:  # the wheel comes from the `cpu` or `gpu` extra
        raise BundleError("onnxruntime is not installed: pip install '.[cpu]' (or '.[gpu]')") from exc
    return onnxruntime


def _shapes_match(declared: Sequence[Any], actual: Sequence[Any]) -> bool:
    if len(declared) != len(actual):
        return False
    # None / symbolic dims in either place are dynamic; fixed dims must agree.
    return all(d is None or not isinstance(a, int) or d == a for d, a in zip(declared, actual))


@dataclass
class Session:
    role: str
    session: Any
    input_name: str
    output_name: str

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run([self.output_name], {self.input_name: np.ascontiguousarray(x, np.float32)})[0]

    @property
    def providers(self) -> list[str]:
        return self.session.get_providers()


class EncoderSessions:
    """The learned feature stages as ONNX sessions: the `Encoders` protocol of
    service.pipeline.extract. The trainer uses it on freshly exported files."""

    def __init__(self, sessions: dict[str, Session]):
        self.sessions = sessions

    def encode_audio(self, mfcc: np.ndarray) -> np.ndarray:
        return self.sessions["audio_encoder"].run(mfcc)

    def encode_frames(self, thumbs: np.ndarray) -> np.ndarray:
        return self.sessions["frame_encoder"].run(thumbs)

    def image_features(self, batch: np.ndarray) -> np.ndarray:
        return self.sessions["image_features"].run(batch)

    def encode_voice(self, log_mel: np.ndarray) -> np.ndarray:
        return self.sessions["voice_encoder"].run(log_mel)

    # --- face detector ---------------------------------------------------
    @property
    def face_detector(self) -> BlazeFace | None:
        """BlazeFace on the `face_detector` session (two outputs: run through the ORT
        session itself); None when these sessions have none."""
        sess = self.sessions.get(FACE_DETECTOR)
        return BlazeFace(sess.session) if sess is not None else None


class Bundle(EncoderSessions):
    """A loaded bundle: its manifest, pipeline config, feature mask and ONNX sessions."""

    def __init__(self, path: Path, manifest: Manifest, sessions: dict[str, Session],
                 manifest_sha256: str | None = None, providers: Sequence[str] | None = None):
        super().__init__(sessions)
        self.path = path
        self.manifest = manifest
        # The bundle's identity: the manifest holds every artifact's sha256 (all verified at
        # load), so the hash of the manifest file names the whole bundle. Hashed once, from
        # the bytes that were parsed.
        self.manifest_sha256 = manifest_sha256 or sha256_file(path / MANIFEST)
        self.providers_requested = list(providers or DEFAULT_PROVIDERS)
        self.config = PipelineConfig.from_dict(manifest.preprocessing)
        self.classes: list[str] = list(manifest.classes)
        self.mask = np.asarray(manifest.mask.selected, dtype=np.int64)
        if self.mask.size == 0 or self.mask.max() >= self.config.step_dim:
            raise BundleError("the feature mask does not fit the fusion step layout")

    # --- classification ------------------------------------------------------------
    def calibrated(self, probs: np.ndarray, view: str) -> np.ndarray:
        """`probs` re-tempered for the served `view` (fused / audio / face) as the manifest says."""
        if self.manifest.calibration is None:
            return probs
        return apply_temperature(probs, self.manifest.calibration.temperature(view))

    def answer(self, sequence: np.ndarray, view: str, experts: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Served (calibrated) probabilities of one fusion sequence [K, step_dim] whose present
        modalities make `view`; a fused view is combined as the manifest's `fusion` says.
        `experts`: the modalities' `expert` answers when the caller has them already."""
        experts = experts or {}

        def expert(m: str) -> np.ndarray:
            return experts[m] if m in experts else self.expert(sequence, m)

        if view == "fused" and self.manifest.fusion.method == "late_weighted":
            how = self.manifest.fusion
            return log_linear_pool(expert("audio"), expert("face"), how.w_audio, how.w_face)
        return self.calibrated(self.raw_answer(sequence, view, experts), view)

    def raw_answer(self, sequence: np.ndarray, view: str, experts: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """What `answer` re-tempers for a single-model view: the modality's head for its own
        view (when the bundle has one), else the classifier on the sequence."""
        experts = experts or {}
        if view in ("audio", "face") and f"{view}_head" in self.sessions:
            return experts[view] if view in experts else self.expert(sequence, view)
        return self.classify(sequence[None])[0]

    def expert(self, sequence: np.ndarray, modality: str) -> np.ndarray:
        """One modality's own (uncalibrated) probabilities for a fusion sequence: the audio head
        on the utterance statistics (flattened by the voice's `audio_reliability`), the face head
        on each summary face (pooled by confidence), when the bundle has them; else the classifier on the sequence with the other modality
        removed (the views it was trained on)."""
        if modality == "audio" and "audio_head" in self.sessions:
            p = self.sessions["audio_head"].run(utterance_of(sequence, self.config)[None])[0]
            return flattened(p, self.audio_reliability(sequence))
        if modality == "face" and "face_head" in self.sessions:
            return confidence_pool(self.sessions["face_head"].run(face_rows(sequence, self.config)))
        return self.classify(modality_view(sequence, self.config, modality)[None])[0]

    def audio_reliability(self, sequence: np.ndarray) -> float:
        """Trust in the sequence's voice, from the distance of its utterance to the training
        voices (1 when the bundle has no domain model or the sequence no voice)."""
        if "audio_domain" not in self.sessions:
            return 1.0
        domain = self.manifest.audio_domain
        u = utterance_of(sequence, self.config)
        if domain is None or not u.any():
            return 1.0
        return reliability(float(self.sessions["audio_domain"].run(u[None])[0]), domain.inside, domain.outside)

    def classify(self, sequences: np.ndarray, role: str = "classifier") -> np.ndarray:
        """Class probabilities for fusion sequences [B, K, step_dim] (mask applied here)."""
        return self.sessions[role].run(sequences[..., self.mask])

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "name": m.name, "version": m.version, "created": m.created,
            "schema_version": m.schema_version, "classes": self.classes,
            "label_set": m.label_set, "manifest_sha256": self.manifest_sha256,
            "artifacts": {role: {"file": a.file, "sha256": a.sha256,
                                 # what ONNX Runtime actually runs the session on (after fallback)
                                 "providers": self.sessions[role].providers if role in self.sessions else []}
                          for role, a in m.artifacts.items()},
            "execution_providers": {
                "requested": self.providers_requested,
                "available": list(_ort().get_available_providers()) if self.sessions else [],
                "in_use": sorted({s.providers[0] for s in self.sessions.values()}),
            },
            "metrics": headline_metrics(m.metrics),
            "report": f"/v1/models/{m.name}/report",
        }

    def report(self) -> dict[str, Any]:
        """The whole evaluation report of the manifest (GET /v1/models/{name}/report)."""
        m = self.manifest
        return {"name": m.name, "version": m.version, "metrics": m.metrics,
                "provenance": m.provenance.model_dump(mode="json")}


_HEADLINE = ("n", "accuracy", "macro_f1", "uar")


def headline_metrics(metrics: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The served classifier's held-out figures per view (fused, audio, face, ...): n,
    accuracy, macro-F1 and UAR, without confusion matrices and per-class tables."""
    test = metrics.get("test") or {}
    served = test.get("served") or test.get("bilstm_sa") or next(iter(test.values()), {})
    return {view: {k: v for k, v in figures.items() if k in _HEADLINE and isinstance(v, (int, float))}
            for view, figures in served.items() if isinstance(figures, dict)}


def read_manifest(path: Path) -> Manifest:
    return _read_manifest(Path(path))[0]


def _read_manifest(path: Path) -> tuple[Manifest, str]:
    """The typed manifest and the sha256 of the very bytes parsed."""
    if not (path / MANIFEST).is_file():
        raise BundleError(missing_bundle_message(path))
    try:
        manifest, sha = Manifest.read(path)
    except ManifestError as exc:
        raise BundleError(str(exc)) from exc
    missing = manifest.missing_roles(REQUIRED_ROLES)
    if missing:
        raise BundleError(f"manifest lacks the artifacts {missing}")
    return manifest, sha


def available_cpus() -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup v2 CPU quota (a
    container's `cpus:` limit, which os.cpu_count() does not see)."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, int(int(quota) // int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


def session_options(threads: int | None):
    ort = _ort()
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Explicit thread counts (design §8); requests are already parallel across workers.
    opts.intra_op_num_threads = threads or available_cpus()
    opts.inter_op_num_threads = 1
    # Our ONNX calls are short and far apart, between decoding and face detection: threads that
    # spin-wait after each call would only take CPU from that work.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # No CPU memory arena: an arena keeps, for the life of the process, the largest buffers any
    # request needed (a 10-minute clip's audio frames), which a long-running service sees as
    # RSS creeping up request after request; plain malloc gives large buffers back.
    opts.enable_cpu_mem_arena = False
    return opts


def open_session(file: Path, role: str, providers: Sequence[str] | None = None, threads: int | None = None) -> Session:
    """One ONNX Runtime session on the preferred available providers (CUDA, then CPU)."""
    ort = _ort()
    available = ort.get_available_providers()
    wanted = [p for p in (providers or DEFAULT_PROVIDERS) if p in available]
    if not wanted:
        raise BundleError(f"none of the execution providers {list(providers or [])} is available ({available})")
    sess = ort.InferenceSession(str(file), sess_options=session_options(threads), providers=wanted)
    if sess.get_providers()[0] != wanted[0]:
        # e.g. onnxruntime-gpu without a usable GPU/CUDA/cuDNN: ONNX Runtime falls back quietly.
        log.warning("%s: %s is installed but could not be used; running on %s", role, wanted[0],
                    sess.get_providers()[0])
    return Session(role, sess, sess.get_inputs()[0].name, sess.get_outputs()[0].name)


# --- face detector -------------------------------------------------------
FACE_DETECTOR = "face_detector"
# One image of 128x128 per call: a second intra-op thread only adds synchronisation.
FACE_DETECTOR_THREADS = 1


def _check_extra_outputs(role: str, art: Artifact, session: Any) -> None:
    """An artifact with several outputs (the face detector) lists them all under "outputs"."""
    declared = art.outputs
    if declared is None:
        return
    actual = session.get_outputs()
    if [o.name for o in declared] != [o.name for o in actual] or not all(
            _shapes_match(o.shape, a.shape) for o, a in zip(declared, actual)):
        raise BundleError(f"artifact {role}: graph outputs differ from the manifest")


def load_bundle(path: Path, providers: Sequence[str] | None = None, threads: int | None = None,
                roles: Sequence[str] | None = None) -> Bundle:
    """Load and verify a bundle. `roles` limits which artifacts get a session (all by default)."""
    path = Path(path)
    manifest, manifest_sha256 = _read_manifest(path)
    sessions: dict[str, Session] = {}
    for role, art in manifest.artifacts.items():
        file = path / art.file
        if not file.is_file():
            raise BundleError(f"artifact {role}: {file.name} is missing")
        if sha256_file(file) != art.sha256:
            raise BundleError(f"artifact {role}: sha256 of {file.name} does not match the manifest")
        if roles is not None and role not in roles:
            continue
        sess = open_session(file, role, providers, FACE_DETECTOR_THREADS if role == FACE_DETECTOR else threads)
        _check_extra_outputs(role, art, sess.session)
        inputs, outputs = sess.session.get_inputs(), sess.session.get_outputs()
        if len(inputs) != 1 or sess.input_name != art.input.name or sess.output_name != art.output.name:
            raise BundleError(f"artifact {role}: graph inputs/outputs differ from the manifest")
        if not (_shapes_match(art.input.shape, inputs[0].shape)
                and _shapes_match(art.output.shape, outputs[0].shape)):
            raise BundleError(f"artifact {role}: graph shapes {inputs[0].shape}->{outputs[0].shape} "
                              "differ from the manifest")
        sessions[role] = sess
    return Bundle(path, manifest, sessions, manifest_sha256=manifest_sha256, providers=providers)
