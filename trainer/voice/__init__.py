"""The voice expert: utterance features of the rich audio frames, the audio head's training,
and the audio-only evaluation (held-out speakers, corpora left out, framing)."""
