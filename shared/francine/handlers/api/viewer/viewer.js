// The Francine viewer: a page of the api, no library, no outside address.
// The API key lives in this page's memory and in sessionStorage (this tab only),
// and travels only in the Authorization header: never in a URL.
"use strict";

const $ = (id) => document.getElementById(id);
const FINAL = ["done", "failed", "cancelled"];
const KEY_ITEM = "francine.key";
const EXTENSIONS = { png: "png", jpeg: "jpg", exr: "exr" };
const MEDIA_EXTENSIONS = { "image/png": "png", "image/jpeg": "jpg", "image/x-exr": "exr" };
// Larger files go through an upload session (Cloud Run caps a request at 32 MiB).
const ONE_REQUEST_BYTES = 32 << 20;

const state = {
  key: null,
  session: null,       // the session object of the API
  base: null,          // its scene when opened: orbit and zoom apply to it
  orbit: { yaw: 0, pitch: 0, zoom: 0 },
  jobs: new Map(),     // execution id -> its latest status, for the jobs list
  execution: null,     // id of the execution shown and watched (the selected job)
  stream: null,        // AbortController of its event stream
  done: -1,            // tasks done at the last preview request
  hold: 0,             // keep the image shown until the job's preview holds this many
                       // passes in every region (0: show every preview)
  preview: { busy: false, again: false },
  moveStarted: null,   // performance.now() of the camera move being rendered
  files: [],           // [{path, file}] of the dropped .blend folder
};

// Figures the browser test and anyone curious can read.
window.francine = { moves: [], previews: 0, lastStatus: null, swaps: [], held: 0,
                    errorMs: 8000, infoMs: 5000 };

// --- messages ------------------------------------------------------------------------
// An error stays until the next action that succeeds, or errorMs, whichever is first.
let messageTimer = null;

function say(text, isError = false) {
  const m = $("message");
  clearTimeout(messageTimer);
  m.textContent = "";
  m.className = isError ? "error" : "";
  m.setAttribute("role", isError ? "alert" : "status");
  if (!text) return;
  const span = document.createElement("span");
  span.textContent = text;
  const close = document.createElement("button");
  close.type = "button";
  close.className = "small";
  close.textContent = "×";
  close.title = "Dismiss";
  close.setAttribute("aria-label", "Dismiss");
  close.addEventListener("click", () => say(""));
  span.appendChild(close);
  m.appendChild(span);
  const ms = isError ? window.francine.errorMs : window.francine.infoMs;
  messageTimer = setTimeout(() => say(""), ms);
}

function fail(e) {
  if (e && e.name === "AbortError") return;
  say((e && e.message) || String(e), true);
}

// An action the user asked for went well: the error of an earlier one goes away.
function succeeded(text) {
  if (text) say(text);
  else if ($("message").classList.contains("error")) say("");
}

// --- the api ---------------------------------------------------------------------------
async function api(method, path, body, opts = {}) {
  const headers = { Authorization: "Bearer " + state.key };
  const init = { method, headers, cache: "no-store" };
  if (opts.signal) init.signal = opts.signal;
  if (body instanceof Blob) {
    headers["Content-Type"] = "application/octet-stream";
    init.body = body;
  } else if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  // A redirect to another origin (a signed URL of a large result) is followed without
  // the Authorization header: fetch drops it when a redirect leaves the origin.
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    if (e.name === "AbortError") throw e;
    throw new Error(`cannot reach ${path.split("?")[0]}: ${e.message}`);
  }
  if (!resp.ok) {
    let message = `${resp.status} ${resp.statusText}`;
    let code = null;
    try {
      const err = (await resp.json()).error;
      message = err.message;
      code = err.code;
    } catch (e) { /* not JSON */ }
    const err = new Error(message);
    err.status = resp.status;
    err.code = code;
    throw err;
  }
  return resp;
}

const jobPath = (eid) => `/v1/sessions/${state.session.id}/executions/${eid}`;
// A resource name in a URL path: each segment percent-encoded, the "/" kept.
const resourcePath = (name) => name.split("/").map(encodeURIComponent).join("/");

// A file the api may serve itself or redirect to storage (large results, videos).
async function fetchBlob(path) {
  try {
    return await (await api("GET", path)).blob();
  } catch (e) {
    if (e.status) throw e;
    // No answer at all: a redirect to storage that does not let this page read it?
    let probe = null;
    try {
      probe = await fetch(path, { headers: { Authorization: "Bearer " + state.key },
                                  redirect: "manual", cache: "no-store" });
    } catch (ignored) { /* the same failure */ }
    if (probe && probe.type === "opaqueredirect") {
      throw new Error("this file is too large for the api and is served by the storage, " +
                      "which does not let this page read it (no CORS for this origin)");
    }
    throw e;
  }
}

// --- formatting ------------------------------------------------------------------------
function seconds(v) {
  if (v == null) return "–";
  if (v < 60) return `${v.toFixed(v < 10 ? 2 : 1)} s`;
  const m = Math.floor(v / 60);
  if (m < 60) return `${m} min ${String(Math.round(v % 60)).padStart(2, "0")} s`;
  return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")} min`;
}
const cpu = (v) => (v == null ? "–" : `${v.toFixed(2)} cpu s`);
// The sample passes a job's image holds (an api without "passes": the passes asked for),
// and the estimated relative standard error of that image, when the api knows it.
const passesOf = (s) => s.passes ?? s.parallel;
const noise = (s) => (s.noise == null ? null : `noise ${(s.noise * 100).toFixed(1)}%`);
const passesText = (s) => [`${passesOf(s)} pass${passesOf(s) > 1 ? "es" : ""}`, noise(s)]
  .filter(Boolean).join(" · ");
// A finished image, not an animation, can take more passes (POST ...:extend).
const refinable = (s) => !!(s && s.status === "done" && !s.frames);
const STOPPED = { noise: "noise target met", max_passes: "at max passes",
                  budget: "at the budget" };

function when(t, withDate = false) {
  if (!t) return "–";
  const d = new Date(t);
  const time = d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit",
                                         hour12: false });
  const today = new Date().toDateString() === d.toDateString();
  return today && !withDate ? time : `${d.toLocaleDateString()} ${time}`;
}

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1 << 20) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1 << 30) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  return `${(n / (1 << 30)).toFixed(2)} GiB`;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text != null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function badge(status) {
  return el("span", status, `badge ${status}`);
}

// --- the key ---------------------------------------------------------------------------
async function useKey(key) {
  state.key = key;
  try {
    await loadSessions();
  } catch (e) {
    state.key = null;
    sessionStorage.removeItem(KEY_ITEM);
    say(e.status === 401 ? "unknown API key" : "cannot reach the api: " + e.message, true);
    return;
  }
  sessionStorage.setItem(KEY_ITEM, key);
  $("key").value = "";
  $("key-form").classList.add("hidden");
  $("key-forget").classList.remove("hidden");
  $("app").classList.remove("hidden");
  layout();
  succeeded();
}

$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const key = $("key").value.trim();
  if (key) useKey(key);
});

$("key-forget").addEventListener("click", () => {
  stopWatching();
  state.key = null;
  state.session = null;
  sessionStorage.removeItem(KEY_ITEM);
  clearImage("No image yet: choose a session and press Render.");
  $("app").classList.add("hidden");
  $("key-form").classList.remove("hidden");
  $("key-forget").classList.add("hidden");
});

// --- sessions --------------------------------------------------------------------------
function sessionLabel(s) {
  const sc = s.scene || {};
  const what = s.producer === "blender" ? `blender ${sc.blend || ""}` : s.producer;
  const size = sc.width && sc.height ? ` ${sc.width}×${sc.height}` : "";
  return `${what}${size} · ${when(s.created)} · #${s.id.slice(0, 4)}`;
}

async function loadSessions(select) {
  const { sessions } = await (await api("GET", "/v1/sessions")).json();
  sessions.sort((a, b) => (b.created || "").localeCompare(a.created || ""));
  const list = $("sessions");
  list.textContent = "";
  for (const s of sessions) {
    const o = el("option", sessionLabel(s));
    o.value = s.id;
    o.title = `session ${s.id}`;
    list.appendChild(o);
  }
  if (!sessions.length) {
    const o = el("option", "no session yet: create one below");
    o.value = "";
    o.disabled = true;
    list.appendChild(o);
  }
  const ids = sessions.map((s) => s.id);
  const current = state.session && state.session.id;
  const chosen = [select, current].find((id) => id && ids.includes(id)) || ids[0] || null;
  if (!chosen) {
    forgetSession();
    return;
  }
  list.value = chosen;
  if (chosen !== current || select) await openSession(chosen);
  else await loadJobs();
}

function forgetSession() {
  stopWatching();
  state.session = null;
  state.jobs = new Map();
  renderJobs();
  showJob(null);
  $("session-info").textContent = "";
  clearImage("No session yet: create one on the left.");
}

async function openSession(sid) {
  stopWatching();
  const session = await (await api("GET", `/v1/sessions/${sid}`)).json();
  state.session = session;
  state.base = JSON.parse(JSON.stringify(session.scene));
  state.orbit = { yaw: 0, pitch: 0, zoom: 0 };
  $("sessions").value = sid;
  const files = session.resources.length;
  $("session-info").textContent = `${session.producer} · ${session.format}` +
    (session.scene.blend ? ` · ${session.scene.blend}` : "") +
    (files ? ` · ${files} file${files > 1 ? "s" : ""}` : "") + ` · id ${session.id}`;
  state.jobs = new Map();
  showJob(null);
  clearImage("No image yet in this session: press Render.");
  await loadJobs();
  // The newest job of the session, as it stands (its final image once it is done).
  const newest = sortedJobs()[0];
  if (newest) selectJob(newest.id);
}

$("sessions").addEventListener("change", () => openSession($("sessions").value)
  .then(() => succeeded(), fail));
$("refresh").addEventListener("click", () => loadSessions().then(() => succeeded(), fail));

// --- a new session ---------------------------------------------------------------------
function newSessionForm() {
  const blender = $("producer").value === "blender";
  $("blend-box").classList.toggle("hidden", !blender);
  $("size-row").classList.toggle("hidden", blender);
  const blends = state.files.filter((f) => /\.blend$/i.test(f.path));
  const ready = !blender || blends.length > 0;
  $("create").disabled = !ready;
  $("create-hint").textContent = ready ? "" :
    (state.files.length ? "no .blend in these files" : "drop or choose the .blend's folder first");
}
$("producer").addEventListener("change", newSessionForm);

// Files that are no part of a scene: the system's, hidden ones, Blender's backups.
const JUNK = /(^|\/)(\.[^/]*|Thumbs\.db|desktop\.ini)$|(^|\/)\.[^/]*\/|\.blend\d+$/i;

function setFiles(files) {
  const kept = files.filter((f) => !JUNK.test(f.path));
  const skipped = files.length - kept.length;
  kept.sort((a, b) => a.path.localeCompare(b.path));
  state.files = kept;
  const blends = kept.filter((f) => /\.blend$/i.test(f.path))
    .sort((a, b) => a.path.split("/").length - b.path.split("/").length ||
                    a.path.localeCompare(b.path));
  const choice = $("blend-choice");
  choice.textContent = "";
  for (const b of blends) {
    const o = el("option", b.path);
    o.value = b.path;
    choice.appendChild(o);
  }
  $("blend-choice-row").classList.toggle("hidden", blends.length < 2);
  const info = $("files-info");
  info.textContent = "";
  if (kept.length) {
    const total = kept.reduce((n, f) => n + f.file.size, 0);
    info.appendChild(el("div", `${kept.length} file${kept.length > 1 ? "s" : ""}, ` +
      `${bytes(total)}` + (skipped ? ` (${skipped} hidden or backup skipped)` : "")));
    const ul = el("ul");
    for (const f of kept.slice(0, 200)) ul.appendChild(el("li", f.path, "mono"));
    info.appendChild(ul);
  }
  newSessionForm();
}

$("choose-folder").addEventListener("click", () => $("folder").click());
// <input type=file webkitdirectory>: webkitRelativePath starts with the folder's name.
$("folder").addEventListener("change", (ev) => {
  const files = [...ev.target.files].map((file) => {
    const rel = file.webkitRelativePath || file.name;
    const cut = rel.indexOf("/");
    return { path: cut >= 0 ? rel.slice(cut + 1) : rel, file };
  });
  setFiles(files);
});

// A folder dropped: walk it (DataTransferItem.webkitGetAsEntry); paths relative to it.
function readEntries(reader) {
  return new Promise((resolve, reject) => reader.readEntries(resolve, reject));
}
async function walk(entry, prefix, out) {
  if (entry.isFile) {
    out.push({ path: prefix + entry.name,
               file: await new Promise((resolve, reject) => entry.file(resolve, reject)) });
    return;
  }
  const reader = entry.createReader();
  for (;;) {
    const batch = await readEntries(reader);
    if (!batch.length) break;
    for (const e of batch) await walk(e, e.isDirectory ? `${prefix}${e.name}/` : prefix, out);
  }
}

const drop = $("drop");
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (ev) => {
    ev.preventDefault();
    drop.classList.add("over");
  });
}
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", async (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  const items = [...(ev.dataTransfer.items || [])];
  const entries = items.map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry() : null))
    .filter(Boolean);
  try {
    const out = [];
    if (entries.length === 1 && entries[0].isDirectory) {
      await walk(entries[0], "", out);  // the folder itself: paths inside it
    } else if (entries.length) {
      for (const e of entries) await walk(e, e.isDirectory ? `${e.name}/` : "", out);
    } else {
      for (const file of ev.dataTransfer.files) out.push({ path: file.name, file });
    }
    setFiles(out);
    $("producer").value = "blender";
    newSessionForm();
  } catch (e) {
    fail(new Error(`cannot read the dropped files: ${e.message || e}`));
  }
});
// A drop beside the zone must not open the file in the tab.
for (const type of ["dragover", "drop"]) {
  window.addEventListener(type, (ev) => {
    if (!drop.contains(ev.target)) ev.preventDefault();
  });
}

function uploadProgress(text, fraction) {
  $("upload").classList.toggle("hidden", text == null);
  $("upload-text").textContent = text || "";
  $("upload-bar").firstElementChild.style.width = `${(fraction || 0) * 100}%`;
}

async function sha256Hex(file) {
  if (!(window.crypto && crypto.subtle)) {
    throw new Error("files over one request need an upload session, which needs " +
                    "this page on https (to hash the file)");
  }
  const digest = await crypto.subtle.digest("SHA-256", await file.arrayBuffer());
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

// A file too large for one request: an upload session; the bytes go to its URL, which
// is its own credential (no key sent there), and the api checks them at "finish".
async function uploadSession(sid, name, file) {
  const declared = { name, size: file.size, sha256: await sha256Hex(file) };
  const up = await (await api("POST", `/v1/sessions/${sid}/uploads`, declared)).json();
  if (!String(up.finish || "").startsWith("/v1/")) throw new Error("odd upload session answer");
  const put = await fetch(up.upload_url, { method: up.method || "PUT", body: file,
    headers: { "Content-Type": "application/octet-stream" } });
  if (!put.ok) throw new Error(`the storage answered ${put.status} to the upload`);
  await api("POST", up.finish, declared);
}

async function putResource(sid, name, file) {
  if (file.size > ONE_REQUEST_BYTES) return uploadSession(sid, name, file);
  try {
    await api("PUT", `/v1/sessions/${sid}/resources/${resourcePath(name)}`, file);
  } catch (e) {
    if (e.status !== 413 || e.code === "quota_exceeded") throw e;
    await uploadSession(sid, name, file);  // over this api's request limit
  }
}

// A blender session: the .blend first (an unreadable one is refused before the rest
// travels), then every other file under its path in the folder. If anything fails the
// session is deleted again: no session the page cannot render.
async function createBlenderSession(format) {
  const blend = $("blend-choice").value;
  const body = { producer: "blender", format, scene: { blend } };
  const s = await (await api("POST", "/v1/sessions", body)).json();
  const files = [...state.files].sort((a, b) => (b.path === blend) - (a.path === blend));
  const total = files.reduce((n, f) => n + f.file.size, 0) || 1;
  let sent = 0;
  try {
    for (const [i, f] of files.entries()) {
      uploadProgress(`uploading ${i + 1}/${files.length}: ${f.path}`, sent / total);
      try {
        await putResource(s.id, f.path, f.file);
      } catch (e) {
        throw new Error(`${f.path}: ${e.message}`);
      }
      sent += f.file.size;
    }
  } catch (e) {
    uploadProgress(null);
    await api("DELETE", `/v1/sessions/${s.id}`).catch(() => {});
    throw e;
  }
  uploadProgress(null);
  return [s, files.length];
}

$("create").addEventListener("click", async () => {
  const producer = $("producer").value;
  const format = $("format").value;
  const button = $("create");
  button.disabled = true;
  try {
    let s, text;
    if (producer === "blender") {
      const [session, n] = await createBlenderSession(format);
      s = session;
      text = `blender session ready: ${n} file${n > 1 ? "s" : ""} uploaded; press Render`;
    } else {
      const scene = { width: Number($("width").value), height: Number($("height").value) };
      s = await (await api("POST", "/v1/sessions", { producer, format, scene })).json();
      text = `new ${producer} session: press Render`;
    }
    await loadSessions(s.id);
    succeeded(text);
  } catch (e) {
    fail(e);
  } finally {
    newSessionForm();
  }
});

// --- the camera ------------------------------------------------------------------------
function rotate(v, yaw, pitch) {
  // yaw about +y, then pitch about +x
  const [x, y, z] = v;
  const cy = Math.cos(yaw), sy = Math.sin(yaw), cp = Math.cos(pitch), sp = Math.sin(pitch);
  const x1 = cy * x + sy * z, z1 = -sy * x + cy * z;
  return [x1, cp * y - sp * z1, sp * y + cp * z1];
}
const add = (a, b) => a.map((v, i) => v + b[i]);
const sub = (a, b) => a.map((v, i) => v - b[i]);
const round = (v) => v.map((x) => Math.round(x * 1e5) / 1e5);
function norm(v) { const l = Math.hypot(...v); return v.map((x) => x / l); }
function cross(a, b) {
  return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
}

// The scene update of the current orbit and zoom, per producer.
function cameraUpdate() {
  const { yaw, pitch, zoom } = state.orbit;
  const base = state.base;
  const producer = state.session.producer;
  if (producer === "ao") {
    // aobench's camera is fixed at the origin: moving the camera is moving the world
    // the other way, about the middle of the three spheres.
    // Dragging down lifts the camera; it stops just above the floor.
    const pivot = [-0.5, 0, -3];
    const lift = Math.max(-0.15, pitch);
    const move = (p) => round(add(rotate(sub(p, pivot), -yaw, lift), add(pivot, [0, 0, zoom])));
    return {
      spheres: base.spheres.map((s) => ({ center: move(s.center), radius: s.radius })),
      plane: { point: move(base.plane.point),
               normal: round(rotate(base.plane.normal, -yaw, lift)) },
    };
  }
  if (producer === "pathtracer") {
    const cam = base.camera;
    const offset = rotate(sub(cam.position, cam.look_at), yaw, pitch)
      .map((x) => x * Math.exp(-zoom * 0.5));
    return { camera: { position: round(add(cam.look_at, offset)) } };
  }
  // blender: a world matrix for the scene's camera, orbiting the origin (z is up).
  const start = base.camera_matrix ? [base.camera_matrix[0][3], base.camera_matrix[1][3],
    base.camera_matrix[2][3]] : [7.36, -6.93, 4.96];
  const yz = [start[0], start[2], -start[1]];  // to a y-up frame for rotate()
  const r = rotate(yz, yaw, pitch).map((x) => x * Math.exp(-zoom * 0.5));
  const eye = [r[0], -r[2], r[1]];
  const f = norm(sub([0, 0, 0], eye));
  const right = norm(cross(f, [0, 0, 1]));
  const up = cross(right, f);
  return { camera_matrix: [
    [right[0], up[0], -f[0], eye[0]], [right[1], up[1], -f[1], eye[1]],
    [right[2], up[2], -f[2], eye[2]], [0, 0, 0, 1]].map(round) };
}

const frame = $("frame");
const stage = $("stage");
let drag = null;
frame.addEventListener("pointerdown", (ev) => {
  if (ev.button !== 0) return;
  drag = { x: ev.clientX, y: ev.clientY, yaw: state.orbit.yaw, pitch: state.orbit.pitch };
  frame.setPointerCapture(ev.pointerId);
  frame.classList.add("dragging");
});
frame.addEventListener("pointermove", (ev) => {
  if (!drag) return;
  state.orbit.yaw = drag.yaw + (ev.clientX - drag.x) * 0.005;
  state.orbit.pitch = Math.max(-1.2, Math.min(1.2, drag.pitch + (ev.clientY - drag.y) * 0.005));
});
frame.addEventListener("pointerup", (ev) => {
  if (!drag) return;
  const moved = Math.abs(ev.clientX - drag.x) + Math.abs(ev.clientY - drag.y) > 2;
  drag = null;
  frame.classList.remove("dragging");
  if (moved && state.session) move();
});
frame.addEventListener("pointercancel", () => {
  drag = null;
  frame.classList.remove("dragging");
});
// The wheel moves the camera; with Ctrl (or a pinch) it scales the picture only.
let wheelTimer = null;
stage.addEventListener("wheel", (ev) => {
  if (ev.ctrlKey) {
    ev.preventDefault();
    zoomBy(ev.deltaY < 0 ? 1.15 : 1 / 1.15);
    return;
  }
  if (ev.target !== frame || !state.session) return;
  ev.preventDefault();
  state.orbit.zoom += ev.deltaY < 0 ? 0.25 : -0.25;
  clearTimeout(wheelTimer);
  wheelTimer = setTimeout(() => state.session && move(), 150);
}, { passive: false });

// Moves are rendered one request at a time; moves made meanwhile become one more render.
let posting = false, moveQueued = false;
async function move() {
  state.moveStarted = performance.now();
  if (posting) { moveQueued = true; return; }
  posting = true;
  try {
    do {
      moveQueued = false;
      await render(cameraUpdate(), true);
    } while (moveQueued);
  } catch (e) {
    fail(e);
  } finally {
    posting = false;
  }
}

// --- the picture: true aspect ratio, fitted or scaled --------------------------------
// w, h: the size of the image shown, known once it is decoded (before it is swapped in).
const view = { fit: true, scale: 1, current: 1, w: 0, h: 0 };

function layout() {
  const { w, h } = view;
  if (!w || !h || frame.classList.contains("hidden")) {
    $("zoom-level").textContent = "fit";
    return;
  }
  const room = { w: stage.clientWidth - 16, h: stage.clientHeight - 16 };
  const fit = Math.max(0.01, Math.min(room.w / w, room.h / h));
  const scale = view.fit ? fit : view.scale;
  view.current = scale;
  frame.style.width = `${w * scale}px`;
  frame.style.height = `${h * scale}px`;
  frame.classList.toggle("pixelated", scale >= 2);
  $("zoom-level").textContent = `${Math.round(scale * 100)}%`;
  $("zoom-fit").classList.toggle("primary", view.fit);
}

function zoomTo(scale) {
  const cx = (stage.scrollLeft + stage.clientWidth / 2) / Math.max(1, stage.scrollWidth);
  const cy = (stage.scrollTop + stage.clientHeight / 2) / Math.max(1, stage.scrollHeight);
  view.fit = false;
  view.scale = Math.max(0.05, Math.min(32, scale));
  layout();
  stage.scrollLeft = cx * stage.scrollWidth - stage.clientWidth / 2;
  stage.scrollTop = cy * stage.scrollHeight - stage.clientHeight / 2;
}
const zoomBy = (f) => zoomTo(view.current * f);

$("zoom-in").addEventListener("click", () => zoomBy(1.25));
$("zoom-out").addEventListener("click", () => zoomBy(1 / 1.25));
$("zoom-1").addEventListener("click", () => zoomTo(1));
$("zoom-fit").addEventListener("click", () => { view.fit = true; layout(); });
frame.addEventListener("dblclick", () => {
  if (view.fit) zoomTo(1);
  else { view.fit = true; layout(); }
});
new ResizeObserver(() => layout()).observe(stage);

// The image shown changes only once the next one is decoded: never a blank in between.
let shownUrl = null;
const retired = [];
frame.addEventListener("load", () => {
  layout();
  while (retired.length) URL.revokeObjectURL(retired.pop());
});

async function showBlob(blob, meta, stillWanted) {
  const url = URL.createObjectURL(blob);
  const next = new Image();
  next.src = url;
  try {
    await next.decode();
  } catch (e) {
    URL.revokeObjectURL(url);
    throw new Error(`the image of job ${meta.execution} could not be decoded`);
  }
  if (!stillWanted()) {
    URL.revokeObjectURL(url);
    return false;
  }
  if (shownUrl) retired.push(shownUrl);
  shownUrl = url;
  view.w = next.naturalWidth;
  view.h = next.naturalHeight;
  frame.src = url;
  frame.dataset.execution = meta.execution;
  frame.dataset.passes = meta.passes == null ? "" : meta.passes;
  frame.dataset.final = meta.final ? "1" : "0";
  frame.dataset.frame = meta.frame == null ? "" : meta.frame;
  frame.classList.remove("hidden");
  $("placeholder").classList.add("hidden");
  layout();
  window.francine.swaps.push({ execution: meta.execution, passes: meta.passes,
                               final: meta.final, frame: meta.frame });
  return true;
}

function clearImage(text) {
  if (shownUrl) retired.push(shownUrl);
  shownUrl = null;
  view.w = view.h = 0;
  frame.removeAttribute("src");
  for (const k of ["execution", "passes", "final", "frame"]) delete frame.dataset[k];
  frame.classList.add("hidden");
  const p = $("placeholder");
  p.textContent = text;
  p.classList.remove("hidden");
  while (retired.length) URL.revokeObjectURL(retired.pop());
  layout();
}

// --- rendering -------------------------------------------------------------------------
async function render(update, fromMove = false) {
  const sid = state.session.id;
  const previous = state.execution;
  const body = { parallel: Number($("parallel").value) };
  const tile = Number($("tile").value);
  if (tile) body.tile = tile;
  if (update) body.update = update;
  // Asked first: a refused render leaves the job shown as it is.
  const ex = await (await api("POST", `/v1/sessions/${sid}/executions`, body)).json();
  if (!state.session || state.session.id !== sid) return;
  const before = state.jobs.get(previous);
  if (fromMove && previous && !(before && FINAL.includes(before.status))) {
    // A move while a render runs: that render is no longer wanted.
    api("POST", `${jobPath(previous)}:cancel`)
      .then(async (resp) => { noteJob(sid, await resp.json()); }).catch(() => {});
  }
  follow(ex, 1);
}

// A job this page just started (a render, a refine) becomes the job shown and watched;
// the image shown stays until the job's preview holds ``passes`` in every region.
function follow(ex, passes) {
  state.jobs.set(ex.id, ex);
  if (ex.id === state.execution) stopWatching();  // the same job again: watch it anew
  selectJob(ex.id, { hold: shownUrl !== null ? passes : 0 });
  succeeded();
}

$("render").addEventListener("click", () => {
  if (!state.session) { say("create or choose a session first", true); return; }
  state.moveStarted = performance.now();
  render(null).catch(fail);
});

// --- refine: as many passes again into a finished image ------------------------------
$("refine").addEventListener("click", async () => {
  const sid = state.session && state.session.id;
  const eid = state.execution;
  const s = state.jobs.get(eid);
  if (!refinable(s)) return;
  const button = $("refine");
  button.disabled = true;
  try {
    const passes = passesOf(s);
    const ex = await (await api("POST", `${jobPath(eid)}:extend`, { passes })).json();
    if (!state.session || state.session.id !== sid) return;
    follow(ex, passes + 1);  // the image shown until a preview holds more passes
  } catch (e) {
    fail(e);
    button.disabled = !refinable(state.jobs.get(state.execution));
  }
});

$("cancel").addEventListener("click", () => {
  if (!state.execution) { say("no job chosen", true); return; }
  api("POST", `${jobPath(state.execution)}:cancel`)
    .then(async (resp) => { onStatus(state.session.id, await resp.json()); succeeded(); }, fail);
});

// --- jobs ------------------------------------------------------------------------------
const sortedJobs = () => [...state.jobs.values()].sort(
  (a, b) => (b.time.created || "").localeCompare(a.time.created || ""));

async function loadJobs() {
  const sid = state.session.id;
  const { executions } = await (await api("GET", `/v1/sessions/${sid}/executions`)).json();
  if (!state.session || state.session.id !== sid) return;
  for (const s of executions) {
    const known = state.jobs.get(s.id);
    // the watched job's status may be newer than the list
    if (!(known && s.id === state.execution && FINAL.includes(known.status))) state.jobs.set(s.id, s);
  }
  renderJobs();
}

// A job's status that came by the way (a cancel's answer): the list shows it.
function noteJob(sid, s) {
  if (!state.session || state.session.id !== sid || s.id === state.execution) return;
  state.jobs.set(s.id, s);
  renderJobs();
}

// Jobs that run unwatched (the one shown has its event stream) are read again now and
// then, until every one has ended.
let jobsTimer = null;
function pollJobs() {
  if (jobsTimer) return;
  const running = [...state.jobs.values()].some(
    (j) => j.id !== state.execution && !FINAL.includes(j.status));
  if (!running || !state.session) return;
  const sid = state.session.id;
  jobsTimer = setTimeout(() => {
    jobsTimer = null;
    if (state.session && state.session.id === sid) loadJobs().catch(() => pollJobs());
  }, 3000);
}

function renderJobs() {
  const tbody = $("jobs").tBodies[0];
  tbody.textContent = "";
  const jobs = sortedJobs();
  for (const j of jobs) {
    const tr = el("tr");
    tr.dataset.execution = j.id;
    tr.title = `job ${j.id}`;
    tr.tabIndex = 0;
    if (j.id === state.execution) tr.classList.add("selected");
    tr.appendChild(el("td", when(j.time.created)));
    const st = el("td");
    st.appendChild(badge(j.status));
    tr.appendChild(st);
    const pr = el("td", null, "nowrap");
    const mini = el("span", null, `mini ${j.status}`);
    const fill = el("div");
    fill.style.width = `${j.progress * 100}%`;
    mini.appendChild(fill);
    pr.appendChild(mini);
    pr.appendChild(document.createTextNode(`${Math.round(j.progress * 100)}%`));
    pr.appendChild(el("div", passesText(j), "hint"));
    tr.appendChild(pr);
    tr.appendChild(el("td", seconds(j.time.total), "num"));
    tr.appendChild(el("td", cpu(j.time.cpu), "num"));
    const f = j.frames;
    const fc = el("td", f ? `${f.done}/${f.total}` : "–", "num");
    if (f && f.failed) {
      fc.appendChild(el("span", ` ${f.failed}✗`, "bad"));
      fc.title = `${f.failed} frame${f.failed > 1 ? "s" : ""} failed`;
    }
    tr.appendChild(fc);
    tbody.appendChild(tr);
  }
  $("jobs-empty").classList.toggle("hidden", jobs.length > 0);
  pollJobs();
}

function jobRow(ev) {
  const tr = ev.target.closest("tr");
  return tr && tr.dataset.execution;
}
$("jobs").tBodies[0].addEventListener("click", (ev) => {
  const eid = jobRow(ev);
  if (eid) { selectJob(eid); succeeded(); }
});
$("jobs").tBodies[0].addEventListener("keydown", (ev) => {
  const eid = jobRow(ev);
  if (eid && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); selectJob(eid); }
});
$("jobs-refresh").addEventListener("click", () => {
  if (state.session) loadJobs().then(() => succeeded(), fail);
});

// Show a job: its image, its status as it changes, its tasks. ``hold``: keep the image
// shown until the job's preview holds that many passes in every region (a new render of
// the scene: 1; a refine: more than the image shown), or is final.
function selectJob(eid, { hold = 0 } = {}) {
  if (eid === state.execution && state.stream) return;
  stopWatching();
  state.hold = hold;
  state.done = -1;
  state.execution = eid;
  tasks.loaded = null;
  tasks.failures = -1;
  resetAnimation();
  const s = state.jobs.get(eid);
  showJob(s || null);
  renderJobs();
  clearTasks(s && !FINAL.includes(s.status) ? "No task has failed so far." : "Loading…");
  watch(eid);
}

function stopWatching() {
  if (state.stream) state.stream.abort();
  state.stream = null;
  state.execution = null;
  $("busy").classList.add("hidden");
}

// EventSource cannot send an Authorization header, and the key must stay out of URLs:
// read the text/event-stream with fetch and parse it here.
async function watch(eid) {
  const sid = state.session.id;
  const controller = new AbortController();
  state.execution = eid;
  state.stream = controller;
  try {
    const resp = await fetch(`/v1/sessions/${sid}/executions/${eid}/events`, {
      headers: { Authorization: "Bearer " + state.key }, signal: controller.signal,
      cache: "no-store" });
    if (!resp.ok) throw new Error(`events of job ${eid}: ${resp.status}`);
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data.push(line.slice(5).trim());
        }
        if (name === "status" && data.length) onStatus(sid, JSON.parse(data.join("\n")));
      }
    }
  } catch (e) {
    if (e.name !== "AbortError") fail(e);
    return;
  }
  // The stream ended without a final status (its time ran out): watch again.
  const last = state.jobs.get(eid);
  if (state.execution === eid && state.stream === controller &&
      !(last && FINAL.includes(last.status))) {
    setTimeout(() => { if (state.stream === controller) watch(eid); }, 300);
  }
}

function onStatus(sid, s) {
  if (!state.session || sid !== state.session.id) return;
  const was = state.jobs.get(s.id);
  state.jobs.set(s.id, s);
  renderJobs();
  if (s.id !== state.execution) return;
  window.francine.lastStatus = s;
  showJob(s);
  const final = FINAL.includes(s.status);
  if (s.tasks.done !== state.done || s.status === "done") {
    state.done = s.tasks.done;
    refreshPreview(sid, s.id);
  }
  const failures = (s.tasks.failed || 0) + (s.tasks.replaced || 0);
  if (tasks.loaded !== s.id || failures !== tasks.failures || (final && !FINAL.includes(
    was && was.status))) {
    tasks.failures = failures;
    loadTasks(sid, s.id);
  }
  onFrames(s);
}

// The job panel, the toolbar's status and the download button.
function showJob(s) {
  $("job-none").classList.toggle("hidden", !!s);
  $("job-detail").classList.toggle("hidden", !s);
  $("download").disabled = !(s && s.status === "done");
  $("refine").disabled = !refinable(s);
  $("busy").classList.toggle("hidden", !s || FINAL.includes(s.status));
  if (!s) {
    $("status").textContent = state.session ? "no job chosen" : "idle";
    $("bar").firstElementChild.style.width = "0";
    $("animation").classList.add("hidden");
    return;
  }
  const pct = `${(s.progress * 100).toFixed(0)}%`;
  $("status").textContent = `${s.status} ${pct} · tasks ${s.tasks.done}/${s.tasks.total}, ` +
    `${s.tasks.running} running` +
    (s.frames ? ` · frames ${s.frames.done}/${s.frames.total}` : "") +
    (s.error ? ` · ${s.error.message}` : "");
  $("bar").firstElementChild.style.width = `${s.progress * 100}%`;
  $("busy").textContent = `rendering… ${pct}`;
  const fields = $("job-fields");
  fields.textContent = "";
  const t = s.tasks;
  const rows = [
    ["Job", s.id],
    ["Status", badge(s.status)],
    ["Created", when(s.time.created, true)],
    ["Finished", when(s.time.finished, true)],
    ["Image", `${s.width}×${s.height} ${s.format}` + (s.tile ? `, tiles of ${s.tile} px` : "")],
    ["Passes", [passesText(s), s.waves > 1 ? `${s.waves} waves` : null,
                STOPPED[s.stopped] || s.stopped].filter(Boolean).join(" · ")],
    ["Tasks", `${t.done}/${t.total} done, ${t.running} running, ${t.failed} failed` +
      (t.retries || t.replaced ? ` · ${t.retries || 0} retried, ${t.replaced || 0} replaced` : "")],
    ["Time", seconds(s.time.total)],
    ["Cost", cpu(s.time.cpu)],
  ];
  if (s.frames) {
    rows.push(["Frames", `${s.frames.done}/${s.frames.total} done` +
      (s.frames.failed ? `, ${s.frames.failed} failed` : "")]);
  }
  for (const [k, v] of rows) {
    fields.appendChild(el("dt", k));
    const dd = el("dd");
    if (typeof v === "string") dd.textContent = v; else dd.appendChild(v);
    fields.appendChild(dd);
  }
  $("job-error").textContent = s.error ? `${s.error.code}: ${s.error.message}` : "";
  const tm = s.time;
  const f = (v) => (v == null ? "-" : `${v.toFixed(2)} s`);
  $("times").textContent = `total     ${f(tm.total)}\nfetching  ${f(tm.fetching)}\n` +
    `producing ${f(tm.producing)}\nreducing  ${f(tm.reducing)}\n` +
    `first task after      ${f(tm.first_task_after)}\n` +
    `image after last task ${f(tm.image_after_last_task)}`;
}

// --- tasks -----------------------------------------------------------------------------
// The tasks with a failed pass (?status=failed) first, then the first page of every
// task; ``where``: the frame and wave that page lists (a task's log is read from them).
const tasks = { loaded: null, failures: -1, busy: false, again: false, more: false,
                where: "" };

function clearTasks(note) {
  $("tasks").tBodies[0].textContent = "";
  $("tasks").classList.add("hidden");
  $("tasks-note").textContent = note || "";
}

async function loadTasks(sid, eid) {
  if (tasks.busy) { tasks.again = true; return; }
  tasks.busy = true;
  try {
    do {
      tasks.again = false;
      const base = `/v1/sessions/${sid}/executions/${eid}/tasks`;
      const failed = (await (await api("GET", `${base}?status=failed`)).json()).tasks;
      const page = await (await api("GET", base)).json();
      if (eid !== state.execution) return;
      tasks.loaded = eid;
      tasks.more = page.next != null;  // the first page only
      tasks.where = new URLSearchParams(
        { wave: page.wave, ...(page.frame == null ? {} : { frame: page.frame }) }).toString();
      const seen = new Set(failed.map((t) => t.node));
      showTasks(failed, page.tasks.filter((t) => !seen.has(t.node)));
    } while (tasks.again && eid === state.execution);
  } catch (e) {
    if (eid === state.execution) clearTasks(`cannot list the tasks: ${e.message}`);
  } finally {
    tasks.busy = false;
  }
}

function taskTime(t) {
  if (t.started && t.finished) {
    return seconds((new Date(t.finished) - new Date(t.started)) / 1000);
  }
  if (t.work_s != null) return seconds(t.work_s);
  return "–";
}

// A task's row opens (and closes) the lines its worker logged while it worked on it.
async function toggleTaskLog(tr) {
  const node = tr.dataset.node;
  const open = tr.parentNode.querySelector(`tr.task-log[data-node="${CSS.escape(node)}"]`);
  if (open) { open.remove(); tr.classList.remove("open"); return; }
  const row = el("tr", null, "task-log");
  row.dataset.node = node;
  const td = el("td");
  td.colSpan = 6;
  const pre = el("pre", "reading its log…", "log info");
  td.appendChild(pre);
  row.appendChild(td);
  let after = tr;  // below its error, if it has one
  while (after.nextElementSibling && !after.nextElementSibling.dataset.node) {
    after = after.nextElementSibling;
  }
  after.after(row);
  tr.classList.add("open");
  const eid = tasks.loaded;
  try {
    const path = `${jobPath(eid)}/tasks/${encodeURIComponent(node)}?${tasks.where}`;
    const t = await (await api("GET", path)).json();
    pre.textContent = t.log && t.log.length ? t.log.join("\n")
      : "nothing was logged for this task (it has not run yet, or ran before logs were kept)";
  } catch (e) {
    pre.textContent = `cannot read this task's log: ${e.message}`;
  }
}

function showTasks(failed, others) {
  const tbody = $("tasks").tBodies[0];
  tbody.textContent = "";
  for (const t of [...failed, ...others]) {
    const tr = el("tr");
    tr.dataset.node = t.node;
    tr.classList.add("clickable");
    tr.title = "show the lines its worker logged";
    tr.addEventListener("click", () => toggleTaskLog(tr));
    const name = el("td");
    name.appendChild(el("span", t.node, "mono"));
    if (t.kind) name.appendChild(el("span", ` ${t.kind}`, "hint"));
    tr.appendChild(name);
    const st = el("td");
    st.appendChild(badge(t.status));
    tr.appendChild(st);
    tr.appendChild(el("td", t.instance || "–", "mono"));
    tr.appendChild(el("td", when(t.started)));
    tr.appendChild(el("td", taskTime(t), "num"));
    const tc = el("td", `${t.attempts ?? "–"}`, "num");
    const failures = [];
    if (t.failures) failures.push(`${t.failures} failed`);
    if (t.replaced) failures.push(`${t.replaced} replaced`);
    if (failures.length) tc.appendChild(el("div", failures.join(" · "), "hint nowrap"));
    tc.title = "deliveries taken; failed passes; replacements with a fresh seed";
    tr.appendChild(tc);
    tbody.appendChild(tr);
    if (t.error) {
      const er = el("tr", null, "task-error");
      const td = el("td");
      td.colSpan = 6;
      td.appendChild(el("pre", t.error, "log"));
      er.appendChild(td);
      tbody.appendChild(er);
    }
  }
  $("tasks").classList.toggle("hidden", !failed.length && !others.length);
  let note = failed.length ? `${failed.length} task${failed.length > 1 ? "s" : ""} with a ` +
    "failed pass, first." : "No task of this job has failed.";
  note += ` ${tasks.more ? "The first " : ""}${others.length + failed.length} tasks` +
    `${tasks.more ? " are shown" : ""}; a click on one shows the lines its worker logged.`;
  $("tasks-note").textContent = note;
}

$("tasks-refresh").addEventListener("click", () => {
  if (state.execution) loadTasks(state.session.id, state.execution);
});

// --- the preview -----------------------------------------------------------------------
// One preview request at a time; a change while one is in flight asks for one more.
async function refreshPreview(sid, eid) {
  const p = state.preview;
  if (p.busy) { p.again = true; return; }
  p.busy = true;
  try {
    do {
      p.again = false;
      if (eid !== state.execution || anim.chosen != null) break;
      let resp;
      try {
        resp = await api("GET", `/v1/sessions/${sid}/executions/${eid}/preview`);
      } catch (e) {
        if (e.status !== 409) throw e;  // 409: nothing finished yet
        const s = state.jobs.get(eid);
        if (eid === state.execution && !state.hold) {
          clearImage(s && FINAL.includes(s.status) ? `Job ${s.status} without an image.`
            : "Rendering: the first image appears when a task finishes.");
        }
        continue;
      }
      if (eid !== state.execution) break;
      const passes = Number(resp.headers.get("X-Francine-Passes"));
      const final = resp.headers.get("X-Francine-Final") === "1";
      if (state.hold && !final && !(passes >= state.hold) && shownUrl) {
        window.francine.held += 1;  // regions black or fewer passes: keep the last image
        await resp.body.cancel();
        continue;
      }
      const blob = await resp.blob();
      const shown = await showBlob(blob, { execution: eid, passes, final },
        () => eid === state.execution && anim.chosen == null);
      if (!shown) break;
      state.hold = 0;
      window.francine.previews += 1;
      if (state.moveStarted !== null) {
        window.francine.moves.push(performance.now() - state.moveStarted);
        state.moveStarted = null;
      }
    } while (p.again);
  } catch (e) {
    fail(e);
  } finally {
    p.busy = false;
  }
}

// --- download --------------------------------------------------------------------------
$("download").addEventListener("click", async () => {
  const eid = state.execution;
  const s = state.jobs.get(eid);
  if (!s || s.status !== "done") return;
  const button = $("download");
  button.disabled = true;
  button.textContent = "Downloading…";
  try {
    const frameNo = anim.chosen;
    const blob = await fetchBlob(jobPath(eid) + "/result" +
                                 (frameNo != null ? `?frame=${frameNo}` : ""));
    const ext = MEDIA_EXTENSIONS[blob.type] || EXTENSIONS[s.format] || "bin";
    const name = `${state.session.id}-${eid}` +
      (frameNo != null ? `-${String(frameNo).padStart(4, "0")}` : "") + `.${ext}`;
    const url = URL.createObjectURL(blob);
    const a = el("a");
    a.href = url;
    a.download = name;
    a.classList.add("hidden");
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    succeeded(`saved ${name} (${bytes(blob.size)})`);
  } catch (e) {
    fail(e);
  } finally {
    button.textContent = "Download";
    const now = state.jobs.get(state.execution);
    button.disabled = !(now && now.status === "done");
  }
});

// --- animations: a slider over the finished frames, the preview video ---------------
const anim = { eid: null, frames: [], loadedDone: -1, chosen: null, video: null,
               videoFor: null, timer: null, busy: false, again: false };

function resetAnimation() {
  anim.eid = null;
  anim.frames = [];
  anim.loadedDone = -1;
  anim.chosen = null;
  anim.videoFor = null;
  const v = $("video");
  v.pause();
  v.removeAttribute("src");
  v.load();
  v.classList.add("hidden");
  if (anim.video) URL.revokeObjectURL(anim.video);
  anim.video = null;
  $("video-note").textContent = "";
  $("frame-label").textContent = "–";
  $("frame-slider").max = "0";
  $("animation").classList.add("hidden");
}

function onFrames(s) {
  const f = s.frames;
  if (!f || typeof f !== "object") {
    $("animation").classList.add("hidden");
    return;
  }
  $("animation").classList.remove("hidden");
  layout();
  anim.eid = s.id;
  if (f.done !== anim.loadedDone) {
    anim.loadedDone = f.done;
    loadFrames(s.id);
  }
  if (FINAL.includes(s.status) && f.done > 0 && anim.videoFor !== s.id) {
    anim.videoFor = s.id;
    loadVideo(s.id);
  }
}

// A frame as GET .../frames lists it: a number, or {frame, status, result}.
function frameOf(f) {
  if (typeof f === "number") return { frame: f, done: true, url: null };
  const n = f.frame ?? f.number;
  const link = f.result ?? f.url ?? null;
  const done = f.status ? f.status === "done" : true;
  // only a path of this api may receive the key
  const url = typeof link === "string" && link.startsWith("/v1/") ? link : null;
  return { frame: n, done, url };
}

async function loadFrames(eid) {
  if (anim.busy) { anim.again = true; return; }
  anim.busy = true;
  try {
    do {
      anim.again = false;
      const body = await (await api("GET", `${jobPath(eid)}/frames`)).json();
      if (eid !== state.execution) return;
      const list = (Array.isArray(body) ? body : body.frames || []).map(frameOf)
        .filter((f) => f.done && Number.isInteger(f.frame)).sort((a, b) => a.frame - b.frame);
      anim.frames = list;
      const slider = $("frame-slider");
      slider.max = String(Math.max(0, list.length - 1));
      slider.disabled = list.length === 0;
      const at = list.findIndex((f) => f.frame === anim.chosen);
      slider.value = String(at >= 0 ? at : Math.max(0, list.length - 1));
      frameLabel();
    } while (anim.again && eid === state.execution);
  } catch (e) {
    $("frame-label").textContent = e.status === 404 ? "no frame listing on this api" : e.message;
  } finally {
    anim.busy = false;
  }
}

function frameLabel() {
  const list = anim.frames;
  const s = state.jobs.get(state.execution);
  if (!list.length) { $("frame-label").textContent = "no finished frame yet"; return; }
  const i = Number($("frame-slider").value);
  const f = list[i];
  $("frame-label").textContent = `frame ${f.frame} · ${i + 1}/${list.length} finished` +
    (s && s.frames && s.frames.failed ? ` · ${s.frames.failed} failed` : "") +
    (anim.chosen == null ? " (preview shown)" : "");
}

async function showFrame(i) {
  const eid = state.execution;
  const f = anim.frames[i];
  if (!f) return;
  anim.chosen = f.frame;
  frameLabel();
  try {
    const blob = await fetchBlob(f.url || `${jobPath(eid)}/result?frame=${f.frame}`);
    await showBlob(blob, { execution: eid, final: true, frame: f.frame },
      () => eid === state.execution && anim.chosen === f.frame);
    succeeded();
  } catch (e) {
    fail(e);
  }
}

$("frame-slider").addEventListener("input", () => {
  clearTimeout(anim.timer);
  const i = Number($("frame-slider").value);
  anim.timer = setTimeout(() => showFrame(i), 120);
});

// The video is encoded when first asked for: a busy api may refuse or fail that
// request for a while, so a failure other than "no video" is tried again, a few times.
const VIDEO_TRIES = 4;

async function loadVideo(eid, tries = VIDEO_TRIES) {
  const note = $("video-note");
  note.textContent = "loading the preview video…";
  try {
    const blob = await fetchBlob(`${jobPath(eid)}/video`);
    if (eid !== state.execution) return;
    if (anim.video) URL.revokeObjectURL(anim.video);
    anim.video = URL.createObjectURL(blob.type ? blob : new Blob([blob], { type: "video/mp4" }));
    const v = $("video");
    v.src = anim.video;
    v.classList.remove("hidden");
    note.textContent = `preview video, ${bytes(blob.size)}`;
  } catch (e) {
    if (eid !== state.execution) return;
    if (e.status !== 404 && tries > 1) {
      note.textContent = `the preview video is not ready (${e.message}); trying again`;
      setTimeout(() => { if (eid === state.execution) loadVideo(eid, tries - 1); },
                 2000 * (VIDEO_TRIES - tries + 1));
      return;
    }
    note.textContent = e.status === 404 ? "no preview video for this job" :
      `no preview video: ${e.message}`;
  }
}

newSessionForm();
const saved = sessionStorage.getItem(KEY_ITEM);
if (saved) useKey(saved);
