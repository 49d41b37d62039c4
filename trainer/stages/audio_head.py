"""Stage `audio_head`: a dedicated audio-only classifier on the per-utterance
statistics of the speech-active frames, served for audio-only clips and as the audio expert
of late fusion.

Why a head of its own: the sequence classifier sees the utterance block beside 8 steps of
window statistics and face features, and learns to lean on the face; on held-out RAVDESS
actors its audio-only view scored 0.50 where a small MLP on the same utterance block scored
0.58-0.60 (bench/audio_eval.md). The head is an average of a few such MLPs trained from
different seeds (one ONNX graph), which steadies the answer of a model trained on 14 actors.
Only a quarter of TESS's clips join its training: TESS's two voices outnumber the RAVDESS
actors' clips and pull the head towards them (bench/audio_eval.md: 4 folds over actors 1-16).

Corpora differ in what a user's recording differs in too: framing (RAVDESS: a second of
silence, then one of two sentences), room, microphone, level, speaker. Trained on RAVDESS and
TESS as recorded, the head answered trimmed held-out clips 0.53 against 0.58 as recorded; with
`audio_head_augmented` copies of each clip (crops, padding, speed, pitch, reverberation, noise,
band limits, gain) it answered them 0.58 against 0.60 (validation actors,
`python -m trainer.voice.cross_corpus`).

Lossy coding moves the features (LAME's 7.3 kHz low-pass at 16 kHz changed the head's label
on 39 % of validation clips), so the head also trains on mp3 round trips of its clips.
The `classifiers` stage scores it on the validation and test sequences through the serving
code's `utterance_of`, so what is reported is what the service hands it."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trainer.export import ExportResult, export_onnx
from trainer.stages import BuildContext, log, stage_output
from trainer.stages.audio import AudioFeatures
from trainer.stages.data import Corpora
from trainer.voice.features import augmented_utterances, coded_utterances, frames_utterance


def training_set(ctx: BuildContext, corpora: Corpora, audio: AudioFeatures) -> tuple[np.ndarray, np.ndarray]:
    """The head's training utterances and labels: each training clip with a voice (of TESS's,
    every `audio_head_tess_every`-th), then the same clips again after each lossy round trip
    in `audio_head_codecs`, then `audio_head_augmented` augmented copies of each. Utterance vectors are the pipeline's (`utterance_vector` over the
    speech-active frames), what `assemble` puts in the fusion sequence."""
    cfg, r = ctx.cfg, ctx.recipe
    samples, frames = corpora.audio["train"], audio.frames["train"]
    labels = corpora.labels(samples, ctx)
    nth_tess = np.cumsum([s.corpus == "tess" for s in samples]) - 1
    keep = [i for i, (s, f) in enumerate(zip(samples, frames)) if len(f.features) and
            (s.corpus != "tess" or (r.audio_head_tess_every > 0 and nth_tess[i] % r.audio_head_tess_every == 0))]
    x = [frames_utterance(frames[i], cfg) for i in keep]
    y = [labels[i] for i in keep]
    for codec in r.audio_head_codecs:
        x += list(coded_utterances([samples[i] for i in keep], cfg, cfg, ctx.cache, codec))
        y += [labels[i] for i in keep]
    for k in range(r.audio_head_augmented):
        x += list(augmented_utterances([samples[i] for i in keep], cfg, ctx.cache, k))
        y += [labels[i] for i in keep]
    return np.stack(x).astype(np.float32), np.asarray(y)


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


def audio_head(ctx: BuildContext, corpora: Corpora, audio: AudioFeatures) -> AudioHead:
    from trainer.voice.features import train_utterance_classifier

    cfg, r = ctx.cfg, ctx.recipe
    if not cfg.utterance_dim or r.audio_head_members < 1:
        return AudioHead(None)
    if cfg.audio_utterance_source != "frames":
        log.info("audio head: skipped (it summarises frame features; this build's utterance block holds codes)")
        return AudioHead(None)
    x, y = training_set(ctx, corpora, audio)
    log.info("audio head: %d training utterances (codec copies: %s), %d members", len(y),
             ", ".join(r.audio_head_codecs) or "none", r.audio_head_members)
    members = [train_utterance_classifier(x, y, len(ctx.classes), hidden=r.audio_head_hidden,
                                          epochs=r.audio_head_epochs, seed=r.seed + i, name=f"audio_mlp_{i}")
               for i in range(r.audio_head_members)]
    return AudioHead(export_onnx(average_of(members, x.shape[1]), ctx.staging / "audio_head.onnx",
                                 sample_inputs=x[:64], input_name="utterance", output_name="probabilities"))
