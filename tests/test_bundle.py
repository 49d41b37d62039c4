"""The bundle contract (design §4): manifest, hashes, and refusal of what cannot be honoured."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from service.model.bundle import REQUIRED_ROLES, BundleError, load_bundle, sha256_file

pytestmark = pytest.mark.slow


def test_manifest_lists_the_artifacts_with_matching_hashes(quick_bundle):
    manifest = json.loads((quick_bundle / "manifest.json").read_text())
    assert set(REQUIRED_ROLES) <= set(manifest["artifacts"])
    for role, art in manifest["artifacts"].items():
        assert art["file"].endswith(".onnx")
        assert sha256_file(quick_bundle / art["file"]) == art["sha256"], role
        assert art["parity_max_abs_diff"] is not None
    assert manifest["classes"] == ["neutral", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
    for key in ("schema_version", "name", "version", "created", "trainer_version", "preprocessing",
                "features", "mask", "metrics", "provenance"):
        assert key in manifest
    flags = manifest["features"]["layout"]["flags"]
    assert set(range(*flags)) <= set(manifest["mask"]["selected"])  # presence flags always kept
    assert (quick_bundle / "report.md").is_file() and (quick_bundle / "metrics.json").is_file()


def test_report_has_figures_and_the_selection_comparison(quick_bundle):
    manifest = json.loads((quick_bundle / "manifest.json").read_text())
    report = (quick_bundle / "report.md").read_text()
    figures = manifest["report_figures"]
    assert {f"confusion_{m}.png" for m in ("bilstm_sa", "bilstm", "cnn")} <= set(figures)
    for name in figures:
        assert (quick_bundle / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"]({name})" in report
    selection = manifest["metrics"]["selection"]
    assert set(selection) == {"none", "izoa", "zoa", "mutual_info"}
    assert selection["izoa"]["n_selected"] == len(manifest["mask"]["selected"])
    assert "| mutual_info |" in report
    # the audio codes and presence flags are in every mask; IZOA chooses among image columns
    layout = manifest["preprocessing"]
    audio_and_flags = set(range(layout["image_feature_dim"], manifest["mask"]["n_total"]))
    assert audio_and_flags <= set(manifest["mask"]["selected"])
    assert "How to read the pseudo-pair rows" in report


def test_report_has_the_paper_protocol_labelled_leaky(quick_bundle):
    manifest = json.loads((quick_bundle / "manifest.json").read_text())
    paper = manifest["metrics"]["paper_protocol_leaky"]
    assert paper["classes"] == ["happy", "sad", "surprised"]
    assert paper["n_test_clips"] > 0 and paper["n_train_clips"] > 3 * paper["n_test_clips"]
    assert set(paper["models"]) == {"bilstm_sa", "bilstm", "cnn"}
    for views in paper["models"].values():
        assert set(views) == {"fused", "audio", "face"}
        assert all(len(m["confusion"]) == 3 for m in views.values())
    report = (quick_bundle / "report.md").read_text()
    assert "The paper's protocol (leaky" in report
    assert "FER2013 `public_test` alone" in report


def test_report_measures_what_the_exported_backbone_costs(quick_bundle):
    """fp16 weights in image_features.onnx: face accuracy through the exported graph beside fp32 Keras."""
    manifest = json.loads((quick_bundle / "manifest.json").read_text())
    m = manifest["metrics"]
    assert m["face_backbone_test_exported"]["n"] == m["face_backbone_test"]["n"]
    assert "Accuracy change from the exported backbone (fp16 weights" in (quick_bundle / "report.md").read_text()


def test_loaded_bundle_classifies(quick_bundle):
    bundle = load_bundle(quick_bundle, ["CPUExecutionProvider"])
    cfg = bundle.config
    probs = bundle.classify(np.zeros((3, cfg.k_summary, cfg.step_dim), np.float32))
    assert probs.shape == (3, len(bundle.classes))
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-5)


@pytest.fixture
def copy(quick_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(quick_bundle, dst)
    return dst


def test_tampered_artifact_is_refused(copy):
    with open(copy / "classifier.onnx", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(BundleError, match="sha256"):
        load_bundle(copy)


def test_unknown_schema_is_refused(copy):
    m = json.loads((copy / "manifest.json").read_text())
    m["schema_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="schema"):
        load_bundle(copy)


def test_unknown_preprocessing_is_refused(copy):
    m = json.loads((copy / "manifest.json").read_text())
    m["preprocessing"]["denoise"] = True
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ValueError, match="unknown preprocessing"):
        load_bundle(copy)


def test_declared_shapes_must_match_the_graph(copy):
    m = json.loads((copy / "manifest.json").read_text())
    m["artifacts"]["image_features"]["output"]["shape"] = [None, 1000]
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="shapes"):
        load_bundle(copy)


def test_shipped_default_bundle_verifies():
    """The bundle in models/default is what `python -m service` serves out of the box."""
    from service.settings import DEFAULT_MODEL_DIR

    bundle = load_bundle(DEFAULT_MODEL_DIR, ["CPUExecutionProvider"])
    assert set(REQUIRED_ROLES) <= set(bundle.sessions)
    size = sum(f.stat().st_size for f in DEFAULT_MODEL_DIR.iterdir())
    assert size < 60 * 2**20, f"shipped bundle is {size / 2**20:.1f} MiB"


def test_shipped_model_card_has_the_voice_across_corpora_and_the_training_licences():
    """The shipped report leads with the cross-corpus table (the voice before and after its
    speech encoder: the default recipe's variants) and lists every corpus its weights derive
    from, with its licence; URDU, evaluation only, is scored there and never listed as training
    data."""
    from service.settings import DEFAULT_MODEL_DIR
    from trainer.data import LICENCES
    from trainer.recipe import Recipe

    manifest = json.loads((DEFAULT_MODEL_DIR / "manifest.json").read_text())
    report = (DEFAULT_MODEL_DIR / "report.md").read_text()
    rows = manifest["metrics"]["cross_corpus"]
    assert [r["variant"] for r in rows] == list(Recipe.for_profile("default").cross_corpus_variants)
    for r in rows:
        assert {"in-corpus", "framing trim2s", "framing cut", "loco TESS", "urdu"} <= set(r)
        assert r["urdu"]["n"] == 400 and 0 <= r["urdu"]["accuracy"] <= 1
        assert f"| {r['variant']} | {r['in-corpus']['accuracy']:.3f} |" in report
    assert report.index("## The voice across corpora") < report.index("## Every model and view")
    used = manifest["metrics"]["training_corpora"]
    assert "urdu" not in used and {"ravdess", "fer2013", "rafdb"} <= set(used)
    for corpus, entry in used.items():
        assert entry["licence"] == LICENCES[corpus] and f"| {corpus} | {entry['n']} |" in report
