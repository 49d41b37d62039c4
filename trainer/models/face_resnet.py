"""A ResNet sized for face crops (paper Alg. 3, adapted; design §2 step 4).

keras' ResNet-50 (7x7 stride-2 stem + max-pool) leaves a 48-px face as 2x2 maps before its
last stage: it throws the face away before it can learn it, and it cannot be pretrained
here. This is the same residual design (basic blocks, BatchNorm, identity shortcuts,
projection shortcuts where the shape changes) with a small-image stem: one 3x3 convolution,
stride 2, no max-pool, so a 48-px face is 24 -> 24 -> 12 -> 6 -> 3 px through the four
stages. Widths 32-64-128-256 with two blocks per stage (ResNet-18's layout at half width,
2.8M parameters) were measured to learn FER2013 fastest per CPU-minute (design §8).

Inputs are float32 (s, s, 3) grey faces replicated to 3 channels and normalised by the
pipeline (`service.pipeline.visual.resnet_input`), exactly as the ResNet-50 option takes
them; the pooled feature (256-d) is the image feature of a summary frame.
"""
from __future__ import annotations

import keras
from keras import layers

DEFAULT_WIDTHS = (32, 64, 128, 256)
DEFAULT_BLOCKS = (2, 2, 2, 2)


def _conv_bn(x, filters: int, kernel: int, stride: int, name: str, weight_decay: float):
    x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False,
                      kernel_initializer="he_normal", kernel_regularizer=_l2(weight_decay),
                      name=f"{name}_conv")(x)
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=f"{name}_bn")(x)


def _l2(weight_decay: float):
    return keras.regularizers.L2(weight_decay) if weight_decay else None


def _basic_block(x, filters: int, stride: int, name: str, weight_decay: float):
    shortcut = x
    y = layers.ReLU(name=f"{name}_relu1")(_conv_bn(x, filters, 3, stride, f"{name}_1", weight_decay))
    y = _conv_bn(y, filters, 3, 1, f"{name}_2", weight_decay)
    if stride != 1 or x.shape[-1] != filters:
        shortcut = _conv_bn(x, filters, 1, stride, f"{name}_proj", weight_decay)
    y = layers.Add(name=f"{name}_add")([shortcut, y])
    return layers.ReLU(name=f"{name}_out")(y)


def build_face_backbone(image_size: int, widths: tuple[int, ...] = DEFAULT_WIDTHS,
                        blocks: tuple[int, ...] = DEFAULT_BLOCKS, weight_decay: float = 0.0) -> keras.Model:
    """(s, s, 3) float32 -> pooled feature (widths[-1],), float32 output whatever the policy."""
    if image_size < 16:
        raise ValueError(f"the face ResNet needs image_size >= 16, got {image_size}")
    if len(widths) != len(blocks):
        raise ValueError("widths and blocks must have one entry per stage")
    inputs = keras.Input((image_size, image_size, 3), dtype="float32", name="face")
    x = layers.ReLU(name="stem_relu")(_conv_bn(inputs, widths[0], 3, 2, "stem", weight_decay))
    for stage, (filters, count) in enumerate(zip(widths, blocks), start=1):
        for block in range(count):
            stride = 2 if stage > 1 and block == 0 else 1
            x = _basic_block(x, filters, stride, f"stage{stage}_block{block + 1}", weight_decay)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Activation("linear", dtype="float32", name="features")(x)
    return keras.Model(inputs, outputs, name="face_resnet_features")


def build_face_classifier(backbone: keras.Model, n_classes: int, dropout: float = 0.2) -> keras.Model:
    """backbone -> Dropout -> Dense softmax (float32). Shares the backbone's layers, so
    training the classifier trains the feature extractor that gets exported."""
    inputs = keras.Input(backbone.input_shape[1:], dtype="float32", name="image")
    x = backbone(inputs)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="head_softmax")(x)
    return keras.Model(inputs, outputs, name="face_resnet_classifier")
