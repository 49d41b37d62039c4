"""Per-feature standardisation as a Keras layer holding its statistics as (non-trainable)
variables. tf2onnx freezes variables into the graph; the constants that
`keras.layers.Normalization` keeps would instead surface as extra graph inputs."""
from __future__ import annotations

import keras
import numpy as np


class Standardise(keras.layers.Layer):
    def __init__(self, mean: np.ndarray, std: np.ndarray, **kwargs):
        super().__init__(**kwargs)
        self._mean, self._std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

    def build(self, input_shape):
        self.mean = self.add_weight(shape=self._mean.shape, initializer="zeros", trainable=False, name="mean")
        self.inv_std = self.add_weight(shape=self._std.shape, initializer="ones", trainable=False, name="inv_std")
        self.mean.assign(self._mean)
        self.inv_std.assign(1.0 / self._std)

    def call(self, x):
        return (x - self.mean) * self.inv_std


def standardiser(rows: np.ndarray, eps: float = 1e-6) -> Standardise:
    """A Standardise layer fitted on `rows` [n, features]."""
    rows = rows.astype(np.float64)
    return Standardise(rows.mean(0), np.sqrt(rows.var(0) + eps))
