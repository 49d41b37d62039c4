"""Stages `audio_features` (frame features decoded through the serving code, cached per
file: the paper's 13 MFCC or the richer log-mel + spectral + pitch frames) and
`audio_encoder` (the paper's dense autoencoder over those frames, exported to ONNX)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.export import ExportResult, export_onnx
from trainer.stages import SPLITS, BuildContext, stage_output
from trainer.stages.data import Corpora
from trainer.voice.features import AudioFrames, all_frame_features


@dataclass
class AudioFeatures:
    frames: dict[str, list[AudioFrames]]   # split -> per clip: frame features, times, speech gate


def audio_features(ctx: BuildContext, corpora: Corpora) -> AudioFeatures:
    return AudioFeatures({k: all_frame_features(corpora.audio[k], [ctx.cfg], ctx.cache)[0] for k in SPLITS})


def train_autoencoder(x: np.ndarray, hidden: int, bottleneck: int, epochs: int, batch: int, name: str, seed: int):
    """Dense autoencoder on standardised inputs; returns the encoder with the
    standardisation built in (so the exported graph takes raw features)."""
    import keras

    from trainer.models import build_dense_autoencoder
    from trainer.models.standardise import standardiser

    keras.utils.set_random_seed(seed)
    xn = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-6)
    auto, encoder = build_dense_autoencoder(x.shape[1], hidden=hidden, bottleneck=bottleneck, name=name)
    auto.fit(xn, xn, epochs=epochs, batch_size=batch, shuffle=True, verbose=0)
    inp = keras.Input((x.shape[1],), name=f"{name}_input")
    return keras.Model(inp, encoder(standardiser(x)(inp)), name=f"{name}_encoder")


@stage_output
@dataclass
class Encoder:
    export: ExportResult


def audio_encoder(ctx: BuildContext, feats: AudioFeatures) -> Encoder:
    r = ctx.recipe
    frames = np.concatenate([m.features for m in feats.frames["train"] if len(m.features)])
    if len(frames) > r.audio_ae_max_frames:
        frames = frames[ctx.rng("audio_encoder").choice(len(frames), r.audio_ae_max_frames, replace=False)]
    enc = train_autoencoder(frames, r.audio_ae_hidden, ctx.cfg.audio_code_dim, r.ae_epochs, r.audio_ae_batch,
                            "audio_ae", r.seed)
    return Encoder(export_onnx(enc, ctx.staging / "audio_encoder.onnx", sample_inputs=frames[:256],
                               input_name="frames", output_name="code"))
