"""`trainer build`: corpora -> features -> models -> ONNX bundle + manifest + report, as the
list of named stages in trainer/stages/ (each testable alone, logged with its duration,
its output kept in the build cache so `--from STAGE` re-runs only what follows)."""
from __future__ import annotations

import shutil
import time
from dataclasses import asdict
from pathlib import Path

from service.model.bundle import EncoderSessions, open_session
from service.pipeline.config import PipelineConfig
from trainer.cache import FeatureCache
from trainer.data import LABEL_SETS
from trainer.face.training import TrainingPaused
from trainer.fusion.served_calibration import apply as apply_served
from trainer.recipe import BuildOptions
from trainer.stages import BuildContext, run_stage
from trainer.stages.audio import audio_encoder, audio_features
from trainer.stages.audio_domain import audio_domain
from trainer.stages.audio_head import audio_head
from trainer.stages.face_head import face_head
from trainer.stages.classifiers import classifiers
from trainer.stages.cross_corpus import cross_corpus, with_cross_corpus
from trainer.stages.data import prepare_data
from trainer.stages.evaluation import evaluation
from trainer.stages.faces import face_backbone, face_detector, face_features
from trainer.stages.fusion import pairs
from trainer.stages.publish import make_manifest, publish
from trainer.stages.selection import feature_selection
from trainer.stages.served import served_calibration
from trainer.stages.voice import require_voice_encoder, voice_encoder

IMAGE_FEATURE_DIM = {"face_resnet": 256, "resnet50": 2048}


def pipeline_config(opts: BuildOptions) -> PipelineConfig:
    """The preprocessing a build uses; written to the manifest for the service."""
    r = opts.recipe
    return PipelineConfig(image_size=r.image_size, k_summary=r.k_summary, audio_code_dim=r.audio_code_dim,
                          image_feature_dim=IMAGE_FEATURE_DIM[r.backbone], audio_features=r.audio_features,
                          n_mels=r.n_mels, speech_gate_db=r.speech_gate_db,
                          audio_utterance_stats=r.audio_utterance_stats,
                          audio_utterance_source=r.audio_utterance_source,
                          voice_encoder="" if r.voice_encoder in ("", "none") else r.voice_encoder,
                          voice_layers="" if r.voice_encoder in ("", "none") else r.voice_layers)


def check_output(opts: BuildOptions) -> None:
    """Refuse to replace an existing bundle (e.g. the tracked models/default) unless --force."""
    if opts.out_dir.exists() and any(opts.out_dir.iterdir()) and not opts.force:
        raise SystemExit(f"{opts.out_dir} already holds a bundle: choose another --out, or pass --force to replace it")


def build(opts: BuildOptions) -> Path:
    check_output(opts)
    staging = opts.out_dir.parent / f".{opts.out_dir.name}.building"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    ctx = BuildContext(opts, pipeline_config(opts), list(LABEL_SETS[opts.label_set]), FeatureCache(opts.cache_dir),
                       staging, time.perf_counter())
    if ctx.cfg.voice_encoder:
        require_voice_encoder(ctx.cfg)
    try:
        return _stages(ctx)
    except TrainingPaused as paused:
        raise SystemExit(str(paused)) from None


def _stages(ctx: BuildContext) -> Path:
    def sessions(*exports) -> EncoderSessions:
        return EncoderSessions({e.path.stem: open_session(e.path, e.path.stem) for e in exports})

    corpora = run_stage(ctx, "data", prepare_data)
    audio = run_stage(ctx, "audio_features", audio_features, corpora)
    audio_enc = run_stage(ctx, "audio_encoder", audio_encoder, audio)
    backbone = run_stage(ctx, "face_backbone", face_backbone, corpora)
    detector = run_stage(ctx, "face_detector", face_detector)
    faces = run_stage(ctx, "face_features", face_features, corpora, backbone,
                      lambda frame_enc: sessions(audio_enc.export, backbone.export, frame_enc))
    # The served encoder (only the layers the voice pools): the cached features hold every layer,
    # so a build choosing other layers re-runs from here without touching the face stages.
    voice = run_stage(ctx, "voice_encoder", voice_encoder)
    encoders = sessions(audio_enc.export, backbone.export, faces.frame_encoder, detector.export,
                        *([voice.export] if voice.export else []))
    fused = run_stage(ctx, "pairs", pairs, corpora, audio, faces, encoders)
    head = run_stage(ctx, "audio_head", audio_head, corpora, audio)
    domain = run_stage(ctx, "audio_domain", audio_domain, corpora, audio, head)
    fhead = run_stage(ctx, "face_head", face_head, backbone, faces)
    selection = run_stage(ctx, "feature_selection", feature_selection, fused)
    clfs = run_stage(ctx, "classifiers", classifiers, fused, selection, head, fhead)
    ev = run_stage(ctx, "evaluation", evaluation, corpora, audio, faces, fused, selection, clfs, encoders)
    exports = {"audio_encoder": audio_enc.export, "image_features": backbone.export,
               "frame_encoder": faces.frame_encoder, "face_detector": detector.export, **clfs.exports}
    if domain.export is not None:
        exports["audio_domain"] = domain.export
    if voice.export is not None:
        exports["voice_encoder"] = voice.export
    manifest = make_manifest(ctx, corpora, exports, backbone, faces, selection, clfs, ev, domain.thresholds)
    served = run_stage(ctx, "served_calibration", served_calibration, manifest)
    if served.calibration:
        manifest = apply_served(manifest, asdict(served))
    manifest = with_cross_corpus(manifest, run_stage(ctx, "cross_corpus", cross_corpus))
    return run_stage(ctx, "publish", publish, manifest)
