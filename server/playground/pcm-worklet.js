// AudioWorklet: microphone audio -> 24 kHz mono PCM16, posted to the page in ~100 ms chunks.
// The context may run at any rate (browsers do not all honour a requested 24 kHz), so this
// resamples itself: a one-pole low-pass against aliasing, then linear interpolation.
const TARGET_RATE = 24000;
const CHUNK = TARGET_RATE / 10;

class PCM16Capture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.step = sampleRate / TARGET_RATE; // input samples per output sample
    this.pos = 0;                          // position of the next output sample, in input samples
    this.prev = 0;                         // last input sample of the previous block
    this.lp = 0;
    // Low-pass near 0.45 * the target rate when downsampling; no filtering otherwise.
    this.alpha = this.step > 1 ? 1 - Math.exp(-2 * Math.PI * 0.45 * TARGET_RATE / sampleRate) : 1;
    this.out = new Int16Array(CHUNK);
    this.fill = 0;
    this.port.onmessage = (event) => { if (event.data === 'flush') this.flush(); };
  }

  process(inputs) {
    const input = inputs[0];
    if (!input || input.length === 0) return true;
    const channels = input.length;
    const frames = input[0].length;
    const mono = new Float32Array(frames);
    for (let c = 0; c < channels; c++) {
      const data = input[c];
      for (let i = 0; i < frames; i++) mono[i] += data[i] / channels;
    }
    for (let i = 0; i < frames; i++) {
      this.lp += this.alpha * (mono[i] - this.lp);
      mono[i] = this.lp;
    }
    // Output samples at input positions pos, pos + step, ... ; position -1 is `prev`.
    while (this.pos < frames) {
      const i = Math.floor(this.pos);
      const frac = this.pos - i;
      const a = i - 1 < 0 ? this.prev : mono[i - 1];
      const b = mono[i];
      // pos counts from the previous block's last sample, so interpolate between i-1 and i.
      this.push(a + (b - a) * frac);
      this.pos += this.step;
    }
    this.pos -= frames;
    this.prev = mono[frames - 1];
    return true;
  }

  push(value) {
    const v = Math.max(-1, Math.min(1, value));
    this.out[this.fill++] = v < 0 ? v * 0x8000 : v * 0x7fff;
    if (this.fill === CHUNK) this.flush();
  }

  flush() {
    if (this.fill === 0) return;
    const chunk = this.out.slice(0, this.fill);
    this.port.postMessage(chunk.buffer, [chunk.buffer]);
    this.fill = 0;
  }
}

registerProcessor('pcm16-capture', PCM16Capture);
