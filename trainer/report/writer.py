"""The bundle's evaluation report: metrics.json and report.md (tables a reviewer can read),
written from the typed manifest."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from service.model.manifest import Manifest

VIEWS = {"fused": "fused (pseudo-pairs)", "audio": "audio only", "face": "face only", "real_av": "real audio-visual clips"}
# The served face expert: the classifier with the audio removed, or the face head when the bundle has one.
FACE_EXPERT = ("the classifier with the audio removed",
               "the face head (the face ResNet's own softmax on each summary face, pooled by confidence)")
BACKBONE_NAMES = {"face_resnet": "face ResNet (ours)", "resnet50": "ResNet-50 (ours)",
                  "face_resnet_flip_averaged": "face ResNet (ours), flip-averaged",
                  "resnet50_flip_averaged": "ResNet-50 (ours), flip-averaged",
                  "fer_mini_xception": "`fer` mini-Xception (peer)"}

HEAD = ["| model | input | n | accuracy | macro-F1 | UAR | ROC-AUC (ovr) |", "|---|---|---|---|---|---|---|"]
CORPUS_HEAD = ["| model | corpus | input | n | accuracy | macro-F1 | UAR | ROC-AUC (ovr) |",
               "|---|---|---|---|---|---|---|---|"]


def _row(name: str, view: str, m: dict[str, Any], corpus: str | None = None) -> str:
    auc = m.get("roc_auc_ovr")
    return (f"| {name} |{f' {corpus} |' if corpus else ''} {VIEWS.get(view, view)} | {m['n']} | {m['accuracy']:.3f} | "
            f"{m['macro_f1']:.3f} | {m['uar']:.3f} | {'' if auc is None else f'{auc:.3f}'} |")


def _header(manifest: Manifest) -> list[str]:
    prov = manifest.provenance
    return [
        f"# {manifest.name} {manifest.version}: evaluation report", "",
        f"Built {manifest.created} by trainer {manifest.trainer_version}, profile `{prov.profile}`, "
        f"label set `{manifest.label_set}` ({', '.join(manifest.classes)}).", "",
        "All figures are on the **test split, never trained on**: held-out speakers / actors / TESS words "
        "and held-out face images (FER2013 public test). " + prov.fusion_training + ".", "",
        f"Samples per split: `{json.dumps(prov.samples_per_split)}`", "",
    ]


def _headline(manifest: Manifest) -> list[str]:
    """What the service answers for people it has never heard or seen: the served experts on the
    speaker-independent part of the test split (RAVDESS held-out actors x held-out faces)."""
    served = (manifest.metrics.get("test_by_corpus") or {}).get("served") or {}
    if not served:  # the test split has one audio corpus: the whole split is the headline
        whole = (manifest.metrics.get("test") or {}).get("served")
        served = {"test split": {v: m for v, m in whole.items() if v != "real_av"}} if whole else {}
    corpus = "ravdess" if "ravdess" in served else next(iter(served), None)
    if corpus is None:
        return []
    # These rows were scored in the classifiers stage, with its pseudo-pair fit: a later
    # serving-path refit (served_clips) changes what is served, not these figures.
    refit = manifest.metrics.get("served_clips") or {}
    weights = refit.get("fusion_before") or {"w_audio": manifest.fusion.w_audio, "w_face": manifest.fusion.w_face}
    how = ("late fusion of the audio head and the face-only answer, p ∝ p_audio^"
           f"{weights['w_audio']:g} · p_face^{weights['w_face']:g}" if manifest.fusion.method == "late_weighted"
           else "the Bi-LSTM-SA on the fused sequence")
    title = "## Served answers on the test pseudo-pairs" if refit else "## Headline: people the model has never heard or seen"
    lines = [title, "",
             f"The served answers on the {corpus.upper() if corpus == 'ravdess' else corpus} (held-out actors, each clip "
             "paired with ONE held-out face image shown as video-like variants), calibrated "
             f"{'with the pseudo-pair fit (before the serving-path refit above)' if refit else 'as served'}. Fused: "
             f"{how}; audio only: {'the audio head' if 'audio_head' in manifest.artifacts else 'the classifier'}; "
             f"face only: {FACE_EXPERT[1] if 'face_head' in manifest.artifacts else FACE_EXPERT[0]}. ECE: 15 bins.", "",
             "| served view | n | accuracy | macro-F1 | UAR | ECE |", "|---|---|---|---|---|---|"]
    lines += [f"| {VIEWS.get(v, v)} | {m['n']} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {m['uar']:.3f} | "
              f"{m.get('ece', float('nan')):.3f} |" for v, m in served[corpus].items()]
    if not manifest.metrics.get("served_clips"):
        lines += _real_clips(manifest)
    return lines + ["", "## Every model and view on the whole test split", ""]


def _real_clips(manifest: Manifest) -> list[str]:
    clips = manifest.metrics.get("real_av_clips") or []
    if not clips:
        return []
    how = ("through the serving path; bench/heldout_test.md has them through a real server"
           if manifest.metrics.get("served_clips") else "as the trainer computes the served answer")
    return (["", f"Real audio-visual clips (CREMA-D, an actor no model trained on), the served answer per clip ({how}):",
             "", "| clip | true | predicted | p(predicted) | p(true) |", "|---|---|---|---|---|"]
            + [f"| {c['clip']} | {c['true']} | {c['predicted']} | {c['p_predicted']:.3f} | {c['p_true']:.3f} |"
               for c in clips])


def _served_clips(manifest: Manifest) -> list[str]:
    """The headline when the bundle was calibrated through the serving path: the test split's
    clips, made as users send them, each through the service's own pipeline."""
    served = manifest.metrics.get("served_clips") or {}
    test = (served.get("test") or {}).get("by_kind") or {}
    if not test:
        return []
    from trainer.fusion.late import other_fusion
    from trainer.fusion.served_clips import KIND_NAMES

    fusion = manifest.fusion
    lines = ["## Headline: people the model has never heard or seen, through the serving path", "",
             "Clips made from the test split as users send them (RAVDESS actors 17-20; each speech clip with ONE "
             "FER2013 public_test face still of the same emotion, upscaled in a 640x480 frame; "
             "trainer/fusion/served_clips.py), each run through the service's own pipeline and this bundle. The "
             f"temperatures and fusion weights are fitted on {served.get('fitted_on')}. ECE: 15 bins; "
             "`uncalibrated`: no temperature, plain product of experts; `pseudo-pair fit`: fitted on validation "
             "pseudo-pairs (the classifiers stage); `served`: what this bundle answers; `floor`: the mean ECE "
             "of the served answers when each clip's label is drawn from those answers themselves, i.e. what a "
             "perfectly calibrated model with the same confidences would show on this many clips "
             "(`trainer.fusion.calibrate.ece_floor`): an ECE near it cannot be told from calibrated.", "",
             "| clips | n | accuracy | UAR | macro-F1 | ECE uncalibrated | ECE pseudo-pair fit | ECE served "
             "| ECE floor | wrong > 0.9 |", "|---|---|---|---|---|---|---|---|---|---|"]
    for kind, v in test.items():
        s = v["served"]
        lines.append(f"| {KIND_NAMES.get(kind, kind)} | {s['n']} | {s['accuracy']:.3f} | {s['uar']:.3f} | "
                     f"{s['macro_f1']:.3f} | {v['uncalibrated']['ece']:.3f} | {v['pseudo_pairs']['ece']:.3f} | "
                     f"{s['ece']:.3f} | {s.get('ece_floor', float('nan')):.3f} | {s['wrong_above_0.9']} |")
    before = served.get("fusion_before") or {}
    lines += ["", f"Fused: {fusion.method}; weights w_audio {fusion.w_audio:g}, w_face {fusion.w_face:g} (pseudo-pair "
                  f"fit: {before.get('w_audio', float('nan')):g}, {before.get('w_face', float('nan')):g}). "
                  "Clips whose still shows no face the detector accepts are refused by the service and not counted."]
    other = other_fusion(fusion.method)
    av_test = test.get("av", {}).get("other_fusion")
    av_val = ((served.get("validation") or {}).get("by_kind") or {}).get("av") or {}
    if av_test and "other_fusion" in av_val:
        names = {"sequence": "the proposed Bi-LSTM-SA's fused answer (fused temperature)",
                 "late_weighted": "the weighted pool of the audio and face experts"}
        how = ("the more accurate on the validation clips" if served.get("fusion_chosen") else
               f"the recipe's fusion ({fusion.method})")
        lines += ["", f"The other fusion on the same clips: {other}, {names[other]}, calibrated the same way: test "
                      f"accuracy {av_test['accuracy']:.3f}, ECE {av_test['ece']:.3f} (served: "
                      f"{test['av']['served']['accuracy']:.3f}, {test['av']['served']['ece']:.3f}); on the "
                      f"validation clips {av_val['other_fusion']['accuracy']:.3f} against "
                      f"{av_val['served']['accuracy']:.3f}. Served: {how}."]
    return lines + _real_clips(manifest) + [""]


def _test_tables(manifest: Manifest) -> list[str]:
    metrics = manifest.metrics
    lines = [*HEAD] + [_row(name, view, m) for name, views in metrics["test"].items() for view, m in views.items()]
    k = manifest.preprocessing["k_summary"]
    lines += ["", f"How to read the pseudo-pair rows: a test sequence pairs one held-out clip with ONE held-out face "
                  f"image of its emotion, shown as K = {k} video-like variants of it (small shifts, scale, roll, "
                  "light, blur, JPEG), as the summary frames of a real video show one person. The face classifier "
                  "rows below score one image at a time."]
    late = metrics.get("late_fusion") or {}
    if late:
        w = late.get("late_weighted", {})
        audio = "the audio head's" if "audio_head" in manifest.artifacts else "the proposed model's audio-only"
        face = "the face head's pooled" if "face_head" in manifest.artifacts else "the proposed model's face-only"
        lines += ["", f"Late-fusion references, on the same test sequences: `late_product` multiplies {audio} "
                      f"answers and {face} answers (product of experts); `late_weighted` pools them "
                      f"log-linearly, p ∝ p_audio^{w.get('w_audio', 1):g} · p_face^{w.get('w_face', 1):g}, weights "
                      f"fitted on validation speakers (ECE of its test answers {w.get('ece_test', float('nan')):.3f})."]
    fusion = manifest.fusion
    lines += ["", f"Served answer when audio and face are both present: **{fusion.method}**"
                  + (f" (p ∝ p_audio^{fusion.w_audio:g} · p_face^{fusion.w_face:g})" if fusion.method != "sequence" else
                     " (the proposed Bi-LSTM-SA on the fused sequence, fused temperature)")
                  + (f"; chosen by {fusion.chosen_by}" if fusion.chosen_by else "") + "."]
    by_corpus = metrics.get("test_by_corpus") or {}
    if any(by_corpus.values()):  # empty per model when the test split has one audio corpus
        lines += ["", "The same test split, per audio corpus (RAVDESS: held-out actors; TESS: held-out words). "
                      "RAVDESS is the speaker-independent audio figure; TESS has two speakers, both on both sides of "
                      "the split (it is word-independent, not speaker-independent).", "", *CORPUS_HEAD]
        lines += [_row(name, view, m, corpus)
                  for name, corpora in by_corpus.items() for corpus, views in corpora.items() for view, m in views.items()]
    return lines


def _face_tables(manifest: Manifest) -> list[str]:
    metrics = manifest.metrics
    backbone = metrics.get("face_backbone") or {}
    name = BACKBONE_NAMES.get(backbone.get("name", "resnet50"), "face backbone")
    lines = []
    if metrics.get("face_backbone_test"):
        lines += ["", "Face classifier, one test image at a time (FER2013 public_test + held-out CK+ subjects):", "",
                  *HEAD, _row(f"{name} classifier", "face images", metrics["face_backbone_test"])]
        exported = metrics.get("face_backbone_test_exported")
        if exported:
            fp16 = " (fp16 weights)" if manifest.artifacts["image_features"].fp16_weights else ""
            flip = bool((manifest.provenance.options or {}).get("face_flip_average"))
            lines.append(_row(f"{name}, exported ONNX backbone{fp16}{', flip-averaged' if flip else ''}",
                              "face images", exported))
            delta = 100 * (exported["accuracy"] - metrics["face_backbone_test"]["accuracy"])
            what = " and its flip averaging" if flip else ""  # the Keras row scores each face once
            lines += ["", f"Accuracy change from the exported backbone{fp16[:-1] + ', fp32 compute)' if fp16 else ''}"
                          f"{what} against the fp32 Keras model: {delta:+.2f} points."]
    fer = metrics.get("face_fer2013_public_test") or {}
    if fer:
        lines += ["", "Face-only, FER2013 `public_test` alone (the same images for every model):", "", *HEAD]
        lines += [_row(BACKBONE_NAMES.get(k, k), "FER2013 public_test", m) for k, m in fer.items()]
        if "fer_mini_xception" not in fer:
            lines.append("\n(The peer was not scored: build with `--peer-face-model`.)")
    curve = backbone.get("learning_curve") or []
    if curve:
        lines += ["", f"Learning curve of the {name} (validation: 10 % of FER2013 train and held-out CK+ subjects):",
                  "", "| epoch | minutes | train loss | train accuracy | validation accuracy |", "|---|---|---|---|---|"]
        lines += [f"| {c['epoch']} | {c['minutes']:.1f} | {c['train_loss']:.3f} | {c['train_accuracy']:.3f} | "
                  f"{c['val_accuracy']:.3f} |" for c in curve]
    if (manifest.provenance.options or {}).get("face_flip_average"):
        lines += ["", "The shipped backbone (`image_features.onnx`) averages the features of each face and of its "
                      "mirror image (test-time flip averaging, recipe `face_flip_average`); its cost below is for both."]
    cost = backbone.get("ort_ms_per_face")
    if cost:
        lines += ["", "Backbone cost per face in ONNX Runtime (1 thread, median of 20): "
                      + ", ".join(f"{k.replace('_', ' ')}: {v:.2f} ms" for k, v in cost.items()) + "."]
    return lines


def _calibration_table(manifest: Manifest) -> list[str]:
    cal = manifest.calibration
    if cal is None or not cal.views:
        return []
    where = ("the test split's clips through the serving path" if manifest.metrics.get("served_clips")
             else "the test split")
    lines = ["", f"Calibration of the served model (temperature scaling per view, fitted on {cal.fitted_on}; "
                 f"expected calibration error with 15 bins and negative log-likelihood on {where}, before = "
                 "uncalibrated):", "",
             "| view | temperature | ECE before | ECE after | NLL before | NLL after |", "|---|---|---|---|---|---|"]
    for view, c in cal.views.items():
        cells = [c.ece_before, c.ece_after, c.nll_before, c.nll_after]
        lines.append(f"| {view} | {c.temperature:.3f} | " + " | ".join("" if v is None else f"{v:.3f}" for v in cells)
                     + " |")
    return lines


def _selection_tables(manifest: Manifest) -> list[str]:
    mask, metrics = manifest.mask, manifest.metrics
    lines = ["", f"IZOA feature mask: {mask.n_selected} of {mask.n_total} step features kept (fitness "
                 f"{mask.fitness:.4f}, cross-validated error on training speakers {mask.cv_error:.4f}). IZOA chooses "
                 "among the image-feature columns; the audio-code columns and the presence flags are in every mask."]
    fused = metrics["test"].get("bilstm_sa", {}).get("fused")
    if fused:
        lines += ["", "Per-class recall of the proposed model (fused):", "", "| class | recall |", "|---|---|"]
        lines += [f"| {c} | {r:.3f} |" for c, r in fused["per_class_recall"].items()]
    selection = metrics.get("selection")
    if selection:
        lines += ["", "Feature selection compared on the same split: each method picks its mask from the training "
                      "split only (fitness = α·CV error + (1 − α)·kept/total, GroupKFold over training speakers); the "
                      "same scaler + k-NN, fitted on the training split with that mask, is then scored on the test "
                      "split (step features averaged over the sequence).", "",
                  "| method | kept | training CV error | fitness | test accuracy | test UAR |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {m} | {r['n_selected']} / {r['n_total']} | {r['cv_error']:.3f} | {r['fitness']:.3f} | "
                  f"{r['test_accuracy']:.3f} | {r['test_uar']:.3f} |" for m, r in selection.items()]
    return lines


def _paper_tables(manifest: Manifest) -> list[str]:
    paper = manifest.metrics.get("paper_protocol_leaky")
    if not paper:
        return []
    return [
        "", "## The paper's protocol (leaky: for comparison only)", "",
        f"A random 80/20 split of the audio clips ({paper['n_train_clips']} / {paper['n_test_clips']}) and of "
        f"the face images ({paper['n_train_faces']} / {paper['n_test_faces']}), three classes "
        f"({', '.join(paper['classes'])}), same models and training. The same speakers and sentences are on "
        "both sides of the split, so these figures overstate what the model does on people it has never "
        "seen: the tables above are the honest ones.", "", *HEAD,
    ] + [_row(name, view, m) for name, views in paper["models"].items() for view, m in views.items()]


def _detector_card(manifest: Manifest) -> list[str]:
    det = manifest.artifacts.get("face_detector")
    if det is None:
        return []
    from trainer.face.detector import MODEL_CARD, TFLITE_SHA256

    pre = manifest.preprocessing
    return [MODEL_CARD.format(tflite=TFLITE_SHA256, diff=det.parity_max_abs_diff or 0.0,
                              scale=pre.get("face_crop_scale"), offset=pre.get("face_crop_offset"))]


def _cross_corpus(manifest: Manifest) -> list[str]:
    """The voice across corpora and framings: each audio-head recipe retrained by the build's
    `cross_corpus` stage, before (plain) and after (the build's augmentation)."""
    rows = manifest.metrics.get("cross_corpus") or []
    if not rows:
        return []
    return ["", "## The voice across corpora and framings (audio only)", "",
            "Each audio-head recipe retrained (2 members) on RAVDESS actors 1-16 (+ every 4th TESS word) and "
            "scored on held-out actors 17-20 as recorded (`in-corpus`) and re-framed (`trim2s`: 2.0 s from the "
            "first word; `cut`: a random 1.5-3 s window of the speech; `pad`: the speech inside silence; `late`: "
            "the speech at a random offset), on all of TESS when trained without it (`loco TESS`: two voices "
            "never heard), on the 6 CREMA-D clips and on URDU (natural Urdu speech, evaluation only: answered "
            "label over 7 emotions, and restricted to its 4). `hand_*` rows use the hand-made utterance "
            "statistics alone (the voice before its speech encoder), the others the speech encoder's pooled "
            "states beside them; `plain` trains on the clips as recorded, `aug4` also on 4 augmented copies; "
            "`... adapted`: the corpus's voices mapped from their own statistics onto the training ones "
            "(`--adapt-voice`). The bundle's audio head uses the last row's recipe. Accuracy:", "",
            cross_corpus_table(rows), ""]


def cross_corpus_table(rows: list[dict]) -> str:
    """Accuracy per variant (trainer.voice.cross_corpus.Study.run's rows), as markdown."""
    cols = [c for c in ("in-corpus", *(k for k in rows[0] if k.startswith("framing ")), "loco TESS",
                        "loco TESS adapted", "CREMA-D", "urdu", "urdu adapted") if any(c in r for r in rows)]
    lines = ["| variant | " + " | ".join(cols) + " | urdu (4) | urdu wrong > 0.9 |",
             "|" + "---|" * (len(cols) + 3)]
    for r in rows:
        cells = [f"{r[c]['accuracy']:.3f}" if c in r else "" for c in cols]
        u = r.get("urdu", {})
        lines.append(f"| {r['variant']} | " + " | ".join(cells) +
                     f" | {u.get('accuracy_restricted', float('nan')):.3f} | {u.get('wrong_above_0.9', '')} |")
    return "\n".join(lines)


def _training_data(manifest: Manifest) -> list[str]:
    """The model card's data section: every corpus the bundle learned from, with its licence."""
    used = manifest.metrics.get("training_corpora") or {}
    if not used:
        return []
    return ["", "## Training data and licences", "",
            "The weights of this bundle derive from these corpora; their licences bind its use (most allow "
            "research use only).", "", "| corpus | training samples | licence |", "|---|---|---|"] + [
        f"| {c} | {d['n']} | {d['licence']} |" for c, d in sorted(used.items())] + _pretrained(manifest)


def _pretrained(manifest: Manifest) -> list[str]:
    """Pretrained weights inside the bundle: where they came from and their licence."""
    given = manifest.provenance.pretrained
    if not given:
        return []
    return ["", "Pretrained weights in this bundle:", ""] + [f"- `{role}`: {source}" for role, source in given.items()]


def _face_teachers(manifest: Manifest) -> list[str]:
    """The distilled face expert per corpus beside the fine-tuned one, its teachers and their
    pools (trainer/face/corpus_table.py), and the teachers' sources and licences."""
    t = manifest.metrics.get("face_teachers")
    if not t:
        return []
    from trainer.face.corpus_table import markdown

    lines = ["", "## The face expert and its teachers, per corpus", "",
             f"Distilled for {t['epochs']} epochs from the fine-tuned expert towards {t['alpha']:g} × the hard label + "
             f"{1 - t['alpha']:g} × the pool `{t['pool']}` (log-linear; `expert`: the fine-tuned network's own "
             "answer). Accuracy / UAR; everyone flip-averaged but the zoo model (once a face); pool weights "
             "chosen on FER2013's validation carve. **\\*: the zoo model was trained on RAF-DB's official train "
             "split, from which the RAF-DB carves are cut: its figures there, and those of any pool holding it, "
             "are on faces it trained on.** face-api's training data is not documented.", "", markdown(t), "",
             "| teacher | source | licence | note |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['model']} | {v['licence']} | {v['note']} |" for k, v in t["sources"].items()]
    return lines


def write_report(bundle_dir: Path, manifest: Manifest) -> None:
    (bundle_dir / "metrics.json").write_text(json.dumps(manifest.metrics, indent=2) + "\n")
    lines = (_header(manifest) + _served_clips(manifest) + _cross_corpus(manifest) + _headline(manifest)
             + _test_tables(manifest)
             + _calibration_table(manifest) + _face_tables(manifest) + _face_teachers(manifest)
             + _selection_tables(manifest) + _paper_tables(manifest) + _detector_card(manifest)
             + _training_data(manifest))
    if manifest.report_figures:
        lines += ["", "Figures (test split):", ""] + [f"![{f}]({f})" for f in manifest.report_figures]
    (bundle_dir / "report.md").write_text("\n".join(lines) + "\n")
