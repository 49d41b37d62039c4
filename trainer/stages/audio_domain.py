"""Stage `audio_domain`: the out-of-domain signal of the voice (trainer/voice/domain.py),
fitted on the audio head's training utterances (as recorded, coded and augmented), with its
thresholds from validation speakers' utterances (as recorded and augmented): `inside` is the
`audio_domain_inside_q` quantile of their distances, `outside` that times
`audio_domain_outside_factor`. No evaluation corpus takes part."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer.export import ExportResult, export_onnx
from trainer.stages import BuildContext, log, stage_output
from trainer.stages.audio import AudioFeatures
from trainer.stages.audio_head import training_set
from trainer.stages.data import Corpora
from trainer.voice.domain import domain_model, fit_domain
from trainer.voice.features import augmented_utterances, frames_utterance

VALIDATION_COPIES = 2   # augmented copies of each validation clip among the held-in utterances (when the
                        # head trains on augmented copies too: the quick profile's does not)


@stage_output
@dataclass
class AudioDomainFit:
    export: ExportResult | None          # None: no audio head, nothing to guard
    thresholds: dict[str, Any]           # service.model.manifest.AudioDomain's fields


def held_in(ctx: BuildContext, corpora: Corpora, audio: AudioFeatures) -> np.ndarray:
    """Utterance vectors of the validation clips with a voice, as recorded and augmented."""
    cfg = ctx.cfg
    pairs = [(s, f) for s, f in zip(corpora.audio["val"], audio.frames["val"]) if len(f.features)]
    x = [frames_utterance(f, cfg) for _, f in pairs]
    samples = [s for s, _ in pairs]
    for k in range(VALIDATION_COPIES if ctx.recipe.audio_head_augmented else 0):
        x += list(augmented_utterances(samples, cfg, ctx.cache, k))
    return np.stack(x).astype(np.float32)


def audio_domain(ctx: BuildContext, corpora: Corpora, audio: AudioFeatures, head) -> AudioDomainFit:
    r = ctx.recipe
    if head.export is None or r.audio_domain_outside_factor <= 0:
        return AudioDomainFit(None, {})
    x, _ = training_set(ctx, corpora, audio)
    fit = fit_domain(x)
    val = held_in(ctx, corpora, audio)
    d_val, d_train = fit.distance(val), fit.distance(x)
    inside = float(np.quantile(d_val, r.audio_domain_inside_q))
    thresholds = {"inside": round(inside, 4), "outside": round(inside * r.audio_domain_outside_factor, 4),
                  "fitted_on": (f"{len(x)} training utterances (as recorded, coded, augmented); thresholds: the "
                                f"{r.audio_domain_inside_q:g} quantile of {len(val)} validation speakers' utterances "
                                f"(as recorded and augmented), and {r.audio_domain_outside_factor:g} times it"),
                  "n_train": len(x), "n_validation": len(val),
                  "train_mean": [round(float(v), 6) for v in x.mean(0)],
                  "train_std": [round(float(v), 6) for v in x.std(0)]}
    log.info("audio domain: distance median train %.2f, validation %.2f; inside %.2f, outside %.2f",
             np.median(d_train), np.median(d_val), thresholds["inside"], thresholds["outside"])
    export = export_onnx(domain_model(fit), ctx.staging / "audio_domain.onnx", sample_inputs=val[:64],
                         input_name="utterance", output_name="distance", atol=1e-3)
    return AudioDomainFit(export, thresholds)
