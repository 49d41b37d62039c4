"""Stage `classifiers`: the proposed Bi-LSTM with self-attention and the Bi-LSTM / CNN
baselines on the same masked step features, behind the shared input stage, each exported
to ONNX and scored on the test split through the exported graph (what ships is measured)."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from service.model.bundle import open_session
from service.model.calibration import apply_temperature, confidence_pool, log_linear_pool
from service.pipeline.fusion import face_rows, modality_view, utterance_of
from trainer.data.splits import SHARED_SPEAKER_CORPORA
from trainer.export import ExportResult, export_onnx
from trainer.models.fitting import class_weights, epoch_log
from trainer.recipe import Recipe
from trainer.report.metrics import metrics
from trainer.stages import BuildContext, stage_output
from trainer.stages.audio_head import AudioHead
from trainer.stages.face_head import FaceHead, face_head_view
from trainer.stages.fusion import Pairs
from trainer.stages.selection import Selection

log = logging.getLogger("trainer")
CLASSIFIERS = ("bilstm_sa", "bilstm", "cnn")          # the proposed model, then the baselines
ROLE_OF = {"bilstm_sa": "classifier", "bilstm": "baseline_bilstm", "cnn": "baseline_cnn"}
VIEWS = ("fused", "audio", "face")


def classifier_with_input_stage(builder, x: np.ndarray, n_image: int, n_classes: int,
                                utterance: tuple[int, int] | None = None):
    """A sequence classifier (bilstm_sa / bilstm / cnn builder) behind the shared input stage
    (standardisation fitted on `x`, input noise, image and utterance projections), compiled."""
    import keras

    from trainer.models.bilstm_sa import compile_classifier
    from trainer.models.input_stage import input_stage

    inp, stage = input_stage(x, n_image, utterance)
    core = builder(x.shape[1], stage.shape[-1], n_classes)
    return compile_classifier(keras.Model(inp, core(stage), name=core.name))


def masked_blocks(mask: np.ndarray, layout: dict[str, list[int]]) -> tuple[int, tuple[int, int] | None]:
    """After the mask (which keeps the step layout's order): how many image columns come
    first, and where the utterance block sits (None when the layout has none)."""
    n_image = int(np.count_nonzero(mask < layout["image"][1]))
    if "audio_utterance" not in layout:
        return n_image, None
    inside = np.flatnonzero((mask >= layout["audio_utterance"][0]) & (mask < layout["audio_utterance"][1]))
    return n_image, (int(inside[0]), int(inside[-1]) + 1) if len(inside) else None


def fit_classifier(name: str, tr: dict[str, np.ndarray], va: dict[str, np.ndarray] | None, mask: np.ndarray,
                   layout: dict[str, list[int]], n_classes: int, recipe: Recipe):
    """One sequence classifier on masked step features; early stopping on `va` when given."""
    import keras

    from trainer.models import build_bilstm, build_bilstm_sa, build_cnn

    builders = {"bilstm_sa": build_bilstm_sa, "bilstm": build_bilstm, "cnn": build_cnn}
    keras.utils.set_random_seed(recipe.seed)
    n_image, utterance = masked_blocks(mask, layout)
    x = tr["X"][..., mask]  # a copy (fancy indexing), taken once
    model = classifier_with_input_stage(builders[name], x, n_image, n_classes, utterance)
    has_val = va is not None and len(va["y"]) > 0
    stop = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=recipe.early_stopping_patience,
                                          restore_best_weights=True)] if has_val else []
    model.fit(x, tr["y"], epochs=recipe.clf_epochs, batch_size=recipe.batch_size,
              validation_data=(va["X"][..., mask], va["y"]) if has_val else None,
              callbacks=[epoch_log(name)] + stop, shuffle=True, verbose=0,
              class_weight=class_weights(tr["y"], n_classes))
    return model


@stage_output
@dataclass
class Classifiers:
    exports: dict[str, ExportResult]                        # role -> exported file
    scored: dict[str, dict[str, dict[str, np.ndarray]]]     # model -> view -> {"y", "p"} on the test split
    results: dict[str, dict[str, Any]]                      # model -> view -> metrics
    calibration: dict[str, Any]                             # the served model's temperature per view
    late_fusion: dict[str, Any] = field(default_factory=dict)  # the late-fusion references' fitted weights


def _by_view(sess, data: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {view: (data["y"][data["view"] == view], sess.run(data["X"][data["view"] == view][..., mask]))
            for view in VIEWS if (data["view"] == view).any()}


def audio_head_view(head, data: dict[str, np.ndarray], cfg) -> tuple[np.ndarray, np.ndarray]:
    """The audio head's answers on the audio-only rows of `data` (the rows the classifier's
    audio view scores, in the same order)."""
    rows = data["view"] == "audio"
    u = np.stack([utterance_of(x, cfg) for x in data["X"][rows]]) if rows.any() else np.zeros((0, cfg.utterance_dim))
    return data["y"][rows], head.run(u.astype(np.float32))


def speaker_disjoint(data: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The rows of a split whose speakers are in no other split: what temperatures and fusion
    weights are fitted on (TESS's two voices are on every side; its rows would teach them a
    speaker the test split never has)."""
    keep = np.array([str(g).split(":", 1)[0] not in SHARED_SPEAKER_CORPORA for g in data["group"]], bool)
    return {k: v[keep] for k, v in data.items()}


def served_answers(views: dict[str, tuple[np.ndarray, np.ndarray]], calibration: dict[str, Any],
                   fusion: dict[str, Any]) -> dict[str, dict[str, np.ndarray]]:
    """What the service answers for each view (service.model.bundle.Bundle.answer), from the experts'
    raw answers: calibrated single modalities, and the fused view as `fusion` says."""
    temps = {v: c["temperature"] for v, c in (calibration.get("views") or {}).items()}
    out = {v: {"y": y, "p": apply_temperature(p, temps.get(v, 1.0))} for v, (y, p) in views.items()}
    if fusion.get("method") == "late_weighted":
        (y, pa), (_, pf) = views["audio"], views["face"]
        out["fused"] = {"y": y, "p": log_linear_pool(pa, pf, fusion["w_audio"], fusion["w_face"])}
    return out


def _served_real(real: dict[str, np.ndarray], sess, heads: dict[str, Any], mask: np.ndarray, cfg,
                 calibration: dict[str, Any], fusion: dict[str, Any]) -> dict[str, np.ndarray]:
    """The served answers on real audio-visual clips (both modalities present)."""
    X = real["X"]
    if fusion.get("method") != "late_weighted":
        t = (calibration.get("views") or {}).get("fused", {}).get("temperature", 1.0)
        return {"y": real["y"], "p": apply_temperature(sess.run(X[..., mask]), t)}
    face = (np.stack([confidence_pool(heads["face"].run(face_rows(x, cfg))) for x in X]) if "face" in heads
            else sess.run(np.stack([modality_view(x, cfg, "face") for x in X])[..., mask]))
    audio = (heads["audio"].run(np.stack([utterance_of(x, cfg) for x in X])) if "audio" in heads
             else sess.run(np.stack([modality_view(x, cfg, "audio") for x in X])[..., mask]))
    return {"y": real["y"], "p": log_linear_pool(audio, face, fusion["w_audio"], fusion["w_face"])}


def classifiers(ctx: BuildContext, pairs: Pairs, selection: Selection, head: AudioHead,
                fhead: FaceHead | None = None) -> Classifiers:
    from trainer.fusion.calibrate import calibrate_views
    from trainer.fusion.late import late_fusion

    mask, te, cfg = selection.mask, pairs.data["test"], ctx.cfg
    va = speaker_disjoint(pairs.data["val"])
    layout = cfg.layout()
    exports, scored, results, calibration, late = {}, {}, {}, {}, {}
    heads = {m: open_session(h.export.path, f"{m}_head") for m, h in (("audio", head), ("face", fhead))
             if h is not None and h.export is not None}
    head_views = {"audio": audio_head_view, "face": face_head_view}
    head_test = {}
    for m, h in heads.items():  # the modalities' own experts, where the bundle has them
        exports[f"{m}_head"] = (head if m == "audio" else fhead).export
        head_test[m] = head_views[m](h, te, cfg)
        scored[f"{m}_head"] = {m: dict(zip(("y", "p"), head_test[m]))}
    for name in CLASSIFIERS:
        model = fit_classifier(name, pairs.data["train"], pairs.data["val"], mask, layout, len(ctx.classes),
                               ctx.recipe)
        role = ROLE_OF[name]
        exports[role] = export_onnx(model, ctx.staging / f"{role}.onnx", sample_inputs=pairs.data["train"]["X"][:8, :, mask],
                                    input_name="sequence", output_name="probabilities", dynamic_axes=(0,))
        sess = open_session(exports[role].path, role)
        test_views = _by_view(sess, te, mask)
        scored[name] = {view: {"y": y, "p": p} for view, (y, p) in test_views.items()}
        if role == "classifier":  # the served model: experts, temperatures and fusion from validation speakers
            val_views = _by_view(sess, va, mask)
            for m, h in heads.items():  # a modality with a head of its own: the head is its expert
                val_views[m], test_views[m] = head_views[m](h, va, cfg), head_test[m]
            calibration = calibrate_views(val_views, test_views)
            references, late = late_fusion(val_views, test_views, ctx.recipe.fusion)  # audio expert x face view
            for ref, views in references.items():
                scored[ref] = views
            scored["served"] = served_answers(test_views, calibration, late.get("served") or {})
        real = pairs.real_av["test"]
        if len(real["y"]):
            scored[name]["real_av"] = {"y": real["y"], "p": sess.run(real["X"][..., mask])}
            if role == "classifier":
                scored["served"]["real_av"] = _served_real(real, sess, heads, mask, cfg, calibration,
                                                           late.get("served") or {})
    results = {name: {view: metrics(s["y"], s["p"], ctx.classes) for view, s in views.items()}
               for name, views in scored.items()}
    return Classifiers(exports, scored, results, calibration, late)
