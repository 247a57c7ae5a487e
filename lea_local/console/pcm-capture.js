// AudioWorklet processor of the hands-free mode: the microphone's samples, at the AudioContext's
// rate (24 kHz, the Realtime protocol's), posted to the page in 100 ms blocks of float32.

const BLOCK_SECONDS = 0.1;

class PcmCapture extends AudioWorkletProcessor {
  constructor() {
    super();
    this.block = new Float32Array(Math.round(sampleRate * BLOCK_SECONDS));
    this.filled = 0;
  }

  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) {
      let offset = 0;
      while (offset < channel.length) {
        const taken = Math.min(channel.length - offset, this.block.length - this.filled);
        this.block.set(channel.subarray(offset, offset + taken), this.filled);
        this.filled += taken;
        offset += taken;
        if (this.filled === this.block.length) {
          this.port.postMessage(this.block.slice());
          this.filled = 0;
        }
      }
    }
    return true; // keep running while the microphone is open
  }
}

registerProcessor("pcm-capture", PcmCapture);
