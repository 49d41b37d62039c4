"""Corpus loaders (design §3): exact counts on the shared corpora, the published layouts on
generated trees, label sets, discovery and clear errors."""
from __future__ import annotations

import wave
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import corpus_dir

from trainer.data import (
    BASIC7,
    EVALUATION_ONLY,
    PAPER3,
    Sample,
    discover_corpora,
    filter_label_set,
    load_ckplus,
    load_corpus,
    load_cremad,
    load_fer2013,
    load_rafdb,
    load_ravdess,
    load_savee,
    load_tess,
    load_urdu,
    map_label,
)
from trainer.data.splits import split_of


def by(samples, *fields):
    """Counter of samples by one field, or by a tuple of fields."""
    key = (lambda s: getattr(s, fields[0])) if len(fields) == 1 else (lambda s: tuple(getattr(s, f) for f in fields))
    return Counter(key(s) for s in samples)


def check_common(samples, corpus):
    assert samples == sorted(samples, key=lambda s: s.path)
    assert all(s.corpus == corpus and s.label in BASIC7 and s.speaker.startswith(f"{corpus}:") for s in samples)
    assert len({s.path for s in samples}) == len(samples)


# ---------------------------------------------------------------- the shared corpora (../shared/data)

def test_real_ravdess():
    samples = load_ravdess(corpus_dir("ravdess"))
    check_common(samples, "ravdess")
    assert len(samples) == 1200
    assert by(samples, "speaker") == {f"ravdess:{a:02d}": 60 for a in range(1, 21)}
    # 80 neutral + 160 calm merge into neutral
    assert by(samples, "label") == {"neutral": 240, "happy": 160, "sad": 160, "angry": 160,
                                    "fearful": 160, "disgust": 160, "surprised": 160}
    per_actor = by(samples, "speaker", "label")
    assert all(per_actor[(f"ravdess:{a:02d}", "neutral")] == 12 for a in range(1, 21))
    assert all(n == 8 for (_, label), n in per_actor.items() if label != "neutral")
    assert by(samples, "group") == {"01": 600, "02": 600}
    assert by(samples, "modality") == {"audio": 1200} and by(samples, "split") == {None: 1200}
    assert len(filter_label_set(samples, "paper3")) == 480


def test_real_tess():
    samples = load_tess(corpus_dir("tess"))
    check_common(samples, "tess")
    # shared/ keeps every other word of the 200 (both speakers, every emotion)
    assert len(samples) == 1400
    assert by(samples, "speaker", "label") == {(f"tess:{spk}", label): 100 for spk in ("OAF", "YAF") for label in BASIC7}
    groups = by(samples, "group")
    assert len(groups) == 100 and set(groups.values()) == {14}  # 2 speakers x 7 emotions per word
    # the published set's stray "OA_bite_neutral" belongs to OAF
    (bite,) = [s for s in samples if s.path.name == "OA_bite_neutral.flac"]
    assert (bite.speaker, bite.label, bite.group) == ("tess:OAF", "neutral", "bite")


def test_real_fer2013():
    samples = load_fer2013(corpus_dir("fer2013"))
    check_common(samples, "fer2013")
    assert len(samples) == 28709 + 3589
    counts = by(samples, "split", "label")
    train = {"angry": 3995, "disgust": 436, "fearful": 4097, "happy": 7215, "neutral": 4965, "sad": 4830, "surprised": 3171}
    public = {"angry": 467, "disgust": 56, "fearful": 496, "happy": 895, "neutral": 607, "sad": 653, "surprised": 415}
    assert counts == {**{("train", k): v for k, v in train.items()}, **{("public_test", k): v for k, v in public.items()}}
    assert by(samples, "speaker") == {"fer2013:unknown": 32298}
    assert by(samples, "modality") == {"image": 32298}


CKPLUS_SUBJECTS = """
S005:3 S010:9 S011:18 S014:12 S022:9 S026:12 S028:3 S029:3 S032:15 S034:9 S035:9 S037:9 S042:12
S044:9 S045:6 S046:12 S050:12 S051:6 S052:9 S053:6 S054:9 S055:15 S056:9 S057:9 S058:9 S059:6
S060:9 S061:9 S062:12 S063:6 S064:9 S065:12 S066:12 S067:12 S068:12 S069:9 S070:9 S071:15
S072:6 S073:6 S074:12 S075:12 S076:9 S077:6 S078:9 S079:9 S080:9 S081:9 S082:9 S083:3 S084:6
S085:9 S086:6 S087:12 S088:6 S089:9 S090:9 S091:6 S092:9 S093:6 S094:6 S095:12 S096:9 S097:9
S098:6 S099:9 S100:9 S101:3 S102:9 S105:3 S106:9 S107:6 S108:9 S109:9 S110:3 S111:9 S112:3
S113:9 S114:6 S115:9 S116:9 S117:9 S119:9 S122:3 S124:12 S125:15 S126:6 S127:9 S128:6 S129:12
S130:15 S131:12 S132:15 S133:9 S134:9 S135:6 S136:12 S137:9 S138:12 S501:9 S502:6 S503:6 S504:9
S505:3 S506:9 S999:6
"""


def test_real_ckplus():
    samples = load_ckplus(corpus_dir("ckplus48"))
    check_common(samples, "ckplus")
    assert len(samples) == 981 - 54  # contempt (54 images) dropped
    assert by(samples, "label") == {"angry": 135, "disgust": 177, "fearful": 75, "happy": 207, "sad": 84, "surprised": 249}
    expected = {f"ckplus:{k}": int(v) for k, v in (item.split(":") for item in CKPLUS_SUBJECTS.split())}
    assert len(expected) == 106 and by(samples, "speaker") == expected


def test_real_rafdb():
    samples = load_rafdb(corpus_dir("rafdb"))
    check_common(samples, "rafdb")
    assert len(samples) == 12271
    assert by(samples, "label") == {"angry": 705, "disgust": 717, "fearful": 281, "happy": 4772, "neutral": 2524,
                                    "sad": 1982, "surprised": 1290}
    assert by(samples, "split") == {"train": 12271} and by(samples, "modality") == {"image": 12271}
    assert len(by(samples, "speaker")) == 12271  # no identities: each image is its own


def test_rafdb_splits_are_carved_from_train():
    counts = by([type("S", (), {"split": split_of(s)})() for s in load_rafdb(corpus_dir("rafdb"))], "split")
    assert counts["train"] > 0.75 * 12271 and 0.08 * 12271 < counts["val"] < 0.12 * 12271
    assert 0.08 * 12271 < counts["test"] < 0.12 * 12271


def test_real_cremad():
    samples = load_cremad(corpus_dir("cremad_av"))
    check_common(samples, "cremad")
    assert [(s.path.name, s.label) for s in samples] == [
        ("1001_DFA_ANG_XX.flv", "angry"), ("1001_DFA_DIS_XX.flv", "disgust"), ("1001_DFA_FEA_XX.flv", "fearful"),
        ("1001_DFA_HAP_XX.flv", "happy"), ("1001_DFA_NEU_XX.flv", "neutral"), ("1001_DFA_SAD_XX.flv", "sad")]
    assert {(s.speaker, s.modality, s.group) for s in samples} == {("cremad:1001", "video", "DFA")}


URDU_SPEAKERS = """
SF1:12 SF2:2 SF3:2 SF4:4 SF5:4 SF6:14 SF7:6 SF8:2 SF9:4 SF10:2 SF11:4 SM1:22 SM2:28 SM3:12 SM4:48 SM5:80
SM6:14 SM7:28 SM17:2 SM18:2 SM19:2 SM20:10 SM21:4 SM22:2 SM23:6 SM24:38 SM25:40 SM26:2 SM27:4
"""


def test_real_urdu():
    samples = load_urdu(corpus_dir("urdu"))
    check_common(samples, "urdu")
    assert len(samples) == 400
    assert by(samples, "label") == {"angry": 100, "happy": 100, "neutral": 100, "sad": 100}
    # speaker = the file name's first field: 29 ids (11 female, 18 male)
    expected = {f"urdu:{k}": int(v) for k, v in (item.split(":") for item in URDU_SPEAKERS.split())}
    assert len(expected) == 29 and by(samples, "speaker") == expected
    assert by(samples, "modality") == {"audio": 400} and by(samples, "split") == {None: 400}
    (first,) = [s for s in samples if s.path.name == "SM1_F10_A010.flac"]
    assert (first.path.parent.name, first.label, first.speaker) == ("Angry", "angry", "urdu:SM1")
    # evaluation only: every clip is test, none train or val
    assert "urdu" in EVALUATION_ONLY and {split_of(s) for s in samples} == {"test"}


def test_discover_real(data_dir):
    assert discover_corpora(data_dir) == {
        "ravdess": data_dir / "ravdess", "tess": data_dir / "tess", "cremad": data_dir / "cremad_av",
        "fer2013": data_dir / "fer2013", "ckplus": data_dir / "ckplus48", "rafdb": data_dir / "rafdb",
        "urdu": data_dir / "urdu"}


# ---------------------------------------------------------------- published layouts, generated

def make(root: Path, *rel: str) -> None:
    """Tiny files: a valid silent WAV, a valid 48x48 PNG/JPEG, a few bytes otherwise."""
    for r in rel:
        path = root / r
        path.parent.mkdir(parents=True, exist_ok=True)
        ext = path.suffix.lower()
        if ext == ".wav":
            with wave.open(str(path), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(16000)
                w.writeframes(b"\0\0" * 160)
        elif ext in (".png", ".jpg"):
            path.write_bytes(cv2.imencode(ext, np.zeros((48, 48), np.uint8))[1].tobytes())
        else:
            path.write_bytes(b"\0" * 16)


def rows(samples, root, *fields):
    return [(s.path.relative_to(root).as_posix(), *(getattr(s, f) for f in fields)) for s in samples]


def test_ravdess_zenodo_layout(tmp_path):
    make(tmp_path,
         "Audio_Speech_Actors_01-24/Actor_01/03-01-02-01-01-01-01.wav",  # calm -> neutral
         "Audio_Speech_Actors_01-24/Actor_01/03-01-08-02-02-02-01.wav",
         "Actor_01/03-01-02-01-01-01-01.wav",  # the same file unpacked twice: counted once
         "Audio_Song_Actors_01-24/Actor_01/03-02-03-01-01-01-01.wav",  # song: skipped
         "Video_Speech_Actor_02/Actor_02/01-01-05-01-01-01-02.mp4",  # audio-visual
         "Video_Speech_Actor_02/Actor_02/02-01-05-01-01-01-02.mp4",  # video-only: skipped
         "Video_Speech_Actor_02/Actor_02/._01-01-05-01-01-01-02.mp4",  # macOS resource fork
         "Audio_Speech_Actors_01-24/Actor_01/03-01-09-01-01-01-01.wav",  # no emotion 09
         "Audio_Speech_Actors_01-24/readme.txt")
    samples = load_ravdess(tmp_path)
    check_common(samples, "ravdess")
    assert rows(samples, tmp_path, "label", "speaker", "modality", "group", "split") == [
        ("Actor_01/03-01-02-01-01-01-01.wav", "neutral", "ravdess:01", "audio", "01", None),
        ("Audio_Speech_Actors_01-24/Actor_01/03-01-08-02-02-02-01.wav", "surprised", "ravdess:01", "audio", "02", None),
        ("Video_Speech_Actor_02/Actor_02/01-01-05-01-01-01-02.mp4", "angry", "ravdess:02", "video", "01", None)]


def test_cremad_published_layout(tmp_path):
    make(tmp_path,
         "AudioWAV/1001_DFA_ANG_XX.wav", "AudioWAV/1091_IEO_HAP_HI.wav", "AudioWAV/1002_TIE_XYZ_LO.wav",
         "VideoFlash/1001_DFA_ANG_XX.flv", "VideoMP4/1001_DFA_ANG_XX.mp4",  # same clip twice: flv kept
         "VideoFlash/1015_ITS_fea_md.flv", "AudioMP3/1001_DFA_ANG_XX.mp3")
    samples = load_cremad(tmp_path)
    check_common(samples, "cremad")
    assert rows(samples, tmp_path, "label", "speaker", "modality", "group") == [
        ("AudioWAV/1001_DFA_ANG_XX.wav", "angry", "cremad:1001", "audio", "DFA"),
        ("AudioWAV/1091_IEO_HAP_HI.wav", "happy", "cremad:1091", "audio", "IEO"),
        ("VideoFlash/1001_DFA_ANG_XX.flv", "angry", "cremad:1001", "video", "DFA"),
        ("VideoFlash/1015_ITS_fea_md.flv", "fearful", "cremad:1015", "video", "ITS")]


@pytest.mark.parametrize("layout", ["nested", "flat"])
def test_savee_layouts(tmp_path, layout):
    files = {"DC": "a01", "JE": "sa03", "JK": "n30", "KL": "su15"}
    if layout == "nested":
        make(tmp_path, *(f"AudioData/{spk}/{code}.wav" for spk, code in files.items()),
             "AudioData/XX/a01.wav", "AudioData/DC/info.txt")
    else:
        make(tmp_path, *(f"ALL/{spk}_{code}.wav" for spk, code in files.items()), "ALL/XX_a01.wav")
    samples = load_savee(tmp_path)
    check_common(samples, "savee")
    assert [(s.speaker, s.label, s.modality) for s in samples] == [
        ("savee:DC", "angry", "audio"), ("savee:JE", "sad", "audio"),
        ("savee:JK", "neutral", "audio"), ("savee:KL", "surprised", "audio")]


def test_tess_odd_spellings(tmp_path):
    top = "TESS Toronto emotional speech set data"
    make(tmp_path, *(f"{top}/{f}" for f in (
        "OAF_Pleasant_surprise/OAF_back_ps.wav", "YAF_pleasant_surprised/YAF_Bar_ps.wav",
        "YAF_pleasant_surprised/YAF_dog_pleasant_surprise.wav", "OAF_Fear/OAF_neat_fear.wav",
        "YAF_fear/YAF_neat_Fear.wav", "OAF_neutral/OA_bite_neutral.wav", "YAF_sad/YAF_chalk_sad.flac",
        "OAF_angry/OAF_angry.wav", "OAF_angry/notes.txt")))
    samples = load_tess(tmp_path)
    check_common(samples, "tess")
    assert [(s.path.name, s.label, s.speaker, s.group) for s in samples] == [
        ("OAF_neat_fear.wav", "fearful", "tess:OAF", "neat"),
        ("OAF_back_ps.wav", "surprised", "tess:OAF", "back"),
        ("OA_bite_neutral.wav", "neutral", "tess:OAF", "bite"),
        ("YAF_neat_Fear.wav", "fearful", "tess:YAF", "neat"),
        ("YAF_Bar_ps.wav", "surprised", "tess:YAF", "bar"),
        ("YAF_dog_pleasant_surprise.wav", "surprised", "tess:YAF", "dog"),
        ("YAF_chalk_sad.flac", "sad", "tess:YAF", "chalk")]
    assert {s.modality for s in samples} == {"audio"}


def test_fer2013_kaggle_layout(tmp_path):
    make(tmp_path, "train/angry/Training_1.jpg", "train/surprise/im0.png", "test/surprise/im0.png",
         "test/fear/PublicTest_7.jpg", "PrivateTest/happy/PrivateTest_9.jpg", "train/contempt/x.jpg",
         "validation/happy/v.jpg", "train/README.md")
    samples = load_fer2013(tmp_path)
    check_common(samples, "fer2013")
    assert rows(samples, tmp_path, "label", "split", "speaker", "modality") == [
        ("PrivateTest/happy/PrivateTest_9.jpg", "happy", "private_test", "fer2013:unknown", "image"),
        ("test/fear/PublicTest_7.jpg", "fearful", "test", "fer2013:unknown", "image"),
        ("test/surprise/im0.png", "surprised", "test", "fer2013:unknown", "image"),  # same name, other split: kept
        ("train/angry/Training_1.jpg", "angry", "train", "fer2013:unknown", "image"),
        ("train/surprise/im0.png", "surprised", "train", "fer2013:unknown", "image")]


def test_ckplus_drops_contempt(tmp_path):
    make(tmp_path, "CK+48/anger/S010_004_00000017.png", "CK+48/contempt/S138_008_00000007.png",
         "CK+48/sadness/S011_002_00000020.png", "CK+48/surprise/s999_001_00000001.png", "CK+48/happy/face.png")
    samples = load_ckplus(tmp_path / "CK+48")
    check_common(samples, "ckplus")
    assert [(s.path.name, s.label, s.speaker, s.modality, s.split) for s in samples] == [
        ("S010_004_00000017.png", "angry", "ckplus:S010", "image", None),
        ("S011_002_00000020.png", "sad", "ckplus:S011", "image", None),
        ("s999_001_00000001.png", "surprised", "ckplus:S999", "image", None)]


def test_urdu_published_layout(tmp_path):
    make(tmp_path, *(f"URDU-Dataset/{f}" for f in (
        "Angry/SM1_F10_A010.wav", "Angry/SM1_F10_A010.flac",  # the same clip twice: counted once
        "Happy/SF1_F10_H010.wav", "Neutral/SF9_F1_N01.flac", "sad/sm27_f2_s100.WAV",
        "Sad/._SF10_F1_S01.wav",  # macOS resource fork
        "Sad/SF10_F1.wav", "Sad/notes.txt", "Angry/SM1_F10_A010.mp3", "README.md")))
    samples = load_urdu(tmp_path)
    check_common(samples, "urdu")
    assert rows(samples, tmp_path, "label", "speaker", "modality", "split", "group") == [
        ("URDU-Dataset/Angry/SM1_F10_A010.flac", "angry", "urdu:SM1", "audio", None, None),
        ("URDU-Dataset/Happy/SF1_F10_H010.wav", "happy", "urdu:SF1", "audio", None, None),
        ("URDU-Dataset/Neutral/SF9_F1_N01.flac", "neutral", "urdu:SF9", "audio", None, None),
        ("URDU-Dataset/sad/sm27_f2_s100.WAV", "sad", "urdu:SM27", "audio", None, None)]
    # found by its published name, and by its layout under another name
    assert discover_corpora(tmp_path) == {"urdu": tmp_path / "URDU-Dataset"}
    make(tmp_path, "other/talks/Happy/SM4_F3_H07.flac", "other/talks/Happy/x.flac")
    assert discover_corpora(tmp_path / "other") == {"urdu": tmp_path / "other/talks"}
    # the label comes from the emotion folder, else from the code letter
    make(tmp_path, "flat/SM2_F1_N02.wav", "flat/SM2_F2_A03.wav")
    assert rows(load_urdu(tmp_path / "flat"), tmp_path / "flat", "label") == [
        ("SM2_F1_N02.wav", "neutral"), ("SM2_F2_A03.wav", "angry")]


def test_evaluation_only_corpora_are_never_trained_on(tmp_path, caplog):
    """trainer.stages.data: a build leaves URDU out, found or named in the recipe."""
    from types import SimpleNamespace

    from trainer.stages.data import load_samples, training_corpora

    make(tmp_path, "urdu/Angry/SM1_F10_A010.wav", "urdu/Sad/SF10_F1_S01.wav",
         "ravdess/Actor_01/03-01-05-01-01-01-01.wav", "tess/OAF_sad/OAF_back_sad.wav")
    found = discover_corpora(tmp_path)
    assert set(found) == {"ravdess", "tess", "urdu"}
    assert training_corpora(found) == ["ravdess", "tess"]
    assert training_corpora(found, ("urdu", "ravdess")) == ["ravdess"]
    assert training_corpora(found, ("urdu",)) == []

    def ctx(corpora=()):
        return SimpleNamespace(opts=SimpleNamespace(data_dir=tmp_path, label_set="basic7"),
                               recipe=SimpleNamespace(corpora=corpora))

    with caplog.at_level("INFO", logger="trainer"):
        samples = load_samples(ctx())
    assert {s.corpus for s in samples} == {"ravdess", "tess"} and len(samples) == 2
    assert "evaluation-only corpora left out of the build: urdu" in caplog.text
    assert {s.corpus for s in load_samples(ctx(("ravdess", "urdu")))} == {"ravdess"}
    with pytest.raises(SystemExit, match="no corpus found"):
        load_samples(ctx(("urdu",)))


def test_evaluation_only_on_the_real_data(data_dir):
    from trainer.stages.data import training_corpora

    found = discover_corpora(data_dir)
    assert "urdu" in found and "urdu" not in training_corpora(found)
    assert training_corpora(found) == [c for c in found if c != "urdu"]


# ---------------------------------------------------------------- label sets and discovery

def test_map_label_and_filter():
    assert [map_label(label, "paper3") for label in BASIC7] == [None, "happy", "sad", None, None, None, "surprised"]
    assert [map_label(label, "basic7") for label in BASIC7] == list(BASIC7)
    samples = [Sample(Path(f"{label}.wav"), label, "x:1", "x", "audio") for label in BASIC7]
    kept = filter_label_set(samples, "paper3")
    assert [s.label for s in kept] == list(PAPER3) and kept[0] is samples[1]
    assert filter_label_set(samples, "basic7") == samples
    with pytest.raises(ValueError, match="unknown label set"):
        map_label("happy", "paper4")
    with pytest.raises(ValueError, match="not a basic7 label"):
        map_label("calm", "basic7")
    with pytest.raises(ValueError, match="not basic7"):
        Sample(Path("a.wav"), "contempt", "x:1", "x", "audio")


def test_rafdb_layouts(tmp_path):
    """The folder release (FER2013's layout, RAF-DB's names) and the published basic/ with its
    label list; the folder release is not taken for FER2013."""
    make(tmp_path, "folders/train/happy/train_00001_aligned.jpg", "folders/test/fear/test_0002_aligned.jpg",
         "folders/train/contempt/train_00003_aligned.jpg", "basic/Image/aligned/train_00004_aligned.jpg",
         "basic/Image/aligned/test_0005_aligned.jpg", "basic/Image/aligned/train_00006_aligned.jpg")
    (tmp_path / "basic/EmoLabel").mkdir(parents=True)
    (tmp_path / "basic/EmoLabel/list_patition_label.txt").write_text("train_00004.jpg 6\ntest_0005.jpg 1\n")
    assert rows(load_rafdb(tmp_path / "folders"), tmp_path / "folders", "label", "split", "speaker") == [
        ("test/fear/test_0002_aligned.jpg", "fearful", "test", "rafdb:test_0002"),
        ("train/happy/train_00001_aligned.jpg", "happy", "train", "rafdb:train_00001")]
    assert rows(load_rafdb(tmp_path / "basic"), tmp_path / "basic", "label", "split") == [
        ("Image/aligned/test_0005_aligned.jpg", "surprised", "test"),
        ("Image/aligned/train_00004_aligned.jpg", "angry", "train")]  # 00006 has no label: skipped
    assert discover_corpora(tmp_path) == {"rafdb": tmp_path}


def test_discover_published_names(tmp_path):
    make(tmp_path,
         "downloads/Audio_Speech_Actors_01-24/Actor_01/03-01-03-01-01-01-01.wav",
         "downloads/Video_Speech_Actor_02/Actor_02/01-01-04-01-01-01-02.mp4",
         "CREMA-D/AudioWAV/1001_DFA_ANG_XX.wav", "CREMA-D/VideoFlash/1001_DFA_ANG_XX.flv",
         "kaggle/TESS Toronto emotional speech set data/OAF_angry/OAF_back_angry.wav",
         "surrey/AudioData/DC/a01.wav",
         "faces/fer/train/happy/1.jpg", "faces/fer/test/sad/2.jpg",
         "faces/CK+48/anger/S010_004_00000017.png",
         "unrelated/notes/readme.txt")
    found = discover_corpora(tmp_path)
    assert found == {"ravdess": tmp_path / "downloads", "tess": tmp_path / "kaggle/TESS Toronto emotional speech set data",
                     "cremad": tmp_path / "CREMA-D", "savee": tmp_path / "surrey/AudioData",
                     "fer2013": tmp_path / "faces/fer", "ckplus": tmp_path / "faces/CK+48"}
    counts = {name: len(load_corpus(name, root)) for name, root in found.items()}
    assert counts == {"ravdess": 2, "tess": 1, "cremad": 2, "savee": 1, "fer2013": 2, "ckplus": 1}


def test_discover_by_layout(tmp_path):
    make(tmp_path, "speech/Actor_07/03-01-04-01-01-01-07.flac", "talks/DC_a01.wav",
         "clips/1001_DFA_SAD_XX.flv", "stills/train/happy/1.jpg", "crops/fear/S011_003_00000012.png",
         "voices/YAF_sad/YAF_chalk_sad.wav")
    assert discover_corpora(tmp_path) == {
        "ravdess": tmp_path / "speech", "tess": tmp_path / "voices", "cremad": tmp_path / "clips",
        "savee": tmp_path / "talks", "fer2013": tmp_path / "stills", "ckplus": tmp_path / "crops"}
    assert discover_corpora(tmp_path / "speech") == {"ravdess": tmp_path / "speech"}  # a corpus root itself
    assert discover_corpora(tmp_path / "speech/Actor_07") == {}


# ---------------------------------------------------------------- errors

@pytest.mark.parametrize("loader, hint", [
    (load_ravdess, "03-01-05-02-01-02-12"), (load_tess, "OAF_back_angry"), (load_cremad, "1001_DFA_ANG_XX"),
    (load_savee, "AudioData"), (load_fer2013, "public_test"), (load_ckplus, "contempt is dropped"),
    (load_urdu, "SM1_F10_A010")])
def test_unrecognisable_roots(tmp_path, loader, hint):
    make(tmp_path, "misc/readme.txt", "misc/song.mp3", "Actor_01/03-02-03-01-01-01-01.wav",
         "contempt/S138_008_00000007.png", "pictures/happy/im0.png")
    with pytest.raises(ValueError, match="nothing recognisable") as err:
        loader(tmp_path)
    assert hint in str(err.value) and str(tmp_path) in str(err.value)
    with pytest.raises(ValueError, match="not a directory"):
        loader(tmp_path / "absent")


def test_unknown_corpus_and_missing_data_root(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus 'iemocap'.*ravdess"):
        load_corpus("iemocap", tmp_path)
    with pytest.raises(ValueError, match="not a directory"):
        discover_corpora(tmp_path / "absent")
