"""What the voice's out-of-domain signal flags, fitted three ways, judged on a corpus left out.

The audio head of the `aug4` recipe is trained on RAVDESS actors 1-14 WITHOUT TESS (in process,
`trainer.voice.cross_corpus.Study`), and the domain model (`trainer.voice.domain`) is fitted on
the same training utterances, three ways:

- `aug`: on the head's training set (as recorded, mp3 round trips, augmented copies); thresholds
  from the validation speakers as recorded and augmented (what `trainer build` ships);
- `aug, recorded thresholds`: the same fit, thresholds from the validation speakers as recorded;
- `recorded`: on the training clips as recorded and their mp3 round trips; thresholds from the
  validation speakers as recorded.

Each answer is flattened by its trust as the service does (`service.model.calibration`), and the
table shows, per material: the share of clips not fully trusted, the mean trust, the accuracy
(flattening never moves the argmax), ECE and wrong answers above 0.9. The choice is made on the
validation actors (15-16, as recorded and re-framed: little should be flagged) and TESS (two
voices never heard: its confident mistakes should go); URDU is printed for the record only.

    .venv/bin/python bench/voice_domain.py [--hand-only]   # ~5 min on 2 cores with the feature cache warm
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    ap.add_argument("--cache", type=Path, default=REPO / ".cache" / "features")
    ap.add_argument("--inside-q", type=float, default=0.95)
    ap.add_argument("--outside-factor", type=float, default=1.25)
    ap.add_argument("--hand-only", action="store_true",
                    help="the voice before its speech encoder: the hand-made statistics alone")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "voice_domain.json")
    args = ap.parse_args()

    from service.model.calibration import flattened, reliability
    from trainer.cache import FeatureCache
    from trainer.voice.augment import reframed
    from trainer.voice.cross_corpus import FRAMINGS, VARIANTS, Study, bundle_config, scores, vectors, without_encoder
    from trainer.voice.domain import fit_domain
    from trainer.voice.features import augmented_utterances, coded_utterances, transformed_frame_features

    cfg = bundle_config()
    ucfg = without_encoder(cfg) if args.hand_only else cfg  # the head's input; frames always under cfg
    study = Study(args.data, FeatureCache(args.cache), "val", cfg)
    v = VARIANTS["aug4"]
    x_train, y_train = study.training_set(v, False, ucfg)
    predict = study.head(x_train, y_train, v)
    clips = study.rav_train
    recorded = np.concatenate([study.plain(clips, ucfg)]
                              + [coded_utterances(clips, cfg, ucfg, study.cache, c) for c in v.codecs])
    held = study.rav_held
    held_rec = study.plain(held, ucfg)
    held_aug = np.concatenate([held_rec] + [augmented_utterances(held, ucfg, study.cache, k, v.aug, frames_cfg=cfg)
                                            for k in range(2)])

    materials = {"validation actors, as recorded": (held_rec, study.y(held))}
    for how in FRAMINGS:
        x = vectors(held, ucfg, lambda s, how=how: transformed_frame_features(
            s, cfg, study.cache, f"reframed {how} 0", lambda sig, sr: reframed(sig, sr, how, 0)))
        materials[f"validation actors, {how}"] = (x, study.y(held))
    materials["TESS (left out)"] = (study.plain(study.tess, ucfg), study.y(study.tess))
    if "cremad" in study.corpora:
        materials["CREMA-D (6 clips)"] = (study.plain(study.corpora["cremad"], ucfg), study.y(study.corpora["cremad"]))
    if "urdu" in study.corpora:
        materials["URDU (record only)"] = (study.plain(study.corpora["urdu"], ucfg), study.y(study.corpora["urdu"]))

    aug_fit = fit_domain(x_train)
    fits = {"none (every voice trusted)": (None, None), "aug": (aug_fit, held_aug), "aug, recorded thresholds": (aug_fit, held_rec),
            "recorded": (fit_domain(recorded), held_rec)}
    rows = []
    print("| domain fit | material | n | not fully trusted | mean trust | accuracy | ECE | wrong > 0.9 |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (fit, thresholds_on) in fits.items():
        if fit is not None:
            inside = float(np.quantile(fit.distance(thresholds_on), args.inside_q))
            outside = inside * args.outside_factor
        for material, (x, y) in materials.items():
            trust = (np.ones(len(x)) if fit is None else
                     np.array([reliability(d, inside, outside) for d in fit.distance(x)]))
            p = np.stack([flattened(q, t) for q, t in zip(predict(x), trust)])
            s = scores(p, y)
            row = {"fit": name, "material": material, "n": int(len(y)), "flagged": float((trust < 1).mean()),
                   "mean_trust": float(trust.mean()), **{k: s[k] for k in ("accuracy", "ece", "wrong_above_0.9")}}
            rows.append(row)
            print(f"| {name} | {material} | {row['n']} | {row['flagged']:.2f} | {row['mean_trust']:.2f} | "
                  f"{row['accuracy']:.3f} | {row['ece']:.3f} | {row['wrong_above_0.9']} |", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
