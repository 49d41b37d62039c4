"""Where the silent face stills lose accuracy (target: stills through the service ≥ 0.68, while
the backbone scores 0.67 on FER2013 public_test). On the same held-out stills that
`bench/heldout_eval.py --kinds face` posts, side by side:

- `native`: the face ResNet's own classifier (the shipped 80-epoch weights, flip-averaged) on
  the FER2013 image itself, through the corpus-face path training uses (`corpus_face`);
- `service crops`: the same classifier on the K summary crops the service cuts from the
  still's silent mp4 (ffmpeg decode, BlazeFace, alignment, crop), their answers averaged;
- `served`: what the bundle answers for that clip (the classifier on the fusion sequence, face
  view, calibrated), as the server does.

    .venv/bin/python bench/face_front_end.py          # ~5 min on 2 cores; clips from .cache/served_clips
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = "a23e6f9b1bd676ef"   # the shipped face backbone: 40 + 20 + 20 epochs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--cache", type=Path, default=REPO / ".cache" / "served_clips")
    p.add_argument("--split", default="test", choices=("val", "test"))
    p.add_argument("--bundle", type=Path, default=REPO / "models" / "default")
    args = p.parse_args()

    import cv2

    from service.model.bundle import load_bundle
    from service.pipeline.config import MediaLimits
    from service.pipeline.extract import clip_features, decode_clip
    from service.pipeline.visual import corpus_face
    from trainer.face.backbone import COMMITTED, classifier_from_checkpoint
    from trainer.face.training import predict_faces
    from trainer.fusion.served_clips import heldout_sources, make_face, pair_clips

    bundle = load_bundle(args.bundle, ["CPUExecutionProvider"], threads=2)
    cfg, classes = bundle.config, list(bundle.classes)
    model = classifier_from_checkpoint(COMMITTED / f"{WEIGHTS}.npz", len(classes))

    def classify(faces: np.ndarray) -> np.ndarray:
        return predict_faces(model, faces, cfg.pixel_mean, cfg.pixel_std, flip=True, batch=8).mean(0)

    speech, faces, _ = heldout_sources(args.data, args.split)
    right: dict[str, list[bool]] = {"native": [], "service crops": [], "served": []}
    no_face = 0
    for pair in pair_clips(speech, faces, 0, None):   # the pairing bench/heldout_eval.py uses (seed 0)
        y = classes.index(pair.label)
        clip = decode_clip(make_face(pair.face, args.cache), cfg, MediaLimits(), detector=bundle.face_detector)
        if not any(c.detected for c in clip.faces.crops):
            no_face += 1                                # the server answers 400: not counted there either
            continue
        native = corpus_face(cv2.imread(str(pair.face.path), cv2.IMREAD_GRAYSCALE), cfg).image
        feats = clip_features(clip, cfg, bundle)
        # The summary frames the service chose (by their times: a still's frames may repeat).
        chosen = np.searchsorted(clip.faces.times, feats.summary_times)
        crops = np.stack([clip.faces.crops[j].image for j in chosen])
        right["native"].append(classify(native[None]).argmax() == y)
        right["service crops"].append(classify(crops).argmax() == y)
        right["served"].append(bundle.answer(feats.sequence, "face").argmax() == y)
    n = len(right["native"])
    print(f"{args.split} stills: {n} with a face, {no_face} without (not counted)\n")
    print("| classifier input | accuracy |\n|---|---|")
    for k, v in right.items():
        print(f"| {k} | {np.mean(v):.3f} |")


if __name__ == "__main__":
    main()
