// samkit studio: one page over the JSON API in src/samkit/studio/server.py.
// Coordinates sent to the server are image pixels (XY); masks are COCO RLE strings.
import { area, decodeMask, encodeMask } from "./rle.js";

const $ = (id) => document.getElementById(id);
const S = {
  info: null, images: [], total: 0, current: null, img: null,
  view: { scale: 1, tx: 0, ty: 0 },
  prompt: { points: [], box: null }, candidates: [], selected: 0, work: null,
  instances: [], classes: [], classId: null, selectedInstance: null,
  auto: [], undo: [], redo: [], tool: "prompt", busy: false, space: false,
};
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const maskCache = new Map(); // key -> canvas with the mask painted in a colour

// -- API ------------------------------------------------------------------------------------
async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (body instanceof FormData) opts.body = body;
  else if (body !== undefined) {
    opts.headers["content-type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const data = r.headers.get("content-type")?.includes("json") ? await r.json() : null;
  if (!r.ok) {
    const detail = data && data.detail;
    const text = Array.isArray(detail) ? detail.map((d) => `${d.loc?.slice(-1)}: ${d.msg}`).join("; ") : detail;
    throw new Error(text || `${r.status} ${r.statusText}`);
  }
  return data;
}

function say(text, error = false, ms = 2500) {
  const m = $("message");
  m.textContent = text;
  m.className = "show" + (error ? " error" : "");
  clearTimeout(say.t);
  if (ms) say.t = setTimeout(() => (m.className = ""), ms);
}

async function guarded(fn) {
  try {
    return await fn();
  } catch (e) {
    say(e.message, true, 6000);
  }
}

// -- masks & drawing ------------------------------------------------------------------------
function hexRgb(hex) {
  const n = parseInt(hex.slice(1), 16);
  return [(n >> 16) & 255, (n >> 8) & 255, n & 255];
}

function maskCanvas(mask, w, h, color, alpha = 110) {
  const c = document.createElement("canvas");
  c.width = w;
  c.height = h;
  const g = c.getContext("2d");
  const im = g.createImageData(w, h);
  const [r, gg, b] = hexRgb(color);
  for (let i = 0; i < mask.length; i++) {
    if (!mask[i]) continue;
    const j = 4 * i;
    im.data[j] = r; im.data[j + 1] = gg; im.data[j + 2] = b; im.data[j + 3] = alpha;
  }
  g.putImageData(im, 0, 0);
  return c;
}

function classColor(id) {
  return S.classes.find((c) => c.id === id)?.color || "#ffcc00";
}

function instanceCanvas(inst) {
  const key = `i${inst.id}:${inst.updated_at}:${classColor(inst.class_id)}`;
  if (!maskCache.has(key)) {
    const { width: w, height: h } = S.current;
    maskCache.set(key, maskCanvas(decodeMask(inst.rle, h, w), w, h, classColor(inst.class_id)));
  }
  return maskCache.get(key);
}

function draw() {
  const dpr = window.devicePixelRatio || 1;
  const { clientWidth: cw, clientHeight: ch } = canvas;
  if (canvas.width !== cw * dpr || canvas.height !== ch * dpr) {
    canvas.width = cw * dpr;
    canvas.height = ch * dpr;
  }
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!S.img) return;
  const { scale, tx, ty } = S.view;
  ctx.setTransform(scale * dpr, 0, 0, scale * dpr, tx * dpr, ty * dpr);
  ctx.imageSmoothingEnabled = scale < 1;
  ctx.drawImage(S.img, 0, 0);
  ctx.imageSmoothingEnabled = false;
  for (const inst of S.instances) {
    ctx.globalAlpha = S.selectedInstance === inst.id ? 1 : 0.8;
    ctx.drawImage(instanceCanvas(inst), 0, 0);
  }
  ctx.globalAlpha = 1;
  for (const a of S.auto) ctx.drawImage(a.canvas, 0, 0);
  if (S.work) {
    if (!S.work.canvas) S.work.canvas = maskCanvas(S.work.mask, S.work.w, S.work.h, "#1e90ff", 140);
    ctx.drawImage(S.work.canvas, 0, 0);
  }
  const r = 5 / scale;
  for (const [x, y, label] of S.prompt.points) {
    ctx.beginPath();
    ctx.arc(x, y, r, 0, 2 * Math.PI);
    ctx.fillStyle = label ? "#2ecc40" : "#ff4136";
    ctx.fill();
    ctx.lineWidth = 1.5 / scale;
    ctx.strokeStyle = "#fff";
    ctx.stroke();
  }
  const box = S.prompt.box || S.dragBox;
  if (box) {
    ctx.lineWidth = 2 / scale;
    ctx.strokeStyle = "#ffdc00";
    ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
  }
}

function fit() {
  S.autoFit = true; // until the user zooms or pans, resizes re-fit the image
  if (!S.img) return;
  const { clientWidth: cw, clientHeight: ch } = canvas;
  const scale = Math.min(cw / S.img.naturalWidth, ch / S.img.naturalHeight) * 0.96;
  S.view = { scale, tx: (cw - S.img.naturalWidth * scale) / 2, ty: (ch - S.img.naturalHeight * scale) / 2 };
  draw();
}

function toImage(ev) {
  const rect = canvas.getBoundingClientRect();
  const sx = ev.clientX - rect.left;
  const sy = ev.clientY - rect.top;
  return [(sx - S.view.tx) / S.view.scale, (sy - S.view.ty) / S.view.scale, sx, sy];
}

// -- image list -----------------------------------------------------------------------------
async function loadImages(append = false) {
  const params = new URLSearchParams({ limit: 200, offset: append ? S.images.length : 0 });
  const status = $("status-filter").value;
  const search = $("search").value.trim();
  if (status) params.set("status", status);
  if (search) params.set("search", search);
  const data = await api("GET", `/api/images?${params}`);
  S.images = append ? S.images.concat(data.images) : data.images;
  S.total = data.total;
  renderImages();
}

function renderImages() {
  const ul = $("image-list");
  ul.innerHTML = "";
  for (const im of S.images) {
    const li = document.createElement("li");
    li.dataset.id = im.id;
    if (S.current && S.current.id === im.id) li.className = "current";
    const name = document.createElement("span");
    name.className = "name" + (im.cached ? " cached" : "");
    name.textContent = im.file_name;
    name.title = im.error || im.file_name;
    const badge = document.createElement("span");
    badge.className = "badge " + (im.error ? "error" : im.status);
    badge.textContent = im.error ? "unreadable" : `${im.status.replace("_", " ")} · ${im.n_instances}`;
    li.append(name, badge);
    li.onclick = () => guarded(() => (im.error ? say(`${im.file_name}: ${im.error}`, true, 6000) : openImage(im.id)));
    ul.append(li);
  }
  $("more").hidden = S.images.length >= S.total;
}

// -- one image ------------------------------------------------------------------------------
async function openImage(id) {
  const detail = await api("GET", `/api/images/${id}`);
  S.current = detail;
  S.instances = detail.instances;
  S.auto = [];
  S.undo = [];
  S.redo = [];
  S.selectedInstance = null;
  clearPrompt();
  $("image-name").textContent = detail.file_name;
  const img = new Image();
  img.src = `/api/images/${id}/file`;
  await img.decode();
  S.img = img;
  fit();
  renderInstances();
  renderAuto();
  renderImages();
  history.replaceState(null, "", `#image=${id}`);
  if (!detail.cached) say("computing the embedding…", false, 0);
  const t = performance.now();
  const r = await api("POST", `/api/images/${id}/embed`);
  $("timing").textContent = r.computed
    ? `embedding computed in ${r.ms.toFixed(0)} ms`
    : `embedding from cache (${(performance.now() - t).toFixed(0)} ms)`;
  say("ready: click an object, drag a box", false, 1500);
  document.body.dataset.ready = String(id);
}

function clearPrompt() {
  S.prompt = { points: [], box: null };
  S.candidates = [];
  S.selected = 0;
  S.work = null;
  renderCandidates();
  draw();
}

async function predict() {
  if (!S.current || (!S.prompt.points.length && !S.prompt.box)) return clearPrompt();
  const single = S.prompt.points.length === 1 && !S.prompt.box;
  const body = { points: S.prompt.points.length ? S.prompt.points : null, box: S.prompt.box, multimask: single };
  const prev = S.candidates[S.selected];
  if (!single && prev) body.logits_id = prev.logits_id; // refine the mask being shown
  const t = performance.now();
  const r = await api("POST", `/api/images/${S.current.id}/predict`, body);
  $("timing").textContent = `mask in ${(performance.now() - t).toFixed(0)} ms (decoder ${r.decode_ms.toFixed(0)} ms)`;
  S.candidates = r.candidates;
  pickCandidate(0);
}

function pickCandidate(i) {
  if (!S.candidates[i]) return;
  S.selected = i;
  const c = S.candidates[i];
  const { width: w, height: h } = S.current;
  S.work = { mask: decodeMask(c.rle, h, w), w, h, rle: c.rle, score: c.score,
    source: S.prompt.box ? "box" : "click", instanceId: null, canvas: null };
  renderCandidates();
  draw();
  document.body.dataset.masks = String(Number(document.body.dataset.masks || 0) + 1);
}

function renderCandidates() {
  const span = $("candidates");
  span.innerHTML = "";
  S.candidates.forEach((c, i) => {
    const b = document.createElement("button");
    b.className = "cand" + (i === S.selected ? " selected" : "");
    b.textContent = `${i + 1}: ${c.score.toFixed(2)}`;
    b.title = `candidate ${i + 1}, predicted IoU ${c.score.toFixed(3)}, ${c.area} px`;
    b.onclick = () => pickCandidate(i);
    span.append(b);
  });
  $("accept").disabled = !S.work;
}

async function accept() {
  if (!S.work || !S.current) return;
  if (S.classId == null) return say("add a class first (right panel)", true);
  if (!area(S.work.mask)) return say("the mask is empty", true);
  const rle = S.work.rle || encodeMask(S.work.mask, S.work.h, S.work.w);
  if (S.work.instanceId) {
    const before = S.instances.find((i) => i.id === S.work.instanceId);
    const after = await api("PATCH", `/api/instances/${S.work.instanceId}`, { rle });
    pushUndo({ type: "update", id: after.id, before: { rle: before.rle }, after: { rle } });
  } else {
    const inst = await api("POST", `/api/images/${S.current.id}/instances`,
      { rle, class_id: S.classId, score: S.work.score, source: S.work.source });
    pushUndo({ type: "add", inst });
  }
  clearPrompt();
  await refreshInstances();
  say("saved");
}

// -- instances, undo / redo -----------------------------------------------------------------
function pushUndo(action) {
  S.undo.push(action);
  S.redo = [];
}

async function apply(action, inverse) {
  const a = action;
  if ((a.type === "add") !== inverse) {
    // add (or undo of a delete): re-create the instance; later steps refer to the new id
    const inst = await api("POST", `/api/images/${a.inst.image_id}/instances`,
      { rle: a.inst.rle, class_id: a.inst.class_id, score: a.inst.score, source: a.inst.source });
    a.inst = inst;
  } else if (a.type === "add" || a.type === "delete") {
    await api("DELETE", `/api/instances/${a.inst.id}`);
  } else {
    await api("PATCH", `/api/instances/${a.id}`, inverse ? a.before : a.after);
  }
}

async function undo() {
  if (S.prompt.points.length || S.prompt.box) {
    S.prompt.points.pop() || (S.prompt.box = null);
    return S.prompt.points.length || S.prompt.box ? predict() : clearPrompt();
  }
  const a = S.undo.pop();
  if (!a) return say("nothing to undo");
  await apply(a, true);
  S.redo.push(a);
  await refreshInstances();
}

async function redo() {
  const a = S.redo.pop();
  if (!a) return say("nothing to redo");
  await apply(a, false);
  S.undo.push(a);
  await refreshInstances();
}

async function refreshInstances() {
  S.instances = await api("GET", `/api/images/${S.current.id}/instances`);
  const im = S.images.find((i) => i.id === S.current.id);
  if (im) {
    im.n_instances = S.instances.length;
    if (im.status === "todo" && S.instances.length) im.status = "in_progress";
  }
  renderInstances();
  renderImages();
  draw();
  await refreshHeader();
}

// The header's project-wide counts follow every accept, edit and delete (no reload needed).
async function refreshHeader() {
  S.info = { ...S.info, counts: (await api("GET", "/api/info")).counts };
  renderHeader();
}

function renderHeader() {
  const c = S.info.counts;
  $("project").textContent = `${S.info.project} · ${S.info.model_id} · ${c.instances} instances`;
}

function renderInstances() {
  const ul = $("instances");
  ul.innerHTML = "";
  $("n-instances").textContent = `(${S.instances.length})`;
  for (const inst of S.instances) {
    const li = document.createElement("li");
    li.dataset.id = inst.id;
    if (S.selectedInstance === inst.id) li.className = "selected";
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = classColor(inst.class_id);
    const sel = document.createElement("select");
    for (const c of S.classes) sel.add(new Option(c.name, c.id, false, c.id === inst.class_id));
    sel.onchange = () => guarded(async () => {
      const before = { class_id: inst.class_id };
      const after = { class_id: Number(sel.value) };
      await api("PATCH", `/api/instances/${inst.id}`, after);
      pushUndo({ type: "update", id: inst.id, before, after });
      await refreshInstances();
    });
    const info = document.createElement("span");
    info.className = "muted";
    info.textContent = `${inst.area}px`;
    const del = document.createElement("button");
    del.textContent = "✕";
    del.title = "delete (undo with ctrl+z)";
    del.onclick = () => guarded(async () => {
      await api("DELETE", `/api/instances/${inst.id}`);
      pushUndo({ type: "delete", inst });
      await refreshInstances();
    });
    li.onclick = (e) => {
      if (e.target === sel || e.target === del) return;
      S.selectedInstance = S.selectedInstance === inst.id ? null : inst.id;
      renderInstances();
      draw();
    };
    li.append(sw, sel, info, del);
    ul.append(li);
  }
}

// -- brush / eraser -------------------------------------------------------------------------
function paint(x, y, value) {
  if (!S.current) return;
  const { width: w, height: h } = S.current;
  if (!S.work) {
    const inst = S.instances.find((i) => i.id === S.selectedInstance);
    S.work = inst
      ? { mask: decodeMask(inst.rle, h, w), w, h, score: inst.score, source: inst.source, instanceId: inst.id }
      : { mask: new Uint8Array(w * h), w, h, score: null, source: "brush", instanceId: null };
  }
  S.work.rle = null; // edited: re-encode on accept
  const r = Number($("brush-size").value);
  for (let yy = Math.max(0, Math.floor(y - r)); yy <= Math.min(h - 1, Math.ceil(y + r)); yy++) {
    for (let xx = Math.max(0, Math.floor(x - r)); xx <= Math.min(w - 1, Math.ceil(x + r)); xx++) {
      if ((xx - x) ** 2 + (yy - y) ** 2 <= r * r) S.work.mask[yy * w + xx] = value;
    }
  }
  S.work.canvas = undefined; // repaint, and re-encode on accept
  $("accept").disabled = false;
  draw();
}

// -- segment everything ---------------------------------------------------------------------
const AUTO_COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45"];

async function segmentEverything() {
  if (!S.current) return;
  say("segmenting everything…", false, 0);
  const t = performance.now();
  const r = await api("POST", `/api/images/${S.current.id}/auto`, {});
  const { width: w, height: h } = S.current;
  S.auto = r.masks.map((m, i) => ({ ...m, canvas: maskCanvas(decodeMask(m.rle, h, w), w, h, AUTO_COLORS[i % AUTO_COLORS.length], 90) }));
  say(`${S.auto.length} automatic masks in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  renderAuto();
  draw();
}

// -- find by class name (a text detector and/or CLIP on the server) --------------------------
async function findObjects(text) {
  if (!S.current || !text.trim()) return;
  say(`finding ${text}…`, false, 0);
  const r = await api("POST", `/api/images/${S.current.id}/find`, { text });
  const { width: w, height: h } = S.current;
  S.auto = r.candidates.map((m, i) => ({ ...m, canvas: maskCanvas(decodeMask(m.rle, h, w), w, h, AUTO_COLORS[i % AUTO_COLORS.length], 90) }));
  say(`${S.auto.length} candidate(s) for ${r.classes.join(", ")} in ${(r.ms / 1000).toFixed(1)} s`);
  renderAuto();
  draw();
}

function renderAuto() {
  $("auto-section").hidden = !S.auto.length;
  $("auto-title").textContent = S.auto.some((m) => m.class_name) ? "found" : "automatic masks";
  $("n-auto").textContent = `(${S.auto.length})`;
  const ul = $("auto-list");
  ul.innerHTML = "";
  S.auto.forEach((m, i) => {
    const li = document.createElement("li");
    const sw = document.createElement("span");
    sw.className = "swatch";
    sw.style.background = AUTO_COLORS[i % AUTO_COLORS.length];
    const t = document.createElement("span");
    t.textContent = `${m.class_name ? m.class_name + " " : ""}${m.score.toFixed(2)} · ${m.area}px`;
    const ok = document.createElement("button");
    ok.textContent = "✓";
    ok.title = m.class_name ? `accept as ${m.class_name}` : "accept with the current class";
    ok.onclick = () => guarded(() => acceptAuto([m]));
    const no = document.createElement("button");
    no.textContent = "✗";
    no.onclick = () => { S.auto = S.auto.filter((x) => x !== m); renderAuto(); draw(); };
    li.append(sw, t, ok, no);
    ul.append(li);
  });
}

async function acceptAuto(list) {
  if (S.classId == null && list.some((m) => !m.class_name)) return say("add a class first (right panel)", true);
  for (const m of list) {
    const cls = m.class_name ? { class_name: m.class_name } : { class_id: S.classId };
    const inst = await api("POST", `/api/images/${S.current.id}/instances`,
      { rle: m.rle, ...cls, score: m.score, source: m.class_name ? "find" : "auto" });
    pushUndo({ type: "add", inst });
  }
  S.auto = S.auto.filter((x) => !list.includes(x));
  renderAuto();
  if (list.some((m) => m.class_name)) await loadClasses(); // accepting may add a class
  await refreshInstances();
}

// -- classes, embeddings, export ------------------------------------------------------------
async function loadClasses() {
  S.classes = await api("GET", "/api/classes");
  const sel = $("class-select");
  sel.innerHTML = "";
  for (const c of S.classes) sel.add(new Option(c.name, c.id));
  if (S.classId == null && S.classes.length) S.classId = S.classes[0].id;
  if (S.classId != null) sel.value = String(S.classId);
}

async function pollEmbeddings() {
  const s = await api("GET", "/api/embeddings");
  const p = $("emb-progress");
  p.max = Math.max(1, s.total);
  p.value = s.done;
  $("emb-text").textContent = s.running
    ? `computing ${s.done}/${s.total}…`
    : s.total ? `done: ${s.done}/${s.total}` + (s.errors.length ? `, ${s.errors.length} failed` : "") : "";
  if (s.running) setTimeout(() => guarded(pollEmbeddings), 1000);
  else if (s.total) loadImages();
}

// -- events ---------------------------------------------------------------------------------
let drag = null;
canvas.addEventListener("contextmenu", (e) => e.preventDefault());
canvas.addEventListener("mousedown", (e) => {
  if (!S.img) return;
  const [x, y, sx, sy] = toImage(e);
  const pan = e.button === 1 || S.space;
  drag = { x, y, sx, sy, button: e.button, shift: e.shiftKey, pan, moved: false, tx: S.view.tx, ty: S.view.ty };
  if (!pan && S.tool !== "prompt") paint(x, y, S.tool === "brush" ? 1 : 0);
});
window.addEventListener("mousemove", (e) => {
  if (!S.img) return;
  const [x, y, sx, sy] = toImage(e);
  $("cursor").textContent = x >= 0 && y >= 0 && x < S.img.naturalWidth && y < S.img.naturalHeight ? `${Math.floor(x)}, ${Math.floor(y)}` : "";
  if (!drag) return;
  if (Math.hypot(sx - drag.sx, sy - drag.sy) > 4) drag.moved = true;
  if (drag.pan) {
    S.autoFit = false;
    S.view.tx = drag.tx + sx - drag.sx;
    S.view.ty = drag.ty + sy - drag.sy;
    draw();
  } else if (S.tool !== "prompt") {
    paint(x, y, S.tool === "brush" ? 1 : 0);
  } else if (drag.moved) {
    S.dragBox = [Math.min(drag.x, x), Math.min(drag.y, y), Math.max(drag.x, x), Math.max(drag.y, y)];
    draw();
  }
});
window.addEventListener("mouseup", (e) => {
  if (!drag) return;
  const d = drag;
  drag = null;
  if (d.pan || S.tool !== "prompt" || !S.current) return;
  const [x, y] = toImage(e);
  if (d.moved) {
    S.prompt.box = S.dragBox.map((v) => Math.round(v));
    S.dragBox = null;
  } else {
    const label = d.button === 2 || d.shift ? 0 : 1;
    S.prompt.points.push([Math.round(x * 10) / 10, Math.round(y * 10) / 10, label]);
  }
  guarded(predict);
});
canvas.addEventListener("wheel", (e) => {
  e.preventDefault();
  const [, , sx, sy] = toImage(e);
  const k = Math.exp(-e.deltaY * 0.0015);
  const scale = Math.min(40, Math.max(0.05, S.view.scale * k));
  S.view.tx = sx - ((sx - S.view.tx) * scale) / S.view.scale;
  S.view.ty = sy - ((sy - S.view.ty) * scale) / S.view.scale;
  S.view.scale = scale;
  S.autoFit = false;
  draw();
}, { passive: false });
new ResizeObserver(() => (S.autoFit ? fit() : draw())).observe(canvas);

window.addEventListener("keydown", (e) => {
  if (e.target instanceof HTMLInputElement || e.target instanceof HTMLSelectElement) return;
  const key = e.key.toLowerCase();
  if (key === " ") { S.space = true; e.preventDefault(); return; }
  if ((e.ctrlKey || e.metaKey) && key === "z") { e.preventDefault(); return guarded(e.shiftKey ? redo : undo); }
  if ((e.ctrlKey || e.metaKey) && key === "y") { e.preventDefault(); return guarded(redo); }
  if (e.ctrlKey || e.metaKey || e.altKey) return;
  if (["1", "2", "3"].includes(key)) pickCandidate(Number(key) - 1);
  else if (key === "enter" || key === "a") guarded(accept);
  else if (key === "escape") clearPrompt();
  else if (key === "n") $("next").click();
  else if (key === "p") $("prev").click();
  else if (key === "s") guarded(segmentEverything);
  else if (key === "d") $("done").click();
  else if (key === "b" || key === "e") setTool(key === "b" ? "brush" : "eraser");
  else if (key === "f") fit();
  else if (key === "c") setTool("prompt");
});
window.addEventListener("keyup", (e) => { if (e.key === " ") S.space = false; });

function setTool(tool) {
  S.tool = tool;
  for (const r of document.querySelectorAll("input[name=tool]")) r.checked = r.value === tool;
}
for (const r of document.querySelectorAll("input[name=tool]")) r.onchange = () => setTool(r.value);

$("accept").onclick = () => guarded(accept);
$("clear").onclick = clearPrompt;
$("undo").onclick = () => guarded(undo);
$("redo").onclick = () => guarded(redo);
$("auto").onclick = () => guarded(segmentEverything);
$("find-form").onsubmit = (e) => { e.preventDefault(); guarded(() => findObjects($("find-text").value)); };
$("auto-accept-all").onclick = () => guarded(() => acceptAuto([...S.auto]));
$("auto-reject-all").onclick = () => { S.auto = []; renderAuto(); draw(); };
$("next").onclick = () => guarded(() => S.current?.next && openImage(S.current.next));
$("prev").onclick = () => guarded(() => S.current?.previous && openImage(S.current.previous));
$("done").onclick = () => guarded(async () => {
  if (!S.current) return;
  await api("POST", `/api/images/${S.current.id}/status`, { status: "done" });
  const im = S.images.find((i) => i.id === S.current.id);
  if (im) im.status = "done";
  renderImages();
  say("marked done");
});
$("status-filter").onchange = () => guarded(() => loadImages());
$("search").oninput = () => { clearTimeout(S.searchT); S.searchT = setTimeout(() => guarded(() => loadImages()), 250); };
$("more").onclick = () => guarded(() => loadImages(true));
$("class-select").onchange = (e) => (S.classId = Number(e.target.value));
$("class-form").onsubmit = (e) => {
  e.preventDefault();
  guarded(async () => {
    const c = await api("POST", "/api/classes", { name: $("class-name").value });
    $("class-name").value = "";
    S.classId = c.id;
    await loadClasses();
    renderInstances();
  });
};
$("precompute").onclick = () => guarded(async () => { await api("POST", "/api/embeddings/precompute"); pollEmbeddings(); });
$("import-form").onsubmit = (e) => {
  e.preventDefault();
  guarded(async () => {
    const f = $("import-file").files[0];
    if (!f) return say("choose a COCO JSON file", true);
    const fd = new FormData();
    fd.append("file", f);
    const r = await api("POST", "/api/import", fd);
    say(`imported ${r.imported}, skipped ${r.skipped}`, r.skipped > 0, 5000);
    await loadClasses();
    await loadImages();
    if (S.current) await refreshInstances();
  });
};

// -- start ----------------------------------------------------------------------------------
async function start() {
  S.info = await api("GET", "/api/info");
  $("find-form").hidden = !S.info.find;
  renderHeader();
  const dl = $("shortcuts");
  for (const [k, v] of Object.entries(S.info.shortcuts)) {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dl.append(dt, dd);
  }
  for (const fmt of S.info.export_formats) {
    const a = document.createElement("a");
    a.href = `/api/export?format=${fmt}`;
    a.textContent = fmt.replace("_", " ");
    a.className = "cand";
    a.id = `export-${fmt}`;
    a.download = "";
    $("exports").append(a);
  }
  await loadClasses();
  await loadImages();
  pollEmbeddings();
  const want = Number(new URLSearchParams(location.hash.slice(1)).get("image"));
  const first = S.images.find((i) => i.id === want && !i.error) || S.images.find((i) => !i.error);
  if (first) await openImage(first.id);
}
guarded(start);
