"""Stages `face_backbone` (the ResNet image feature extractor, trained on face-image corpora
and exported to ONNX) and `face_features` (crops of every split through the exported
backbone, and the frame autoencoder of summary-frame selection)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from service.pipeline.visual import resnet_input, thumbnails
from trainer.export import ExportResult, export_onnx, ort_ms_per_item
from trainer.face.backbone import checkpoint_file, load_faces, ordered_faces, trained_backbone
from trainer.face.graphs import flip_averaged
from trainer.face.peer import peer_face_probs
from trainer.face.training import FaceRecipe, predict_faces
from trainer.report.metrics import metrics
from trainer.stages import SPLITS, BuildContext, log, stage_output
from trainer.stages.audio import train_autoencoder
from trainer.stages.data import Corpora


@stage_output
@dataclass
class FaceBackbone:
    export: ExportResult
    name: str                                   # "face_resnet" | "resnet50"
    head: dict[str, np.ndarray]                 # the classifier's softmax layer: {"kernel", "bias"}
    test_metrics: dict[str, Any]                # the Keras classifier on the test faces
    fer_public_test: dict[str, Any]             # ours (+ the fer peer) on FER2013 public_test alone
    learning_curve: list[dict[str, Any]] = field(default_factory=list)
    ort_ms_per_face: dict[str, float] = field(default_factory=dict)
    teachers: dict[str, Any] = field(default_factory=dict)  # a distilling build: trainer.face.corpus_table


def _train_face_resnet(ctx: BuildContext, corpora: Corpora, checkpoints: dict[str, Any]):
    """The base schedule on `face_base_corpora` (FER2013 + CK+: the committed checkpoints),
    then, with `face_finetune_epochs`, a fine-tuning schedule on every face corpus from its
    weights (RAF-DB's real-world photos beside FER2013's grey crops), then, with
    `face_distill_pool`, a distillation from the fine-tuned weights towards a pool of teachers
    (trainer/face/distill.py); `checkpoints` gets the files of the last two (for the report)."""
    r = ctx.recipe
    base = FaceRecipe.for_this_cpu(image_size=ctx.cfg.image_size, epochs=r.face_epochs, seed=r.seed,
                                   batch_size=FaceRecipe.batch_size, restarts=tuple(r.face_restarts))
    samples = {k: ordered_faces(corpora.faces[k]) for k in ("train", "val")}
    root = ctx.opts.cache_dir.parent if ctx.opts.cache_dir else ctx.staging / ".face_backbone"
    if not r.face_finetune_epochs:
        return trained_backbone(samples, ctx.cfg, ctx.cache, root, base, ctx.classes, max_minutes=r.face_run_minutes)
    base_samples = {k: [s for s in v if s.corpus in r.face_base_corpora] for k, v in samples.items()}
    trained_backbone(base_samples, ctx.cfg, ctx.cache, root, base, ctx.classes, max_minutes=r.face_run_minutes)
    start = checkpoint_file(root, base, ctx.classes, base_samples)
    tune = replace(base, epochs=r.face_finetune_epochs, restarts=(), peak_lr=r.face_finetune_lr, warmup_epochs=1,
                   init_from=start.parent.name if start.name == "state.npz" else start.stem,
                   lowres_prob=r.face_lowres_prob)
    tuned = trained_backbone(samples, ctx.cfg, ctx.cache, root, tune, ctx.classes, max_minutes=r.face_run_minutes,
                             init_weights=start)
    if not r.face_distill_pool:
        return tuned
    from trainer.face.distill import distill_recipe, soft_targets_fn

    start = checkpoint_file(root, tune, ctx.classes, samples)
    distill = distill_recipe(start.parent.name if start.name == "state.npz" else start.stem, r.face_distill_pool,
                             r.face_distill_alpha, r.face_distill_epochs, r.face_distill_lr, base=tune,
                             every=r.face_distill_every)
    targets_of = soft_targets_fn(r.face_distill_pool, r.face_distill_alpha, start, ctx.cfg, ctx.cache, ctx.classes,
                                 ctx.opts.data_dir, root)
    out = trained_backbone(samples, ctx.cfg, ctx.cache, root, distill, ctx.classes, max_minutes=r.face_run_minutes,
                           init_weights=start, targets_of=targets_of)
    checkpoints.update({"fine-tuned": start,
                        "distilled (served)": checkpoint_file(root, distill, ctx.classes, samples)})
    return out


def _train_resnet50(ctx: BuildContext, corpora: Corpora, crops: dict[str, np.ndarray], y: dict[str, np.ndarray]):
    """The paper's ImageNet layout (keras ResNet-50), from scratch or from --resnet-weights."""
    import keras

    from trainer.models import build_resnet50
    from trainer.models.fitting import class_weights, epoch_log

    r, cfg, weights = ctx.recipe, ctx.cfg, ctx.opts.resnet_weights
    steps = max(1, r.resnet_epochs * -(-len(crops["train"]) // r.batch_size))
    lr = 1e-4 if weights else keras.optimizers.schedules.CosineDecay(1e-3, steps)
    clf, backbone = build_resnet50(cfg.image_size, len(ctx.classes), learning_rate=lr,
                                   weights_path=str(weights) if weights else None)
    if r.resnet_epochs:
        def fit() -> dict[str, np.ndarray]:
            val = (resnet_input(crops["val"], cfg), y["val"]) if len(crops["val"]) else None
            clf.fit(resnet_input(crops["train"], cfg), y["train"], validation_data=val, epochs=r.resnet_epochs,
                    batch_size=r.batch_size, shuffle=True, verbose=0, callbacks=[epoch_log("ResNet-50")],
                    class_weight=class_weights(y["train"], len(ctx.classes)))
            return {f"w{i:04d}": w for i, w in enumerate(clf.get_weights())}

        key = ctx.cache.key("resnet50/v1", cfg.image_size, r.resnet_epochs, r.batch_size, r.seed, str(weights),
                            ctx.classes, [(str(s.path), s.label) for s in corpora.faces["train"]],
                            [str(s.path) for s in corpora.faces["val"]])
        trained = ctx.cache.get("resnet50", key, fit)
        clf.set_weights([trained[k] for k in sorted(trained)])
    return clf, backbone, []


def face_backbone(ctx: BuildContext, corpora: Corpora) -> FaceBackbone:
    cfg, classes = ctx.cfg, ctx.classes
    faces = {k: load_faces(corpora.faces[k], cfg, ctx.cache, classes) for k in SPLITS}
    crops, y = {k: v[0] for k, v in faces.items()}, {k: v[1] for k, v in faces.items()}
    checkpoints = {}
    if ctx.recipe.backbone == "face_resnet":
        clf, backbone, curve = _train_face_resnet(ctx, corpora, checkpoints)
    elif ctx.recipe.backbone == "resnet50":
        clf, backbone, curve = _train_resnet50(ctx, corpora, crops, y)
    else:
        raise SystemExit(f"unknown backbone {ctx.recipe.backbone!r} (face_resnet or resnet50)")
    test_metrics, fer = {}, {}
    if len(crops["test"]):
        p = predict_faces(clf, crops["test"], cfg.pixel_mean, cfg.pixel_std)
        test_metrics = metrics(y["test"], p, classes)
        is_fer = np.array([s.corpus == "fer2013" for s in corpora.faces["test"]])
        if is_fer.any():
            fer[ctx.recipe.backbone] = metrics(y["test"][is_fer], p[is_fer], classes)
            p_flip = predict_faces(clf, crops["test"][is_fer], cfg.pixel_mean, cfg.pixel_std, flip=True)
            fer[f"{ctx.recipe.backbone}_flip_averaged"] = metrics(y["test"][is_fer], p_flip, classes)
            if ctx.opts.peer_face_model:
                fer["fer_mini_xception"] = metrics(
                    y["test"][is_fer], peer_face_probs(ctx.opts.peer_face_model, crops["test"][is_fer], classes), classes)
        log.info("face classifier on the test faces: accuracy %.4f; FER2013 public_test: %s", test_metrics["accuracy"],
                 {k: round(v["accuracy"], 4) for k, v in fer.items()})
    teachers = _teacher_table(ctx, corpora, checkpoints) if checkpoints else {}
    if ctx.recipe.face_flip_average:
        backbone = flip_averaged(backbone)
    export = export_onnx(backbone, ctx.staging / "image_features.onnx",
                         sample_inputs=resnet_input(crops["train"][:4], cfg), input_name="face",
                         output_name="features", fp16_weights=ctx.recipe.fp16_backbone)
    kernel, bias = clf.get_layer("head_softmax").get_weights()
    return FaceBackbone(export, ctx.recipe.backbone, {"kernel": kernel, "bias": bias}, test_metrics, fer, curve,
                        {k: round(v, 3) for k, v in ort_ms_per_item({"backbone": export.path})["backbone"].items()},
                        teachers)


def _teacher_table(ctx: BuildContext, corpora: Corpora, checkpoints: dict[str, Any]) -> dict[str, Any]:
    """The distilled expert per corpus beside the fine-tuned one, the teachers and their pools
    (trainer/face/corpus_table.py), with the teachers' sources and licences: the model card's."""
    from trainer.face.corpus_table import corpus_table
    from trainer.face.teachers import SOURCES

    root = ctx.opts.cache_dir.parent if ctx.opts.cache_dir else ctx.staging / ".face_backbone"
    samples = {k: ordered_faces(corpora.faces[k]) for k in SPLITS}
    table = corpus_table(samples, ctx.cfg, ctx.cache, checkpoints, ctx.opts.data_dir, root)
    r = ctx.recipe
    return {**table, "pool": r.face_distill_pool, "alpha": r.face_distill_alpha, "epochs": r.face_distill_epochs,
            "sources": {k: {"model": v[0], "licence": v[1], "note": v[2]} for k, v in SOURCES.items()}}


@stage_output
@dataclass
class FaceDetector:
    export: ExportResult                 # a trainer.face.detector.DetectorExport (both outputs, licence, source)


def face_detector(ctx: BuildContext) -> FaceDetector:
    """BlazeFace (MediaPipe, Apache-2.0) converted to ONNX and checked against TFLite (trainer/face/detector.py)."""
    from trainer.face.detector import DEFAULT_CACHE, export_face_detector

    cache = ctx.opts.cache_dir.parent / "detector" if ctx.opts.cache_dir else DEFAULT_CACHE
    return FaceDetector(export_face_detector(ctx.staging, cache_dir=cache))


@stage_output
@dataclass
class FaceFeatures:
    frame_encoder: ExportResult
    features: dict[str, np.ndarray]     # split -> [n, variants, image_feature_dim] through the exported backbone
    labels: dict[str, np.ndarray]       # split -> class index
    exported_test_metrics: dict[str, Any]


def _variant_features(crops: np.ndarray, ctx: BuildContext, encoders, split: str) -> np.ndarray:
    """[n, V, D] features of V video-like variants of each face (variant 0: the face itself)."""
    from trainer.face.variants import all_variants
    from trainer.features import image_features

    v = max(1, ctx.recipe.face_variants)
    variants = all_variants(crops, v, ctx.recipe.seed + SPLITS.index(split))
    flat = image_features(variants.reshape((-1,) + crops.shape[1:]), ctx.cfg, encoders,
                          label=f"faces ({split}): features of {v} variants each")
    return flat.reshape(len(crops), v, -1)


def face_features(ctx: BuildContext, corpora: Corpora, backbone: FaceBackbone, encoders_of) -> FaceFeatures:
    """`encoders_of(frame_encoder_export)`: the ONNX sessions of the bundle so far."""
    cfg, r = ctx.cfg, ctx.recipe
    faces = {k: load_faces(corpora.faces[k], cfg, ctx.cache, ctx.classes) for k in SPLITS}
    thumbs = thumbnails(faces["train"][0], cfg)
    fenc = train_autoencoder(thumbs, r.frame_ae_hidden, cfg.frame_code_dim, r.ae_epochs, r.frame_ae_batch,
                             "frame_ae", r.seed)
    frame_encoder = export_onnx(fenc, ctx.staging / "frame_encoder.onnx", sample_inputs=thumbs[:64],
                                input_name="thumbnail", output_name="code")
    encoders = encoders_of(frame_encoder)
    feats = {k: _variant_features(faces[k][0], ctx, encoders, k) for k in SPLITS}
    labels = {k: faces[k][1] for k in SPLITS}
    exported = {}
    if len(labels["test"]):
        # The face classifier's head on the exported backbone's features (variant 0: the image
        # itself): what reduced-precision (fp16) weights cost in accuracy, against the fp32 Keras model.
        logits = feats["test"][:, 0] @ backbone.head["kernel"] + backbone.head["bias"]
        p = np.exp(logits - logits.max(1, keepdims=True))
        exported = metrics(labels["test"], p / p.sum(1, keepdims=True), ctx.classes)
    return FaceFeatures(frame_encoder, feats, labels, exported)
