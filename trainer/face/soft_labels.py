"""The teachers' probabilities over every face corpus (issue 40), cached under
`.cache/features/teacher_probs/` (never committed), one file per corpus and split so an
interrupted run keeps what it finished. The same command resumes:

    nice -n 15 .venv/bin/python -m trainer.face.soft_labels          # all face corpora, all splits

Each teacher sees the crop it was trained on, cut from the corpus image itself (colour where
the corpus has it): YuNet's box (face-api) and YuNet's 5 landmarks (the zoo model); where
YuNet finds no face, the whole image and a typical face's landmarks. face-api is flip-averaged, the zoo model
runs once a face (`zoo_mode`).

Contamination, to keep in mind wherever these numbers are read: the zoo model was trained on
RAF-DB's official train split, which is `rafdb/train` here, so on the project's RAF-DB carve
(validation and test are cut from `rafdb/train`) its answers are answers on its own training
faces. face-api's training data is not documented.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from trainer.cache import FeatureCache
from trainer.data import Sample
from trainer.paths import CACHE_DIR, DATA_DIR
from trainer.progress import progress

log = logging.getLogger("trainer.face")
TEACHER_NAMES = ("face_api", "zoo")
# Where the zoo model runs on training faces (soft labels, once per face; flip-averaged on
# validation and test faces). Not on FER2013 train: 25,878 faces at ~27 ms each on a shared
# 2-core machine, where it is weakest (0.534 on FER2013 private test); there it answers
# uniformly, i.e. abstains from the pool, and the expert and face-api teach.
ZOO_TRAIN_CORPORA = ("rafdb", "ckplus")
VERSION = "teacher-probs/v1"


def face_api_onnx(cache_root: Path = CACHE_DIR) -> Path:
    """face-api's expression net as ONNX, converted once into the cache."""
    from trainer.face.teachers import FACE_API_DIR, export_face_api

    out = cache_root / "teachers" / "face_api_expression.onnx"
    if not out.is_file():
        sample = np.random.default_rng(0).uniform(0, 255, (2, 112, 112, 3)).astype(np.float32)
        export_face_api(out, sample, FACE_API_DIR)
    return out


def zoo_onnx(cache_root: Path = CACHE_DIR) -> Path:
    from trainer.face.teachers import zoo_with_batch_axis

    out = cache_root / "teachers" / "zoo_mobilefacenet_int8_batch.onnx"
    return out if out.is_file() else zoo_with_batch_axis(out)


def read_rgb(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"unreadable image {path}")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def teacher_probs(samples: Sequence[Sample], teachers, batch: int = 32, label: str = "teachers",
                  flip_zoo: bool | str = True) -> dict[str, np.ndarray]:
    """`flip_zoo`: True (flip-averaged), False (once a face) or "off" (not run: uniform)."""
    """{"face_api": [n, 7], "zoo": [n, 7], "detected": [n]} over `samples`, in order (basic7)."""
    zoo_on = flip_zoo != "off"
    out = {k: [] for k in TEACHER_NAMES}
    detected = []
    for start in progress(list(range(0, len(samples), batch)), label):
        fa, zoo = [], []
        for s in samples[start:start + batch]:
            a, z, d = teachers.inputs(read_rgb(s.path))
            fa.append(a)
            zoo.append(z)
            detected.append(d)
        got = teachers.run(np.stack(fa), np.stack(zoo) if zoo_on else None, flip_zoo=flip_zoo is True)
        for k in TEACHER_NAMES:
            out[k].append(got[k].astype(np.float32))
    res = {k: np.concatenate(v) if v else np.zeros((0, 7), np.float32) for k, v in out.items()}
    res["detected"] = np.array(detected, bool)
    return res


def chunks(samples: dict[str, list[Sample]]) -> dict[str, list[Sample]]:
    """(split, corpus[:its own split]) -> samples, in `ordered_faces` order within each."""
    from trainer.face.backbone import ordered_faces

    out: dict[str, list[Sample]] = {}
    for split, items in samples.items():
        for s in ordered_faces(items):
            out.setdefault(f"{split}/{s.corpus}" + (f":{s.split}" if s.split else ""), []).append(s)
    return out


def cached_teacher_probs(samples: Sequence[Sample], cache: FeatureCache, teachers_factory,
                         label: str = "teachers", flip_zoo: bool | str = True) -> dict[str, np.ndarray]:
    """`teacher_probs` of `samples`, cached by their files' paths and labels."""
    key = FeatureCache.key(VERSION, flip_zoo, [(str(s.path), s.label) for s in samples])
    return cache.get("teacher_probs", key,
                     lambda: teacher_probs(samples, teachers_factory(), label=label, flip_zoo=flip_zoo))


def all_teacher_probs(data_dir: Path = DATA_DIR, cache_root: Path = CACHE_DIR, only: Sequence[str] = ()):
    """Every chunk's teacher probabilities (computing what the cache lacks): {chunk: (samples, probs)}."""
    from trainer.face.backbone import face_samples
    from trainer.face.teachers import Teachers

    cache = FeatureCache(cache_root / "features")
    made = []

    def factory():
        if not made:
            made.append(Teachers(face_api_onnx(cache_root), zoo_onnx(cache_root)))
        return made[0]

    out = {}
    found = chunks(face_samples(data_dir))
    # Evaluation chunks first (the tables and the pool's weights need them); training chunks
    # after, the zoo model once per face there (soft labels; flip-averaging doubles its ~27 ms).
    for name in sorted(found, key=lambda n: (n.startswith("train/"), n)):
        if only and not any(o in name for o in only):
            continue
        out[name] = (found[name], cached_teacher_probs(found[name], cache, factory, label=f"teachers: {name}",
                                                       flip_zoo=zoo_mode(name)))
    return out


def zoo_mode(chunk: str) -> bool | str:
    """How the zoo model answers in a chunk: once a face (False; flip-averaging would double its
    ~27 ms, which the shared 2-core machine of 2026-12-07 could not pay for 45,000 faces) on
    validation and test faces and on training faces of ZOO_TRAIN_CORPORA, else not at all
    ("off"). face-api is flip-averaged everywhere (2 ms)."""
    if not chunk.startswith("train/"):
        return False
    return False if chunk.split("/", 1)[1].split(":")[0] in ZOO_TRAIN_CORPORA else "off"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m trainer.face.soft_labels", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA_DIR)
    p.add_argument("--cache", type=Path, default=CACHE_DIR)
    p.add_argument("--only", nargs="*", default=[], help="chunks whose name contains one of these (e.g. val/)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    from trainer.data import BASIC7

    for name, (items, probs) in all_teacher_probs(args.data, args.cache, args.only).items():
        y = np.array([BASIC7.index(s.label) for s in items])
        acc = {k: round(float((probs[k].argmax(1) == y).mean()), 4) for k in TEACHER_NAMES}
        log.info("%s: %d faces, YuNet found %d; accuracy %s", name, len(items), int(probs["detected"].sum()), acc)


if __name__ == "__main__":
    main()
