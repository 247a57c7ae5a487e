// The console page: key, text and push-to-talk turns streamed from the agent API, per-turn
// timings, the session's conversations, the server's status and Léa's documents.

import { ApiProblem, callApi, saveKey, savedKey, streamApi } from "./api.js";
import { PiecePlayer, PushToTalk, microphoneProblem } from "./audio.js";
import { DocumentsPanel } from "./knowledge.js";
import { HandsFreeCall } from "./realtime.js";
import { ConsoleSession } from "./session.js";

const CHAT_STREAM = "/api/external/agent/chat/stream";
const VOICE_STREAM = "/api/external/agent/chat/voice/stream";
const STATUS = "/api/console/status";
const ERASE = "/api/external/agent/erase";
const STATUS_PERIOD_MS = 10000;

const $ = (id) => document.getElementById(id);
const page = {
  problem: $("problem"),
  keyForm: $("key-form"),
  key: $("api-key"),
  messageForm: $("message-form"),
  message: $("message-input"),
  send: document.querySelector("[data-testid=send]"),
  talk: $("talk"),
  transcript: $("transcript"),
  answer: $("answer"),
  sources: $("sources"),
  audio: $("answer-audio"),
  timings: $("timings"),
  history: $("history"),
  status: $("status"),
};

const numbers = new Intl.NumberFormat("fr-FR", { maximumFractionDigits: 2 });
const session = new ConsoleSession();
const player = new PiecePlayer(page.audio, (message) => showProblem(message));
const documents = new DocumentsPanel((error) => showProblem(error));
let turnUnderWay = false;
let turnsTaken = 0;

// --- messages -------------------------------------------------------------------------------------

function showProblem(error) {
  page.problem.textContent = error instanceof Error ? error.message : String(error);
  page.problem.classList.remove("notice");
  page.problem.hidden = false;
}

function showNotice(message) {
  page.problem.textContent = message;
  page.problem.classList.add("notice");
  page.problem.hidden = false;
}

function clearProblem() {
  page.problem.hidden = true;
  page.problem.textContent = "";
}

function needKey() {
  if (savedKey()) return true;
  showProblem("Saisissez d'abord la clé d'API (champ « Clé d'API »).");
  page.key.focus();
  return false;
}

// --- status ---------------------------------------------------------------------------------------

function definition(list, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  list.append(dt, dd);
}

const DEVICE_NAMES = { cpu: "CPU", gpu: "GPU", remote: "serveur distant" };
const ENGINE_NAMES = { llm: "Modèle de langue", asr: "Reconnaissance vocale", tts: "Synthèse vocale" };

function renderStatus(status) {
  const list = document.createElement("dl");
  definition(list, "État", status.ready ? "Prête" : "Chargement des modèles…");
  definition(list, "Version", status.version);
  definition(list, "Langue", status.locale);
  for (const [engine, model] of Object.entries(status.models)) {
    const device = DEVICE_NAMES[status.devices[engine]] || status.devices[engine] || "?";
    definition(list, ENGINE_NAMES[engine] || engine, `${model} (${device})`);
  }
  const queues = document.createElement("table");
  queues.className = "queues";
  const caption = queues.createCaption();
  caption.textContent = "Files d'attente";
  const head = queues.createTHead().insertRow();
  for (const title of ["File", "Actifs", "Attente", "Max."]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = title;
    head.append(th);
  }
  const body = queues.createTBody();
  for (const queue of status.queues) {
    const row = body.insertRow();
    row.dataset.queue = queue.stage;
    for (const value of [queue.name, queue.running, queue.waiting, queue.max_waiting]) {
      row.insertCell().textContent = String(value);
    }
  }
  page.status.replaceChildren(list, ...(status.queues.length ? [queues] : []));
  page.status.dataset.ready = status.ready ? "yes" : "no";
}

async function refreshStatus() {
  if (!savedKey()) return;
  try {
    renderStatus(await callApi(STATUS));
  } catch (error) {
    page.status.dataset.ready = "error";
    const message = document.createElement("p");
    message.className = "bad";
    message.textContent = error.message;
    page.status.replaceChildren(message);
    showProblem(error);
  }
}

// --- turns ----------------------------------------------------------------------------------------

function formatMs(ms) {
  if (ms === undefined || ms === null || Number.isNaN(ms)) return "—";
  return ms < 1000 ? `${numbers.format(Math.round(ms))} ms` : `${numbers.format(ms / 1000)} s`;
}

function showTimings(timings) {
  for (const cellOf of page.timings.querySelectorAll("td[data-stage]")) {
    cellOf.textContent = formatMs(timings[cellOf.dataset.stage]);
  }
}

function stageTimings(serverTiming, done) {
  const stages = { ...serverTiming, ...(done.timings_ms || {}) };
  const waits = Object.entries(stages).filter(([name]) => name.endsWith("_wait"));
  return {
    decode: stages.decode,
    asr: stages.asr,
    llm: stages.llm,
    tts: stages.tts,
    wait: waits.length ? waits.reduce((sum, [, ms]) => sum + ms, 0) : 0,
  };
}

function showSources(sources) {
  page.sources.replaceChildren(
    ...(sources || []).map((source) => {
      const li = document.createElement("li");
      li.textContent = [source.title, source.section].filter(Boolean).join(" — ") || source.file;
      return li;
    }),
  );
}

function renderHistory() {
  page.history.replaceChildren(
    ...session.conversations.map((conversation, index) => {
      const li = document.createElement("li");
      li.dataset.conversationId = String(conversation.conversationId);
      const title = document.createElement("strong");
      const current = conversation === session.current ? " (en cours)" : "";
      title.textContent = `Conversation ${index + 1}${current}`;
      const turns = document.createElement("ul");
      for (const turn of conversation.turns) {
        const item = document.createElement("li");
        item.textContent = `Vous : ${turn.asked} — Léa : ${turn.answer}`;
        turns.append(item);
      }
      li.append(title, turns);
      return li;
    }),
  );
}

function setBusy(busy) {
  turnUnderWay = busy;
  page.send.disabled = busy;
  page.talk.disabled = busy;
  page.answer.setAttribute("aria-busy", String(busy));
}

/** One streamed turn: `body` (JSON or FormData) to `path`, the page updated as events come. */
async function takeTurn(path, body, asked) {
  clearProblem();
  setBusy(true);
  player.reset();
  showSources([]);
  showTimings({});
  page.answer.textContent = "";
  page.answer.dataset.state = "streaming";
  page.answer.dataset.turn = String(++turnsTaken);
  const started = performance.now();
  let firstDelta;
  let done = null;
  let heard = asked;
  try {
    const serverTiming = await streamApi(path, body, (event) => {
      if (event.error) throw new ApiProblem(`La réponse a échoué (${event.status}) : ${event.detail}`, event.status);
      if (event.transcription !== undefined && !event.done) {
        heard = event.transcription;
        page.transcript.textContent = event.transcription;
        page.transcript.classList.remove("muted");
      } else if (event.delta !== undefined) {
        firstDelta ??= performance.now() - started;
        page.answer.textContent += event.delta;
      } else if (event.audio_url !== undefined) {
        player.add(event.index, event.audio_url);
      } else if (event.done) {
        done = event;
      }
    });
    if (!done) throw new ApiProblem("La réponse s'est interrompue avant sa fin.", 0);
    page.answer.textContent = done.response;
    page.answer.dataset.state = "done";
    showSources(done.sources);
    showTimings({ ...stageTimings(serverTiming, done), first: firstDelta, total: performance.now() - started });
    session.record(done, heard);
    renderHistory();
    player.finish(done.assistant_audio_url);
  } catch (error) {
    page.answer.dataset.state = "failed";
    if (!page.answer.textContent) page.answer.textContent = "—";
    showProblem(error);
  } finally {
    setBusy(false);
    refreshStatus();
  }
}

function sendMessage() {
  const message = page.message.value.trim();
  if (!message || turnUnderWay || !needKey()) return;
  page.transcript.textContent = "— (message écrit)";
  page.transcript.classList.add("muted");
  page.message.value = "";
  takeTurn(CHAT_STREAM, { message, ...session.continuing() }, message);
}

function sendRecording({ blob, fileName }) {
  const form = new FormData();
  form.append("audio", blob, fileName);
  for (const [name, value] of Object.entries(session.continuing())) form.append(name, String(value));
  page.transcript.textContent = "Transcription en cours…";
  page.transcript.classList.add("muted");
  takeTurn(VOICE_STREAM, form, "(message vocal)");
}

// --- push-to-talk ---------------------------------------------------------------------------------

const TALK_LABEL = "Maintenir pour parler";
const talker = new PushToTalk({
  onRecorded: (recording) => {
    page.talk.textContent = TALK_LABEL;
    sendRecording(recording);
  },
  onProgress: (ms) => {
    page.talk.dataset.recordedMs = String(Math.round(ms));
    page.talk.textContent = `Enregistrement… ${numbers.format(Math.floor(ms / 100) / 10)} s`;
  },
  onProblem: (message) => {
    page.talk.textContent = TALK_LABEL;
    page.talk.setAttribute("aria-pressed", "false");
    showProblem(message);
  },
});

function startTalking() {
  if (turnUnderWay || talker.held || !needKey()) return;
  const problem = microphoneProblem();
  if (problem) {
    showProblem(problem);
    return;
  }
  clearProblem();
  page.talk.setAttribute("aria-pressed", "true");
  page.talk.dataset.recordedMs = "0";
  talker.press();
}

function stopTalking() {
  if (!talker.held) return;
  page.talk.setAttribute("aria-pressed", "false");
  talker.release();
}

page.talk.addEventListener("pointerdown", (event) => {
  if (event.button !== 0) return;
  page.talk.setPointerCapture(event.pointerId);
  startTalking();
});
for (const type of ["pointerup", "pointercancel", "lostpointercapture"]) {
  page.talk.addEventListener(type, stopTalking);
}
page.talk.addEventListener("contextmenu", (event) => event.preventDefault()); // long press on touch screens

function typingTarget(target) {
  return target.closest("input, textarea, select, [contenteditable]") !== null;
}

document.addEventListener("keydown", (event) => {
  if (event.code !== "Space" || typingTarget(event.target)) return;
  // Space on another button or link keeps its usual meaning; on the page or the talk button it talks.
  if (event.target.closest("button, a, summary, audio") && event.target !== page.talk) return;
  event.preventDefault();
  if (!event.repeat) startTalking();
});
document.addEventListener("keyup", (event) => {
  if (event.code !== "Space" || !talker.held) return;
  event.preventDefault();
  stopTalking();
});

// --- hands-free (/v1/realtime) --------------------------------------------------------------------

const HANDS_FREE_STATES = {
  connecting: "Connexion…",
  listening: "À l'écoute : parlez.",
  hearing: "Je vous écoute…",
  thinking: "Léa réfléchit…",
  speaking: "Léa parle (parlez pour l'interrompre).",
  off: "Appel terminé.",
};
const handsFreeState = $("hands-free-state");
const handsFreeButton = $("hands-free");
let call = null;

function showCallState(state) {
  handsFreeState.dataset.state = state;
  handsFreeState.textContent = HANDS_FREE_STATES[state] || state;
  const on = state !== "off";
  handsFreeButton.setAttribute("aria-pressed", String(on));
  handsFreeButton.textContent = on ? "Raccrocher" : "Mains libres";
  page.talk.disabled = on || turnUnderWay;
  page.send.disabled = on || turnUnderWay;
  if (!on) call = null;
}

handsFreeButton.addEventListener("click", () => {
  if (call) {
    call.stop();
    return;
  }
  if (turnUnderWay || !needKey()) return;
  const problem = microphoneProblem();
  if (problem) {
    showProblem(problem);
    return;
  }
  clearProblem();
  player.reset();
  call = new HandsFreeCall({
    state: showCallState,
    transcript: (text) => {
      page.transcript.textContent = text;
      page.transcript.classList.remove("muted");
    },
    answer: (text, done) => {
      page.answer.textContent = text || "—";
      page.answer.dataset.state = done ? (done === "completed" ? "done" : done) : "streaming";
    },
    played: (chunks) => {
      handsFreeState.dataset.played = String(chunks);
    },
    problem: showProblem,
  });
  call.start();
});

// --- forms and buttons ----------------------------------------------------------------------------

page.keyForm.addEventListener("submit", (event) => {
  event.preventDefault();
  saveKey(page.key.value.trim());
  clearProblem();
  refreshStatus();
  documents.refresh();
});

page.messageForm.addEventListener("submit", (event) => {
  event.preventDefault();
  sendMessage();
});
page.message.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    sendMessage();
  }
});

$("new-conversation").addEventListener("click", () => {
  session.startNew();
  player.reset();
  page.transcript.textContent = "—";
  page.answer.textContent = "—";
  page.answer.dataset.state = "idle";
  showSources([]);
  showTimings({});
  renderHistory();
  showNotice("Nouvelle conversation : votre prochain message la commence.");
  page.message.focus();
});

$("erase-session").addEventListener("click", async () => {
  if (!needKey()) return;
  const sessionIds = session.sessionIds();
  if (!sessionIds.length) {
    showNotice("Rien à effacer : cette session n'a encore aucune conversation.");
    return;
  }
  if (!window.confirm("Effacer toutes les conversations de cette session, sur le serveur aussi ?")) return;
  const erased = { conversations: 0, messages: 0, audio_files: 0 };
  try {
    for (const sessionId of sessionIds) {
      const answer = await callApi(ERASE, { method: "POST", body: { session_id: sessionId } });
      for (const key of Object.keys(erased)) erased[key] += answer.erased[key];
    }
  } catch (error) {
    showProblem(error);
    return;
  }
  session.clear();
  player.reset();
  page.transcript.textContent = "—";
  page.answer.textContent = "—";
  renderHistory();
  showNotice(
    `Session effacée : ${erased.conversations} conversation(s), ${erased.messages} message(s), ` +
      `${erased.audio_files} fichier(s) audio.`,
  );
});

$("refresh-status").addEventListener("click", () => {
  if (needKey()) refreshStatus();
});

// --- start ----------------------------------------------------------------------------------------

page.key.value = savedKey();
renderHistory();
if (savedKey()) {
  refreshStatus();
  documents.refresh();
}
setInterval(() => {
  if (document.visibilityState === "visible" && !turnUnderWay) refreshStatus();
}, STATUS_PERIOD_MS);
document.documentElement.dataset.consoleReady = "true";
