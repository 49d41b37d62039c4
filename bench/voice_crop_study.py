"""Which of the voice's training augmentations costs the encoder its reach to another corpus.

Trained on RAVDESS actors 1-14 (+ their mp3 copies; + every 4th TESS word for the in-corpus
figures) and the build's cached augmented copies (`trainer.voice.augment`, four per clip),
keeping only the copies whose seeded draw did (or did not) apply one change; scored on the
validation actors 15-16 and on TESS left out of training. Part 1: a standardised logistic
regression per change (quick). Part 2: the served head (the audio head's MLPs, two members) on
all copies vs the uncropped ones, with the framing variants. The test actors and URDU are not read.

    .venv/bin/python bench/voice_crop_study.py [--voice-layers 1] [--out bench/results/voice_crop_study.json]
"""
from __future__ import annotations

import argparse
import json
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from trainer.cache import FeatureCache  # noqa: E402
from trainer.paths import CACHE_DIR, DATA_DIR, REPO_ROOT  # noqa: E402
from trainer.voice.augment import Augment, reframed  # noqa: E402
from trainer.voice.cross_corpus import FRAMINGS, Study, Variant, bundle_config, scores, vectors  # noqa: E402
from trainer.voice.features import augmented_utterances, transformed_frame_features  # noqa: E402

COPIES = 4
# The changes in the order `trainer.voice.augment.augmented` draws whether to apply them.
CHANGES = ("crop", "speed", "pitch", "reverb", "band", "pad", "noise")


def drawn(name: str, copy: int, aug: Augment) -> np.ndarray:
    """Which changes copy `copy` of the file `name` applied (the generator's first draws)."""
    probs = [getattr(aug, f"{c}_prob") for c in CHANGES]
    rng = np.random.default_rng(zlib.crc32(f"{name} {copy}".encode()))
    return np.array([rng.random() < p for p in probs])


class CopyStudy:
    def __init__(self, layers: str | None):
        cfg = bundle_config()
        self.cfg = replace(cfg, voice_layers=layers) if layers else cfg
        self.study = Study(DATA_DIR, FeatureCache(CACHE_DIR / "features"), "val", self.cfg)
        self.aug = Augment()
        self.sets = {with_tess: self._copies(with_tess) for with_tess in (True, False)}

    def _copies(self, with_tess: bool):
        st = self.study
        base = st.training_set(Variant(), with_tess, self.cfg)  # as recorded + codec copies
        clips = st.rav_train + (st.tess_train[::4] if with_tess else [])
        x = np.concatenate([augmented_utterances(clips, self.cfg, st.cache, k, self.aug, frames_cfg=st.cfg)
                            for k in range(COPIES)])
        on = np.concatenate([np.stack([drawn(s.path.name, k, self.aug) for s in clips]) for k in range(COPIES)])
        return base, x, np.tile(st.y(clips), COPIES), on

    def training(self, with_tess: bool, keep: np.ndarray | None = None):
        (x0, y0), x, y, on = self.sets[with_tess]
        keep = np.ones(len(y), bool) if keep is None else keep(on)
        return np.concatenate([x0, x[keep]]), np.concatenate([y0, y[keep]])


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--voice-layers", help="the encoder states pooled (default: the shipped bundle's)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "voice_crop_study.json")
    args = ap.parse_args(argv)
    cs = CopyStudy(args.voice_layers)
    st = cs.study
    held, held_y = st.plain(st.rav_held, cs.cfg), st.y(st.rav_held)
    tess, tess_y = st.plain(st.tess, cs.cfg), st.y(st.tess)
    rows = []

    def lr(x, y):
        return make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced")).fit(x, y)

    print(f"voice layers {cs.cfg.voice_layers}\n\n| head | copies kept | n | val actors | TESS left out |\n|---|---|---|---|---|")
    keeps = {"none": lambda on: np.zeros(len(on), bool), "all": None}
    for i, c in enumerate(CHANGES):
        keeps[f"without {c}"] = lambda on, i=i: ~on[:, i]
        keeps[f"with {c}"] = lambda on, i=i: on[:, i]
    for name, keep in keeps.items():
        x, y = cs.training(True, keep)
        xl, yl = cs.training(False, keep)
        row = {"head": "logistic", "copies": name, "n": len(y),
               "val": scores(lr(x, y).predict_proba(held), held_y)["accuracy"],
               "tess_left_out": scores(lr(xl, yl).predict_proba(tess), tess_y)["accuracy"]}
        rows.append(row)
        print(f"| logistic | {name} | {len(y)} | {row['val']:.3f} | {row['tess_left_out']:.3f} |", flush=True)

    framed = {how: vectors(st.rav_held, cs.cfg, lambda s, how=how: transformed_frame_features(
        s, st.cfg, st.cache, f"reframed {how} 0", lambda sig, sr: reframed(sig, sr, how, 0))) for how in FRAMINGS}
    print(f"\n| head | copies kept | n | val actors | {' | '.join(FRAMINGS)} | TESS left out |\n|---|---|---|---|"
          + "---|" * len(FRAMINGS) + "---|")
    crop = CHANGES.index("crop")
    for name, keep in (("all", None), ("without crop", lambda on: ~on[:, crop])):
        x, y = cs.training(True, keep)
        xl, yl = cs.training(False, keep)
        predict, loco = st.head(x, y, Variant()), st.head(xl, yl, Variant())
        row = {"head": "served MLPs", "copies": name, "n": len(y), "val": scores(predict(held), held_y)["accuracy"],
               **{f"framing {h}": scores(predict(v), held_y)["accuracy"] for h, v in framed.items()},
               "tess_left_out": scores(loco(tess), tess_y)["accuracy"]}
        rows.append(row)
        print(f"| served MLPs | {name} | {len(y)} | {row['val']:.3f} | "
              + " | ".join(f"{row[f'framing {h}']:.3f}" for h in FRAMINGS) + f" | {row['tess_left_out']:.3f} |", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"voice_layers": cs.cfg.voice_layers, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
