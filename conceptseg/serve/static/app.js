// conceptseg page: one image (or video) at a time, prompts drawn on a canvas, masks decoded from COCO RLE.
"use strict";

const $ = (id) => document.getElementById(id);
const view = $("view");
const ctx = view.getContext("2d");
const state = {
  kind: null, id: null, name: "", width: 0, height: 0, picture: null, numFrames: 0, frame: 0,
  boxes: [], points: [], instances: [], hidden: new Set(), frames: new Map(), nextObject: 1, drag: null,
};

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  if (!response.ok) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail; } catch (_) { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response;
}

// COCO compressed RLE: counts as characters (LEB128-like, 5 bits each, deltas from the count two back).
function rleCounts(text) {
  const counts = [];
  let p = 0;
  while (p < text.length) {
    let x = 0, k = 0, more = true;
    while (more) {
      const c = text.charCodeAt(p) - 48;
      x |= (c & 0x1f) << (5 * k);
      more = (c & 0x20) !== 0;
      p += 1; k += 1;
      if (!more && (c & 0x10)) x |= -1 << (5 * k);
    }
    if (counts.length > 2) x += counts[counts.length - 2];
    counts.push(x);
  }
  return counts;
}

// Runs alternate 0 and 1 in column-major order (COCO's Fortran layout); returns row-major 0/1 bytes.
function decodeMask(rle) {
  const [h, w] = rle.size;
  const mask = new Uint8Array(h * w);
  let index = 0;
  rleCounts(rle.counts).forEach((run, n) => {
    if (n % 2 === 1) {
      for (let i = index; i < index + run; i += 1) mask[(i % h) * w + Math.floor(i / h)] = 1;
    }
    index += run;
  });
  return mask;
}

function colour(key) {
  const hue = (key * 137.508) % 360;
  const s = 0.85, l = 0.5, a = s * Math.min(l, 1 - l);
  const f = (n) => { const k = (n + hue / 30) % 12; return Math.round(255 * (l - a * Math.max(-1, Math.min(k - 3, 9 - k, 1)))); };
  return [f(0), f(8), f(4)];
}

function shownInstances() {
  return state.kind === "video" ? (state.frames.get(state.frame) || []) : state.instances;
}

function draw() {
  if (!state.picture) return;
  ctx.drawImage(state.picture, 0, 0, state.width, state.height);
  const pixels = ctx.getImageData(0, 0, state.width, state.height);
  for (const instance of shownInstances()) {
    if (state.hidden.has(instance.key)) continue;
    if (!instance.decoded) instance.decoded = decodeMask(instance.mask);
    const [r, g, b] = colour(instance.key);
    const mask = instance.decoded, w = state.width, h = state.height;
    mask.forEach((on, i) => {
      if (!on) return;
      const x = i % w, y = (i - x) / w;
      const edge = x === 0 || y === 0 || x === w - 1 || y === h - 1 || !mask[i - 1] || !mask[i + 1] || !mask[i - w] || !mask[i + w];
      const keep = edge ? 0 : 0.45;  // a solid outline, a see-through fill
      pixels.data[4 * i] = keep * pixels.data[4 * i] + (1 - keep) * r;
      pixels.data[4 * i + 1] = keep * pixels.data[4 * i + 1] + (1 - keep) * g;
      pixels.data[4 * i + 2] = keep * pixels.data[4 * i + 2] + (1 - keep) * b;
    });
  }
  ctx.putImageData(pixels, 0, 0);
  ctx.lineWidth = Math.max(1, state.width / 300);
  for (const box of state.boxes.concat(state.drag ? [state.drag] : [])) {
    ctx.strokeStyle = box.label ? "#00c853" : "#ff1744";
    const [x1, y1, x2, y2] = box.xyxy;
    ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
  }
  for (const point of state.points) {
    ctx.fillStyle = point.label ? "#00c853" : "#ff1744";
    ctx.beginPath();
    ctx.arc(point.xy[0], point.xy[1], Math.max(3, state.width / 80), 0, 2 * Math.PI);
    ctx.fill();
  }
}

function listInstances() {
  const list = $("instances");
  list.replaceChildren();
  for (const instance of shownInstances()) {
    const item = document.createElement("li");
    item.className = "instance";
    item.dataset.key = instance.key;
    const toggle = document.createElement("input");
    toggle.type = "checkbox";
    toggle.checked = !state.hidden.has(instance.key);
    toggle.addEventListener("change", () => {
      if (toggle.checked) state.hidden.delete(instance.key); else state.hidden.add(instance.key);
      draw();
    });
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = `rgb(${colour(instance.key).join(",")})`;
    const text = document.createElement("span");
    const name = instance.label ? `${instance.label} #${instance.id}` : `instance ${instance.index + 1}`;
    text.textContent = `${name} — score ${instance.score.toFixed(2)}`;
    item.append(toggle, swatch, text);
    list.append(item);
  }
}

function canvasPoint(event) {
  const rect = view.getBoundingClientRect();
  return [(event.clientX - rect.left) * state.width / rect.width, (event.clientY - rect.top) * state.height / rect.height];
}

function tool() {
  const value = document.querySelector("input[name=tool]:checked").value;
  return { kind: value.slice(0, -1), label: value.endsWith("+") ? 1 : 0 };
}

function promptBody() {
  const body = { threshold: Number($("threshold").value) };
  const text = $("phrase").value.trim();
  if (text) body.text = text;
  if (state.boxes.length) {
    body.boxes = state.boxes.map((b) => b.xyxy);
    body.box_labels = state.boxes.map((b) => b.label);
  }
  if (state.points.length) {
    body.points = state.points.map((p) => p.xy);
    body.point_labels = state.points.map((p) => p.label);
  }
  return body;
}

async function segmentImage() {
  const body = promptBody();
  if (!body.text && !body.boxes && !body.points) { setStatus("Type a phrase or draw a box or a point."); return; }
  setStatus("Segmenting…");
  const started = performance.now();
  const response = await api(`/v1/images/${state.id}/segment`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const result = await response.json();
  state.instances = result.instances.map((instance) => ({ ...instance, key: instance.index + 1 }));
  state.hidden.clear();
  draw();
  listInstances();
  $("download-json").disabled = false;
  setStatus(`${state.instances.length} instance(s) in ${Math.round(performance.now() - started)} ms.`);
}

async function promptVideo() {
  const body = promptBody();
  delete body.threshold;
  body.frame_index = state.frame;
  const objectPrompt = body.points !== undefined;
  if (objectPrompt) {  // clicks make (or refine) one object: the concept fields go in their own prompt
    if (body.text || body.boxes) { setStatus("Clicks prompt one object: clear the phrase and boxes first.", true); return; }
    body.obj_id = state.nextObject;
  } else if (!body.text && !body.boxes) { setStatus("Type a phrase, draw a box or click an object."); return; }
  const response = await api(`/v1/videos/${state.id}/prompts`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  const result = await response.json();
  if (result.frame) {
    state.frames.set(state.frame, framedObjects(result.frame));
    state.nextObject += 1;
    draw();
    listInstances();
  }
  state.boxes = []; state.points = [];
  setStatus(`Prompt added on frame ${state.frame}. Press Propagate to track it through the video.`);
}

function framedObjects(frame) {
  return frame.objects.map((object) => ({ ...object, key: object.id }));
}

async function propagate() {
  $("propagate").disabled = true;
  setStatus("Propagating…");
  const response = await api(`/v1/videos/${state.id}/propagate`);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", done = 0;
  for (;;) {
    const { value, done: ended } = await reader.read();
    if (ended) break;
    buffer += decoder.decode(value, { stream: true });
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = JSON.parse(buffer.slice(0, newline));
      buffer = buffer.slice(newline + 1);
      if (line.error) throw new Error(line.error);
      if (line.done) continue;
      state.frames.set(line.frame_index, framedObjects(line));
      done += 1;
      $("progress").value = done / state.numFrames;
      if (line.frame_index === state.frame) { draw(); listInstances(); }
    }
  }
  $("propagate").disabled = false;
  $("download-json").disabled = false;
  setStatus(`Tracked ${done} frame(s).`);
}

async function showFrame(index) {
  state.frame = index;
  $("frame-number").textContent = index;
  const response = await api(`/v1/videos/${state.id}/frames/${index}`);
  state.picture = await createImageBitmap(await response.blob());
  draw();
  listInstances();
}

async function openFile(file) {
  const isVideo = file.type.startsWith("video/");
  const form = new FormData();
  form.append("file", file);
  setStatus(`Uploading ${file.name}…`);
  if (state.kind === "video" && state.id) fetch(`/v1/videos/${state.id}`, { method: "DELETE" });
  const response = await api(isVideo ? "/v1/videos" : "/v1/images", { method: "POST", body: form });
  const info = await response.json();
  Object.assign(state, {
    kind: isVideo ? "video" : "image", id: isVideo ? info.video_id : info.image_id, name: file.name,
    width: info.width, height: info.height, numFrames: info.num_frames || 1, frame: 0, boxes: [], points: [],
    instances: [], frames: new Map(), nextObject: 1,
  });
  state.hidden.clear();
  view.width = info.width;
  view.height = info.height;
  $("video-controls").hidden = !isVideo;
  $("download-overlay").disabled = false;
  $("download-json").disabled = true;
  if (isVideo) {
    $("scrubber").max = info.num_frames - 1;
    $("scrubber").value = 0;
    await showFrame(0);
  } else {
    state.picture = await createImageBitmap(file);
    draw();
    listInstances();
  }
  setStatus(isVideo ? `${info.num_frames} frames. Type a phrase or click an object on a frame.` : "Type a phrase, draw a box or click.");
}

function save(blob, name) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = name;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

async function downloadJson() {
  if (state.kind === "video") {
    save(await (await api(`/v1/videos/${state.id}/results`)).blob(), `${state.name}.ytvis.json`);
    return;
  }
  const body = { ...promptBody(), format: "coco" };
  const response = await api(`/v1/images/${state.id}/segment`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
  });
  save(await response.blob(), `${state.name}.coco.json`);
}

function run(task) {
  return (...args) => task(...args).catch((error) => setStatus(error.message, true));
}

function changed() {
  draw();
  if (state.kind === "image") return segmentImage();
  return Promise.resolve();
}

view.addEventListener("mousedown", (event) => {
  if (!state.picture || tool().kind !== "box") return;
  const [x, y] = canvasPoint(event);
  state.drag = { start: [x, y], xyxy: [x, y, x, y], label: tool().label };
});
view.addEventListener("mousemove", (event) => {
  if (!state.drag) return;
  const [x, y] = canvasPoint(event);
  const [sx, sy] = state.drag.start;
  state.drag.xyxy = [Math.min(sx, x), Math.min(sy, y), Math.max(sx, x), Math.max(sy, y)];
  draw();
});
view.addEventListener("mouseup", run(async () => {
  const box = state.drag;
  state.drag = null;
  if (!box) return;
  const [x1, y1, x2, y2] = box.xyxy;
  if (x2 - x1 < 2 || y2 - y1 < 2) { draw(); return; }  // a click, not a box
  state.boxes.push({ xyxy: box.xyxy.map(Math.round), label: box.label });
  await changed();
}));
view.addEventListener("click", run(async (event) => {
  if (!state.picture || tool().kind !== "point") return;
  state.points.push({ xy: canvasPoint(event).map(Math.round), label: tool().label });
  await changed();
}));
$("phrase-form").addEventListener("submit", run(async (event) => {
  event.preventDefault();
  if (!state.id) { setStatus("Open an image first."); return; }
  await (state.kind === "video" ? promptVideo() : segmentImage());
}));
$("clear").addEventListener("click", () => { state.boxes = []; state.points = []; draw(); });
$("threshold").addEventListener("input", () => { $("threshold-value").textContent = Number($("threshold").value).toFixed(2); });
$("threshold").addEventListener("change", run(async () => { if (state.kind === "image") await changed(); }));
$("file").addEventListener("change", run(async () => { if ($("file").files[0]) await openFile($("file").files[0]); }));
$("scrubber").addEventListener("input", run(async () => showFrame(Number($("scrubber").value))));
$("propagate").addEventListener("click", run(async () => { try { await propagate(); } finally { $("propagate").disabled = false; } }));
$("download-json").addEventListener("click", run(downloadJson));
$("download-overlay").addEventListener("click", () => view.toBlob((blob) => save(blob, `${state.name}.overlay.png`)));

run(async () => {
  const model = await (await api("/v1/model")).json();
  const video = model.prompts.video ? "images and videos" : "images (this model has no tracker: no video)";
  $("model-info").textContent = `${model.name}, ${model.input_size} px input, ${video}`;
})();
