"""Stage `data`: the corpora under --data (never an evaluation-only one: URDU), filtered to the
label set, capped by the recipe, split speaker-independently (trainer/data/splits.py)."""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from trainer.data import EVALUATION_ONLY, Sample, discover_corpora, load_corpus, map_label
from trainer.data.splits import split_of
from trainer.stages import SPLITS, BuildContext

log = logging.getLogger("trainer")


@dataclass
class Corpora:
    audio: dict[str, list[Sample]]        # split -> audio clips
    faces: dict[str, list[Sample]]        # split -> face images
    videos: dict[str, list[Sample]]       # split -> real audio-visual clips
    counts: dict[str, dict[str, int]]     # modality -> split -> n

    def labels(self, samples: Sequence[Sample], ctx: BuildContext) -> np.ndarray:
        index = {c: i for i, c in enumerate(ctx.classes)}
        return np.array([index[map_label(s.label, ctx.opts.label_set)] for s in samples], dtype=np.int64)


def training_corpora(found: dict[str, Path], wanted: Sequence[str] = ()) -> list[str]:
    """The corpora a build loads: those of `wanted` (empty: every one found) that were found,
    never an evaluation-only one (trainer.data.EVALUATION_ONLY: URDU), even when named."""
    wanted = tuple(wanted) or tuple(found)
    left_out = sorted(c for c in wanted if c in found and c in EVALUATION_ONLY)
    if left_out:
        log.info("evaluation-only corpora left out of the build: %s", ", ".join(left_out))
    return [c for c in wanted if c in found and c not in EVALUATION_ONLY]


def load_samples(ctx: BuildContext) -> list[Sample]:
    found = discover_corpora(ctx.opts.data_dir)
    wanted = ctx.recipe.corpora or tuple(found)
    missing = [c for c in wanted if c not in found]
    if missing:
        log.warning("corpora not found under %s: %s", ctx.opts.data_dir, ", ".join(missing))
    samples = [s for c in training_corpora(found, wanted) for s in load_corpus(c, found[c])]
    if not samples:
        raise SystemExit(f"no corpus found under {ctx.opts.data_dir}")
    return [s for s in samples if map_label(s.label, ctx.opts.label_set) is not None]


def cap(samples: list[Sample], per: int | None, key: Callable[[Sample], Any], rng: np.random.Generator) -> list[Sample]:
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


def prepare_data(ctx: BuildContext) -> Corpora:
    rng, r = ctx.rng("data"), ctx.recipe
    samples = load_samples(ctx)
    audio = by_split(cap([s for s in samples if s.modality == "audio"], r.audio_per_speaker_class,
                         lambda s: (s.speaker, s.label), rng), "audio")
    faces = {k: cap(v, r.faces_per_class, lambda s: s.label, rng) for k, v in by_split(samples, "image").items()}
    videos = by_split(samples, "video")
    counts = {m: {k: len(v) for k, v in d.items()} for m, d in (("audio", audio), ("image", faces), ("video", videos))}
    log.info("samples per split: %s", counts)
    if not audio["train"] or not faces["train"]:
        raise SystemExit("training needs audio clips and face images in the train split")
    return Corpora(audio, faces, videos, counts)
