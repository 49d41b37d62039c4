"""Which of the speech encoder's hidden states the voice should pool, and whether the hand-made
statistics still add something beside them: a standardised logistic regression per feature set,
judged on the validation actors (15-16; trained on actors 1-14 + every 4th TESS clip) and on TESS
left out of training (trained on actors 1-16). URDU is printed for the record, never chosen on;
the test actors (17-20) are not read.

    .venv/bin/python bench/voice_layers.py [--workers 2] [--out bench/results/voice_layers.json]

Features come from the trainer's feature cache (the same `AudioFrames.voice` the build uses:
every layer pooled over speech), computed on first use.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from trainer.cache import FeatureCache  # noqa: E402
from trainer.data import BASIC7  # noqa: E402
from trainer.paths import CACHE_DIR, DATA_DIR, REPO_ROOT  # noqa: E402
from trainer.voice import whisper  # noqa: E402
from trainer.voice.cross_corpus import URDU4, Study, bundle_config  # noqa: E402
from trainer.voice.features import all_frame_features  # noqa: E402

SETS = {
    "hand": ("hand", ()),
    **{f"L{i}": ("", (i,)) for i in whisper.ALL_LAYERS},
    "L1+L2": ("", (1, 2)),
    "L2+L3": ("", (2, 3)),
    "L0-L4": ("", (0, 1, 2, 3, 4)),
    "L1+L3": ("", (1, 3)),
    "hand+L1": ("hand", (1,)),
    "hand+L2": ("hand", (2,)),
    "hand+L3": ("hand", (3,)),
    "hand+L1+L3": ("hand", (1, 3)),
    "hand+L2+L3": ("hand", (2, 3)),
    "hand+L0-L4": ("hand", (0, 1, 2, 3, 4)),
}


def features(frames, cfg, hand: bool, layers) -> np.ndarray:
    from service.pipeline.audio_frames import utterance_stats
    rows = []
    for f in frames:
        parts = [utterance_stats(f.features, f.active(cfg), cfg.utterance_stats)] if hand else []
        if layers:
            parts.append(whisper.select_layers(f.voice, replace(cfg, voice_layers=",".join(map(str, layers)))))
        rows.append(np.concatenate(parts))
    return np.stack(rows).astype(np.float32)


def adapted(x: np.ndarray, train: np.ndarray) -> np.ndarray:
    """`x` with its own statistics mapped onto the training set's (what --adapt-voice does)."""
    from service.model.voice_adaptation import moment_matched
    return moment_matched(x, x.mean(0), x.std(0), train.mean(0), train.std(0))


def fit_predict(x_tr, y_tr, x_te, c: float = 0.1) -> np.ndarray:
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000, class_weight="balanced"))
    clf.fit(x_tr, y_tr)
    p = np.zeros((len(x_te), len(BASIC7)))
    p[:, clf.classes_] = clf.predict_proba(x_te)
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "voice_layers.json")
    ap.add_argument("--sets", default=",".join(SETS), help="feature sets to score (default: all)")
    args = ap.parse_args()
    cfg = replace(bundle_config(), voice_encoder=whisper.NAME, voice_layers="2")
    cache = FeatureCache(CACHE_DIR / "features")
    study = Study(DATA_DIR, cache, "val", cfg)
    groups = {"train14": study.rav_train, "val": study.rav_held, "tess": study.tess,
              "tess_train": study.tess_train[::4], "urdu": study.corpora.get("urdu", []),
              "cremad": study.corpora.get("cremad", [])}
    t0 = time.time()
    frames = {k: all_frame_features(v, [cfg], cache, workers=args.workers)[0] for k, v in groups.items()}
    print(f"features: {time.time() - t0:.0f} s", flush=True)
    y = {k: study.y(v) for k, v in groups.items()}
    # TESS left out: actors 1-14 here (15-16 are the validation actors; 17-20 the test split).
    rows = []
    print("| features | dims | val actors 15-16 acc / UAR | TESS left out acc / UAR | TESS left out, adapted | "
          "URDU acc / 4-class (record) | URDU adapted (record) |")
    print("|---|---|---|---|---|---|---|")
    for name in args.sets.split(","):
        hand, layers = SETS[name]
        x = {k: features(frames[k], cfg, bool(hand), layers) for k in groups}
        x_tr = np.concatenate([x["train14"], x["tess_train"]])
        y_tr = np.concatenate([y["train14"], y["tess_train"]])
        p_val = fit_predict(x_tr, y_tr, x["val"])
        p_tess = fit_predict(x["train14"], y["train14"], x["tess"])
        p_tess_ad = fit_predict(x["train14"], y["train14"], adapted(x["tess"], x["train14"]))
        p_urdu = fit_predict(x_tr, y_tr, x["urdu"]) if len(y["urdu"]) else np.zeros((0, 7))
        p_urdu_ad = fit_predict(x_tr, y_tr, adapted(x["urdu"], x_tr)) if len(y["urdu"]) else np.zeros((0, 7))
        idx4 = [BASIC7.index(c) for c in URDU4]

        def acc(p, t):
            return float((p.argmax(1) == t).mean()) if len(t) else float("nan")

        def uar(p, t):
            return float(np.mean([(p.argmax(1)[t == c] == c).mean() for c in np.unique(t)])) if len(t) else float("nan")
        row = {"features": name, "dims": int(x["val"].shape[1]),
               "val": [acc(p_val, y["val"]), uar(p_val, y["val"])],
               "tess_loco": [acc(p_tess, y["tess"]), uar(p_tess, y["tess"])],
               "tess_loco_adapted": acc(p_tess_ad, y["tess"]), "urdu_adapted": acc(p_urdu_ad, y["urdu"]),
               "urdu": [acc(p_urdu, y["urdu"]),
                        float((np.asarray(idx4)[p_urdu[:, idx4].argmax(1)] == y["urdu"]).mean()) if len(p_urdu) else 0]}
        rows.append(row)
        print(f"| {name} | {row['dims']} | {row['val'][0]:.3f} / {row['val'][1]:.3f} | "
              f"{row['tess_loco'][0]:.3f} / {row['tess_loco'][1]:.3f} | {row['tess_loco_adapted']:.3f} | "
              f"{row['urdu'][0]:.3f} / {row['urdu'][1]:.3f} | {row['urdu_adapted']:.3f} |",
              flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
