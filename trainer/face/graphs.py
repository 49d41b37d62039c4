"""Small Keras graphs the face stages and the distillation export alike (no stage imports here,
so trainer.face modules can use them without an import circle through trainer.stages)."""
from __future__ import annotations

import numpy as np


def flip_averaged(backbone):
    """The backbone's features averaged over each face and its mirror image, as one graph:
    the trainer's pairs and the service then share it with no change to the pipeline."""
    import keras

    face = keras.Input(backbone.input_shape[1:], name="face")
    mirrored = keras.layers.Lambda(lambda x: keras.ops.flip(x, axis=2), name="mirror")(face)
    features = keras.layers.Average(name="flip_average")([backbone(face), backbone(mirrored)])
    return keras.Model(face, features, name=f"{backbone.name}_flip_averaged")


def head_model(kernel: np.ndarray, bias: np.ndarray):
    """A Keras model: features [n, D] -> softmax probabilities [n, C], with the given layer."""
    import keras

    inp = keras.Input(shape=(kernel.shape[0],), dtype="float32", name="features")
    dense = keras.layers.Dense(kernel.shape[1], activation="softmax", name="face_softmax")
    model = keras.Model(inp, dense(inp), name="face_head")
    dense.set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    return model
