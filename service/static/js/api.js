// Talking to /api/v1 from the pages: JSON requests, job polling, and showing an API
// error next to the form field it names (or in the form's general error area).

export class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.message || body.error)) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

export async function api(path, { method = "GET", body = undefined, token = "", form = null } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload;
  if (form) {
    payload = form; // multipart: the browser sets Content-Type with the boundary
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const response = await fetch(path, { method, headers, body: payload });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: text.slice(0, 200) }; }
  if (!response.ok) throw new ApiError(response.status, data);
  return data;
}

// Polls a job until it finishes; onUpdate(job) runs after every poll.
export async function waitForJob(url, onUpdate, { interval = 500, signal = null } = {}) {
  for (;;) {
    if (signal?.aborted) throw new Error("stopped watching the job");
    const job = await api(url);
    onUpdate(job);
    if (["succeeded", "failed", "cancelled"].includes(job.state)) return job;
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

export function clearErrors(form) {
  for (const node of form.querySelectorAll(".field-error")) node.textContent = "";
  for (const node of form.querySelectorAll("[aria-invalid]")) node.removeAttribute("aria-invalid");
}

// Puts each field error from a 400 body next to its field; the rest go to the general area.
export function showErrors(form, error, general) {
  const fields = error instanceof ApiError ? error.body.fields || [] : [];
  const leftovers = [];
  for (const f of fields) {
    const slot = form.querySelector(`.field-error[data-for="${CSS.escape(f.field)}"]`);
    const text = f.message + (f.allowed ? ` (allowed: ${f.allowed})` : "");
    if (slot) {
      slot.textContent = text;
      const input = form.querySelector(`[name="${CSS.escape(f.field)}"]`);
      if (input) input.setAttribute("aria-invalid", "true");
    } else {
      leftovers.push(`${f.field}: ${text}`);
    }
  }
  const summary = error instanceof ApiError && fields.length ? "Please fix the marked fields." : error.message;
  general.textContent = [summary, ...leftovers].join(" ");
  const firstInvalid = form.querySelector("[aria-invalid]");
  if (firstInvalid) firstInvalid.focus();
}

export function bytesToBase64(bytes) {
  let binary = "";
  const chunk = 0x8000;
  for (let i = 0; i < bytes.length; i += chunk) binary += String.fromCharCode(...bytes.subarray(i, i + chunk));
  return btoa(binary);
}

export class StreamUnavailable extends Error {}

// Follows a job's server-sent events (GET /api/v1/jobs/<id>/events) until its end state:
// onState({state, progress, ...}) for each state event, onBar({melody, bar, notes, progress}) for
// each finished bar. Resolves with the end state's data ({state, result, error}); rejects with
// StreamUnavailable when the stream cannot be opened (the server is full: poll instead).
export function followJob(url, { onState = () => {}, onBar = () => {} } = {}) {
  return new Promise((resolve, reject) => {
    if (!window.EventSource) return reject(new StreamUnavailable("this browser has no EventSource"));
    const source = new EventSource(url);
    let opened = false;
    source.addEventListener("open", () => { opened = true; });
    source.addEventListener("state", (message) => {
      const data = JSON.parse(message.data);
      onState(data);
      if (["succeeded", "failed", "cancelled", "expired"].includes(data.state)) {
        source.close();
        resolve(data);
      }
    });
    source.addEventListener("bar", (message) => onBar(JSON.parse(message.data)));
    source.addEventListener("error", () => {
      // before it opened (503, 404): give up; after, EventSource reconnects with Last-Event-ID
      if (!opened || source.readyState === EventSource.CLOSED) {
        source.close();
        reject(new StreamUnavailable("the job's event stream is not available"));
      }
    });
  });
}
