"""ResNet-50 image features (paper Alg. 3): the real ``keras.applications.ResNet50``
architecture without its top, global average pooling, 2048-d per face.

No ImageNet weights can be downloaded here (design §3, §8): the backbone is built with
``weights=None`` and either trained by the trainer (on FER2013 faces) or loaded from a
user-supplied weights file. Inputs are float32 ``(image_size, image_size, 3)`` already
normalised by the pipeline; this module adds no preprocessing layer, so whatever
normalisation the weights expect must be the one the pipeline's config declares.
"""
from __future__ import annotations

from pathlib import Path

import keras
from keras import layers

RESNET50_NOTOP_PARAMS = 23_587_712
FEATURE_DIM = 2048


class WeightsMismatchError(ValueError):
    """A weights file does not fit the ResNet-50 backbone."""


def _weight_layer_names(model: keras.Model) -> set[str]:
    return {layer.name for layer in model.layers if layer.weights}


def _legacy_h5_layer_names(path: Path) -> set[str]:
    import h5py

    with h5py.File(path, "r") as f:
        group = f
        if "layer_names" not in f.attrs and "model_weights" in f:
            group = f["model_weights"]
        if "layer_names" not in group.attrs:
            raise WeightsMismatchError(f"{path}: not a Keras HDF5 weights file (no 'layer_names' attribute)")
        names = set()
        for raw in group.attrs["layer_names"]:
            name = raw.decode("utf8") if isinstance(raw, bytes) else str(raw)
            g = group[name]
            if list(g.attrs.get("weight_names", [])):
                names.add(name)
        return names


def load_backbone_weights(backbone: keras.Model, weights_path: str | Path) -> None:
    """Load a ResNet-50 (no top) weights file into ``backbone``; raise WeightsMismatchError
    when it does not fit.

    * legacy ``.h5`` / ``.hdf5`` (e.g. the ImageNet
      ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``): matched **by layer name**
      (Keras' ResNet-50 layer names are stable: ``conv1_conv``, ``conv2_block1_1_conv`` ...),
      so a file with or without a top, or saved from a model that wraps the backbone, loads.
      Every weight-bearing backbone layer must be present in the file and every shape must
      match (``skip_mismatch=False``); nothing is silently left at its random init.
    * Keras 3 ``.weights.h5`` / ``.keras``: loaded strictly (structure must match).
    """
    path = Path(weights_path)
    if not path.is_file():
        raise FileNotFoundError(f"ResNet-50 weights file not found: {path}")
    suffix = path.name.lower()
    try:
        if suffix.endswith(".weights.h5") or suffix.endswith(".keras"):
            backbone.load_weights(str(path), skip_mismatch=False)
        elif suffix.endswith(".h5") or suffix.endswith(".hdf5"):
            in_file = _legacy_h5_layer_names(path)
            missing = sorted(_weight_layer_names(backbone) - in_file)
            if missing:
                raise WeightsMismatchError(
                    f"{path} does not fit ResNet-50 (no top): {len(missing)} backbone layers have no weights "
                    f"in the file, e.g. {missing[:5]}")
            backbone.load_weights(str(path), skip_mismatch=False, by_name=True)
        else:
            raise WeightsMismatchError(
                f"{path}: unsupported weights file (expected .h5/.hdf5, .weights.h5 or .keras)")
    except WeightsMismatchError:
        raise
    except (ValueError, KeyError, OSError) as exc:
        raise WeightsMismatchError(f"{path} does not fit the ResNet-50 backbone (no top): {exc}") from exc


def build_resnet50(image_size: int, n_classes: int, *, weights_path: str | Path | None = None,
                   dropout: float = 0.5, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 1e-4,
                   augment: bool = True, bn_momentum: float = 0.9) -> tuple[keras.Model, keras.Model]:
    """Return ``(classifier, feature_extractor)``.

    ``feature_extractor``: ``keras.applications.ResNet50(weights=None, include_top=False,
    pooling="avg")``, input ``(image_size, image_size, 3)`` float32 -> ``(2048,)``.
    ``classifier``: [random horizontal flip and shift, training only] -> feature_extractor
    -> Dropout -> Dense(n_classes, softmax), compiled (Adam, sparse categorical
    crossentropy, accuracy). Both share the backbone's layers, so fine-tuning the
    classifier updates the feature extractor that gets exported (without augmentation).
    """
    if image_size < 32:
        raise ValueError(f"ResNet-50 needs image_size >= 32, got {image_size}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be >= 2, got {n_classes}")
    backbone = keras.applications.ResNet50(
        include_top=False, weights=None, input_shape=(image_size, image_size, 3), pooling="avg")
    backbone.name = "resnet50_features"
    # Moving statistics that follow training faster than Keras' 0.99: with weights changing
    # quickly from scratch, 0.99 leaves inference-mode BatchNorm far from training mode
    # (measured: 500 FER faces, 8 epochs: 23 % vs 61 % inference-mode accuracy on them).
    for layer in backbone.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = bn_momentum
    if weights_path is not None:
        load_backbone_weights(backbone, weights_path)

    inputs = keras.Input(shape=(image_size, image_size, 3), dtype="float32", name="image")
    x = inputs
    if augment:  # faces are left-right symmetric and the crops are not perfectly centred
        x = layers.RandomFlip("horizontal", name="aug_flip")(x)
        x = layers.RandomTranslation(0.08, 0.08, fill_mode="nearest", name="aug_shift")(x)
    features = backbone(x)
    x = layers.Dropout(dropout, name="head_dropout")(features)
    outputs = layers.Dense(n_classes, activation="softmax", name="head_softmax")(x)
    classifier = keras.Model(inputs, outputs, name="resnet50_classifier")
    classifier.compile(optimizer=keras.optimizers.Adam(learning_rate),
                       loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return classifier, backbone
