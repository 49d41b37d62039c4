"""Face-image corpora: FER2013 in its folder layout, CK+48 and RAF-DB. Images are never
deduplicated (some FER2013 folder releases reuse names such as im0.png across classes)."""
from __future__ import annotations

import re
from pathlib import Path

from trainer.data.labels import label_from_word
from trainer.data.sample import IMAGE_EXTS, Sample, finish, iter_files

# FER2013 split folder names, lower-cased with separators removed -> split.
# Kaggle's "test" (PublicTest + PrivateTest together) stays its own split "test".
FER_SPLITS = {"train": "train", "training": "train", "publictest": "public_test",
              "privatetest": "private_test", "test": "test"}
CKPLUS_RE = re.compile(r"(S\d+)_\d+_\d+\.\w+", re.I)  # S010_004_00000017.png
# RAF-DB basic: train_00023_aligned.jpg / test_0001.jpg; the prefix is the official split.
RAFDB_RE = re.compile(r"(train|test)_(\d+)(?:_aligned)?\.(?:jpg|jpeg|png)", re.I)
# RAF-DB's own label file (basic/EmoLabel/list_patition_label.txt): 1-7 in this order.
RAFDB_CODES = {1: "surprised", 2: "fearful", 3: "disgust", 4: "happy", 5: "sad", 6: "angry", 7: "neutral"}


def fer_split(folder: str) -> str | None:
    return FER_SPLITS.get(re.sub(r"[^a-z]", "", folder.lower()))


def load_fer2013(root: Path) -> list[Sample]:
    """<root>/<split>/<emotion>/*.(jpg|png); FER2013 has no identities: speaker "fer2013:unknown"."""
    found = []
    for path in iter_files(root, IMAGE_EXTS):
        label, split = label_from_word(path.parent.name), fer_split(path.parent.parent.name)
        if label and split:
            found.append((path, Sample(path, label, "fer2013:unknown", "fer2013", "image", split=split)))
    return finish(found, root, "FER2013 folders <split>/<emotion>/*.jpg with splits train, "
                  "public_test, private_test or test and emotions angry, disgust, fear, happy, neutral, sad, surprise")


def load_ckplus(root: Path) -> list[Sample]:
    """<root>/<emotion>/S010_004_00000017.png; "contempt" is dropped (no basic7 class);
    speaker = the subject prefix ("ckplus:S010"); files without it are skipped."""
    found = []
    for path in iter_files(root, IMAGE_EXTS):
        label, m = label_from_word(path.parent.name), CKPLUS_RE.fullmatch(path.name)
        if label and m:
            found.append((path, Sample(path, label, f"ckplus:{m.group(1).upper()}", "ckplus", "image")))
    return finish(found, root, "CK+48 folders <emotion>/S010_004_00000017.png "
                  "(anger, disgust, fear, happy, sadness, surprise; contempt is dropped)")


def load_rafdb(root: Path) -> list[Sample]:
    """RAF-DB basic, in either layout: <split>/<emotion>/train_00023_aligned.jpg (folder names as
    FER2013's), or the published basic/ with EmoLabel/list_patition_label.txt beside Image/.
    `split` is RAF-DB's own (train / test, from the name); RAF-DB has no identities, so each
    image is its own "speaker" ("rafdb:train_00023") and a face never straddles two splits."""
    labels: dict[str, str] = {}
    for listing in iter_files(root, (".txt",)):
        if listing.name.lower().startswith("list_patition_label"):
            for line in listing.read_text().split("\n"):
                name, _, code = line.strip().partition(" ")
                if code.strip().isdigit() and int(code) in RAFDB_CODES:
                    labels[Path(name).stem] = RAFDB_CODES[int(code)]
    found = []
    for path in iter_files(root, IMAGE_EXTS):
        m = RAFDB_RE.fullmatch(path.name)
        if not m:
            continue
        ident = f"{m.group(1).lower()}_{m.group(2)}"
        label = label_from_word(path.parent.name) or labels.get(ident)
        if label:
            found.append((ident, Sample(path, label, f"rafdb:{ident}", "rafdb", "image", split=m.group(1).lower())))
    return finish(found, root, "RAF-DB basic: <split>/<emotion>/train_00001_aligned.jpg, or Image/aligned/ "
                  "with EmoLabel/list_patition_label.txt")
