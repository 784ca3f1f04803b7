// The Francine viewer: a page of the api, no library, no outside address.
// The API key lives in this page's memory and in sessionStorage (this tab only),
// and travels only in the Authorization header: never in a URL.
"use strict";

const $ = (id) => document.getElementById(id);
const FINAL = ["done", "failed", "cancelled"];
const KEY_ITEM = "francine.key";

const state = {
  key: null,
  session: null,       // the session object of the API
  base: null,          // its scene when opened: orbit and zoom apply to it
  orbit: { yaw: 0, pitch: 0, zoom: 0 },
  execution: null,     // id of the execution being watched
  stream: null,        // AbortController of its event stream
  done: -1,            // tasks done at the last preview request
  preview: { busy: false, again: false, url: null },
  moveStarted: null,   // performance.now() of the camera move being rendered
};

// Figures the browser test and anyone curious can read.
window.francine = { moves: [], previews: 0, lastStatus: null };

function say(text, isError = false) {
  const m = $("message");
  m.textContent = text;
  m.className = isError ? "error" : "";
}

async function api(method, path, body) {
  const headers = { Authorization: "Bearer " + state.key };
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  if (!resp.ok) {
    let message = `${resp.status} ${resp.statusText}`;
    try { message = (await resp.json()).error.message; } catch (e) { /* not JSON */ }
    const err = new Error(message);
    err.status = resp.status;
    throw err;
  }
  return resp;
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
  say("");
}

$("key-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const key = $("key").value.trim();
  if (key) useKey(key);
});

$("key-forget").addEventListener("click", () => {
  stopWatching();
  state.key = null;
  sessionStorage.removeItem(KEY_ITEM);
  $("app").classList.add("hidden");
  $("key-form").classList.remove("hidden");
  $("key-forget").classList.add("hidden");
});

// --- sessions --------------------------------------------------------------------------
async function loadSessions(select) {
  const { sessions } = await (await api("GET", "/v1/sessions")).json();
  const list = $("sessions");
  list.textContent = "";
  for (const s of sessions) {
    const o = document.createElement("option");
    o.value = s.id;
    o.textContent = `${s.producer} ${s.scene.width || ""}×${s.scene.height || ""} ${s.id}`;
    list.appendChild(o);
  }
  const chosen = select || (state.session && state.session.id) ||
    (sessions.length ? sessions[sessions.length - 1].id : null);
  if (chosen) {
    list.value = chosen;
    await openSession(chosen);
  }
}

async function openSession(sid) {
  stopWatching();
  state.session = await (await api("GET", `/v1/sessions/${sid}`)).json();
  state.base = JSON.parse(JSON.stringify(state.session.scene));
  state.orbit = { yaw: 0, pitch: 0, zoom: 0 };
  $("download").classList.add("hidden");
}

$("sessions").addEventListener("change", () => openSession($("sessions").value).catch(
  (e) => say(e.message, true)));
$("refresh").addEventListener("click", () => loadSessions().catch((e) => say(e.message, true)));

$("create").addEventListener("click", async () => {
  const producer = $("producer").value;
  const scene = { width: Number($("width").value), height: Number($("height").value) };
  const body = { producer, format: "png" };
  if (producer !== "blender") body.scene = scene;  // blender needs its .blend first
  try {
    const s = await (await api("POST", "/v1/sessions", body)).json();
    await loadSessions(s.id);
    say(`session ${s.id} created`);
  } catch (e) {
    say(e.message, true);
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
let drag = null;
frame.addEventListener("pointerdown", (ev) => {
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
let wheelTimer = null;
frame.addEventListener("wheel", (ev) => {
  ev.preventDefault();
  state.orbit.zoom += ev.deltaY < 0 ? 0.25 : -0.25;
  clearTimeout(wheelTimer);
  wheelTimer = setTimeout(() => state.session && move(), 150);
}, { passive: false });

function move() {
  state.moveStarted = performance.now();
  render(cameraUpdate()).catch((e) => say(e.message, true));
}

// --- rendering and watching ----------------------------------------------------------
async function render(update) {
  const previous = state.execution;
  stopWatching();
  if (previous) {
    // A move while a render runs: that render is no longer wanted.
    api("POST", `/v1/sessions/${state.session.id}/executions/${previous}:cancel`)
      .catch(() => {});
  }
  const body = { parallel: Number($("parallel").value) };
  const tile = Number($("tile").value);
  if (tile) body.tile = tile;
  if (update) body.update = update;
  const ex = await (await api("POST", `/v1/sessions/${state.session.id}/executions`,
    body)).json();
  $("download").classList.add("hidden");
  watch(ex.id);
}

$("render").addEventListener("click", () => {
  if (!state.session) { say("create or choose a session first", true); return; }
  state.moveStarted = performance.now();
  render(null).catch((e) => say(e.message, true));
});
$("cancel").addEventListener("click", () => {
  if (state.execution) {
    api("POST", `/v1/sessions/${state.session.id}/executions/${state.execution}:cancel`)
      .catch((e) => say(e.message, true));
  }
});

function stopWatching() {
  if (state.stream) state.stream.abort();
  state.stream = null;
  state.execution = null;
}

// EventSource cannot send an Authorization header, and the key must stay out of URLs:
// read the text/event-stream with fetch and parse it here.
async function watch(eid) {
  const sid = state.session.id;
  const controller = new AbortController();
  state.execution = eid;
  state.stream = controller;
  state.done = -1;
  try {
    const resp = await fetch(`/v1/sessions/${sid}/executions/${eid}/events`, {
      headers: { Authorization: "Bearer " + state.key }, signal: controller.signal,
      cache: "no-store" });
    if (!resp.ok) throw new Error(`events: ${resp.status}`);
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
    if (e.name !== "AbortError") say(e.message, true);
    return;
  }
  // The stream ended without a final status (its time ran out): watch again.
  const last = window.francine.lastStatus;
  if (state.execution === eid && !(last && last.id === eid && FINAL.includes(last.status))) {
    watch(eid);
  }
}

function onStatus(sid, s) {
  if (s.id !== state.execution) return;
  window.francine.lastStatus = s;
  $("status").textContent = `${s.status} ${(s.progress * 100).toFixed(0)}% · ` +
    `tasks ${s.tasks.done}/${s.tasks.total}, ${s.tasks.running} running` +
    (s.error ? ` · ${s.error.message}` : "");
  $("bar").firstElementChild.style.width = `${s.progress * 100}%`;
  const t = s.time;
  const f = (v) => (v == null ? "-" : `${v.toFixed(2)} s`);
  $("times").textContent = `total     ${f(t.total)}\nfetching  ${f(t.fetching)}\n` +
    `producing ${f(t.producing)}\nreducing  ${f(t.reducing)}`;
  if (s.tasks.done !== state.done || s.status === "done") {
    state.done = s.tasks.done;
    refreshPreview(sid, s.id);
  }
  if (s.status === "done") {
    const a = $("download");
    a.classList.remove("hidden");
    a.dataset.execution = s.id;
  }
}

// One preview request at a time; a change while one is in flight asks for one more.
async function refreshPreview(sid, eid) {
  const p = state.preview;
  if (p.busy) { p.again = true; return; }
  p.busy = true;
  try {
    do {
      p.again = false;
      let resp;
      try {
        resp = await api("GET", `/v1/sessions/${sid}/executions/${eid}/preview`);
      } catch (e) {
        if (e.status !== 409) throw e;  // 409: nothing finished yet
        continue;
      }
      if (eid !== state.execution) break;
      const url = URL.createObjectURL(await resp.blob());
      frame.src = url;
      if (p.url) URL.revokeObjectURL(p.url);
      p.url = url;
      frame.dataset.execution = eid;
      frame.dataset.passes = resp.headers.get("X-Francine-Passes");
      frame.dataset.final = resp.headers.get("X-Francine-Final");
      window.francine.previews += 1;
      if (state.moveStarted !== null) {
        window.francine.moves.push(performance.now() - state.moveStarted);
        state.moveStarted = null;
      }
    } while (p.again);
  } catch (e) {
    say(e.message, true);
  } finally {
    p.busy = false;
  }
}

$("download").addEventListener("click", async (ev) => {
  const a = ev.currentTarget;
  if (a.href && a.dataset.ready === a.dataset.execution) return;  // the blob is there
  ev.preventDefault();
  try {
    const eid = a.dataset.execution;
    const resp = await api("GET", `/v1/sessions/${state.session.id}/executions/${eid}/result`);
    const ext = { "image/png": "png", "image/jpeg": "jpg", "image/x-exr": "exr" };
    const blob = await resp.blob();
    if (a.href) URL.revokeObjectURL(a.href);
    a.href = URL.createObjectURL(blob);
    a.download = `${eid}.${ext[blob.type] || "bin"}`;
    a.dataset.ready = eid;
    a.click();
  } catch (e) {
    say(e.message, true);
  }
});

const saved = sessionStorage.getItem(KEY_ITEM);
if (saved) useKey(saved);
