"""Temperatures and late-fusion weights fitted through the serving path.

The classifiers stage fits them on validation pseudo-pairs: a clip's audio beside corpus
face crops. A served video shows its face through H.264, ffmpeg, BlazeFace's crop and the
summary-frame choice, and such a face answers less surely than a pseudo-pair's: fitted there,
the fused answer of a real clip is over-confident. Here the validation split's clips are made
the way users send them (trainer/fusion/served_clips.py: speech + one face still as an mp4, the
still alone, the speech alone), each runs through the service's own pipeline and bundle
in-process (`extract_file`, `Bundle.expert` / `raw_answer` / `answer`: the code a request
runs, without HTTP), and the temperatures and fusion weights are refitted on those answers.
The test split's clips are scored the same way before and after, for the report.

    python -m trainer.fusion.served_calibration --bundle models/default   # refit a built bundle

`trainer build` runs the same step as its `served_calibration` stage.
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from service.model.bundle import Bundle, load_bundle
from service.model.calibration import expected_calibration_error, log_linear_pool, served_view
from service.model.manifest import Calibration, Fusion, Manifest
from service.pipeline.config import MediaLimits
from service.pipeline.errors import MediaError
from service.pipeline.extract import extract_file
from trainer.fusion.calibrate import ece_floor, fit_temperature, nll
from trainer.fusion.late import fit_weights, other_fusion
from trainer.fusion.served_clips import KINDS, RECIPE, heldout_sources, make_audio, make_av, make_face, pair_clips
from trainer.recipe import Recipe
from trainer.report.metrics import metrics

log = logging.getLogger("trainer.served")
FITTED_ON = ("validation speakers' clips through the serving path (RAVDESS actors 15-16, each speech clip with "
             "FER2013 validation face stills, one per clip, as mp4 / silent mp4 / m4a)")


@dataclass
class ServedClip:
    """One clip's answers as the service computes them, before calibration."""
    kind: str
    y: int
    view: str                        # the served view its present modalities make
    sequence: np.ndarray             # its fusion sequence [K, step_dim]
    experts: dict[str, np.ndarray]   # both modalities' own answers, when both are present
    raw: np.ndarray                  # Bundle.raw_answer: what the view's temperature re-tempers


def make_clips(data_dir: Path, split: str, cache: Path, per_class: int | None,
               draws: int = 1) -> list[tuple[str, Path, str]]:
    """(kind, file, label) of the split's clips, built with ffmpeg once (cached). `draws` > 1
    pairs each speech clip with that many faces (pairing seeds 0, 1, ...): more face stills
    for the fit to see; the speech-only clips are not repeated."""
    speech, faces, _ = heldout_sources(data_dir, split)
    makers: dict[str, Callable[[Any], Path]] = {"av": lambda p: make_av(p, cache),
                                                "face": lambda p: make_face(p.face, cache),
                                                "audio": lambda p: make_audio(p.speech, cache)}
    clips: dict[Path, tuple[str, Path, str]] = {}
    for seed in range(draws):
        for pair in pair_clips(speech, faces, seed, per_class):
            for kind in KINDS:
                path = makers[kind](pair)
                clips.setdefault(path, (kind, path, pair.label))
    return list(clips.values())


def answer_clips(bundle: Bundle, clips: list[tuple[str, Path, str]], limits: MediaLimits) -> list[ServedClip]:
    """Each clip through the service's pipeline. Clips the service would refuse (a still in
    which no face is found: nothing to recognise) have no answer and are left out."""
    out = []
    for kind, path, label in clips:
        try:
            feats = extract_file(path, bundle.config, bundle, limits, detector=bundle.face_detector)
        except MediaError as exc:
            log.warning("%s: %s", path.name, exc)
            continue
        audio, face = feats.audio_used, feats.video_used and bool(feats.face_detected.any())
        if not (audio or face):
            continue
        view = served_view(audio, face)
        experts = {m: bundle.expert(feats.sequence, m) for m in ("audio", "face")} if audio and face else {}
        out.append(ServedClip(kind, bundle.classes.index(label), view, feats.sequence, experts,
                              bundle.raw_answer(feats.sequence, view, experts)))
    return out


def refit(clips: list[ServedClip], calibration: Calibration | None, fusion: Fusion,
          choose: bool = False) -> tuple[Calibration, Fusion, dict[str, float]]:
    """Per served view, the temperature of its raw answers; the late-fusion weights on the clips
    with both modalities, and the accuracy there of both fusions: the weighted pool of the two
    experts, and the sequence model's fused answer (the fused view's raw answer). `choose`:
    serve the more accurate of the two (ties keep the proposed sequence model); otherwise the
    method stays. Views without a clip keep what they had. Returns the calibration, the fusion
    and those accuracies (empty without a clip with both modalities)."""
    views = dict(calibration.views) if calibration else {}
    for view in ("fused", "audio", "face"):
        rows = [c for c in clips if c.view == view]
        if rows:
            y, raw = np.array([c.y for c in rows]), np.stack([c.raw for c in rows])
            views[view] = {"temperature": fit_temperature(y, raw), "n_validation": len(rows)}
    both = [c for c in clips if c.experts]
    new_fusion, accuracy = fusion.model_copy(), {}
    if both:
        y = np.array([c.y for c in both])
        pa, pf = np.stack([c.experts["audio"] for c in both]), np.stack([c.experts["face"] for c in both])
        wa, wf = fit_weights(y, pa, pf)
        accuracy = {"late_weighted": float((log_linear_pool(pa, pf, wa, wf).argmax(1) == y).mean()),
                    "sequence": float((np.stack([c.raw for c in both]).argmax(1) == y).mean())}
        method = fusion.method
        if choose:
            method = "late_weighted" if accuracy["late_weighted"] > accuracy["sequence"] else "sequence"
        new_fusion = fusion.model_copy(update={"method": method, "w_audio": float(wa), "w_face": float(wf)})
    return (Calibration.model_validate({"method": "temperature", "fitted_on": FITTED_ON, "views": views}), new_fusion,
            accuracy)


def served_probabilities(bundle: Bundle, manifest: Manifest, clips: list[ServedClip]) -> np.ndarray:
    """The answers `bundle` gives these clips under `manifest`'s calibration and fusion."""
    kept = bundle.manifest
    bundle.manifest = manifest
    try:
        return np.stack([bundle.answer(c.sequence, c.view, c.experts) for c in clips])
    finally:
        bundle.manifest = kept


def _scores(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    m = metrics(y, p, [str(i) for i in range(p.shape[1])])
    return {"n": int(len(y)), "accuracy": m["accuracy"], "uar": m["uar"], "macro_f1": m["macro_f1"],
            "ece": expected_calibration_error(y, p), "ece_floor": ece_floor(p), "nll": nll(y, p),
            "wrong_above_0.9": int(((p.argmax(1) != y) & (p.max(1) > 0.9)).sum())}


def compare(bundle: Bundle, variants: dict[str, Manifest], clips: list[ServedClip]) -> dict[str, Any]:
    """Per kind of clip and per served view: the scores of each variant's served answers."""
    y = np.array([c.y for c in clips])
    answers = {name: served_probabilities(bundle, m, clips) for name, m in variants.items()}
    out: dict[str, Any] = {"by_kind": {}, "by_view": {}}
    for group, key in (("by_kind", lambda c: c.kind), ("by_view", lambda c: c.view)):
        for value in dict.fromkeys(key(c) for c in clips):
            sel = np.array([key(c) == value for c in clips])
            out[group][value] = {name: _scores(y[sel], p[sel]) for name, p in answers.items()}
    return out


def real_clips(bundle: Bundle, manifest: Manifest, data_dir: Path, limits: MediaLimits) -> list[dict[str, Any]]:
    """The served answer of each real audio-visual clip (CREMA-D) under `manifest`, as they are."""
    out = []
    for clip in heldout_sources(data_dir, "test")[2]:
        for answered in answer_clips(bundle, [("cremad", clip.path, clip.label)], limits):
            p = served_probabilities(bundle, manifest, [answered])[0]
            out.append({"clip": clip.path.name, "true": clip.label, "predicted": bundle.classes[int(p.argmax())],
                        "p_predicted": float(p.max()), "p_true": float(p[answered.y])})
    return out


def uncalibrated(manifest: Manifest) -> Manifest:
    """The bundle's raw answers: no temperature, and the plain product of experts when fused late."""
    return manifest.model_copy(update={"calibration": None,
                                       "fusion": manifest.fusion.model_copy(update={"w_audio": 1.0, "w_face": 1.0})})


def calibrate_through_service(bundle_dir: Path, data_dir: Path, cache: Path, per_class: int | None = None,
                              val_draws: int = 1, limits: MediaLimits | None = None,
                              choose_fusion: bool = False) -> dict[str, Any]:
    """Refit the bundle's temperatures and fusion weights on the validation clips (starting
    from its pseudo-pair fit) and score the test clips before and after, and with the other
    fusion method (`choose_fusion`: serve the one more accurate on the validation clips).
    Returns {"calibration", "fusion", "metrics"} (plain JSON values: the stage's output) and
    "real_av_clips" (the CREMA-D clips' served answers); the bundle on disk is not changed."""
    t0 = time.perf_counter()
    limits = limits or MediaLimits()
    bundle = load_bundle(bundle_dir)
    before = bundle.manifest = pseudo_pair_fit(bundle.manifest)
    clips = {split: answer_clips(bundle, make_clips(data_dir, split, cache, per_class, val_draws if split == "val"
                                                    else 1), limits)
             for split in ("val", "test")}
    calibration, fusion, fusion_accuracy = refit(clips["val"], before.calibration, before.fusion, choose_fusion)
    after = before.model_copy(update={"calibration": calibration, "fusion": fusion})
    variants = {"uncalibrated": uncalibrated(before), "pseudo_pairs": before, "served": after,
                "other_fusion": after.model_copy(update={"fusion": fusion.model_copy(
                    update={"method": other_fusion(fusion.method)})})}
    test = compare(bundle, variants, clips["test"])
    for view, entry in calibration.views.items():
        scored = test["by_view"].get(view)
        if scored:
            s0, s1 = scored["uncalibrated"], scored["served"]
            calibration.views[view] = entry.model_copy(update={
                "n_test": s1["n"], "ece_before": s0["ece"], "ece_after": s1["ece"], "nll_before": s0["nll"],
                "nll_after": s1["nll"]})
    metrics = {"clip_recipe": RECIPE, "per_class": per_class, "val_draws": val_draws, "fitted_on": FITTED_ON,
               "calibration_before": before.calibration.model_dump(mode="json") if before.calibration else None,
               "n_validation": {k: sum(c.kind == k for c in clips["val"]) for k in KINDS},
               "validation": compare(bundle, variants, clips["val"]), "test": test,
               "fusion_before": {"method": before.fusion.method, "w_audio": before.fusion.w_audio,
                                 "w_face": before.fusion.w_face},
               "fusion_validation_accuracy": fusion_accuracy, "fusion_chosen": choose_fusion,
               "seconds": round(time.perf_counter() - t0, 1)}
    return {"calibration": calibration.model_dump(mode="json"), "fusion": fusion.model_dump(mode="json"),
            "metrics": metrics, "real_av_clips": real_clips(bundle, after, data_dir, limits)}


def pseudo_pair_fit(manifest: Manifest) -> Manifest:
    """`manifest` as the classifiers stage left it: the pseudo-pair calibration and fusion
    weights, which a refit starts from and reports as its `pseudo_pairs` column, also when
    the bundle was refitted through the serving path before (its metrics keep them)."""
    served = manifest.metrics.get("served_clips")
    if not served:
        return manifest
    if "calibration_before" not in served:
        raise ValueError("this bundle was refitted before the pseudo-pair fit was recorded in its metrics: "
                         "rebuild it with `trainer build ... --from served_calibration`")
    calibration = served["calibration_before"]
    return manifest.model_copy(update={
        "calibration": Calibration.model_validate(calibration) if calibration else None,
        "fusion": manifest.fusion.model_copy(update=served["fusion_before"])})


def apply(manifest: Manifest, served: dict[str, Any]) -> Manifest:
    """`manifest` with the serving-path calibration, fusion weights and figures."""
    fusion = Fusion.model_validate(served["fusion"])
    figures = ", ".join(f"{k} {v:.3f}" for k, v in served["metrics"].get("fusion_validation_accuracy", {}).items())
    note = (f"; weights refitted through the serving path: w_audio {fusion.w_audio:g}, w_face {fusion.w_face:g}"
            + (f"; validation clips with voice and face through the serving path: {figures}" if figures else "")
            + ("; served: the more accurate there" if served["metrics"].get("fusion_chosen") else ""))
    fusion = fusion.model_copy(update={"chosen_by": (fusion.chosen_by or "").split("; weights refitted")[0] + note})
    return manifest.model_copy(update={"calibration": Calibration.model_validate(served["calibration"]),
                                       "fusion": fusion,
                                       "metrics": {**manifest.metrics, "served_clips": served["metrics"],
                                                   "real_av_clips": served["real_av_clips"]}})


def main(argv: list[str] | None = None) -> None:
    from trainer.paths import CACHE_DIR, DATA_DIR, REPO_ROOT
    from trainer.report.writer import write_report

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=REPO_ROOT / "models" / "default")
    p.add_argument("--data", type=Path, default=DATA_DIR)
    p.add_argument("--cache", type=Path, default=CACHE_DIR / "served_clips", help="made clips (cached)")
    p.add_argument("--per-class", type=int, default=None, help="speech clips per emotion and split (default: all)")
    p.add_argument("--val-draws", type=int, default=Recipe.served_val_draws,
                   help="face stills per validation speech clip (default: %(default)s)")
    p.add_argument("--choose-fusion", action="store_true",
                   help="serve the fusion (late_weighted or sequence) more accurate on the validation clips")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    manifest, _ = Manifest.read(args.bundle)
    try:
        pseudo_pair_fit(manifest)       # refuse early, before the clips are made
    except ValueError as exc:
        raise SystemExit(f"{args.bundle}: {exc}") from None
    updated = apply(manifest, calibrate_through_service(args.bundle, args.data, args.cache, args.per_class,
                                                        args.val_draws, choose_fusion=args.choose_fusion))
    updated.write(args.bundle)
    write_report(args.bundle, updated)
    log.info("%s: calibration and fusion weights refitted through the serving path", args.bundle)


if __name__ == "__main__":
    main()
