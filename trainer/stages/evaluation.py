"""Stage `evaluation`: per-corpus breakdown of the test split, the paper's (leaky) protocol
for comparison, and the report figures."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trainer.fusion.pairs import FacePool
from trainer.report.metrics import metrics
from trainer.report.plots import confusion_figure, reliability_figure, roc_figure
from trainer.stages import SPLITS, BuildContext
from trainer.stages.audio import AudioFeatures
from trainer.stages.classifiers import CLASSIFIERS, Classifiers, fit_classifier
from trainer.stages.data import Corpora
from trainer.stages.faces import FaceFeatures
from trainer.stages.fusion import Pairs
from trainer.stages.selection import Selection


@dataclass
class Evaluation:
    by_corpus: dict[str, Any]
    paper_protocol: dict[str, Any]
    figures: list[str] = field(default_factory=list)
    real_clips: list[dict[str, Any]] = field(default_factory=list)  # the served answer per real AV clip


def corpus_breakdown(test: dict[str, np.ndarray], scored: dict[str, dict[str, np.ndarray]],
                     classes: list[str]) -> dict[str, dict[str, Any]]:
    """Metrics per audio corpus (e.g. RAVDESS held-out actors alone) and view, when the test
    split mixes several corpora."""
    corpus = np.array([str(g).split(":", 1)[0] for g in test["group"]])
    out: dict[str, dict[str, Any]] = {}
    if len(set(corpus)) < 2:
        return out
    for c in sorted(set(corpus)):
        for view, s in scored.items():
            if view in ("fused", "audio", "face"):
                sel = corpus[test["view"] == view] == c
                out.setdefault(c, {})[view] = metrics(s["y"][sel], s["p"][sel], classes)
    return out


def _reliability_panels(clfs: Classifiers) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per served view: (y, the expert's raw answer, the served answer). The raw answer of a
    late-weighted fused view is the plain product of the experts (before its fitted weights)."""
    served, scored = clfs.scored.get("served") or {}, clfs.scored
    raw = {v: s for v, s in (scored.get("bilstm_sa") or {}).items() if v in ("fused", "face", "audio")}
    raw.update(scored.get("audio_head") or {})
    raw.update(scored.get("face_head") or {})
    if (clfs.late_fusion.get("served") or {}).get("method") == "late_weighted":
        raw["fused"] = scored["late_product"]["fused"]
    return {v: (raw[v]["y"], raw[v]["p"], served[v]["p"]) for v in ("fused", "audio", "face") if v in served and v in raw}


def write_figures(stage: Path, clfs: Classifiers, classes: list[str]) -> list[str]:
    """Confusion matrices (every view) and fused ROC curves of every model, as PNG files."""
    files = []
    for name, views in clfs.scored.items():
        if name not in CLASSIFIERS:  # the late-fusion references: table rows only
            continue
        confusion = stage / f"confusion_{name}.png"
        confusion_figure(confusion, f"{name}: test split", {v: clfs.results[name][v]["confusion"] for v in views},
                         classes)
        files.append(confusion.name)
        if "fused" in views:
            roc = stage / f"roc_{name}_fused.png"
            roc_figure(roc, f"{name}, fused, test split: one-vs-rest ROC", views["fused"]["y"], views["fused"]["p"],
                       classes)
            files.append(roc.name)
    panels = _reliability_panels(clfs)
    if panels:
        reliability = stage / "reliability_served.png"
        reliability_figure(reliability, "served answers, test split: before / after calibration", panels)
        files.append(reliability.name)
    return files


def _paper_protocol(ctx: BuildContext, corpora: Corpora, audio: AudioFeatures, faces: FaceFeatures,
                    selection: Selection, encoders) -> dict[str, Any]:
    from trainer.report.paper_protocol import paper_protocol

    r, mask, layout = ctx.recipe, selection.mask, ctx.cfg.layout()

    def fit_leaky(name: str, train: dict[str, np.ndarray], n_classes: int):
        held = np.random.default_rng(r.seed).random(len(train["y"])) < 0.1  # early-stopping part
        model = fit_classifier(name, {k: v[~held] for k, v in train.items()}, {k: v[held] for k, v in train.items()},
                               mask, layout, n_classes, r)
        return lambda X: model.predict(X[..., mask], batch_size=256, verbose=0)

    return paper_protocol(
        ctx.cfg, encoders, [m for k in SPLITS for m in audio.frames[k]],
        np.concatenate([corpora.labels(corpora.audio[k], ctx) for k in SPLITS]),
        FacePool(np.concatenate([faces.features[k] for k in SPLITS]), np.concatenate([faces.labels[k] for k in SPLITS])),
        ctx.classes, fit_leaky, CLASSIFIERS, draws=r.pair_draws, dropout=r.modality_dropout, seed=r.seed)


def evaluation(ctx: BuildContext, corpora: Corpora, audio: AudioFeatures, faces: FaceFeatures, pairs: Pairs,
               selection: Selection, clfs: Classifiers, encoders) -> Evaluation:
    te = pairs.data["test"]
    by_corpus = {name: corpus_breakdown(te, clfs.scored[name], ctx.classes) for name in clfs.scored}
    paper = {}
    if ctx.opts.label_set == "basic7" and ctx.opts.paper_protocol:
        paper = _paper_protocol(ctx, corpora, audio, faces, selection, encoders)
    return Evaluation(by_corpus, paper, write_figures(ctx.staging, clfs, ctx.classes),
                      real_clips(corpora, clfs, ctx.classes))


def real_clips(corpora: Corpora, clfs: Classifiers, classes: list[str]) -> list[dict[str, Any]]:
    """Each real audio-visual test clip (CREMA-D) with the served answer: what a user would get."""
    served = (clfs.scored.get("served") or {}).get("real_av")
    if served is None:
        return []
    return [{"clip": s.path.name, "true": classes[int(y)], "predicted": classes[int(p.argmax())],
             "p_predicted": float(p.max()), "p_true": float(p[int(y)])}
            for s, y, p in zip(corpora.videos["test"], served["y"], served["p"])]
