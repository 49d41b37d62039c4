// The microphone as the live stream's audio: mono PCM16 at 16 kHz in chunks of 100 ms
// (1600 samples), posted to the page. Runs in the AudioWorklet; resamples linearly when the
// AudioContext could not be opened at 16 kHz.
"use strict";

class Pcm16Chunks extends AudioWorkletProcessor {
  constructor(options) {
    super();
    this.step = (options.processorOptions && options.processorOptions.inputRate || 16000) / 16000;
    this.pos = 0;        // position of the next output sample, in input samples from the last one kept
    this.last = 0;       // the previous block's last sample (interpolation across blocks)
    this.chunk = new Int16Array(1600);
    this.n = 0;
  }

  push(x) {
    const s = Math.round(Math.max(-1, Math.min(1, x)) * 32768);  // as FFmpeg's swr: x * 32768, clipped
    this.chunk[this.n++] = Math.max(-32768, Math.min(32767, s));
    if (this.n === this.chunk.length) {
      this.port.postMessage(this.chunk.buffer, [this.chunk.buffer]);
      this.chunk = new Int16Array(1600);
      this.n = 0;
    }
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input) return true;
    if (this.step === 1) {
      for (let i = 0; i < input.length; i++) this.push(input[i]);
      return true;
    }
    while (this.pos < input.length) {
      const i = Math.floor(this.pos), f = this.pos - i;
      const a = i === 0 ? this.last : input[i - 1], b = input[i];
      this.push(a + (b - a) * f);
      this.pos += this.step;
    }
    this.pos -= input.length;
    this.last = input[input.length - 1];
    return true;
  }
}

registerProcessor("pcm16-chunks", Pcm16Chunks);
