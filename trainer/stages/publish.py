"""Stage `publish`: the typed manifest (service/model/manifest.py), metrics.json and report.md,
then the staged bundle renamed into place (never over a bundle unless --force)."""
from __future__ import annotations

import shutil
from collections import Counter
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from service.model.manifest import AudioDomain, Calibration, FeatureLayout, FeatureMask, Fusion, Manifest, Provenance
from trainer import __version__
from trainer.data import LICENCES
from trainer.export import ExportResult
from trainer.report.writer import write_report
from trainer.stages import BuildContext, log
from trainer.stages.classifiers import Classifiers
from trainer.stages.data import Corpora
from trainer.stages.evaluation import Evaluation
from trainer.stages.faces import FaceBackbone, FaceFeatures
from trainer.stages.selection import Selection

FUSION_TRAINING = ("pseudo-pairs: each audio clip paired with one face image of the same emotion from the same "
                   "split, shown as K video-like variants (no audio-visual corpus available), plus real audio-visual "
                   "clips when present")


def _options(ctx: BuildContext) -> dict[str, Any]:
    plain = {k: v for k, v in asdict(ctx.opts).items() if k != "recipe"}
    plain.update(asdict(ctx.recipe))
    return {k: str(v) if isinstance(v, Path) else list(v) if isinstance(v, tuple) else v for k, v in plain.items()}


def _training_corpora(corpora: Corpora) -> dict[str, dict[str, Any]]:
    counts = Counter(s.corpus for s in corpora.audio["train"] + corpora.faces["train"] + corpora.videos["train"])
    return {c: {"n": n, "licence": LICENCES.get(c, "unknown")} for c, n in sorted(counts.items())}


def _pretrained(exports: dict[str, ExportResult]) -> dict[str, str]:
    """Where the pretrained weights inside the bundle came from, and their licence."""
    from trainer.voice.whisper import SOURCE
    return {"voice_encoder": SOURCE} if "voice_encoder" in exports else {}


def make_manifest(ctx: BuildContext, corpora: Corpora, exports: dict[str, ExportResult], backbone: FaceBackbone,
                  faces: FaceFeatures, selection: Selection, clfs: Classifiers, ev: Evaluation,
                  audio_domain: dict[str, Any] | None = None) -> Manifest:
    cfg = ctx.cfg
    return Manifest(
        name=ctx.opts.name, version=ctx.opts.version, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        trainer_version=__version__, label_set=ctx.opts.label_set, classes=ctx.classes,
        preprocessing=cfg.to_dict(),
        features=FeatureLayout(step_dim=cfg.step_dim, steps=cfg.k_summary, layout=cfg.layout(),
                               flags=list(cfg.flag_names)),
        mask=FeatureMask(method="izoa", selected=selection.mask.tolist(), n_selected=int(len(selection.mask)),
                         n_total=cfg.step_dim, fitness=selection.fitness, cv_error=selection.cv_error),
        artifacts={role: e.artifact() for role, e in exports.items()},
        metrics={"test": clfs.results, "face_backbone_test": backbone.test_metrics,
                 "face_backbone_test_exported": faces.exported_test_metrics, "test_by_corpus": ev.by_corpus,
                 "face_fer2013_public_test": backbone.fer_public_test, "selection": selection.comparison,
                 "paper_protocol_leaky": ev.paper_protocol, "late_fusion": clfs.late_fusion,
                 "real_av_clips": ev.real_clips, "training_corpora": _training_corpora(corpora),
                 "face_backbone": {"name": backbone.name, "learning_curve": backbone.learning_curve,
                                   "ort_ms_per_face": backbone.ort_ms_per_face},
                 **({"face_teachers": backbone.teachers} if backbone.teachers else {})},
        report_figures=ev.figures,
        calibration=Calibration.model_validate(clfs.calibration) if clfs.calibration else None,
        fusion=Fusion.model_validate(clfs.late_fusion.get("served") or {}),
        audio_domain=AudioDomain.model_validate(audio_domain) if audio_domain else None,
        provenance=Provenance(profile=ctx.opts.profile, data_dir=str(ctx.opts.data_dir),
                              samples_per_split=corpora.counts,
                              splits="speaker-independent: see trainer/data/splits.py", fusion_training=FUSION_TRAINING,
                              options=_options(ctx), build_seconds=round(time.perf_counter() - ctx.started, 1),
                              pretrained=_pretrained(exports)),
    )


def publish(ctx: BuildContext, manifest: Manifest) -> Path:
    manifest.write(ctx.staging)
    write_report(ctx.staging, manifest)
    for file in ctx.staging.iterdir():
        file.chmod(0o644)  # readable by a non-root service user (temp files start as 0600)
    out = ctx.opts.out_dir
    if out.exists():
        shutil.rmtree(out)
    ctx.staging.rename(out)
    log.info("bundle written to %s in %.0f s", out, time.perf_counter() - ctx.started)
    return out
