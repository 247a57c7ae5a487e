// Push-to-talk recording (MediaRecorder, in whatever container the browser records) and the
// answer's spoken pieces, played in order as they arrive.

const MIN_RECORDING_MS = 300;

/** The file name the server sees: its extension follows the container the browser chose. */
function fileNameFor(mimeType) {
  if (mimeType.includes("mp4") || mimeType.includes("aac")) return "enregistrement.mp4";
  if (mimeType.includes("ogg")) return "enregistrement.ogg";
  if (mimeType.includes("wav")) return "enregistrement.wav";
  return "enregistrement.webm";
}

export function microphoneProblem() {
  if (!window.isSecureContext) {
    return "Le micro n'est disponible qu'en HTTPS ou sur localhost / 127.0.0.1 : ouvrez la console par une adresse sûre.";
  }
  if (!navigator.mediaDevices || !window.MediaRecorder) return "Ce navigateur n'enregistre pas le micro (MediaRecorder).";
  return null;
}

/**
 * Hold to record: `press()` starts, `release()` stops and hands `onRecorded({blob, fileName,
 * milliseconds})` the recording. `onProgress(ms)` ticks while recording.
 */
export class PushToTalk {
  constructor({ onRecorded, onProgress, onProblem }) {
    this.onRecorded = onRecorded;
    this.onProgress = onProgress;
    this.onProblem = onProblem;
    this.recorder = null;
    this.held = false;
  }

  get recording() {
    return this.recorder !== null;
  }

  async press() {
    if (this.held) return;
    this.held = true;
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      this.held = false;
      this.onProblem(`Micro inaccessible : ${error.message || error.name}.`);
      return;
    }
    if (!this.held) {
      // Released while the browser was still opening the microphone: nothing to send.
      stream.getTracks().forEach((track) => track.stop());
      return;
    }
    const recorder = new MediaRecorder(stream);
    const chunks = [];
    const started = performance.now();
    recorder.addEventListener("dataavailable", (event) => {
      if (event.data.size > 0) chunks.push(event.data);
      this.onProgress(performance.now() - started);
    });
    recorder.addEventListener("stop", () => {
      stream.getTracks().forEach((track) => track.stop());
      const milliseconds = performance.now() - started;
      const mimeType = recorder.mimeType || chunks[0]?.type || "audio/webm";
      if (milliseconds < MIN_RECORDING_MS || chunks.length === 0) {
        this.onProblem("Enregistrement trop court : maintenez le bouton pendant que vous parlez.");
        return;
      }
      this.onRecorded({ blob: new Blob(chunks, { type: mimeType }), fileName: fileNameFor(mimeType), milliseconds });
    });
    this.recorder = recorder;
    recorder.start(250); // a chunk every 250 ms: the progress shown while the button is held
    this.onProgress(0);
  }

  release() {
    this.held = false;
    const recorder = this.recorder;
    this.recorder = null;
    if (recorder && recorder.state !== "inactive") recorder.stop();
  }
}

/**
 * Plays a reply's audio pieces (`audio_url` events, by `index`) one after the other in the given
 * <audio> element, as they arrive; `finish(wholeReplyUrl)` says no more pieces will come (the
 * whole reply's audio is played instead when no piece came). The element's `data-playback` says
 * where it stands: idle, waiting, playing, ended, blocked.
 */
export class PiecePlayer {
  constructor(element, onProblem) {
    this.element = element;
    this.onProblem = onProblem;
    this.element.addEventListener("ended", () => this.next());
    this.element.addEventListener("error", () => {
      if (!this.playing) return;
      this.onProblem(`Audio de la réponse illisible (morceau ${this.position + 1}) : il est passé.`);
      this.next();
    });
    this.reset();
  }

  reset() {
    this.pieces = new Map();
    this.position = 0;
    this.finished = false;
    this.playing = false;
    this.element.removeAttribute("src");
    this.element.load();
    this.setState("idle");
  }

  setState(state) {
    this.element.hidden = state === "idle"; // no audio for this turn (yet)
    this.element.dataset.playback = state;
    this.element.dataset.played = String(this.position);
    this.element.dataset.pieces = String(this.pieces.size);
  }

  add(index, url) {
    this.pieces.set(index, url);
    if (!this.playing) this.next(false);
    else this.setState("playing");
  }

  finish(wholeReplyUrl) {
    this.finished = true;
    if (this.pieces.size === 0 && wholeReplyUrl) {
      this.pieces.set(0, wholeReplyUrl);
    }
    if (!this.playing) this.next(false);
  }

  next(advance = true) {
    if (advance && this.playing) {
      this.position += 1;
      this.playing = false;
    }
    const url = this.pieces.get(this.position);
    if (url === undefined) {
      this.setState(this.finished && this.position >= this.pieces.size ? (this.pieces.size ? "ended" : "idle") : "waiting");
      return;
    }
    this.playing = true;
    this.element.src = url;
    this.setState("playing");
    this.element.play().catch((error) => {
      if (error.name === "NotAllowedError") {
        this.setState("blocked");
        this.onProblem("Le navigateur a bloqué la lecture automatique : appuyez sur lecture pour écouter la réponse.");
      } else if (error.name !== "AbortError") {
        this.onProblem(`Lecture de la réponse impossible : ${error.message || error.name}.`);
      }
    });
  }
}
