"""How far an utterance lies from the voices the audio expert was trained on: the out-of-domain
signal that makes the service honest about a voice unlike its training corpora.

The distance is the Mahalanobis distance of the utterance vector (the audio head's input) to
the training utterances (their mean and a Ledoit-Wolf shrunk covariance, which stays well
conditioned with a few thousand vectors of a few hundred dimensions), divided by the square
root of the dimension so that a typical training utterance sits near 1. It ships as a small
ONNX graph (`audio_domain.onnx`: utterance -> distance) beside two thresholds in the manifest
(`service.model.manifest.AudioDomain`): up to `inside` the voice is trusted as the head
answers; from `outside` on it is not trusted at all; in between the trust falls linearly
(`service.model.calibration.reliability`).
Both thresholds are quantiles of held-in distances (validation speakers of the training
corpora, as recorded and augmented), never of an evaluation corpus."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DomainFit:
    mean: np.ndarray          # [U]
    whiten: np.ndarray        # [U, U]: (x - mean) @ whiten has identity covariance on the training set

    def distance(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, np.float64) - self.mean) @ self.whiten
        return np.sqrt((z ** 2).mean(axis=1))


def fit_domain(x: np.ndarray) -> DomainFit:
    from sklearn.covariance import LedoitWolf

    x = np.asarray(x, np.float64)
    scale = x.std(0) + 1e-6             # standardise first: the blocks' units differ by orders of magnitude
    cov = LedoitWolf().fit(x / scale).covariance_
    vals, vecs = np.linalg.eigh(cov)
    whiten = (vecs / np.sqrt(np.clip(vals, 1e-9, None))) @ vecs.T
    return DomainFit(x.mean(0), whiten / scale[:, None])


def domain_model(fit: DomainFit):
    """A Keras model: utterance [n, U] -> distance [n] (what `DomainFit.distance` computes)."""
    import keras

    u = fit.mean.shape[0]
    inp = keras.Input(shape=(u,), dtype="float32", name="utterance")
    dense = keras.layers.Dense(u, name="whiten")
    z = dense(inp)
    dist = keras.layers.Lambda(lambda t: keras.ops.sqrt(keras.ops.mean(keras.ops.square(t), axis=-1)),
                               name="distance")(z)
    model = keras.Model(inp, dist, name="audio_domain")
    dense.set_weights([fit.whiten.astype(np.float32), (-fit.mean @ fit.whiten).astype(np.float32)])
    return model

