"""Stage `pairs`: fusion sequences for training and evaluation. Pseudo-pairs of audio clips
and face images of the same emotion and split (no audio-visual corpus here), with modality
dropout in training, plus real audio-visual clips through the serving path when present."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.features import video_sequences
from trainer.fusion.pairs import FacePool, build_pairs
from trainer.stages import SPLITS, BuildContext, stage_output
from trainer.stages.audio import AudioFeatures
from trainer.stages.data import Corpora
from trainer.stages.faces import FaceFeatures


@stage_output
@dataclass
class Pairs:
    data: dict[str, dict[str, np.ndarray]]     # split -> {"X", "y", "view", "group"}
    real_av: dict[str, dict[str, np.ndarray]]  # split -> {"X", "y"} of real audio-visual clips


def pairs(ctx: BuildContext, corpora: Corpora, audio: AudioFeatures, faces: FaceFeatures, encoders) -> Pairs:
    rng, cfg, r = ctx.rng("pairs"), ctx.cfg, ctx.recipe
    pools = {k: FacePool(faces.features[k], faces.labels[k]) for k in SPLITS}
    # Validation draws faces from the train pool when no validation faces exist.
    pools["val"] = pools["val"] if len(pools["val"].labels) else pools["train"]

    def split_pairs(k: str, **kw) -> dict[str, np.ndarray]:
        return build_pairs(cfg, encoders, audio.frames[k], corpora.labels(corpora.audio[k], ctx),
                           [s.speaker for s in corpora.audio[k]], pools[k], rng=rng, **kw)

    data = {
        "train": split_pairs("train", draws=r.pair_draws, dropout=r.modality_dropout),
        # Early stopping watches all three inputs: the model must also answer on one modality.
        "val": split_pairs("val", draws=1, views=("fused", "audio", "face")),
        "test": split_pairs("test", draws=1, views=("fused", "audio", "face")),
    }
    real_av = {k: {"X": video_sequences(v, cfg, encoders), "y": corpora.labels(v, ctx)}
               for k, v in corpora.videos.items()}
    if len(real_av["train"]["y"]):  # real pairs join the training data as they are
        d = data["train"]
        d["X"] = np.concatenate([d["X"], real_av["train"]["X"]])
        d["y"] = np.concatenate([d["y"], real_av["train"]["y"]])
        d["view"] = np.concatenate([d["view"], ["real_av"] * len(real_av["train"]["y"])])
        d["group"] = np.concatenate([d["group"], [s.speaker for s in corpora.videos["train"]]])
    return Pairs(data, real_av)
