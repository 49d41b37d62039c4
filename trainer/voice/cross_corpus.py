"""Audio-only figures across corpora and framings, to choose the voice expert's recipe on more
than one corpus (in process, on the pipeline's own features; bench/heldout_eval.py measures
the chosen bundle through a real server).

Each variant trains the audio head's MLPs on the utterance statistics of its training clips
and is scored on:
- `in-corpus`: RAVDESS validation actors (15-16), trained on actors 1-14 (+ TESS, as the build);
- `framing`: the same validation clips re-framed (`trainer.voice.augment.reframed`: trim2s, cut,
  pad, late), against the clips as recorded;
- `loco TESS`: trained without TESS, scored on all of TESS (two voices never heard);
- `CREMA-D`: the six real CREMA-D clips (one actor, never heard);
- `urdu`: natural Urdu speech (evaluation only: reported, never chosen on), answered label
  over the 7 classes and restricted to its 4.
`--split test` trains on actors 1-16 and scores actors 17-20 instead of 15-16 (final figures).

    python -m trainer.voice.cross_corpus --variants plain,aug4 [--split val] [--voice-layers 0,3]
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from service.model.calibration import expected_calibration_error
from service.model.voice_adaptation import moment_matched
from service.pipeline.config import PipelineConfig
from trainer.cache import FeatureCache
from trainer.data import BASIC7, Sample, discover_corpora, load_corpus
from trainer.data.splits import RAVDESS_TEST, RAVDESS_VAL, split_of
from trainer.paths import CACHE_DIR, DATA_DIR, REPO_ROOT
from trainer.report.writer import cross_corpus_table
from trainer.voice.augment import Augment, reframed
from trainer.voice.features import (
    AudioFrames,
    augmented_utterances,
    coded_utterances,
    frame_features,
    train_utterance_classifier,
    transformed_frame_features,
    frames_utterance,
)

log = logging.getLogger("trainer.voice")
FRAMINGS = ("trim2s", "cut", "pad", "late")
URDU4 = ("neutral", "happy", "sad", "angry")


@dataclass(frozen=True)
class Variant:
    copies: int = 0                     # augmented copies of each training clip
    aug: Augment = field(default_factory=Augment)
    codecs: tuple[str, ...] = ("mp3_160k", "mp3_64k")
    tess_every: int = 4
    hand_only: bool = False             # the hand-made statistics alone (the voice before its speech encoder)
    members: int = 2


VARIANTS: dict[str, Variant] = {
    "hand_plain": Variant(hand_only=True),
    "hand_aug4": Variant(copies=4, hand_only=True),
    "plain": Variant(),
    "aug2": Variant(copies=2),
    "aug4": Variant(copies=4),
    "aug4_nocodec": Variant(copies=4, codecs=()),
    "aug4_tess_all": Variant(copies=4, tess_every=1),
}


def bundle_config(bundle: Path = REPO_ROOT / "models" / "default") -> PipelineConfig:
    return PipelineConfig.from_dict(json.loads((bundle / "manifest.json").read_text())["preprocessing"])


def without_encoder(cfg: PipelineConfig) -> PipelineConfig:
    """`cfg`'s utterance block without the speech encoder's states (its hand-made statistics alone)."""
    return replace(cfg, voice_encoder="", voice_layers="")


def vectors(samples: Sequence[Sample], cfg: PipelineConfig, frames_of: Callable[[Sample], AudioFrames]) -> np.ndarray:
    out = []
    for s in samples:
        f = frames_of(s)
        out.append(frames_utterance(f, cfg))
    return np.stack(out).astype(np.float32) if out else np.zeros((0, cfg.utterance_dim), np.float32)


def scores(p: np.ndarray, y: np.ndarray, classes: Sequence[str] = BASIC7, restrict: Sequence[str] | None = None) -> dict:
    pred = p.argmax(1)
    out = {"n": int(len(y)), "accuracy": float((pred == y).mean()),
           "uar": float(np.mean([(pred[y == c] == c).mean() for c in np.unique(y)])),
           "wrong_above_0.9": int(((pred != y) & (p.max(1) > 0.9)).sum()),
           "ece": float(expected_calibration_error(y, p)),
           "answered": {classes[c]: int((pred == c).sum()) for c in np.unique(pred)}}
    if restrict:
        idx = [list(classes).index(c) for c in restrict]
        out["accuracy_restricted"] = float((np.asarray(idx)[p[:, idx].argmax(1)] == y).mean())
    return out


class Study:
    def __init__(self, data: Path, cache: FeatureCache, split: str, cfg: PipelineConfig):
        self.cfg = cfg
        self.cache = cache
        found = discover_corpora(data)
        self.corpora = {c: load_corpus(c, found[c]) for c in ("ravdess", "tess", "cremad", "urdu") if c in found}
        held = RAVDESS_VAL if split == "val" else RAVDESS_TEST
        rav = [s for s in self.corpora["ravdess"] if s.modality == "audio"]
        actor = lambda s: s.speaker.split(":")[1]  # noqa: E731
        # val: actors 1-14 -> 15-16; test: 1-16 -> 17-20
        self.rav_train = [s for s in rav if actor(s) not in RAVDESS_TEST | held]
        self.rav_held = [s for s in rav if actor(s) in held]
        self.tess = self.corpora.get("tess", [])
        self.tess_train = [s for s in self.tess if split_of(s) == "train"]
        self.index = {c: i for i, c in enumerate(BASIC7)}

    def y(self, samples: Sequence[Sample]) -> np.ndarray:
        return np.array([self.index[s.label] for s in samples])

    def plain(self, samples: Sequence[Sample], ucfg: PipelineConfig | None = None) -> np.ndarray:
        """Utterance vectors under `ucfg` (default: the study's) of the samples as recorded."""
        return vectors(samples, ucfg or self.cfg, lambda s: frame_features(s, self.cfg, self.cache))

    def training_set(self, v: Variant, with_tess: bool, ucfg: PipelineConfig) -> tuple[np.ndarray, np.ndarray]:
        tess = self.tess_train[:: v.tess_every] if with_tess and v.tess_every else []
        clips = self.rav_train + tess
        xs, ys = [self.plain(clips, ucfg)], [self.y(clips)]
        for codec in v.codecs:
            xs.append(coded_utterances(clips, self.cfg, ucfg, self.cache, codec))
            ys.append(self.y(clips))
        for k in range(v.copies):
            xs.append(augmented_utterances(clips, ucfg, self.cache, k, v.aug, frames_cfg=self.cfg))
            ys.append(self.y(clips))
        return np.concatenate(xs), np.concatenate(ys)

    def head(self, x: np.ndarray, y: np.ndarray, v: Variant):
        members = [train_utterance_classifier(x, y, len(BASIC7), seed=i, name=f"mlp{i}") for i in range(v.members)]
        return lambda z: np.mean([m.predict(z, verbose=0, batch_size=512) for m in members], axis=0)

    def run(self, name: str, v: Variant) -> dict:
        """The variant's figures; `... adapted`: the same corpus with its voices' statistics mapped
        onto the training ones (service.model.voice_adaptation), as `--adapt-voice` would."""
        t0 = time.perf_counter()
        ucfg = without_encoder(self.cfg) if v.hand_only else self.cfg
        out: dict = {"variant": name}
        x_train, y_train = self.training_set(v, True, ucfg)
        predict = self.head(x_train, y_train, v)
        moments = (x_train.mean(0), x_train.std(0))

        def adapted(x: np.ndarray, train: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
            return moment_matched(x, x.mean(0), x.std(0), *train)

        held_y = self.y(self.rav_held)
        held = self.plain(self.rav_held, ucfg)
        out["in-corpus"] = scores(predict(held), held_y)
        out["in-corpus adapted"] = scores(predict(adapted(held, moments)), held_y)
        for how in FRAMINGS:
            x = vectors(self.rav_held, ucfg, lambda s, how=how: transformed_frame_features(
                s, self.cfg, self.cache, f"reframed {how} 0", lambda sig, sr: reframed(sig, sr, how, 0)))
            out[f"framing {how}"] = scores(predict(x), held_y)
        if "cremad" in self.corpora:
            cre = self.corpora["cremad"]
            out["CREMA-D"] = scores(predict(self.plain(cre, ucfg)), self.y(cre))
        if "urdu" in self.corpora:
            urdu = self.corpora["urdu"]
            x = self.plain(urdu, ucfg)
            out["urdu"] = scores(predict(x), self.y(urdu), restrict=URDU4)
            out["urdu adapted"] = scores(predict(adapted(x, moments)), self.y(urdu), restrict=URDU4)
        if self.tess:
            x_loco, y_loco = self.training_set(v, False, ucfg)
            loco = self.head(x_loco, y_loco, v)
            x = self.plain(self.tess, ucfg)
            out["loco TESS"] = scores(loco(x), self.y(self.tess))
            out["loco TESS adapted"] = scores(loco(adapted(x, (x_loco.mean(0), x_loco.std(0)))), self.y(self.tess))
        out["minutes"] = round((time.perf_counter() - t0) / 60, 1)
        return out


def study_rows(data: Path, cache: FeatureCache, split: str, cfg: PipelineConfig,
               variants: Sequence[str]) -> list[dict]:
    """One row of figures per named variant (`VARIANTS`), as `cross_corpus_table` prints them."""
    study = Study(data, cache, split, cfg)
    return [study.run(name, VARIANTS[name]) for name in variants]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m trainer.voice.cross_corpus", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA_DIR)
    ap.add_argument("--cache", type=Path, default=CACHE_DIR / "features")
    ap.add_argument("--split", choices=("val", "test"), default="val")
    ap.add_argument("--variants", default="plain,aug4")
    ap.add_argument("--voice-layers", help="the encoder states pooled (default: the shipped bundle's)")
    ap.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results" / "voice_cross_corpus.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    cfg = bundle_config()
    if args.voice_layers:
        cfg = replace(cfg, voice_layers=args.voice_layers)
    study = Study(args.data, FeatureCache(args.cache), args.split, cfg)
    rows = []
    for name in args.variants.split(","):
        rows.append(study.run(name, VARIANTS[name]))
        log.info("%s", json.dumps(rows[-1]))
        print(cross_corpus_table(rows), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
