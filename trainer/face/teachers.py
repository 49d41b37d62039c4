"""Pretrained facial-expression models as teachers of the face expert (issue 40), each fed the
crop it was trained on and converted to ONNX by the trainer:

- face-api.js's expression net (MIT; TF.js weights manifest + one uint8-quantised shard): a
  small reader rebuilds its graph in Keras (four "dense blocks" of separable convolutions, as
  face-api's `FaceFeatureExtractor` + `FaceExpressionNet` define it) and the trainer's
  exporter writes ONNX. Input: the detection box, padded to a square (centred, black) and
  resized to 112 px, RGB 0-255 (face-api's `toBatchTensor(112, true)`).
- the OpenCV zoo's MobileFaceNet (Apache-2.0, trained on RAF-DB's official train split): its
  int8 ONNX, or a float copy with the int8 weights dequantised. Input: the face aligned by 5
  landmarks to the ArcFace 112x112 template, RGB, (x/255 - 0.5)/0.5, NCHW.
- YuNet (MIT) for the box and the 5 landmarks both need (`cv2.FaceDetectorYN`).

Teachers answer in basic7 order (`trainer.data.BASIC7`), softmax probabilities.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from trainer.data import BASIC7
from trainer.paths import DATA_DIR

MODELS_DIR = DATA_DIR.parent / "models"
FACE_API_DIR = MODELS_DIR / "face-api-expression"
FACE_API_MANIFEST = "face_expression_model-weights_manifest.json"
ZOO_ONNX = MODELS_DIR / "opencv-zoo-fer-mobilefacenet" / "facial_expression_recognition_mobilefacenet_2022july_int8.onnx"
YUNET_ONNX = MODELS_DIR / "yunet" / "face_detection_yunet_2023mar.onnx"
SOURCES = {
    "face_api": ("face-api.js expression net (@vladmandic/face-api 1.7.15)", "MIT", "training data not documented"),
    "zoo": ("OpenCV model zoo facial_expression_recognition_mobilefacenet_2022july", "Apache-2.0",
            "trained on RAF-DB basic's official train split"),
    "yunet": ("OpenCV model zoo face_detection_yunet_2023mar", "MIT", "face detector, 5 landmarks"),
}

FACE_API_CLASSES = ("neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised")
ZOO_CLASSES = ("angry", "disgust", "fearful", "happy", "neutral", "sad", "surprised")
FACE_API_MEAN_RGB = (122.782, 117.001, 104.298)
# ArcFace's 112x112 template (eyes, nose tip, mouth corners; image left first), as the zoo aligns.
ARCFACE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                        [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)


def to_basic7(probs: np.ndarray, classes: tuple[str, ...]) -> np.ndarray:
    """Columns reordered from a teacher's class order to basic7's."""
    return probs[:, [classes.index(c) for c in BASIC7]]


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(1, keepdims=True))
    return z / z.sum(1, keepdims=True)


# --------------------------------------------------------------------------- face-api

def read_tfjs_weights(folder: Path = FACE_API_DIR, manifest: str = FACE_API_MANIFEST) -> dict[str, np.ndarray]:
    """A TF.js weights manifest and its shards -> {name: float32 array}; uint8-quantised
    weights are dequantised (q * scale + min), as tfjs-core's `decodeWeights` does."""
    groups = json.loads((Path(folder) / manifest).read_text())
    out = {}
    for group in groups:
        buf = b"".join((Path(folder) / p).read_bytes() for p in group["paths"])
        offset = 0
        for w in group["weights"]:
            n = int(np.prod(w["shape"])) if w["shape"] else 1
            q = w.get("quantization")
            if q:
                dtype = np.dtype(q["dtype"])
                raw = np.frombuffer(buf, dtype, n, offset)
                values = raw.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
            else:
                dtype = np.dtype(w["dtype"])
                values = np.frombuffer(buf, dtype, n, offset).astype(np.float32)
            offset += n * dtype.itemsize
            out[w["name"]] = values.reshape(w["shape"])
        if offset != len(buf):
            raise ValueError(f"{folder}: the manifest describes {offset} bytes, the shards hold {len(buf)}")
    return out


def face_api_keras(weights: dict[str, np.ndarray]):
    """face-api's expression net in Keras: [n, 112, 112, 3] RGB 0-255 -> probabilities in
    face-api's class order. Each dense block: out1 = relu(conv0(x)) (stride 2), then three
    separable convolutions, each fed relu of the sum of all earlier outputs of the block."""
    import keras
    from keras import layers

    x_in = keras.Input((112, 112, 3), dtype="float32", name="face")
    mean = np.array(FACE_API_MEAN_RGB, np.float32)
    x = layers.Rescaling(1 / 255.0, offset=-mean / 255.0, name="normalise")(x_in)
    assigned = []
    for b in range(4):
        p = f"dense{b}"
        if b == 0:
            conv0 = layers.Conv2D(32, 3, strides=2, padding="same", name=f"{p}_conv0")
            assigned.append((conv0, [weights[f"{p}/conv0/filters"], weights[f"{p}/conv0/bias"]]))
        else:
            conv0 = layers.SeparableConv2D(weights[f"{p}/conv0/pointwise_filter"].shape[-1], 3, strides=2,
                                           padding="same", name=f"{p}_conv0")
            assigned.append((conv0, [weights[f"{p}/conv0/{k}"] for k in ("depthwise_filter", "pointwise_filter", "bias")]))
        outs = [layers.ReLU(name=f"{p}_out1")(conv0(x))]
        for i in (1, 2, 3):
            inp = outs[0] if i == 1 else layers.ReLU(name=f"{p}_in{i}")(layers.Add(name=f"{p}_sum{i}")(outs))
            conv = layers.SeparableConv2D(outs[0].shape[-1], 3, padding="same", name=f"{p}_conv{i}")
            assigned.append((conv, [weights[f"{p}/conv{i}/{k}"] for k in ("depthwise_filter", "pointwise_filter", "bias")]))
            outs.append(conv(inp))
        x = layers.ReLU(name=f"{p}_out")(layers.Add(name=f"{p}_sum4")(outs))
    x = layers.AveragePooling2D(7, strides=2, padding="valid", name="pool")(x)
    x = layers.Flatten(name="flatten")(x)
    fc = layers.Dense(len(FACE_API_CLASSES), activation="softmax", name="fc")
    out = fc(x)
    assigned.append((fc, [weights["fc/weights"], weights["fc/bias"]]))
    model = keras.Model(x_in, out, name="face_api_expression")
    for layer, values in assigned:
        layer.set_weights(values)
    return model


def face_api_reference(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The same graph written with TensorFlow's raw ops, one for one as face-api's TypeScript
    calls tf.js (conv2d / separableConv2d 'same', add, relu, avgPool 7x7/2 'valid', matMul):
    the reference the Keras build and its ONNX are checked against."""
    import tensorflow as tf

    w = {k: tf.constant(v) for k, v in weights.items()}
    mean = tf.constant(np.array(FACE_API_MEAN_RGB, np.float32))
    x = (tf.constant(x, tf.float32) - mean) / 255.0

    def sep(t, p, stride):
        return tf.nn.separable_conv2d(t, w[f"{p}/depthwise_filter"], w[f"{p}/pointwise_filter"],
                                      [1, stride, stride, 1], "SAME") + w[f"{p}/bias"]

    for b in range(4):
        p = f"dense{b}"
        if b == 0:
            out1 = tf.nn.relu(tf.nn.conv2d(x, w[f"{p}/conv0/filters"], 2, "SAME") + w[f"{p}/conv0/bias"])
        else:
            out1 = tf.nn.relu(sep(x, f"{p}/conv0", 2))
        out2 = sep(out1, f"{p}/conv1", 1)
        out3 = sep(tf.nn.relu(out1 + out2), f"{p}/conv2", 1)
        out4 = sep(tf.nn.relu(out1 + out2 + out3), f"{p}/conv3", 1)
        x = tf.nn.relu(out1 + out2 + out3 + out4)
    x = tf.nn.avg_pool2d(x, 7, 2, "VALID")
    logits = tf.matmul(tf.reshape(x, [tf.shape(x)[0], -1]), w["fc/weights"]) + w["fc/bias"]
    return tf.nn.softmax(logits).numpy()


def export_face_api(out: Path, sample_faces: np.ndarray, folder: Path = FACE_API_DIR):
    """face-api's expression net -> ONNX at `out` (the trainer's exporter: Keras vs ONNX Runtime parity)."""
    from trainer.export import export_onnx

    return export_onnx(face_api_keras(read_tfjs_weights(folder)), out, sample_inputs=sample_faces.astype(np.float32),
                       input_name="face", output_name="probabilities")


def face_api_input(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    """face-api's crop: the box cut from the image (RGB), padded to a square with black, centred,
    resized to 112 px (bilinear). image: [h, w, 3] RGB uint8; box: x, y, w, h."""
    x, y, w, h = [int(round(v)) for v in box]
    x0, y0 = max(0, x), max(0, y)
    x1, y1 = min(image.shape[1], x + w), min(image.shape[0], y + h)
    crop = image[y0:y1, x0:x1]
    if crop.size == 0:
        crop = image
    ch, cw = crop.shape[:2]
    side = max(ch, cw)
    square = np.zeros((side, side, 3), np.uint8)
    oy, ox = (side - ch) // 2, (side - cw) // 2
    square[oy:oy + ch, ox:ox + cw] = crop
    return cv2.resize(square, (112, 112), interpolation=cv2.INTER_LINEAR).astype(np.float32)


# --------------------------------------------------------------------------- the zoo model

def zoo_with_batch_axis(out: Path, src: Path = ZOO_ONNX) -> Path:
    """The zoo model as published (int8, QOperator: QLinearConv / QLinearAdd / QLinearMatMul)
    with its batch axis made symbolic (published: fixed at 1), so a batch runs in one call.
    Not dequantised: the float form (int8 weights dequantised) measured no faster here
    (~28 ms vs ~27 ms a face, ../shared/models/README.md), and batching does not help either
    (27.8 ms a face at batch 16 vs 26.8 at batch 1, 1 thread)."""
    import onnx

    model = onnx.load(str(src))
    for v in list(model.graph.input) + list(model.graph.output) + list(model.graph.value_info):
        dims = v.type.tensor_type.shape.dim
        if dims:
            dims[0].Clear()
            dims[0].dim_param = "batch"
    onnx.checker.check_model(model)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(out))
    return out


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, shift; no reflection) taking the
    points `src` onto `dst` (Umeyama 1991), as a 2x3 matrix for cv2.warpAffine."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt))])
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / (s ** 2).sum(1).mean()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = md - scale * rot @ ms
    return m


def zoo_input(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """The zoo model's input [3, 112, 112]: the face aligned by its 5 landmarks, RGB, (x/255-0.5)/0.5."""
    aligned = cv2.warpAffine(image, similarity_transform(landmarks, ARCFACE_112), (112, 112))
    return ((aligned.astype(np.float32) / 255.0 - 0.5) / 0.5).transpose(2, 0, 1)


# --------------------------------------------------------------------------- YuNet

@dataclass
class Found:
    box: np.ndarray          # x, y, w, h in the image's pixels
    landmarks: np.ndarray    # [5, 2]
    detected: bool           # False: the whole image stands for the box, landmarks from a typical face


class YuNet:
    """cv2.FaceDetectorYN on a small face photo: the image is upscaled to at least `min_side`
    px and framed by a border (corpus crops are all face, and YuNet wants some context);
    the largest face wins. Where none is found, the whole image stands for the box and
    `typical` (landmarks as fractions of the side) for its landmarks."""

    # Landmarks as fractions of a tight square face crop (FER2013's framing): the median of
    # YuNet's own landmarks on 37 FER2013 training faces it found (2026-12-07), made symmetric.
    TYPICAL = np.array([[0.30, 0.39], [0.68, 0.39], [0.48, 0.60], [0.33, 0.77], [0.63, 0.77]], np.float32)

    def __init__(self, model: Path = YUNET_ONNX, min_side: int = 160, border: float = 0.25,
                 score_threshold: float = 0.5, typical: np.ndarray | None = None):
        self.det = cv2.FaceDetectorYN.create(str(model), "", (320, 320), score_threshold, 0.3, 50)
        self.min_side, self.border = min_side, border
        self.typical = self.TYPICAL if typical is None else typical

    def find(self, image: np.ndarray) -> Found:
        """image: [h, w, 3] uint8 (BGR or RGB alike: YuNet is trained on colour and grey faces)."""
        h, w = image.shape[:2]
        f = max(1.0, self.min_side / min(h, w))
        big = cv2.resize(image, (round(w * f), round(h * f)), interpolation=cv2.INTER_CUBIC) if f > 1 else image
        pad = int(round(self.border * max(big.shape[:2])))
        framed = cv2.copyMakeBorder(big, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
        self.det.setInputSize((framed.shape[1], framed.shape[0]))
        _, faces = self.det.detect(framed)
        if faces is not None and len(faces):
            best = faces[np.argmax(faces[:, 2] * faces[:, 3])]
            box = (best[:4] - np.array([pad, pad, 0, 0])) / f
            lm = (best[4:14].reshape(5, 2) - pad) / f
            return Found(box.astype(np.float32), lm.astype(np.float32), True)
        side = np.array([w, h], np.float32)
        return Found(np.array([0, 0, w, h], np.float32), self.typical * side, False)


# --------------------------------------------------------------------------- running them

class Teachers:
    """Both teachers as ONNX Runtime sessions (one thread each), answering in basic7."""

    def __init__(self, face_api_onnx: Path, zoo_onnx: Path, threads: int = 1):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self.face_api = ort.InferenceSession(str(face_api_onnx), opts, providers=["CPUExecutionProvider"])
        self.zoo = ort.InferenceSession(str(zoo_onnx), opts, providers=["CPUExecutionProvider"])
        self.yunet = YuNet()

    def inputs(self, image_rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
        found = self.yunet.find(image_rgb)
        return face_api_input(image_rgb, found.box), zoo_input(image_rgb, found.landmarks), found.detected

    def run(self, face_api_x: np.ndarray, zoo_x: np.ndarray | None, flip: bool = True,
            flip_zoo: bool = True) -> dict[str, np.ndarray]:
        """Probabilities [n, 7] (basic7) of each teacher, averaged with the mirror image when
        `flip` (the zoo model only when also `flip_zoo`: at ~27 ms a face it is the cost).
        `zoo_x` None: the zoo model is not run and answers uniformly (it abstains in a log-linear pool)."""
        def fa(x):
            return self.face_api.run(None, {self.face_api.get_inputs()[0].name: x})[0]

        def zoo(x):
            return softmax(self.zoo.run(None, {self.zoo.get_inputs()[0].name: x})[0])

        p_fa = fa(face_api_x)
        p_zoo = zoo(zoo_x) if zoo_x is not None else np.full((len(face_api_x), len(ZOO_CLASSES)), 1 / len(ZOO_CLASSES))
        if flip:
            p_fa = (p_fa + fa(np.ascontiguousarray(face_api_x[:, :, ::-1]))) / 2
            if flip_zoo and zoo_x is not None:
                p_zoo = (p_zoo + zoo(np.ascontiguousarray(zoo_x[:, :, :, ::-1]))) / 2
        return {"face_api": to_basic7(p_fa, FACE_API_CLASSES), "zoo": to_basic7(p_zoo, ZOO_CLASSES)}
