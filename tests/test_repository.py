"""Repository contracts: CI runs the README's test command; the service never imports TensorFlow."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO_ROOT


def test_ci_runs_the_readme_test_command():
    readme = (REPO_ROOT / "README.md").read_text()
    ci = (REPO_ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci in readme


def test_service_process_does_not_load_tensorflow():
    code = ("import sys, service.http.app, service.model.bundle, service.model.predictor; "
            "bad = [m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT).returncode == 0


def test_trainer_help_documents_the_options():
    out = subprocess.run([sys.executable, "-m", "trainer.cli", "build", "--help"], cwd=REPO_ROOT,
                         capture_output=True, text=True, check=True).stdout
    for option in ("--data", "--out", "--profile", "--resnet-weights", "--cache", "--label-set", "--izoa-iterations"):
        assert option in out


def test_trainer_tunables_parse_to_their_types():
    from trainer.cli import _parser

    args = _parser().parse_args(["build", "--out", "x", "--modality-dropout", "0.3", "--resnet-epochs", "2",
                                 "--fp16-backbone", "false", "--corpora", "ravdess", "tess"])
    assert args.modality_dropout == 0.3 and args.resnet_epochs == 2 and isinstance(args.resnet_epochs, int)
    assert args.fp16_backbone is False and args.corpora == ["ravdess", "tess"]
    assert args.seed is None  # not given: the profile decides


def test_recipe_profiles_and_explicit_values():
    from trainer.cli import _parser, options_from
    from trainer.recipe import Recipe

    quick = Recipe.for_profile("quick")
    assert quick.corpora == ("ravdess", "fer2013", "cremad") and quick.ae_epochs == 3
    assert Recipe.for_profile("full").ae_epochs == Recipe().ae_epochs
    # A value given explicitly wins over the profile's (it used to be overwritten by it).
    opts = options_from(_parser().parse_args(["build", "--out", "x", "--profile", "quick", "--ae-epochs", "7"]))
    assert opts.recipe.ae_epochs == 7 and opts.recipe.izoa_iterations == quick.izoa_iterations
    # A list option given alone is the empty tuple: the default profile's warm restarts are dropped.
    assert Recipe.for_profile("default").face_restarts == (20, 20)
    opts = options_from(_parser().parse_args(["build", "--out", "x", "--face-restarts"]))
    assert opts.recipe.face_restarts == ()


def test_build_refuses_to_replace_a_bundle_without_force(tmp_path):
    from trainer.build import check_output
    from trainer.recipe import BuildOptions

    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text("{}")
    with pytest.raises(SystemExit, match="--force"):
        check_output(BuildOptions(data_dir=tmp_path, out_dir=tmp_path / "b"))
    check_output(BuildOptions(data_dir=tmp_path, out_dir=tmp_path / "b", force=True))
    check_output(BuildOptions(data_dir=tmp_path, out_dir=tmp_path / "new"))


def test_no_service_or_trainer_function_is_over_80_lines():
    import ast

    long = []
    for path in [*(REPO_ROOT / "service").rglob("*.py"), *(REPO_ROOT / "trainer").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno} {node.name}")
    assert not long, long
