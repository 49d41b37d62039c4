"""Adapting the voice to a batch of recordings: the moment matching itself, and
`emotion-av predict --adapt-voice` on real clips (every answer says so; too few voices is a
usage error, not a silent fallback)."""
from __future__ import annotations

import json
import subprocess
from types import SimpleNamespace

import numpy as np
import pytest
from conftest import REPO_ROOT, corpus_dir

from service.model.voice_adaptation import MIN_CLIPS, AdaptationError, RunningMoments, VoiceAdaptation, batch_moments
from service.pipeline.config import PipelineConfig
from service.pipeline.fusion import build_sequence, utterance_of

CFG = PipelineConfig(image_feature_dim=8, audio_code_dim=4, audio_utterance_stats="mean,std")


def _sequence(utterance: np.ndarray | None, rng) -> np.ndarray:
    k = CFG.k_summary
    stats = rng.standard_normal((k, 2 * CFG.audio_code_dim)).astype(np.float32)
    present = np.ones(k, bool) if utterance is not None else np.zeros(k, bool)
    return build_sequence(CFG, rng.standard_normal((k, 8)).astype(np.float32), np.ones(k, bool), stats, present,
                          utterance)


def test_running_moments_are_numpys():
    x = np.random.default_rng(0).standard_normal((57, 6)) * [1, 2, 3, 4, 5, 6] + 10
    m = RunningMoments()
    for row in x:
        m.add(row)
    np.testing.assert_allclose(m.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.std, x.std(0), rtol=1e-10)


def test_a_batch_is_mapped_onto_the_training_voices():
    rng = np.random.default_rng(1)
    d = CFG.utterance_dim
    train = SimpleNamespace(train_mean=list(rng.standard_normal(d)), train_std=list(rng.uniform(0.5, 2, d)))
    batch = rng.standard_normal((40, d)) * 3 + 7          # another room: shifted and spread
    seqs = [_sequence(u.astype(np.float32), rng) for u in batch] + [_sequence(None, rng)]  # + a silent clip
    adaptation = VoiceAdaptation.fit(batch_moments(seqs, CFG), train)
    assert adaptation.n_clips == 40 and adaptation.describe()["n_clips"] == 40
    out = np.stack([utterance_of(adaptation.apply(s, CFG), CFG) for s in seqs[:-1]])
    np.testing.assert_allclose(out.mean(0), train.train_mean, atol=1e-4)
    np.testing.assert_allclose(out.std(0), train.train_std, rtol=1e-4)
    silent = seqs[-1]
    np.testing.assert_array_equal(adaptation.apply(silent, CFG), silent)   # no voice: nothing to adapt
    faces = CFG.layout()["image"]
    np.testing.assert_array_equal(adaptation.apply(seqs[0], CFG)[:, faces[0]:faces[1]],
                                  seqs[0][:, faces[0]:faces[1]])         # the face is not touched


def test_too_few_voices_or_an_old_bundle_is_refused():
    rng = np.random.default_rng(2)
    d = CFG.utterance_dim
    few = batch_moments([_sequence(rng.standard_normal(d).astype(np.float32), rng) for _ in range(MIN_CLIPS - 1)], CFG)
    domain = SimpleNamespace(train_mean=[0.0] * d, train_std=[1.0] * d)
    with pytest.raises(AdaptationError, match=f"at least {MIN_CLIPS}"):
        VoiceAdaptation.fit(few, domain)
    with pytest.raises(AdaptationError, match="rebuild"):
        VoiceAdaptation.fit(few, SimpleNamespace(train_mean=[], train_std=[]))


@pytest.mark.slow
def test_cli_adapts_to_a_folder_of_real_voices_and_says_so(quick_bundle, tmp_path):
    """24 real RAVDESS recordings of one actor (one setup): every answer carries
    `adaptation.voice` with the batch's size, and differs from the unadapted answer; the six
    CREMA-D clips are too few, and the run stops with a usage error before answering any."""
    from test_cli import cli_command, read_jsonl
    folder = tmp_path / "actor"
    folder.mkdir()
    for f in sorted((corpus_dir("ravdess") / "Actor_01").glob("*.flac"))[:24]:
        (folder / f.name).symlink_to(f)
    runs = {}
    for name, extra in (("plain", []), ("adapted", ["--adapt-voice"])):
        out = tmp_path / f"{name}.jsonl"
        proc = subprocess.run([*cli_command(), "predict", str(folder), "--out", str(out), "--model-dir",
                               str(quick_bundle), "-q", *extra], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=600)
        assert proc.returncode == 0, proc.stderr
        runs[name] = {r["path"]: r for r in read_jsonl(out)}
    assert len(runs["adapted"]) == 24
    assert all(r["adaptation"] is None for r in runs["plain"].values())
    assert all(r["adaptation"]["voice"]["n_clips"] == 24 for r in runs["adapted"].values())
    moved = [max(abs(runs["adapted"][p]["probabilities"][c] - runs["plain"][p]["probabilities"][c])
                 for c in runs["plain"][p]["probabilities"]) for p in runs["plain"]]
    assert max(moved) > 1e-3

    out = tmp_path / "few.jsonl"
    proc = subprocess.run([*cli_command(), "predict", str(corpus_dir("cremad_av")), "--out", str(out),
                           "--model-dir", str(quick_bundle), "-q", "--adapt-voice"], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and f"at least {MIN_CLIPS}" in proc.stderr
    assert not out.exists()
    json.dumps(runs)  # the answers are plain JSON
