// Calls to lea-local's HTTP API with the key the user typed, and the errors worded for the user.

const KEY_STORAGE = "lea-console-key";

/** A failed call, with a message for the page (French) and the HTTP status (0: no answer). */
export class ApiProblem extends Error {
  constructor(message, status = 0) {
    super(message);
    this.status = status;
  }
}

export function savedKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function saveKey(key) {
  // sessionStorage only: the tab forgets it when it closes; nothing goes to localStorage or cookies.
  sessionStorage.setItem(KEY_STORAGE, key);
}

function unreachable() {
  return new ApiProblem(
    "Le serveur ne répond pas (injoignable) : vérifiez qu'il est démarré et que l'adresse de la page est la bonne.",
    0,
  );
}

async function problemOf(response) {
  let detail = "";
  try {
    const body = await response.json();
    detail = body.detail || body.error || "";
  } catch {
    detail = response.statusText;
  }
  const status = response.status;
  if (status === 401) return new ApiProblem("Clé d'API refusée (401) : vérifiez la clé saisie.", status);
  if (status === 403) {
    // LEA_ADMIN_API_KEY is set: only it writes the knowledge base (documents, thesaurus).
    return new ApiProblem("Clé d'administration requise (403) : saisissez la clé LEA_ADMIN_API_KEY pour modifier les documents.", status);
  }
  if (status === 503) {
    const retry = response.headers.get("Retry-After");
    const wait = retry ? ` Réessayez dans ${retry} s.` : "";
    return new ApiProblem(`Léa n'est pas disponible pour l'instant (503) : ${detail}.${wait}`, status);
  }
  if (status === 413) return new ApiProblem(`Envoi trop volumineux (413) : ${detail}`, status);
  if (status === 504) return new ApiProblem(`Le tour a pris trop de temps (504) : ${detail}`, status);
  return new ApiProblem(`Erreur ${status} : ${detail || "réponse inattendue"}`, status);
}

function headers(extra = {}) {
  return { "X-API-Key": savedKey(), ...extra };
}

/** A JSON call: the parsed body, or ApiProblem. `body`: an object (sent as JSON) or FormData. */
export async function callApi(path, { method = "GET", body } = {}) {
  const init = { method, headers: headers(), cache: "no-store" };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch {
    throw unreachable();
  }
  if (!response.ok) throw await problemOf(response);
  return response.json();
}

/** `Server-Timing: asr;dur=12.3;desc="…", llm;dur=…` → {asr: 12.3, llm: …} (ms). */
export function parseServerTiming(header) {
  const timings = {};
  for (const metric of (header || "").split(",")) {
    const [name, ...params] = metric.trim().split(";");
    const duration = params.map((p) => p.trim()).find((p) => p.startsWith("dur="));
    if (name && duration) timings[name.trim()] = Number(duration.slice(4));
  }
  return timings;
}

/**
 * A streamed turn (server-sent events over fetch, since EventSource cannot POST nor send the key).
 * Calls `onEvent(event)` for each `data:` event as it arrives; resolves with the response's
 * Server-Timing (the stages known when the stream began). Rejects with ApiProblem.
 */
export async function streamApi(path, body, onEvent, { signal } = {}) {
  const init = { method: "POST", headers: headers({ Accept: "text/event-stream" }), cache: "no-store", signal };
  if (body instanceof FormData) {
    init.body = body;
  } else {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw unreachable();
  }
  if (!response.ok) throw await problemOf(response);
  const serverTiming = parseServerTiming(response.headers.get("Server-Timing"));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    let chunk;
    try {
      chunk = await reader.read();
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiProblem("La connexion au serveur a été coupée pendant la réponse.", 0);
    }
    if (chunk.done) break;
    buffered += chunk.value;
    let end;
    while ((end = buffered.indexOf("\n\n")) >= 0) {
      const frame = buffered.slice(0, end);
      buffered = buffered.slice(end + 2);
      const data = frame
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data) onEvent(JSON.parse(data));
    }
  }
  return serverTiming;
}
