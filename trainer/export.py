"""Keras -> ONNX export with a parity check against ONNX Runtime (design §4, §8).

Export goes through ``tf2onnx.convert.from_function`` on a ``tf.function`` with an explicit
``input_signature`` (None on the dynamic axes), opset 17: ``from_keras`` fails on Keras 3.
The graph input and output get the requested names (the input through the TensorSpec's
name, the output through the key of the dict the function returns), dynamic axes get
readable symbolic names, the file is self-contained (no external data) and checked with
``onnx.checker``. Then the Keras model and an ONNX Runtime session (CPU provider) run the
same inputs and the export is refused when they disagree.

``fp16_weights=True`` stores each large float32 initializer as float16 followed by a
``Cast`` to float32: the file is about half the size, ONNX Runtime constant-folds the casts
when the session starts, and all arithmetic stays float32 (only the weights are rounded).
"""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from service.model.manifest import Artifact

from service.model.bundle import open_session, sha256_file  # one hash and one session factory for trainer and service  # noqa: F401

FP32_ATOL = 1e-4
FP16_ATOL = 2e-2
FP16_MIN_ELEMENTS = 1024  # smaller initializers (biases, norms) stay float32: negligible size
FLOAT16_MAX = 65504.0


class ParityError(AssertionError):
    """The exported ONNX graph does not reproduce the Keras model within tolerance."""


@dataclass
class ExportResult:
    path: Path
    sha256: str
    input_name: str
    output_name: str
    input_shape: list[int | None]    # None for dynamic axes
    output_shape: list[int | None]
    max_abs_diff: float              # Keras vs ONNX Runtime on the parity inputs
    fp16_weights: bool
    tolerance: float = 0.0           # the bound max_abs_diff was checked against
    reference_scale: float = 0.0     # max |Keras output| on the parity inputs
    size_bytes: int = 0

    def artifact(self, **extra: Any) -> "Artifact":
        """The artifact's entry in the bundle manifest (design §4)."""
        from service.model.manifest import Artifact, TensorSpec

        return Artifact(file=self.path.name, sha256=self.sha256, bytes=self.path.stat().st_size,
                        input=TensorSpec(name=self.input_name, shape=list(self.input_shape)),
                        output=TensorSpec(name=self.output_name, shape=list(self.output_shape)),
                        parity_max_abs_diff=self.max_abs_diff, fp16_weights=self.fp16_weights, **extra)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["path"] = str(self.path)
        return d


def default_tolerance(reference: np.ndarray, fp16_weights: bool) -> float:
    """Absolute tolerance for the parity check: 1e-4 (fp32) or 2e-2 (fp16 weights) for
    outputs of order one (probabilities, codes), scaled by max|output| when that is larger,
    i.e. a relative bound for large-output models such as the 2048-d ResNet features.

    Measured (2-core x86-64, random-init models): fp32 exports differ by <= 2e-6 (ResNet-50
    <= 2.1e-7). fp16 weights: max |diff| / max(1, max|out|) = 1.6e-4..2.3e-4 for ResNet-50
    (64 and 224 px), 2.2e-4 Bi-LSTM+SA, 4e-5 Bi-LSTM, 1e-4 CNN, 2.4e-4 audio encoder,
    2.9e-4 frame encoder (2304-d input): 2e-2 leaves a ~70x margin for trained weights
    while a wrong graph (errors of the order of the outputs) still fails."""
    base = FP16_ATOL if fp16_weights else FP32_ATOL
    scale = float(np.max(np.abs(reference))) if reference.size else 0.0
    return base * max(1.0, scale)


# --------------------------------------------------------------------------- conversion

def _dim_name(axis: int) -> str:
    return "batch" if axis == 0 else ("time" if axis == 1 else f"dim{axis}")


def convert(model, sample_shape: tuple[int, ...], *, input_name: str, output_name: str,
            dynamic_axes: tuple[int, ...], opset: int):
    """Keras model -> onnx.ModelProto (not yet saved, not yet checked for parity)."""
    import tensorflow as tf
    import tf2onnx

    rank = len(sample_shape)
    for axis in dynamic_axes:
        if not 0 <= axis < rank:
            raise ValueError(f"dynamic axis {axis} out of range for inputs of rank {rank}")
    if input_name == output_name:
        raise ValueError("input_name and output_name must differ")
    shape = [None if i in dynamic_axes else int(d) for i, d in enumerate(sample_shape)]
    signature = [tf.TensorSpec(shape, tf.float32, name=input_name)]

    # Everything the function uses is created inside it (design §8): the model's variables
    # are captured and frozen by tf2onnx, no outside tf.constant is captured.
    @tf.function(input_signature=signature)
    def serving(x):
        y = model(x, training=False)
        if isinstance(y, (list, tuple, dict)):
            raise ValueError("export_onnx supports single-output models only")
        return {output_name: tf.identity(tf.cast(y, tf.float32))}

    proto, _ = tf2onnx.convert.from_function(serving, input_signature=signature, opset=opset)
    _name_io(proto, input_name, output_name, dynamic_axes, model, int(sample_shape[0]))
    return proto


def _name_io(proto, input_name: str, output_name: str, dynamic_axes: tuple[int, ...], model, batch: int) -> None:
    """Check the graph's single input/output carry the requested names; give dynamic axes
    readable symbolic names; make the declared output shape complete (rank and fixed dims)."""
    graph = proto.graph
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    if inputs != [input_name] or outputs != [output_name]:
        raise RuntimeError(f"tf2onnx produced inputs {inputs} / outputs {outputs}, "
                           f"expected [{input_name!r}] / [{output_name!r}]")
    for axis, dim in enumerate(graph.input[0].type.tensor_type.shape.dim):
        if axis in dynamic_axes:
            dim.Clear()
            dim.dim_param = _dim_name(axis)

    out_shape = list(model.output_shape)
    out_type = graph.output[0].type.tensor_type
    dims = out_type.shape.dim
    if len(dims) != len(out_shape):  # tf2onnx left the output rank unknown: declare it
        out_type.ClearField("shape")
        for _ in out_shape:
            out_type.shape.dim.add()
        dims = out_type.shape.dim
    if 0 not in dynamic_axes and out_shape and out_shape[0] is None:
        out_shape[0] = batch  # fixed batch: the output's batch is the input's
    for axis, (dim, expected) in enumerate(zip(dims, out_shape)):
        if (axis == 0 and 0 in dynamic_axes) or expected is None:
            dim.Clear()
            dim.dim_param = "batch" if axis == 0 else f"out_dim{axis}"
        elif dim.HasField("dim_value") and dim.dim_value != expected:
            raise RuntimeError(f"ONNX output dim {axis} is {dim.dim_value}, Keras says {expected}")
        else:
            dim.Clear()
            dim.dim_value = int(expected)


def convert_weights_to_fp16(proto, min_elements: int = FP16_MIN_ELEMENTS) -> int:
    """In place: each float32 initializer of the main graph with >= ``min_elements``
    elements (and all |values| <= 65504) is stored as float16 under a new name, and a
    ``Cast(to=FLOAT)`` node producing the original name is put at the head of the graph.
    Returns the number of initializers converted."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    taken = {i.name for i in graph.initializer} | {n for node in graph.node for n in node.output}
    casts, kept, converted = [], [], 0
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or int(np.prod(init.dims)) < min_elements:
            kept.append(init)
            continue
        w = numpy_helper.to_array(init)
        if not np.all(np.isfinite(w)) or np.max(np.abs(w)) > FLOAT16_MAX:
            kept.append(init)
            continue
        half_name = f"{init.name}__fp16"
        while half_name in taken:
            half_name += "_"
        taken.add(half_name)
        kept.append(numpy_helper.from_array(w.astype(np.float16), half_name))
        casts.append(helper.make_node("Cast", [half_name], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}__cast_fp32"))
        converted += 1
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    graph.ClearField("node")
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(proto)
    return converted


# --------------------------------------------------------------------------- parity

def check_parity(reference: np.ndarray, candidate: np.ndarray, tolerance: float, *, what: str = "") -> float:
    """max |reference - candidate|; raise ParityError when shapes differ, a value is not
    finite, or the difference exceeds ``tolerance``."""
    reference = np.asarray(reference, np.float32)
    candidate = np.asarray(candidate, np.float32)
    if reference.shape != candidate.shape:
        raise ParityError(f"{what}: ONNX output shape {candidate.shape} != Keras output shape {reference.shape}")
    if not np.all(np.isfinite(candidate)) or not np.all(np.isfinite(reference)):
        raise ParityError(f"{what}: non-finite values in the outputs")
    diff = float(np.max(np.abs(reference - candidate))) if reference.size else 0.0
    if not diff <= tolerance:
        raise ParityError(f"{what}: Keras and ONNX Runtime disagree: max |diff| = {diff:.3g} > tolerance "
                          f"{tolerance:.3g} (max |Keras output| = {float(np.max(np.abs(reference))):.3g})")
    return diff


# --------------------------------------------------------------------------- entry point

def export_onnx(model, path: Path, *, sample_inputs: np.ndarray, input_name: str = "input",
                output_name: str = "output", dynamic_axes: tuple[int, ...] = (0,), opset: int = 17,
                fp16_weights: bool = False, atol: float | None = None) -> ExportResult:
    """Export ``model`` to ``path`` (ONNX, self-contained) and verify it.

    Parity: ``model(sample_inputs, training=False)`` vs ONNX Runtime on the same inputs, and,
    when the batch axis is dynamic and the sample has more than one row, ONNX Runtime on the
    first row alone (proves no batch size is baked into the graph). ``atol`` None means
    :func:`default_tolerance`. On failure the file is not left at ``path``.
    """
    import keras
    import onnx

    path = Path(path)
    x = np.ascontiguousarray(sample_inputs, dtype=np.float32)
    if x.ndim < 1 or x.shape[0] < 1:
        raise ValueError("sample_inputs must hold at least one example")
    dynamic_axes = tuple(sorted(set(int(a) for a in dynamic_axes)))

    proto = convert(model, x.shape, input_name=input_name, output_name=output_name,
                    dynamic_axes=dynamic_axes, opset=opset)
    if fp16_weights:
        convert_weights_to_fp16(proto)
    onnx.checker.check_model(proto)

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
        onnx.checker.check_model(str(tmp))

        reference = np.asarray(keras.ops.convert_to_numpy(model(x, training=False)), dtype=np.float32)
        tolerance = default_tolerance(reference, fp16_weights) if atol is None else float(atol)
        # The service's session factory, on the CPU: parity is checked as the bundle will run.
        sess = open_session(tmp, path.stem, ["CPUExecutionProvider"], threads=1).session
        candidate = sess.run([output_name], {input_name: x})[0]
        what = f"export of {getattr(model, 'name', 'model')} to {path.name}"
        diff = check_parity(reference, candidate, tolerance, what=what)
        if 0 in dynamic_axes and x.shape[0] > 1:
            single = sess.run([output_name], {input_name: x[:1]})[0]
            diff = max(diff, check_parity(reference[:1], single, tolerance, what=f"{what} (batch of 1)"))
        del sess
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise

    def dims(value_info) -> list[int | None]:
        return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]

    return ExportResult(path=path, sha256=sha256_file(path), input_name=input_name, output_name=output_name,
                        input_shape=dims(proto.graph.input[0]), output_shape=dims(proto.graph.output[0]),
                        max_abs_diff=diff, fp16_weights=fp16_weights, tolerance=tolerance,
                        reference_scale=float(np.max(np.abs(reference))) if reference.size else 0.0,
                        size_bytes=path.stat().st_size)


def ort_ms_per_item(models: dict[str, Path], batches: tuple[int, ...] = (1, 8),
                    rounds: int = 20) -> dict[str, dict[str, float]]:
    """{name: {"batch_B": median ms per item}} of exported models in ONNX Runtime on the CPU,
    1 intra-op thread each (the service's per-request setting). Rounds alternate between the
    models, so that the machine's load falls on all of them alike; inputs are random (the
    cost does not depend on them), shaped as each model's input with the batch axis set."""
    sessions = {name: open_session(path, name, ["CPUExecutionProvider"], threads=1) for name, path in models.items()}
    rng = np.random.default_rng(0)
    inputs = {name: {b: rng.normal(size=(b, *s.session.get_inputs()[0].shape[1:])).astype(np.float32)
                     for b in batches} for name, s in sessions.items()}
    for name, s in sessions.items():
        for b in batches:
            s.run(inputs[name][b])                         # warm-up
    times: dict[str, dict[int, list[float]]] = {n: {b: [] for b in batches} for n in models}
    for _ in range(rounds):
        for name, s in sessions.items():
            for b in batches:
                t0 = time.perf_counter()
                s.run(inputs[name][b])
                times[name][b].append((time.perf_counter() - t0) * 1000 / b)
    return {n: {f"batch_{b}": float(np.median(t[b])) for b in batches} for n, t in times.items()}
