// Hands-free conversation over /v1/realtime (OpenAI's Realtime protocol, GA dialect): the
// microphone streams as PCM16 at 24 kHz, the server finds the turns (server VAD), the answer's
// audio plays as it arrives, and talking over Léa stops her voice at once (barge-in: the server
// cancels the response, the page drops what it had queued).

import { savedKey } from "./api.js";

const RATE = 24000;
const KEY_SUBPROTOCOL = "openai-insecure-api-key.";

function base64OfPcm16(samples) {
  const pcm = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    pcm[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
  }
  const bytes = new Uint8Array(pcm.buffer);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}

function samplesOfBase64(data) {
  const binary = atob(data);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  const pcm = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
  const samples = new Float32Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) samples[i] = pcm[i] / 0x8000;
  return samples;
}

function realtimeUrl() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${location.host}/v1/realtime`;
}

/**
 * One hands-free call. `on.state(name)`: "connecting", "listening", "hearing" (the broker talks),
 * "thinking", "speaking", "off"; `on.transcript(text)`; `on.answer(text, done)` (the answer so far);
 * `on.played(chunks)` (answer audio chunks started); `on.problem(message)`.
 */
export class HandsFreeCall {
  constructor(on) {
    this.on = on;
    this.socket = null;
    this.context = null;
    this.stream = null;
    this.playing = new Set();
    this.playhead = 0;
    this.played = 0;
    this.answer = "";
    this.ended = false;
  }

  async start() {
    this.on.state("connecting");
    try {
      this.stream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (error) {
      this.fail(`Micro inaccessible : ${error.message || error.name}.`);
      return;
    }
    // The context runs at the protocol's rate: the browser resamples the microphone into it, and
    // the answer's 24 kHz chunks play without conversion.
    this.context = new AudioContext({ sampleRate: RATE });
    await this.context.audioWorklet.addModule("/console/pcm-capture.js");
    const capture = new AudioWorkletNode(this.context, "pcm-capture");
    const silent = this.context.createGain();
    silent.gain.value = 0; // pulls the worklet without playing the microphone back
    this.context.createMediaStreamSource(this.stream).connect(capture).connect(silent).connect(this.context.destination);

    this.socket = new WebSocket(realtimeUrl(), ["realtime", KEY_SUBPROTOCOL + savedKey()]);
    this.socket.addEventListener("open", () => {
      this.send({
        type: "session.update",
        session: {
          type: "realtime",
          output_modalities: ["audio"],
          audio: {
            input: {
              format: { type: "audio/pcm", rate: RATE },
              turn_detection: { type: "server_vad", create_response: true, interrupt_response: true },
              transcription: { model: "whisper-1" },
            },
            output: { format: { type: "audio/pcm", rate: RATE } },
          },
        },
      });
      capture.port.onmessage = (message) => this.send({ type: "input_audio_buffer.append", audio: base64OfPcm16(message.data) });
    });
    this.socket.addEventListener("message", (message) => this.handle(JSON.parse(message.data)));
    this.socket.addEventListener("close", (event) => {
      if (this.ended) return;
      const why = event.code === 1006 ? "connexion refusée ou perdue (clé d'API ? serveur ?)" : `${event.code} ${event.reason}`;
      this.fail(`L'appel mains libres s'est terminé : ${why}.`);
    });
  }

  send(event) {
    if (this.socket && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(event));
  }

  handle(event) {
    switch (event.type) {
      case "session.created":
      case "session.updated":
        this.on.state("listening");
        break;
      case "input_audio_buffer.speech_started":
        this.silence(); // barge-in: Léa stops talking as soon as the broker does
        this.on.state("hearing");
        break;
      case "input_audio_buffer.speech_stopped":
        this.on.state("thinking");
        break;
      case "conversation.item.input_audio_transcription.completed":
        this.on.transcript(event.transcript);
        break;
      case "response.created":
        this.answer = "";
        break;
      case "response.output_audio_transcript.delta":
      case "response.output_text.delta":
        this.answer += event.delta;
        this.on.answer(this.answer, false);
        break;
      case "response.output_audio.delta":
        this.play(samplesOfBase64(event.delta));
        break;
      case "response.done":
        this.on.answer(this.answer, event.response?.status || "completed");
        if (!this.playing.size) this.on.state("listening");
        break;
      case "error":
        this.on.problem(`Léa (temps réel) : ${event.error?.message || "erreur"}`);
        break;
      default:
        break;
    }
  }

  play(samples) {
    if (!this.context || !samples.length) return;
    const buffer = this.context.createBuffer(1, samples.length, RATE);
    buffer.copyToChannel(samples, 0);
    const source = this.context.createBufferSource();
    source.buffer = buffer;
    source.connect(this.context.destination);
    this.playhead = Math.max(this.playhead, this.context.currentTime);
    source.start(this.playhead);
    this.playhead += buffer.duration;
    this.playing.add(source);
    source.addEventListener("ended", () => {
      this.playing.delete(source);
      if (!this.playing.size && !this.ended) this.on.state("listening");
    });
    this.on.played(++this.played);
    this.on.state("speaking");
  }

  silence() {
    for (const source of this.playing) source.stop();
    this.playing.clear();
    this.playhead = 0;
  }

  fail(message) {
    this.stop();
    this.on.problem(message);
  }

  stop() {
    if (this.ended) return;
    this.ended = true;
    this.silence();
    if (this.socket) this.socket.close(1000);
    if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
    if (this.context) this.context.close();
    this.on.state("off");
  }
}
