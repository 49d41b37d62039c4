"""Stage `audio_head` (issue 15): a dedicated audio-only classifier on the per-utterance
statistics of the speech-active frames, served for audio-only clips and as the audio expert
of late fusion.

Why a head of its own: the sequence classifier sees the utterance block beside 8 steps of
window statistics and face features, and learns to lean on the face; on held-out RAVDESS
actors its audio-only view scored 0.50 where a small MLP on the same utterance block scored
0.58-0.60 (bench/audio_eval.md). The head is an average of a few such MLPs trained from
different seeds (one ONNX graph), which steadies the answer of a model trained on 14 actors.
Only a quarter of TESS's clips join its training: TESS's two voices outnumber the RAVDESS
actors' clips and pull the head towards them (bench/audio_eval.md: 4 folds over actors 1-16).

Its inputs are read back from the fusion sequences of the `pairs` stage with the serving
code's `utterance_of`, so the head sees exactly what the service hands it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.pipeline.fusion import utterance_of

from ..export import ExportResult, export_onnx
from . import BuildContext, log, stage_output
from .fusion import Pairs


def utterances(cfg, data: dict[str, np.ndarray], tess_every: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Each clip's utterance vector and label, once per clip: the rows of `data` that carry
    audio, de-duplicated (training draws several pairs per clip); of TESS's clips only every
    `tess_every`-th (0: none)."""
    flag = cfg.layout()["flags"][0]
    rows = np.flatnonzero((data["X"][:, :, flag] > 0).any(axis=1))
    u = np.stack([utterance_of(data["X"][i], cfg) for i in rows]) if len(rows) else np.zeros((0, cfg.utterance_dim))
    _, first = np.unique(u, axis=0, return_index=True)
    keep = np.sort(first)
    tess = np.array([str(g).startswith("tess:") for g in data["group"][rows][keep]], bool)
    nth = np.cumsum(tess) - 1  # index among the TESS clips
    keep = keep[~tess | ((nth % tess_every == 0) if tess_every > 0 else False)]
    return u[keep].astype(np.float32), data["y"][rows][keep]


def average_of(members, n_inputs: int):
    """One Keras model whose output is the mean of the members' probabilities."""
    import keras
    from keras import layers

    inp = keras.Input(shape=(n_inputs,), dtype="float32", name="utterance")
    outs = [m(inp) for m in members]
    out = outs[0] if len(outs) == 1 else layers.Average()(outs)
    return keras.Model(inp, out, name="audio_head")


@stage_output
@dataclass
class AudioHead:
    export: ExportResult | None      # None: the layout has no utterance block


def audio_head(ctx: BuildContext, pairs: Pairs) -> AudioHead:
    from ..audio_features import train_utterance_classifier

    cfg, r = ctx.cfg, ctx.recipe
    if not cfg.utterance_dim or r.audio_head_members < 1:
        return AudioHead(None)
    x, y = utterances(cfg, pairs.data["train"], r.audio_head_tess_every)
    log.info("audio head: %d training utterances, %d members", len(y), r.audio_head_members)
    members = [train_utterance_classifier(x, y, len(ctx.classes), hidden=r.audio_head_hidden,
                                          epochs=r.audio_head_epochs, seed=r.seed + i, name=f"audio_mlp_{i}")
               for i in range(r.audio_head_members)]
    return AudioHead(export_onnx(average_of(members, x.shape[1]), ctx.staging / "audio_head.onnx",
                                 sample_inputs=x[:64], input_name="utterance", output_name="probabilities"))
