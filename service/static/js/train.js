// The training page: starts a training job (bundled corpus or uploaded zip), follows its
// progress and loss curves, shows the finished model's figures and makes it the default.
import { api, waitForJob, clearErrors, showErrors, ApiError } from "./api.js";
import { drawLossChart } from "./lossplot.js";

const $ = (id) => document.getElementById(id);
const form = $("train-form");
const TOKEN_KEY = "tunesmith.token";

$("token").value = sessionStorage.getItem(TOKEN_KEY) || "";
$("token").addEventListener("change", () => sessionStorage.setItem(TOKEN_KEY, $("token").value.trim()));
const token = () => $("token").value.trim();

for (const radio of form.elements.source) {
  radio.addEventListener("change", () => {
    const upload = form.elements.source.value === "upload";
    $("corpus-field").hidden = upload;
    $("upload-field").hidden = !upload;
  });
}

// The recipe a job would use for a corpus of about this many tunes (the job itself chooses it from the
// corpus it parses; an uploaded zip's size is its count of files, read from the zip's directory).
function recipeText(r) {
  const [low, high] = r.transpose;
  return `batch ${r.batch_size}, up to ${r.epochs} epochs, learning rate ${r.lr}, halved after ${r.lr_patience} ` +
    `epoch(s) without a better validation loss, stops after ${r.patience}, transposition ` +
    `${low === 0 && high === 0 ? "off" : `${low}..+${high}`}.`;
}

async function showRecipe() {
  const tunes = Number($("tunes").value);
  if (!Number.isInteger(tunes) || tunes < 1) { $("recipe-preview").textContent = "Give the number of tunes."; return; }
  try {
    const r = await api(`/api/v1/training-recipe?tunes=${tunes}`);
    const scratch = $("from_scratch").checked;
    $("recipe-preview").textContent = `${scratch ? "From scratch" : "Fine-tunes the shipped model (where it fits)"}: ` +
      `${recipeText(scratch ? r.from_scratch : r.fine_tune)} Fields you fill in win.`;
  } catch (err) { $("recipe-preview").textContent = err.message; }
}

async function zipEntries(file) {  // the entry count in the zip's end-of-central-directory record
  const tail = new DataView(await file.slice(Math.max(0, file.size - 22)).arrayBuffer());
  return tail.byteLength === 22 && tail.getUint32(0, true) === 0x06054b50 ? tail.getUint16(10, true) : null;
}

$("from_scratch").addEventListener("change", showRecipe);
$("tunes").addEventListener("input", showRecipe);
$("file").addEventListener("change", async () => {
  const file = $("file").files[0];
  const count = file ? await zipEntries(file) : null;
  if (count) { $("tunes").value = count; showRecipe(); }
});
showRecipe();

const INTEGERS = ["epochs", "hidden_size", "layers", "embedding_dim", "batch_size"];
const NUMBERS = ["max_minutes", "lr", "clip", "dropout"];

function readForm() {
  const body = {}, bad = [];
  for (const name of [...INTEGERS, ...NUMBERS]) {
    const input = form.elements[name];
    if (input.validity.badInput) bad.push({ field: name, message: "must be a number" });
    else if (input.value.trim() !== "") body[name] = Number(input.value);
  }
  body.cell = form.elements.cell.value;
  const bptt = form.elements.bptt.value.trim();
  if (bptt) body.bptt = bptt === "full" ? "full" : Number(bptt);
  if (Number.isNaN(body.bptt)) bad.push({ field: "bptt", message: 'must be a whole number or "full"' });
  if (form.elements.name.value.trim()) body.name = form.elements.name.value.trim();
  if ($("from_scratch").checked) body.from_scratch = true;
  if (form.elements.source.value === "upload") {
    const file = $("file").files[0];
    if (!file) bad.push({ field: "file", message: "choose a zip of MIDI files" });
    return { body, bad, file };
  }
  body.data = form.elements.data.value.trim();
  return { body, bad, file: null };
}

// A zip goes up as multipart (field `file`, the other fields beside it); a corpus name as JSON.
function multipart(body, file) {
  const data = new FormData();
  for (const [k, v] of Object.entries(body)) data.append(k, String(v));
  data.append("file", file, file.name);
  return data;
}

let watching = null; // the job being followed
let live = [];       // step-level training losses seen while polling: [epochs, loss]

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  clearErrors(form);
  $("form-error").textContent = "";
  const { body, bad, file } = readForm();
  if (bad.length) return showErrors(form, new ApiError(400, { error: "validation failed", fields: bad }), $("form-error"));
  $("start").disabled = true;
  try {
    const request = file ? { form: multipart(body, file) } : { body };
    const accepted = await api("/api/v1/training-jobs", { method: "POST", ...request, token: token() });
    await follow(accepted.status_url || `/api/v1/jobs/${accepted.id}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      err.body.fields = [...(err.body.fields || []), { field: "token", message: "the service wants a valid access token" }];
    } else if (err instanceof ApiError && err.status === 409) {
      err.body.fields = [{ field: "name", message: err.body.error || "that name is taken" }];
    }
    showErrors(form, err, $("form-error"));
  } finally {
    $("start").disabled = false;
  }
});

async function follow(url) {
  live = [];
  $("empty").hidden = true;
  $("training").hidden = false;
  $("finished").hidden = true;
  $("cancel").disabled = false;
  watching = url;
  const job = await waitForJob(url, showProgress, { interval: 700 });
  $("cancel").disabled = true;
  if (job.state === "succeeded") await showFinished(job);
  else $("form-error").textContent = job.state === "failed" ? `Training failed: ${job.error || "no reason given"}` : "Training was cancelled.";
  loadModels();
}

function showProgress(job) {
  const t = job.training || {};
  document.body.dataset.job = job.state;
  $("train-progress").value = job.progress || 0;
  const words = { queued: "Waiting for the training worker…", running: "Training…", succeeded: "Done.",
    failed: "Failed.", cancelled: "Cancelled." };
  $("train-status").textContent = `${words[job.state] || job.state} ${Math.round((job.progress || 0) * 100)}%`;
  const eta = Number.isFinite(t.eta_s) ? `${Math.floor(t.eta_s / 60)} min ${Math.round(t.eta_s % 60)} s (at most)` : "–";
  const r = t.recipe;
  figures($("live-figures"), [
    ["Epoch", t.epoch != null ? `${t.epoch} / ${t.epochs ?? "?"}` : "–"],
    ["Step", t.step ?? "–"],
    ["Tokens/s", t.tokens_per_s != null ? Math.round(t.tokens_per_s) : "–"],
    ["ETA", job.state === "running" ? eta : "–"],
    ["Start", r ? (r.start ? `fine-tuning ${r.start.split("/").pop()}` : "from scratch") + ` (${r.start_reason})` : "–"],
    ["Recipe", r ? recipeText(r) + ` Chosen by the rule: ${r.chosen_by_rule.join(", ") || "none"}.` : "–"],
  ]);
  // Step-level losses (when the record has them) make the curve move within an epoch.
  if (Number.isFinite(t.train_loss) && t.steps_per_epoch && t.epoch != null) {
    const x = (t.epoch - 1) + (t.step % t.steps_per_epoch || t.steps_per_epoch) / t.steps_per_epoch;
    if (!live.length || live[live.length - 1][0] !== x) live.push([x, t.train_loss]);
  }
  const history = t.history || [];
  // Finished epochs plot their average loss; the epoch under way shows its latest batches.
  const lastEpoch = Math.max(0, ...history.map((h) => h.epoch));
  const train = [...history.map((h) => [h.epoch, h.train_loss]),
    ...live.filter(([x]) => x > lastEpoch)].sort((a, b) => a[0] - b[0]);
  const valid = history.filter((h) => h.valid_loss != null).map((h) => [h.epoch, h.valid_loss]);
  drawLossChart($("loss-chart"), { train, valid }, { epochs: t.epochs || 1 });
}

function figures(dl, rows) {
  dl.replaceChildren(...rows.map(([label, value]) => {
    const div = document.createElement("div");
    const dt = document.createElement("dt");
    const dd = document.createElement("dd");
    dt.textContent = label;
    dd.textContent = value;
    div.append(dt, dd);
    return div;
  }));
}

const fmt = (v) => {
  if (typeof v !== "number") return String(v);
  if (Number.isInteger(v) || Math.abs(v) >= 1000) return Math.round(v).toLocaleString("en");
  return v.toPrecision(4);
};

async function showFinished(job) {
  const name = job.training?.model || job.result?.model || job.params?.name;
  $("finished").hidden = false;
  $("finished-name").textContent = name || "";
  $("make-default").dataset.model = name || "";
  let metrics = job.result?.metrics || {};
  try {
    const models = await listModels();
    metrics = { ...metrics, ...(models.find((m) => m.name === name)?.metrics || {}) };
  } catch (_) { /* the job's own figures will do */ }
  const rows = Object.entries(metrics).filter(([, v]) => typeof v === "number" || typeof v === "string");
  figures($("final-figures"), rows.map(([k, v]) => [k.replaceAll("_", " "), fmt(v)]));
  $("make-default").focus();
}

async function makeDefault(name, button) {
  $("models-error").textContent = "";
  try {
    await api(`/api/v1/models/${encodeURIComponent(name)}/default`, { method: "POST", token: token() });
    button.textContent = "✓ Default";
    await loadModels();
  } catch (err) {
    $("models-error").textContent = err.status === 401
      ? "The service wants a valid access token (the field above)." : `Could not make ${name} the default: ${err.message}`;
  }
}
$("make-default").addEventListener("click", (e) => makeDefault(e.currentTarget.dataset.model, e.currentTarget));

$("cancel").addEventListener("click", async () => {
  if (!watching) return;
  try { await api(watching, { method: "DELETE", token: token() }); } catch (err) { $("form-error").textContent = err.message; }
});

async function listModels() {
  const data = await api("/api/v1/models");
  return Array.isArray(data) ? data : data.models || [];
}

async function loadModels() {
  try {
    const models = await listModels();
    $("models").replaceChildren(...models.map((m) => {
      const tr = document.createElement("tr");
      const metrics = m.metrics || {};
      const loss = metrics.valid_loss ?? metrics.best_valid_loss ?? metrics.nats_per_token;
      for (const text of [m.name + (m.default ? " (default)" : ""), m.created ? new Date(m.created).toLocaleDateString() : "–",
        typeof m.data === "string" ? m.data : m.data?.spec ?? "–", loss != null ? fmt(loss) : "–"]) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      const td = document.createElement("td");
      if (!m.default) {
        const b = document.createElement("button");
        b.type = "button";
        b.textContent = "Make default";
        b.setAttribute("aria-label", `Make ${m.name} the default model`);
        b.addEventListener("click", () => makeDefault(m.name, b));
        td.appendChild(b);
      }
      tr.appendChild(td);
      return tr;
    }));
  } catch (err) {
    $("models-error").textContent = `Could not list the models: ${err.message}`;
  }
}

loadModels();
