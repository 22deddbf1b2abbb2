// The composing page: reads the form, submits a melody job, follows its events (the piano roll
// grows bar by bar as the worker samples them, and Play works before the melody is finished),
// then shows the melody (piano roll, notation), plays it, offers its downloads and keeps it in
// this browser's history (localStorage). A harmonized melody shows its chords on both and plays its
// accompaniment, which can be muted (harmony.js holds the Harmony fields and reads the chords).
import { api, waitForJob, followJob, StreamUnavailable, clearErrors, showErrors, bytesToBase64, ApiError } from "./api.js";
import { parseMidi, withoutAccompaniment } from "./midi.js";
import { bindHarmonyFields, fetchChords } from "./harmony.js";
import { Player } from "./synth.js";
import { PianoRoll, pitchName } from "./pianoroll.js";
import { Notation } from "./notation.js";

const $ = (id) => document.getElementById(id);
const form = $("compose-form");
const HISTORY_KEY = "tunesmith.history";
const HISTORY_MAX = 50;

const roll = new PianoRoll($("pianoroll"));
const notation = new Notation($("notation"));
const player = new Player({
  onNote: (i) => { roll.highlight(i); notation.highlight(i); },
  onStateChange: (state) => {
    document.body.dataset.player = state;
    $("play").setAttribute("aria-pressed", String(state === "playing"));
    $("stop").disabled = state !== "playing";
  },
});
document.body.dataset.player = "stopped";

let primer = null;   // {base64, label}
let current = null;  // the melody on show: {entry, midiBytes, parsed, chords}
let live = null;     // the melody being composed: {notes, bars} from its streamed bars
const streamLog = []; // one entry per streamed bar: {bar, notes, job} (the job's state at that moment)
window.tunesmith = { player, roll, notation, streamLog, get current() { return current; }, get live() { return live; } };

// ---- the form -------------------------------------------------------------------------

const randomSeed = () => Math.floor(Math.random() * 1_000_000);
$("dice").addEventListener("click", () => { $("seed").value = randomSeed(); $("seed").focus(); });

$("primer").addEventListener("change", async () => {
  const file = $("primer").files[0];
  const slot = form.querySelector('.field-error[data-for="primer"]');
  slot.textContent = "";
  if (!file) return setPrimer(null);
  const bytes = new Uint8Array(await file.arrayBuffer());
  try {
    const parsed = parseMidi(bytes);
    if (!parsed.notes.length) throw new Error("it has no notes");
  } catch (err) {
    slot.textContent = `This file cannot be used as a primer: ${err.message}.`;
    $("primer").value = "";
    return setPrimer(null);
  }
  setPrimer({ base64: bytesToBase64(bytes), label: file.name });
});
$("clear-primer").addEventListener("click", () => { $("primer").value = ""; setPrimer(null); $("primer").focus(); });

function setPrimer(value) {
  primer = value;
  $("clear-primer").hidden = !value;
  $("primer-help").textContent = value
    ? `Primer: ${value.label}. The melody continues from its notes.`
    : "The melody continues from the primer's notes.";
}

const harmony = bindHarmonyFields(form);

// The request body: empty fields are left out, so the API's defaults apply.
function readForm() {
  const body = {};
  const bad = [];
  for (const name of ["bars", "tempo", "temperature", "top_p", "top_k", "seed", "min_pitch", "max_pitch",
                      "min_bars", "max_bars", "phrase_bars"]) {
    const input = form.elements[name];
    if (input.validity.badInput) bad.push({ field: name, message: "must be a number" });
    else if (input.value.trim() !== "") body[name] = Number(input.value);
  }
  for (const name of ["key", "scale", "meter", "model", "style"]) {
    if (form.elements[name].value) body[name] = form.elements[name].value;
  }
  // "lean" is the API's default (tonic_pull); "tonic" asks for the cadence, "free" turns the pull off
  if (form.elements.cadence.value === "tonic") body.cadence = "tonic";
  if (form.elements.cadence.value === "free") body.tonic_pull = 0;
  if (!$("short_term").checked) body.short_term = false;  // checked is the API's default
  const sections = form.elements.form.value.trim();
  if (sections) body.form = sections;               // empty: the API's default, a folk tune's form
  if ($("form_strict").checked) body.form_strict = true;
  if (form.elements.pickup.value) body.pickup = form.elements.pickup.value === "true";
  Object.assign(body, harmony.read());
  if (primer) {
    body.primer = primer.base64;
    body.include_primer = $("include_primer").checked;
  }
  return { body, bad };
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  generate();
});
$("again").addEventListener("click", () => {
  $("seed").value = randomSeed();
  generate();
});
$("continue").addEventListener("click", () => {
  if (!current) return;
  setPrimer({ base64: bytesToBase64(melodyBytes()), label: `melody ${current.entry.id.slice(0, 8)}` });
  $("primer").value = "";
  generate();
});

// The melody on show as a primer: its MIDI without the accompaniment's track (the primer is a melody).
const melodyBytes = () => withoutAccompaniment(current.midiBytes);

// Bars to regenerate: typed, or clicked on the piano roll (shift-click extends the selection).
function showSelection() {
  const first = Number($("regen-from").value), last = Number($("regen-to").value);
  const ok = first >= 1 && last >= first;
  roll.selectBars(ok ? first : null, ok ? last : null);
}
roll.onBarClick = (bar, extend) => {
  const first = Number($("regen-from").value);
  if (extend && first >= 1) {
    $("regen-from").value = Math.min(first, bar);
    $("regen-to").value = Math.max(Number($("regen-to").value) || first, bar);
  } else {
    $("regen-from").value = bar;
    $("regen-to").value = bar;
  }
  showSelection();
};
$("regen-from").addEventListener("input", showSelection);
$("regen-to").addEventListener("input", showSelection);
$("regenerate").addEventListener("click", () => {
  if (!current) return;
  const first = Number($("regen-from").value), last = Number($("regen-to").value || $("regen-from").value);
  // the melody shown becomes the primer; its bars outside the span come back unchanged
  generate({ primer: bytesToBase64(melodyBytes()), include_primer: true,
             regenerate: { from_bar: first, to_bar: last } });
});

let busy = false;
async function generate(overrides = null) {
  if (busy) return;
  clearErrors(form);
  $("form-error").textContent = "";
  const { body, bad } = readForm();
  if (overrides) {
    for (const name of ["bars", "min_bars", "max_bars"]) delete body[name];
    Object.assign(body, overrides);
  }
  if (bad.length) {
    showErrors(form, new ApiError(400, { error: "validation failed", fields: bad }), $("form-error"));
    return;
  }
  setBusy(true);
  showJob({ state: "submitting", progress: 0 });
  try {
    const accepted = await api("/api/v1/melodies", { method: "POST", body });
    const statusUrl = accepted.status_url || `/api/v1/jobs/${accepted.id}`;
    live = liveMelody(body);
    let job;
    try {
      const end = await followJob(`/api/v1/jobs/${accepted.id}/events`, { onState: showJob, onBar: live.add });
      job = end.state === "succeeded" ? await api(statusUrl) : end;
    } catch (err) {
      if (!(err instanceof StreamUnavailable)) throw err;
      job = await waitForJob(statusUrl, showJob);   // no stream to be had: poll
    }
    showJob(job);
    if (job.state !== "succeeded") throw new Error(job.error || `the job was ${job.state}`);
    const entry = historyEntry(job, body);
    saveHistory(entry);
    await showMelody(entry, { keepPlaying: player.state === "playing" && player.notes === live.played });
  } catch (err) {
    showErrors(form, err, $("form-error"));
    $("job-status").textContent = "Failed.";
  } finally {
    live = null;
    setBusy(false);
  }
}

// The first melody's bars as they are streamed: drawn at once, and played on if Play was pressed.
// The request's meter and tempo place them (the finished MIDI, drawn at the end, has the primer's
// when the request leaves them out). A note still sounding at a barline is drawn up to it.
function liveMelody(body) {
  const meter = body.meter || "4/4", qpm = body.tempo || 120;
  const [num, den] = meter.split("/").map(Number);
  const beatsPerBar = (num * 4) / den;
  const state = { notes: [], bars: 0, played: null };
  state.add = (event) => {
    if (event.melody !== 0) return;
    if (event.bar === 0 && state.bars) { state.notes = []; state.bars = 0; }   // a new attempt
    const fresh = event.notes.map((n) => ({ pitch: n.pitch, velocity: 90, startBeat: n.start_beats, endBeat: n.end_beats,
      start: (n.start_beats * 60) / qpm, end: (n.end_beats * 60) / qpm }));
    state.notes.push(...fresh);
    state.bars = event.bar + 1;
    $("empty").hidden = true;
    $("melody").hidden = false;
    roll.render(state.notes, meter, state.bars * beatsPerBar);
    document.body.dataset.streamedBars = String(state.bars);
    streamLog.push({ bar: event.bar, notes: state.notes.length, job: document.body.dataset.job });
    $("play").disabled = false;
    if (state.played && player.state === "playing" && player.notes === state.played) player.extend(fresh);
  };
  return state;
}

function setBusy(value) {
  busy = value;
  $("play").disabled = value && !current;
  $("generate").disabled = value;
  $("again").disabled = value;
  $("continue").disabled = value;
  $("regenerate").disabled = value;
  $("result").setAttribute("aria-busy", String(value));
  $("generate").textContent = value ? "Generating…" : "Generate";
}

function showJob(job) {
  $("job").hidden = false;
  $("empty").hidden = true;
  $("job-progress").value = job.progress || 0;
  const pct = Math.round((job.progress || 0) * 100);
  const words = { submitting: "Sending…", queued: "Waiting for a worker…", running: `Composing… ${pct}%`,
    succeeded: "Done.", failed: "Failed.", cancelled: "Cancelled." };
  $("job-status").textContent = words[job.state] || job.state;
  document.body.dataset.job = job.state;
}

// ---- the melody -----------------------------------------------------------------------

function historyEntry(job, body) {
  const result = job.result || {};
  const melody = (result.melodies || [])[0] || {};
  return {
    id: job.id,
    created: job.finished_at || new Date().toISOString(),
    seed: result.seed ?? body.seed ?? null,
    model: result.model || body.model || "default",
    params: { ...job.params, ...body, primer: undefined },
    melody: {
      midi: melody.midi || `/api/v1/melodies/${job.id}/0.mid`,
      json: melody.json || null,
      chords: melody.chords || null,     // the chord symbols, when the melody was harmonized
      musicxml: melody.musicxml || null,
      wav: melody.wav || null,
      notes: melody.notes ?? null,
    },
  };
}

async function showMelody(entry, { keepPlaying = false } = {}) {
  if (!keepPlaying) player.stop();   // a melody played while it was composed plays on
  const response = await fetch(entry.melody.midi);
  if (!response.ok) throw new Error(`the melody's MIDI is gone (HTTP ${response.status}); it may have expired`);
  const midiBytes = new Uint8Array(await response.arrayBuffer());
  const parsed = parseMidi(midiBytes);
  const chords = entry.melody.chords?.length && entry.melody.json ? await fetchChords(entry.melody.json) : [];
  current = { entry, midiBytes, parsed, chords };

  $("empty").hidden = true;
  $("melody").hidden = false;
  roll.render(parsed.notes, parsed.meter, parsed.endBeat, chords);
  const params = entry.params || {};
  notation.render(parsed.notes, { meter: parsed.meter, qpm: parsed.qpm, endBeat: parsed.endBeat, key: params.key, scale: params.scale,
                                  midiKey: parsed.keySignature, chords });
  $("abc-text").textContent = notation.abc;
  $("accompaniment-control").hidden = !parsed.accompaniment.length;
  $("chords-help-result").hidden = !chords.length && !parsed.accompaniment.length;

  const keyText = params.key ? `${params.key} ${params.scale || ""}`.trim() : "any key";
  const range = parsed.notes.length
    ? `${pitchName(Math.min(...parsed.notes.map((n) => n.pitch)))}–${pitchName(Math.max(...parsed.notes.map((n) => n.pitch)))}`
    : "no notes";
  $("meta").textContent = `${parsed.notes.length} notes · ${keyText} · ${Math.round(parsed.qpm)} BPM · ${range} · seed ${entry.seed ?? "?"} · model ${entry.model}`;

  const links = [["MIDI", entry.melody.midi], ["MusicXML", entry.melody.musicxml], ["WAV", entry.melody.wav]];
  $("downloads").replaceChildren(...links.filter(([, href]) => href).map(([label, href]) => downloadLink(label, href)));
  document.body.dataset.melody = entry.id;
}

function downloadLink(label, href) {
  const a = document.createElement("a");
  a.className = "button";
  a.href = href;
  a.download = "";
  a.textContent = `⤓ ${label}`;
  a.dataset.format = label.toLowerCase();
  return a;
}

$("play").addEventListener("click", async () => {
  const streaming = live && live.notes.length;
  if (!current && !streaming) return;
  try {
    if (streaming) {
      await player.play(live.notes);
      live.played = player.notes;        // its bars still to come are added to this playback
      return;
    }
    await player.play(current.parsed.notes, current.parsed.accompaniment);
  } catch (err) {
    $("form-error").textContent = `Cannot play: ${err.message}`;
  }
});
$("accompaniment").addEventListener("change", () => player.setAccompanimentMuted(!$("accompaniment").checked));
$("stop").addEventListener("click", () => { player.stop(); $("play").focus(); });
document.addEventListener("keydown", (event) => {
  // Escape stops the music from anywhere on the page.
  if (event.key === "Escape" && player.state === "playing") player.stop();
});

// ---- history (localStorage) -------------------------------------------------------------

function loadHistory() {
  try { return JSON.parse(localStorage.getItem(HISTORY_KEY)) || []; } catch (_) { return []; }
}

function saveHistory(entry) {
  const items = [entry, ...loadHistory().filter((e) => e.id !== entry.id)].slice(0, HISTORY_MAX);
  localStorage.setItem(HISTORY_KEY, JSON.stringify(items));
  renderHistory();
}

function renderHistory() {
  const items = loadHistory();
  const list = $("history");
  list.replaceChildren(...items.map((entry) => {
    const li = document.createElement("li");
    const p = entry.params || {};
    const when = new Date(entry.created).toLocaleString();
    const title = document.createElement("span");
    title.className = "what";
    title.textContent = `${p.bars ?? "?"} bars · ${p.key ? `${p.key} ${p.scale || ""}` : "any key"} · seed ${entry.seed ?? "?"}`
      + (typeof p.chords === "string" ? ` · chords ${p.chords.length > 40 ? `${p.chords.slice(0, 40)}…` : p.chords}`
        : p.harmonize ? " · estimated chords" : "");
    const time = document.createElement("time");
    time.dateTime = entry.created;
    time.textContent = when;
    const open = document.createElement("button");
    open.type = "button";
    open.textContent = "▶ Play";
    open.setAttribute("aria-label", `Play melody from ${when}`);
    open.addEventListener("click", async () => {
      try {
        await showMelody(entry);
        await player.play(current.parsed.notes, current.parsed.accompaniment);
      } catch (err) {
        $("form-error").textContent = err.message;
      }
    });
    const actions = document.createElement("span");
    actions.className = "history-actions";
    actions.append(open, downloadLink("MIDI", entry.melody.midi));
    if (entry.melody.musicxml) actions.append(downloadLink("MusicXML", entry.melody.musicxml));
    if (entry.melody.wav) actions.append(downloadLink("WAV", entry.melody.wav));
    li.append(title, time, actions);
    return li;
  }));
  $("clear-history").hidden = !items.length;
}
$("clear-history").addEventListener("click", () => { localStorage.removeItem(HISTORY_KEY); renderHistory(); });

// ---- models and their styles ------------------------------------------------------------

let models = [];    // GET /api/v1/models: each with its styles ([]: no style input; null: unreadable)
const STYLE_HELP = $("style-help").textContent;

async function loadModels() {
  try {
    const data = await api("/api/v1/models");
    models = Array.isArray(data) ? data : data.models || [];
    const select = $("model");
    for (const m of models) {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = m.default ? `${m.name} (default)` : m.name;
      option.disabled = m.available === false; // registered, but its checkpoint is missing
      select.appendChild(option);
    }
  } catch (err) {
    form.querySelector('.field-error[data-for="model"]').textContent = `Could not list the models: ${err.message}`;
  }
  showStyles();
}

// The Style choices are the chosen model's styles (the default model's when none is chosen); a model
// without a style input leaves only Any. The help line describes the style chosen.
function chosenModel() {
  const chosen = form.elements.model.value;
  return models.find((m) => (chosen ? m.name === chosen : m.default));
}

function showStyles() {
  const model = chosenModel();
  const styles = (model && model.styles) || [];
  const select = $("style");
  const kept = select.value;
  select.replaceChildren(new Option("Any", ""), ...styles.map((s) => {
    const option = new Option(s.name[0].toUpperCase() + s.name.slice(1), s.name);
    option.title = s.description;
    return option;
  }));
  select.value = styles.some((s) => s.name === kept) ? kept : "";
  select.disabled = !styles.length;
  describeStyle();
}

function describeStyle() {
  const model = chosenModel();
  const style = ((model && model.styles) || []).find((s) => s.name === $("style").value);
  const none = model && model.styles && !model.styles.length;
  $("style-help").textContent = none
    ? `Model ${model.name} has no style input: it writes in the mix of traditions it was trained on.`
    : style ? `${style.description}.` : STYLE_HELP;
}
$("model").addEventListener("change", showStyles);
$("style").addEventListener("change", describeStyle);

renderHistory();
loadModels();
