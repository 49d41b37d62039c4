"""Adapting the voice to a batch of recordings from one setup (a folder, an archive, a live
session), without labels: each column of the voice's utterance statistics is standardised on
the batch's own mean and spread, then mapped onto the training utterances' (moment matching).

A room, a microphone, a language or a corpus shifts every voice in it the same way; that shift
is what puts another corpus's voices out of the training distribution. Removing it per batch
raised an acted German corpus from 0.39 to 0.49 in a first study (../shared/models/README.md).
It also removes what the batch's voices share: a batch that is mostly one emotion is pulled
towards the average voice, so it is an option (`emotion-av predict --adapt-voice`,
`Predictor.predict_many(adapt_voice=True)`), needs `MIN_CLIPS` voices, and every answer made
with it says so (`adaptation.voice`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from service.pipeline.config import PipelineConfig
from service.pipeline.fusion import utterance_of

MIN_CLIPS = 20
_MIN_STD = 1e-6


class AdaptationError(ValueError):
    pass


@dataclass
class RunningMoments:
    """Column means and variances of vectors fed one at a time (Welford): a batch of any size in
    constant memory."""

    n: int = 0
    mean: np.ndarray | None = None
    m2: np.ndarray | None = None

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, np.float64)
        if self.mean is None:
            self.mean, self.m2 = np.zeros_like(x), np.zeros_like(x)
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.m2 / max(self.n, 1))


@dataclass(frozen=True)
class VoiceAdaptation:
    """A batch's utterance statistics, and the training ones they are mapped onto."""

    batch_mean: np.ndarray
    batch_std: np.ndarray
    train_mean: np.ndarray
    train_std: np.ndarray
    n_clips: int
    source: str = field(default="batch")

    @classmethod
    def fit(cls, moments: RunningMoments, domain: Any, source: str = "batch") -> "VoiceAdaptation":
        """From the running moments of a batch's utterance blocks and the bundle's `audio_domain`
        entry (its training statistics)."""
        if domain is None or not getattr(domain, "train_mean", None):
            raise AdaptationError("this bundle does not carry its training voices' statistics "
                                  "(rebuild it with this trainer to adapt the voice)")
        if moments.n < MIN_CLIPS:
            raise AdaptationError(f"adapting the voice needs at least {MIN_CLIPS} recordings with a voice, "
                                  f"this batch has {moments.n}")
        train_mean = np.asarray(domain.train_mean, np.float64)
        if moments.mean is None or moments.mean.shape != train_mean.shape:
            raise AdaptationError("the batch's voice statistics do not fit the bundle's")
        return cls(moments.mean, moments.std, train_mean, np.asarray(domain.train_std, np.float64), moments.n, source)

    def apply(self, sequence: np.ndarray, cfg: PipelineConfig) -> np.ndarray:
        """The fusion sequence with its utterance block mapped from the batch's statistics onto
        the training ones (steps without a voice stay as they are)."""
        lay = cfg.layout()
        if "audio_utterance" not in lay:
            return sequence
        a, b = lay["audio_utterance"]
        out = np.array(sequence, np.float32, copy=True)
        voiced = out[:, lay["flags"][0]] > 0
        if voiced.any():
            out[voiced, a:b] = moment_matched(out[voiced, a:b], self.batch_mean, self.batch_std,
                                              self.train_mean, self.train_std)
        return out

    def describe(self) -> dict[str, Any]:
        """What the answer says about it."""
        return {"n_clips": self.n_clips, "method": "per-column standardisation on the batch, mapped onto the "
                                                   "training voices' mean and spread", "source": self.source}


def moment_matched(x: np.ndarray, batch_mean: np.ndarray, batch_std: np.ndarray, train_mean: np.ndarray,
                   train_std: np.ndarray) -> np.ndarray:
    """Rows of `x` standardised on the batch's statistics and mapped onto the training ones."""
    return ((x - batch_mean) / np.maximum(batch_std, _MIN_STD) * train_std + train_mean).astype(np.float32)


def batch_moments(sequences: Iterable[np.ndarray], cfg: PipelineConfig) -> RunningMoments:
    """Running moments of the utterance blocks of the sequences that have a voice."""
    moments = RunningMoments()
    flag = cfg.layout()["flags"][0]
    for seq in sequences:
        if (seq[:, flag] > 0).any():
            moments.add(utterance_of(seq, cfg))
    return moments
