"""Audio frame features, autoencoder and utterance summaries for training.

Everything here goes through the service's pipeline (`service.pipeline.audio`): the file is
decoded by the serving code in the serving block size and fed to the same
`AudioAccumulator`, so the cached training features are bit-for-bit the served ones.

Typed entry points for the build (the lead wires them into the stages):

- `frame_features(sample, cfg, cache) -> AudioFrames`: frames of the autoencoder's input
  (13 MFCC or rich), their times and the speech-activity mask under `cfg`.
- `train_audio_encoder(frames, cfg, ...) -> keras.Model`: the encoder (standardisation
  with the training statistics inside it, then dense 2*code -> code), ready for
  `export.export_onnx(..., input_name="frames", output_name="code")`.
- `utterance_vector(codes, active, cfg) -> np.ndarray`: the per-utterance side input
  (`cfg.utterance_stats` of the codes over speech-active frames).
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from service.pipeline import audio, audio_frames, media, voice
from service.pipeline.config import PipelineConfig
from trainer.cache import FeatureCache, file_key
from trainer.data import Sample
from trainer.voice import whisper
from trainer.voice.augment import Augment, augmented

_PARAMS = ("sample_rate", "n_mfcc", "n_fft", "win_length", "hop_length", "n_mels", "audio_features")
_VERSION = "audio-frames-v1"


@dataclass
class AudioFrames:
    features: np.ndarray     # float32 [n, audio_dim(cfg)]
    times: np.ndarray        # float64 [n] seconds
    energy_db: np.ndarray    # float32 [n] gate energy (peak-normalised mel energy, dB)
    duration: float
    # The speech encoder's states pooled over speech (`service.pipeline.voice.embedding`) for
    # every layer in `whisper.ALL_LAYERS`, when the config has an encoder; `utterance_vector`
    # takes the build's layers out of it.
    voice: np.ndarray | None = None

    @classmethod
    def unpack(cls, d: dict[str, np.ndarray]) -> "AudioFrames":
        """From the cached arrays `_pack` made."""
        return cls(d["features"], d["times"], d["energy_db"], float(d["duration"]), d.get("voice"))

    def active(self, cfg: PipelineConfig) -> np.ndarray:
        """Speech-active frames under `cfg.speech_gate_db` (the serving gate)."""
        return audio_frames.speech_active(self.energy_db, cfg.speech_gate_db)


# Bumped whenever the rich features' code changes (v2: level-free spectral flatness).
_RICH_VERSION = "rich-v2"


# What the pooled speech-encoder states depend on, beside the weights' hash.
_VOICE_PARAMS = ("voice_encoder", "voice_stats", "voice_dim", "voice_n_mels", "voice_n_fft", "voice_max_frames",
                 "speech_gate_db")
_VOICE_VERSION = "voice-states-v1"


def _cache_key(sample: Sample, cfg: PipelineConfig) -> str:
    version = [_VERSION] + ([_RICH_VERSION] if cfg.audio_features == "rich" else [])
    if cfg.voice_encoder:
        version += [_VOICE_VERSION, whisper.MODEL_BIN_SHA256, {k: getattr(cfg, k) for k in _VOICE_PARAMS}]
    return FeatureCache.key(*version, file_key(sample.path), {k: getattr(cfg, k) for k in _PARAMS})


def voice_encoder_folder() -> str:
    """Where the trainer keeps its all-layers export of the speech encoder."""
    from trainer.paths import CACHE_DIR
    return str(CACHE_DIR / "whisper")


def _pack(track: audio.AudioTrack, cfg: PipelineConfig) -> dict[str, np.ndarray]:
    feats, times = track.frame_features(cfg)
    energy = (audio_frames.to_db(track.mel.sum(axis=1), track.peak ** 2) if track.usable(cfg)
              else np.zeros(0, np.float32))
    out = {"features": feats, "times": times, "energy_db": energy,
           "duration": np.float64(track.n_samples / cfg.sample_rate)}
    if cfg.voice_encoder:
        out["voice"] = voice.embedding(track, whisper.all_layers(cfg), whisper.states_encoder(voice_encoder_folder()))
    return out


_BLOCK_S = 10.0  # media.stream_audio's block: the service feeds the accumulator 10 s at a time


def _direct_blocks(path, sample_rate: int):
    """Blocks of a mono FLAC/WAV already at `sample_rate`, read in process by libsndfile
    (bit-identical to ffmpeg's f32le output for such files, tests/test_audio_frames.py;
    ~300 ms of ffmpeg start-up saved per corpus file). None when the file needs ffmpeg."""
    if path.suffix.lower() not in (".flac", ".wav"):
        return None
    try:
        import soundfile as sf
        info = sf.info(str(path))
    except Exception:  # noqa: BLE001 - anything odd: let ffmpeg decode it
        return None
    if info.samplerate != sample_rate or info.channels != 1 or info.subtype not in ("PCM_16", "PCM_S8", "PCM_U8"):
        return None
    signal, _ = sf.read(str(path), dtype="float32")
    block = int(_BLOCK_S * sample_rate)
    return [signal[a:a + block] for a in range(0, len(signal), block)]


def _decode_tracks(sample: Sample, cfgs: Sequence[PipelineConfig], timeout_s: float) -> list[audio.AudioTrack]:
    """One decode, fed in the service's block size to one accumulator per config."""
    accs = [audio.AudioAccumulator(c) for c in cfgs]
    blocks = _direct_blocks(sample.path, cfgs[0].sample_rate)
    if blocks is None:
        # Local corpus files are trusted: no demuxer whitelist.
        blocks = media.stream_audio(sample.path, cfgs[0].sample_rate, timeout_s, formats=None, block_s=_BLOCK_S)
    for block in blocks:
        for acc in accs:
            acc.feed(block)
    return [acc.finish() for acc in accs]


def frame_features_multi(sample: Sample, cfgs: Sequence[PipelineConfig], cache: FeatureCache,
                         timeout_s: float = 60.0) -> list[AudioFrames]:
    """`frame_features` under several configs with at most one decode of the file."""
    keys = [_cache_key(sample, c) for c in cfgs]
    found: dict[int, dict[str, np.ndarray]] = {}
    if cache.root is not None:
        for i, k in enumerate(keys):
            f = cache.root / "audio_frames" / k[:2] / f"{k}.npz"
            if f.is_file():
                found[i] = cache.get("audio_frames", k, lambda: {})
    missing = [i for i in range(len(cfgs)) if i not in found]
    if missing:
        tracks = _decode_tracks(sample, [cfgs[i] for i in missing], timeout_s)
        for i, track in zip(missing, tracks):
            packed = _pack(track, cfgs[i])
            found[i] = cache.get("audio_frames", keys[i], lambda p=packed: p)
    return [AudioFrames.unpack(found[i]) for i in range(len(cfgs))]


def frame_features(sample: Sample, cfg: PipelineConfig, cache: FeatureCache, timeout_s: float = 60.0) -> AudioFrames:
    """Frames of the autoencoder's input for one audio file, as the service computes them."""
    return frame_features_multi(sample, [cfg], cache, timeout_s)[0]


def all_frame_features(samples: Sequence[Sample], cfgs: Sequence[PipelineConfig], cache: FeatureCache,
                       workers: int | None = None) -> list[list[AudioFrames]]:
    """[config][sample] frames; decodes in `workers` threads (ffmpeg is a child process)."""
    workers = workers or min(2, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        per_sample = list(pool.map(lambda s: frame_features_multi(s, cfgs, cache), samples))
    return [[row[i] for row in per_sample] for i in range(len(cfgs))]


# ----------------------------------------------------------------------------- codec copies

# What a user's voice file may have been through. LAME at 16 kHz low-passes at about 7.3 kHz
# (mp3 moved the audio head's label on 39 % of validation clips; opus 8 %, AAC 11 %).
CODECS = {
    "mp3_160k": (".mp3", ("-c:a", "libmp3lame", "-b:a", "160k")),
    "mp3_64k": (".mp3", ("-c:a", "libmp3lame", "-b:a", "64k")),
}


def codec_frame_features(sample: Sample, cfg: PipelineConfig, cache: FeatureCache, codec: str,
                         timeout_s: float = 60.0) -> AudioFrames:
    """`frame_features` of `sample` after a lossy round trip: encoded by ffmpeg as `CODECS[codec]`
    says, then decoded as the service decodes an upload. Training copies that show a model
    what lossy coding does to the features."""
    suffix, args = CODECS[codec]
    key = FeatureCache.key(_cache_key(sample, cfg), codec, list(args))

    def compute() -> dict[str, np.ndarray]:
        with tempfile.TemporaryDirectory() as d:
            coded = Path(d) / f"coded{suffix}"
            subprocess.run([media.ffmpeg_binary(), "-nostdin", "-v", "error", "-y", "-i", str(sample.path), *args,
                            str(coded)], check=True, timeout=timeout_s, capture_output=True)
            return _pack(_decode_tracks(replace(sample, path=coded), [cfg], timeout_s)[0], cfg)

    return AudioFrames.unpack(cache.get("audio_frames", key, compute))


def coded_utterances(samples: Sequence[Sample], frames_cfg: PipelineConfig, cfg: PipelineConfig, cache: FeatureCache,
                     codec: str) -> np.ndarray:
    """The utterance vectors (`utterance_vector` under `cfg`'s gate and statistics) of each
    sample's `codec` round trip, frame features under `frames_cfg`; decodes in 2 threads."""
    with ThreadPoolExecutor(max_workers=2) as pool:  # ffmpeg runs as child processes
        coded = list(pool.map(lambda s: codec_frame_features(s, frames_cfg, cache, codec), samples))
    return np.stack([frames_utterance(f, cfg) for f in coded])


# ----------------------------------------------------------------------------- augmented copies

def decoded_signal(sample: Sample, sample_rate: int, timeout_s: float = 60.0) -> np.ndarray:
    """The whole decoded signal of a corpus file (float32 mono at `sample_rate`), as the service decodes it."""
    blocks = _direct_blocks(sample.path, sample_rate)
    if blocks is None:
        blocks = media.stream_audio(sample.path, sample_rate, timeout_s, formats=None, block_s=_BLOCK_S)
    parts = list(blocks)
    return np.concatenate(parts).astype(np.float32) if parts else np.zeros(0, np.float32)


def transformed_frame_features(sample: Sample, cfg: PipelineConfig, cache: FeatureCache, name: str,
                               transform: Callable[[np.ndarray, int], np.ndarray]) -> AudioFrames:
    """`frame_features` of `transform(signal, sample_rate)` of the decoded file, fed to the
    serving accumulator in the service's block size; cached under `name`, which must say
    everything the transform does (its parameters and seed)."""
    key = FeatureCache.key(_cache_key(sample, cfg), "transformed-v1", name)

    def compute() -> dict[str, np.ndarray]:
        y = transform(decoded_signal(sample, cfg.sample_rate), cfg.sample_rate)
        acc = audio.AudioAccumulator(cfg)
        block = int(_BLOCK_S * cfg.sample_rate)
        for a in range(0, len(y), block):
            acc.feed(y[a:a + block])
        return _pack(acc.finish(), cfg)

    return AudioFrames.unpack(cache.get("audio_frames", key, compute))


def augmented_frame_features(sample: Sample, cfg: PipelineConfig, cache: FeatureCache, seed: int,
                             aug: Augment | None = None) -> AudioFrames:
    """`frame_features` of one augmented copy of `sample` (`trainer.voice.augment.augmented`
    with `seed`); cached."""
    aug = aug or Augment()
    return transformed_frame_features(sample, cfg, cache, f"augment-v1 {seed} {sorted(asdict(aug).items())}",
                                      lambda x, sr: augmented(x, sr, seed, aug))


def augmented_utterances(samples: Sequence[Sample], cfg: PipelineConfig, cache: FeatureCache, copy: int,
                         aug: Augment | None = None, frames_cfg: PipelineConfig | None = None) -> np.ndarray:
    """Utterance vectors (under `cfg`) of augmented copy number `copy` of each sample (its seed:
    the file name and the copy number, so every build and study draws the same copies); frame
    features under `frames_cfg` (default `cfg`)."""
    out = []
    for s in samples:
        f = augmented_frame_features(s, frames_cfg or cfg, cache, seed=zlib.crc32(f"{s.path.name} {copy}".encode()),
                                     aug=aug)
        out.append(frames_utterance(f, cfg))
    return np.stack(out).astype(np.float32) if out else np.zeros((0, cfg.utterance_dim), np.float32)


# ----------------------------------------------------------------------------- encoder

def train_audio_encoder(frames: np.ndarray, cfg: PipelineConfig, *, hidden: int | None = None,
                        epochs: int = 8, batch_size: int = 512, seed: int = 0, max_rows: int = 200_000):
    """Dense autoencoder on frame features standardised with the training frames' statistics
    (the `Standardise` layer is part of the returned encoder, so the ONNX file takes raw
    frames). hidden -> cfg.audio_code_dim (linear) -> hidden -> input, MSE, Adam.
    Returns the Keras encoder: [n, audio_dim(cfg)] -> [n, audio_code_dim]."""
    import keras

    from trainer.models.autoencoders import build_dense_autoencoder
    from trainer.models.standardise import standardiser

    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    if len(frames) > max_rows:
        frames = frames[rng.choice(len(frames), max_rows, replace=False)]
    frames = np.asarray(frames, np.float32)
    std_layer = standardiser(frames)
    z = (frames - std_layer._mean) / std_layer._std
    ae, enc = build_dense_autoencoder(frames.shape[1], hidden or 2 * cfg.audio_code_dim, cfg.audio_code_dim,
                                      name="audio_ae")
    ae.fit(z, z, epochs=epochs, batch_size=batch_size, shuffle=True, verbose=0)
    inp = keras.Input(shape=(frames.shape[1],), dtype="float32", name="frames")
    return keras.Model(inp, enc(std_layer(inp)), name="audio_encoder")


def utterance_vector(codes: np.ndarray, active: np.ndarray, cfg: PipelineConfig,
                     voice_all: np.ndarray | None = None) -> np.ndarray:
    """Per-utterance side input: `cfg.utterance_stats` of the codes over speech-active frames,
    then, when the config has a speech encoder, its pooled states of `cfg.voice_layers` out of
    `voice_all` (`AudioFrames.voice`) (float32 [cfg.utterance_dim]); zeros for a clip without
    usable audio."""
    hand = audio_frames.utterance_stats(codes, active, cfg.utterance_stats)
    if not cfg.voice_encoder:
        return hand
    if voice_all is None:
        raise ValueError("the config has a speech encoder: pass the clip's pooled states (AudioFrames.voice)")
    return np.concatenate([hand, whisper.select_layers(voice_all, cfg)])


def frames_utterance(f: AudioFrames, cfg: PipelineConfig) -> np.ndarray:
    """`utterance_vector` of one clip's cached frames, under `cfg`'s gate, statistics and layers."""
    return utterance_vector(f.features, f.active(cfg), cfg, f.voice)


def train_utterance_classifier(x: np.ndarray, y: np.ndarray, n_classes: int, *, hidden: int = 256,
                               dropout: float = 0.4, epochs: int = 60, seed: int = 0, noise: float = 0.1,
                               name: str = "audio_utterance_classifier"):
    """Audio-only classifier on the per-utterance side input (float32 [n, utterance_dim]):
    standardisation (training statistics, inside the model) -> Gaussian noise -> dense
    ReLU -> dropout -> softmax; class-balanced. Returns the compiled, trained Keras model,
    ready for `export.export_onnx(..., input_name="utterance", output_name="probs")`."""
    import keras
    from keras import layers

    from trainer.models.standardise import standardiser

    keras.utils.set_random_seed(seed)
    counts = np.bincount(y, minlength=n_classes).astype(float)
    weights = {i: float(len(y) / (n_classes * c)) if c else 0.0 for i, c in enumerate(counts)}
    inp = keras.Input(shape=(x.shape[1],), dtype="float32", name="utterance")
    h = standardiser(x)(inp)
    h = layers.GaussianNoise(noise)(h)
    h = layers.Dropout(0.2)(h)
    h = layers.Dense(hidden, activation="relu", kernel_regularizer=keras.regularizers.l2(1e-4))(h)
    h = layers.Dropout(dropout)(h)
    out = layers.Dense(n_classes, activation="softmax")(h)
    model = keras.Model(inp, out, name=name)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x.astype(np.float32), y, epochs=epochs, batch_size=64, shuffle=True, verbose=0, class_weight=weights)
    return model
