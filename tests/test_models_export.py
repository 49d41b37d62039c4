"""Model builders (trainer/models) and the ONNX export with its parity check (trainer/export).

Kept light for a 2-core machine: one ResNet-50 at 64x64, exported once (fp16 weights);
small sequence models. Needs the `train` extra (TensorFlow, tf2onnx, onnx) and onnxruntime.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="trainer tests need the 'train' extra (tensorflow-cpu)")
pytest.importorskip("tf2onnx", reason="trainer tests need the 'train' extra (tf2onnx)")
onnx = pytest.importorskip("onnx", reason="trainer tests need the 'train' extra (onnx)")
ort = pytest.importorskip("onnxruntime", reason="export tests need onnxruntime")

import keras  # noqa: E402

from trainer import export as export_mod  # noqa: E402
from trainer.export import ParityError, default_tolerance, export_onnx, sha256_file  # noqa: E402
from trainer.models import (  # noqa: E402
    RESNET50_NOTOP_PARAMS,
    WeightsMismatchError,
    build_bilstm,
    build_bilstm_sa,
    build_cnn,
    build_dense_autoencoder,
    build_resnet50,
)

STEPS, FEATURES, CLASSES = 6, 40, 7
IMAGE = 64


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _seq(batch: int, seed: int = 0, steps: int = STEPS) -> np.ndarray:
    return _rng(seed).normal(size=(batch, steps, FEATURES)).astype(np.float32)


def _session(path: Path):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _np(t) -> np.ndarray:
    return keras.ops.convert_to_numpy(t)


def _declared(value_info) -> list[int | None]:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def _assert_graph_io(path: Path, input_name: str, output_name: str, in_shape, out_shape) -> None:
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == [input_name]
    assert [o.name for o in model.graph.output] == [output_name]
    assert _declared(model.graph.input[0]) == list(in_shape)
    assert _declared(model.graph.output[0]) == list(out_shape)
    assert model.opset_import[0].version == 17 or any(o.version == 17 for o in model.opset_import if o.domain in ("", "ai.onnx"))
    # self-contained: no tensor points to external data
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


# ----------------------------------------------------------------------------- builders

@pytest.fixture(scope="module")
def resnet():
    keras.utils.set_random_seed(0)
    return build_resnet50(IMAGE, CLASSES)


def test_resnet50_is_the_real_architecture(resnet):
    classifier, features = resnet
    assert features.count_params() == RESNET50_NOTOP_PARAMS == 23_587_712
    assert features.input_shape == (None, IMAGE, IMAGE, 3)
    assert features.output_shape == (None, 2048)
    names = {layer.name for layer in features.layers}
    assert {"conv1_conv", "conv2_block1_1_conv", "conv5_block3_out", "avg_pool"} <= names
    assert classifier.output_shape == (None, CLASSES)
    assert classifier.optimizer is not None and classifier.loss == "sparse_categorical_crossentropy"
    # the classifier trains the very backbone that gets exported (shared variables)
    clf_vars = {id(v) for v in classifier.weights}
    assert all(id(v) in clf_vars for v in features.weights)
    assert classifier.count_params() == RESNET50_NOTOP_PARAMS + 2048 * CLASSES + CLASSES


# Keras' own legacy-h5 writer calls np.array on TF variables (a numpy-2 DeprecationWarning inside keras)
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
def test_resnet50_loads_a_legacy_weights_file_and_refuses_one_that_does_not_fit(resnet, tmp_path):
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    _, features = resnet
    good = tmp_path / "resnet50_notop.h5"  # the layout of Keras' ImageNet *_notop.h5 files
    with h5py.File(good, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, features)
    keras.utils.set_random_seed(1)
    _, loaded = build_resnet50(IMAGE, 3, weights_path=good)
    x = _rng(3).normal(size=(2, IMAGE, IMAGE, 3)).astype(np.float32)
    np.testing.assert_allclose(_np(loaded(x, training=False)), _np(features(x, training=False)),
                               rtol=0, atol=1e-5)

    _, encoder = build_dense_autoencoder(13, name="other")
    bad = tmp_path / "other.h5"
    with h5py.File(bad, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, encoder)
    with pytest.raises(WeightsMismatchError, match="does not fit"):
        build_resnet50(IMAGE, 3, weights_path=bad)
    with pytest.raises(FileNotFoundError):
        build_resnet50(IMAGE, 3, weights_path=tmp_path / "missing.h5")


def test_autoencoder_shapes_and_shared_encoder():
    autoencoder, encoder = build_dense_autoencoder(13, name="audio")
    assert autoencoder.output_shape == (None, 13)
    assert encoder.output_shape == (None, 32)
    assert [layer.units for layer in autoencoder.layers if isinstance(layer, keras.layers.Dense)] == [64, 32, 64, 13]
    assert autoencoder.loss == "mse" and isinstance(autoencoder.optimizer, keras.optimizers.Adam)
    assert {id(v) for v in encoder.weights} <= {id(v) for v in autoencoder.weights}


@pytest.mark.parametrize("builder", [
    lambda: build_bilstm_sa(STEPS, FEATURES, CLASSES),
    lambda: build_bilstm_sa(STEPS, FEATURES, CLASSES, pooling="mean"),
    lambda: build_bilstm(STEPS, FEATURES, CLASSES),
    lambda: build_cnn(STEPS, FEATURES, CLASSES),
], ids=["bilstm_sa_attention_pool", "bilstm_sa_mean_pool", "bilstm", "cnn"])
def test_sequence_classifiers_output_probabilities(builder):
    model = builder()
    assert model.input_shape == (None, STEPS, FEATURES)
    assert model.output_shape == (None, CLASSES)
    assert model.loss == "sparse_categorical_crossentropy" and model.optimizer is not None
    p = _np(model(_seq(3), training=False))
    assert p.shape == (3, CLASSES)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(p >= 0)


def test_bilstm_sa_structure_and_baselines_differ():
    model = build_bilstm_sa(STEPS, FEATURES, CLASSES, units=16, heads=2, key_dim=8)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"Bidirectional", "MultiHeadAttention", "Add", "LayerNormalization"} <= kinds
    lstm = model.get_layer("bilstm")
    assert lstm.forward_layer.return_sequences and lstm.output.shape == (None, STEPS, 32)
    mha = model.get_layer("self_attention")
    assert mha.num_heads == 2 and mha.key_dim == 8
    assert "MultiHeadAttention" not in {type(l).__name__ for l in build_bilstm(STEPS, FEATURES, CLASSES).layers}
    assert "Conv1D" in {type(l).__name__ for l in build_cnn(STEPS, FEATURES, CLASSES).layers}
    with pytest.raises(ValueError, match="pooling"):
        build_bilstm_sa(STEPS, FEATURES, CLASSES, pooling="max")


# ----------------------------------------------------------------------------- export

def test_export_encoder_parity_names_and_hash(tmp_path):
    keras.utils.set_random_seed(0)
    _, encoder = build_dense_autoencoder(13, name="audio")
    x = _rng(1).normal(size=(32, 13)).astype(np.float32)
    res = export_onnx(encoder, tmp_path / "audio_encoder.onnx", sample_inputs=x,
                      input_name="mfcc", output_name="code")
    assert res.path == tmp_path / "audio_encoder.onnx" and res.path.is_file()
    assert (res.input_name, res.output_name) == ("mfcc", "code")
    assert res.input_shape == [None, 13] and res.output_shape == [None, 32]
    assert res.max_abs_diff <= 1e-4 and res.fp16_weights is False
    _assert_graph_io(res.path, "mfcc", "code", [None, 13], [None, 32])
    assert res.sha256 == sha256_file(res.path) == hashlib.sha256(res.path.read_bytes()).hexdigest()
    out = _session(res.path).run(["code"], {"mfcc": x[:7]})[0]
    np.testing.assert_allclose(out, _np(encoder(x[:7], training=False)), atol=1e-5)
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left beside the artifact


def test_export_bilstm_sa_dynamic_batch(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_bilstm_sa(STEPS, FEATURES, CLASSES, units=16, heads=2, key_dim=8)
    res = export_onnx(model, tmp_path / "classifier.onnx", sample_inputs=_seq(3, seed=2),
                      input_name="sequence", output_name="probabilities")
    assert res.input_shape == [None, STEPS, FEATURES] and res.output_shape == [None, CLASSES]
    assert res.max_abs_diff <= 1e-4
    _assert_graph_io(res.path, "sequence", "probabilities", [None, STEPS, FEATURES], [None, CLASSES])
    sess = _session(res.path)
    assert sess.get_inputs()[0].shape[0] == "batch"
    for batch in (1, 5):  # batch sizes other than the sample's
        x = _seq(batch, seed=10 + batch)
        out = sess.run(["probabilities"], {"sequence": x})[0]
        assert out.shape == (batch, CLASSES)
        np.testing.assert_allclose(out, _np(model(x, training=False)), atol=1e-5)


def test_export_bilstm_sa_dynamic_time(tmp_path):
    keras.utils.set_random_seed(0)
    model = build_bilstm_sa(None, FEATURES, CLASSES, units=8, heads=2, key_dim=4, pooling="mean")
    res = export_onnx(model, tmp_path / "c.onnx", sample_inputs=_seq(2, steps=STEPS), dynamic_axes=(0, 1))
    assert res.input_shape == [None, None, FEATURES] and res.output_shape == [None, CLASSES]
    x = _seq(3, seed=4, steps=STEPS + 3)
    np.testing.assert_allclose(_session(res.path).run(["output"], {"input": x})[0],
                               _np(model(x, training=False)), atol=1e-5)


@pytest.mark.parametrize("builder", [build_bilstm, build_cnn], ids=["bilstm", "cnn"])
def test_export_baselines(builder, tmp_path):
    keras.utils.set_random_seed(0)
    model = builder(STEPS, FEATURES, CLASSES)
    res = export_onnx(model, tmp_path / "baseline.onnx", sample_inputs=_seq(4, seed=3))
    assert res.max_abs_diff <= 1e-4
    _assert_graph_io(res.path, "input", "output", [None, STEPS, FEATURES], [None, CLASSES])
    x = _seq(2, seed=9)
    np.testing.assert_allclose(_session(res.path).run(["output"], {"input": x})[0],
                               _np(model(x, training=False)), atol=1e-5)


def test_export_resnet50_features_fp16_weights(resnet, tmp_path):
    _, features = resnet
    x = _rng(5).normal(size=(2, IMAGE, IMAGE, 3)).astype(np.float32)
    res = export_onnx(features, tmp_path / "resnet50.onnx", sample_inputs=x,
                      input_name="image", output_name="features", fp16_weights=True)
    assert res.fp16_weights and res.input_shape == [None, IMAGE, IMAGE, 3] and res.output_shape == [None, 2048]
    _assert_graph_io(res.path, "image", "features", [None, IMAGE, IMAGE, 3], [None, 2048])
    # about half the float32 file: the float32 weights alone take 4 bytes per parameter
    fp32_bytes = 4 * features.count_params()
    assert 0.45 < res.path.stat().st_size / fp32_bytes < 0.55
    graph = onnx.load(str(res.path)).graph
    n_half = sum(i.data_type == onnx.TensorProto.FLOAT16 for i in graph.initializer)
    half_names = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT16}
    n_cast = sum(n.op_type == "Cast" and n.input[0] in half_names for n in graph.node)
    assert n_half >= 50 and n_cast == n_half
    # parity within tolerance; weights really were rounded (a nonzero difference)
    assert 0 < res.max_abs_diff <= res.tolerance
    sess = _session(res.path)
    assert sess.get_outputs()[0].type == "tensor(float)"
    out = sess.run(["features"], {"image": x[1:]})[0]
    ref = _np(features(x[1:], training=False))
    assert out.shape == (1, 2048)
    assert np.max(np.abs(out - ref)) <= default_tolerance(ref, fp16_weights=True)


def test_fp16_tolerance_is_tight_enough_to_catch_rounding(tmp_path):
    keras.utils.set_random_seed(0)
    _, encoder = build_dense_autoencoder(256, hidden=64, name="frame")
    x = _rng(6).normal(size=(8, 256)).astype(np.float32)
    res = export_onnx(encoder, tmp_path / "frame.onnx", sample_inputs=x, fp16_weights=True)
    assert 0 < res.max_abs_diff <= res.tolerance
    with pytest.raises(ParityError, match="disagree"):
        export_onnx(encoder, tmp_path / "strict.onnx", sample_inputs=x, fp16_weights=True, atol=1e-9)
    assert not (tmp_path / "strict.onnx").exists()


# ----------------------------------------------------------------------------- failures

def test_broken_parity_raises_and_leaves_no_file(tmp_path, monkeypatch):
    keras.utils.set_random_seed(0)
    model = build_cnn(STEPS, FEATURES, CLASSES)
    keras.utils.set_random_seed(1)
    impostor = build_cnn(STEPS, FEATURES, CLASSES)  # same shapes, different weights
    real_convert = export_mod.convert
    monkeypatch.setattr(export_mod, "convert", lambda _model, *a, **k: real_convert(impostor, *a, **k))
    target = tmp_path / "broken.onnx"
    with pytest.raises(ParityError, match="disagree"):
        export_onnx(model, target, sample_inputs=_seq(4, seed=7))
    assert not target.exists() and not list(tmp_path.iterdir())


def test_check_parity_helper():
    ref = np.array([[0.2, 0.8]], np.float32)
    assert export_mod.check_parity(ref, ref + 5e-5, 1e-4) <= 1e-4
    with pytest.raises(ParityError, match="disagree"):
        export_mod.check_parity(ref, ref + 2e-4, 1e-4)
    with pytest.raises(ParityError, match="shape"):
        export_mod.check_parity(ref, ref.T, 1e-4)
    with pytest.raises(ParityError, match="non-finite"):
        export_mod.check_parity(ref, np.array([[np.nan, 0.8]], np.float32), 1e-4)
    # relative for large outputs, absolute floor for outputs of order one
    assert default_tolerance(ref, fp16_weights=False) == pytest.approx(1e-4)
    assert default_tolerance(np.array([300.0]), fp16_weights=False) == pytest.approx(3e-2)
    assert default_tolerance(ref, fp16_weights=True) == pytest.approx(2e-2)


def test_bad_export_arguments(tmp_path):
    model = build_cnn(STEPS, FEATURES, CLASSES)
    with pytest.raises(ValueError, match="differ"):
        export_onnx(model, tmp_path / "x.onnx", sample_inputs=_seq(1), input_name="a", output_name="a")
    with pytest.raises(ValueError, match="dynamic axis"):
        export_onnx(model, tmp_path / "x.onnx", sample_inputs=_seq(1), dynamic_axes=(3,))


# --------------------------------------------------------------------------- the fer peer
def test_peer_classes_map_onto_basic7():
    from trainer.face.peer import FER_CLASSES, to_classes

    ours = ["neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
    probs = to_classes(np.eye(len(FER_CLASSES)), ours)
    picked = [ours[i] for i in probs.argmax(1)]
    assert picked == ["angry", "disgust", "fearful", "happy", "sad", "surprised", "neutral"]
    three = to_classes(np.full((1, 7), 1 / 7), ["happy", "sad", "surprised"])  # renormalised over the set
    np.testing.assert_allclose(three, [[1 / 3] * 3])


def test_peer_face_model_is_run_as_fer_runs_it(tmp_path):
    """A stand-in with fer's shapes (64x64x1 in [-1, 1] -> 7): saved as HDF5 like fer's file."""
    from trainer.face.peer import peer_face_probs

    inp = keras.Input((64, 64, 1))
    out = keras.layers.Dense(7, activation="softmax")(keras.layers.GlobalAveragePooling2D()(inp))
    model = keras.Model(inp, out)
    w = np.zeros((1, 7), np.float32)
    w[0, 3] = 10.0  # fer's "happy" rises with brightness
    model.layers[-1].set_weights([w, np.zeros(7, np.float32)])
    path = tmp_path / "emotion_model.hdf5"
    model.save(path)
    crops = np.stack([np.full((48, 48), 255, np.uint8), np.zeros((48, 48), np.uint8)])  # resized to 64 inside
    probs = peer_face_probs(path, crops, ["neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"])
    assert probs.shape == (2, 7)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-6)
    assert probs[0].argmax() == 1 and probs[1, 1] < 0.01  # white -> +1 -> happy; black -> -1 -> not happy

    rgb_in = keras.Input((64, 64, 3))
    rgb = keras.Model(rgb_in, keras.layers.Dense(7)(keras.layers.GlobalAveragePooling2D()(rgb_in)))
    rgb.save(tmp_path / "rgb.hdf5")
    with pytest.raises(ValueError, match="mini-Xception"):
        peer_face_probs(tmp_path / "rgb.hdf5", crops, ["happy"])


def test_input_stage_projects_only_the_image_columns_and_exports(tmp_path):
    from trainer.stages.classifiers import classifier_with_input_stage

    keras.utils.set_random_seed(0)
    n_image = 30                                   # FEATURES - n_image = audio + flag columns
    x = _seq(64, seed=5)
    model = classifier_with_input_stage(build_bilstm_sa, x, n_image, CLASSES)
    assert model.get_layer("image_projection").kernel.shape == (n_image, 64)
    assert model.get_layer("step").output.shape == (None, STEPS, 64 + FEATURES - n_image)
    # Inference is deterministic (noise and dropout act only while training) ...
    np.testing.assert_array_equal(_np(model(x[:4], training=False)), _np(model(x[:4], training=False)))
    assert not np.allclose(_np(model(x[:4], training=True)), _np(model(x[:4], training=False)))
    # ... and the audio columns reach the classifier beside the projection.
    shifted = x[:4].copy()
    shifted[..., n_image:] += 3.0
    assert not np.allclose(_np(model(shifted, training=False)), _np(model(x[:4], training=False)))
    res = export_onnx(model, tmp_path / "classifier.onnx", sample_inputs=x[:8],
                      input_name="sequence", output_name="probabilities", dynamic_axes=(0,))
    assert res.max_abs_diff <= 1e-4
    np.testing.assert_allclose(_session(res.path).run(["probabilities"], {"sequence": x[:5]})[0],
                               _np(model(x[:5], training=False)), atol=1e-5)
