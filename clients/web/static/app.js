// The page. Everything that comes from the server (ids, metadata, messages) is set with textContent or as an
// attribute value: ids and metadata are user data, so nothing here writes HTML from strings.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  query: null,        // {file: Blob} or {id: string, thumbnail: string|null}
  region: null,       // [x0, y0, x1, y1] normalised, image queries only
  result: null,       // the last search's JSON
  explained: null,    // the same search with explanations, fetched on the first "why similar?"
  seq: 0,             // number of the latest search request: an older reply is dropped
};

function token() { return localStorage.getItem("vsearch-token") || ""; }

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token()) headers.set("Authorization", "Bearer " + token());
  const reply = await fetch(path, { ...options, headers });
  if (!reply.ok) {
    let code = "HTTP " + reply.status, message = reply.statusText;
    try { const body = await reply.json(); code = body.code || code; message = body.message || message; } catch (e) { /* not JSON */ }
    throw new Error(code + ": " + message);
  }
  return reply.json();
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function dataUrl(b64) {
  return (b64.startsWith("iVBOR") ? "data:image/png;base64," : "data:image/jpeg;base64,") + b64;
}

async function loadModels() {
  const select = $("model");
  const previous = select.value;
  select.replaceChildren();
  try {
    for (const m of await api("/api/models")) {
      const option = document.createElement("option");
      option.value = m.name;
      option.textContent = `${m.name} (${m.count} items)` + (m.domain ? ` - ${m.domain}` : "");
      option.title = m.trained_on ? `trained on ${m.trained_on}` : "";
      option.dataset.inputSize = m.input_size;
      select.append(option);
    }
    if (previous) select.value = previous;
    showError("");
  } catch (e) { showError(e.message); }
}

async function loadExamples() {
  const box = $("examples");
  for (const name of await api("/api/examples")) {
    const img = document.createElement("img");
    img.src = "/api/examples/" + encodeURIComponent(name);
    img.title = name;
    img.className = "example";
    img.dataset.name = name;
    img.addEventListener("click", async () => {
      const blob = await (await fetch(img.src)).blob();
      // Photos for the photo model, Fashion-MNIST for the ViT, when both are served.
      const wanted = name.startsWith("photo") ? "efficientnet" : "vit";
      const option = [...$("model").options].find((o) => o.value.includes(wanted));
      if (option) $("model").value = option.value;
      setQuery({ file: blob });
    });
    box.append(img);
  }
}

// A user's own file: a model made for small grey images (28 px garments) is no default for a photo. Keep the chosen
// model when it takes images of the file's size; else switch to the first model that does, and say so.
async function suitModelTo(file) {
  let bitmap;
  try { bitmap = await createImageBitmap(file); } catch { return; }
  const side = Math.min(bitmap.width, bitmap.height);
  bitmap.close();
  const options = [...$("model").options];
  const current = options.find((o) => o.value === $("model").value);
  const suits = (o) => side <= 2 * Number(o.dataset.inputSize) || Number(o.dataset.inputSize) >= 64;
  if (!current || suits(current)) return;
  const better = options.find(suits);
  if (better) {
    $("model").value = better.value;
    $("model-note").textContent = `searching with ${better.value}: ${current.value} is made for ` +
      `${current.dataset.inputSize} px images (${current.textContent.split(" - ")[1] || "another kind"})`;
  }
}

async function setUserFile(file) {
  $("model-note").textContent = "";
  await suitModelTo(file);
  setQuery({ file });
}

function setQuery(query) {
  state.query = query;
  state.region = null;
  const preview = $("preview");
  if (preview.src.startsWith("blob:")) URL.revokeObjectURL(preview.src);  // the previous query's file
  if (query.file) preview.src = URL.createObjectURL(query.file);
  else if (query.thumbnail) preview.src = dataUrl(query.thumbnail);
  else preview.removeAttribute("src");
  $("preview-box").hidden = false;
  drawBox(null);
  search();
}

async function search(explain = false) {
  if (!state.query) return null;
  const form = new FormData();
  form.set("model", $("model").value);
  form.set("top_k", $("top-k").value || "12");
  if ($("filters").value.trim()) form.set("filters", $("filters").value.trim());
  if (state.query.file) {
    form.set("image", state.query.file, "query");
    if (state.region) form.set("region", JSON.stringify(state.region));
  } else {
    form.set("id", state.query.id);
  }
  form.set("explain", explain ? "true" : "false");
  // Replies can arrive out of order (model change, region drag, submit): only the latest request's counts.
  const seq = ++state.seq;
  try {
    const result = await api("/api/search", { method: "POST", body: form });
    if (seq !== state.seq) return null;
    showError("");
    if (explain) return result;
    state.result = result;
    state.explained = null;
    render();
    return result;
  } catch (e) {
    if (seq !== state.seq) return null;
    showError(e.message);
    if (!explain) { state.result = null; render(); }
    return null;
  }
}

function render() {
  const results = $("results");
  results.replaceChildren();
  const timings = $("timings");
  timings.textContent = "";
  const result = state.result;
  results.dataset.renders = String(Number(results.dataset.renders || 0) + 1);  // for tests: a render happened
  if (!result) return;
  const t = result.timings;
  timings.textContent = ["decode", "embed", "search", "explain", "total"]
    .map((k) => `${k} ${(t[k + "_ms"] || 0).toFixed(1)} ms`).join(" · ");
  const hide = $("hide-dups").checked;
  for (const hit of result.hits) {
    if (hide && (hit.verdict === "EXACT" || hit.verdict === "NEAR_DUPLICATE")) continue;
    const card = $("hit-template").content.firstElementChild.cloneNode(true);
    card.dataset.id = hit.id;
    const thumb = card.querySelector(".thumb");
    if (hit.thumbnail) thumb.src = dataUrl(hit.thumbnail);
    thumb.title = "search by this item";
    thumb.addEventListener("click", () => setQuery({ id: hit.id, thumbnail: hit.thumbnail }));
    card.querySelector(".hit-id").textContent = hit.id;
    card.querySelector(".score").textContent = "score " + hit.score.toFixed(4);
    card.querySelector(".verdict").textContent = hit.verdict || "";
    card.querySelector(".meta").textContent = Object.entries(hit.metadata)
      .map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(", ");
    card.querySelector(".why").addEventListener("click", () => toggleWhy(card, hit.id));
    results.append(card);
  }
}

async function toggleWhy(card, id) {
  const overlays = card.querySelector(".overlays");
  if (!overlays.hidden) { overlays.hidden = true; return; }
  if (!state.explained) state.explained = await search(true);
  const hit = state.explained && state.explained.hits.find((h) => h.id === id);
  const ex = hit && hit.explanation;
  if (!ex) { if (state.explained) showError("no explanation for this hit"); return; }
  const q = overlays.querySelector(".query-overlay"), h = overlays.querySelector(".hit-overlay");
  q.hidden = !ex.query_overlay_png;
  h.hidden = !ex.hit_overlay_png;
  if (ex.query_overlay_png) q.src = dataUrl(ex.query_overlay_png);
  if (ex.hit_overlay_png) h.src = dataUrl(ex.hit_overlay_png);
  q.title = `query regions: ${ex.query_heatmap.reduce((a, b) => a + b, 0).toFixed(3)} of the score, rest ${ex.non_spatial.toFixed(3)}`;
  overlays.hidden = false;
}

// ---- the region box, drawn on the query image
function imageRect() {
  const img = $("preview");
  const side = img.clientWidth;
  const w = img.naturalWidth || side, h = img.naturalHeight || side;
  const scale = Math.min(side / w, side / h);
  return { x: (side - w * scale) / 2, y: (side - h * scale) / 2, w: w * scale, h: h * scale };
}

function drawBox(box) {
  const canvas = $("box-canvas");
  canvas.width = canvas.clientWidth;
  canvas.height = canvas.clientHeight;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!box) return;
  const r = imageRect();
  ctx.strokeStyle = "#f30";
  ctx.lineWidth = 2;
  ctx.strokeRect(r.x + box[0] * r.w, r.y + box[1] * r.h, (box[2] - box[0]) * r.w, (box[3] - box[1]) * r.h);
}

function setupBox() {
  const canvas = $("box-canvas");
  let start = null;
  const point = (e) => {
    const r = imageRect(), bounds = canvas.getBoundingClientRect();
    const clamp = (v) => Math.min(1, Math.max(0, v));
    return [clamp((e.clientX - bounds.left - r.x) / r.w), clamp((e.clientY - bounds.top - r.y) / r.h)];
  };
  const box = (a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.max(a[0], b[0]), Math.max(a[1], b[1])];
  canvas.addEventListener("mousedown", (e) => { if (state.query && state.query.file) start = point(e); });
  canvas.addEventListener("mousemove", (e) => { if (start) drawBox(box(start, point(e))); });
  canvas.addEventListener("mouseup", (e) => {
    if (!start) return;
    const b = box(start, point(e));
    start = null;
    if (b[2] - b[0] < 0.02 || b[3] - b[1] < 0.02) { drawBox(state.region); return; }
    state.region = b;
    drawBox(b);
    search();
  });
  $("box-clear").addEventListener("click", () => { state.region = null; drawBox(null); search(); });
}

// ---- wiring
function setup() {
  $("token").value = token();
  $("token-save").addEventListener("click", () => { localStorage.setItem("vsearch-token", $("token").value.trim()); loadModels(); });
  $("file").addEventListener("change", (e) => { if (e.target.files[0]) setUserFile(e.target.files[0]); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files[0]) setUserFile(e.dataTransfer.files[0]);
  });
  $("preview").addEventListener("error", () => { /* not an image: the server's answer says why */ });
  $("options").addEventListener("submit", (e) => { e.preventDefault(); search(); });
  $("model").addEventListener("change", () => { $("model-note").textContent = ""; search(); });
  $("hide-dups").addEventListener("change", render);
  setupBox();
  loadModels();
  loadExamples();
}

document.addEventListener("DOMContentLoaded", setup);
