// fewshot page: draw (mouse, pen or finger), classify, teach a new class, list and remove classes.
// Strokes are captured as [x, y, t] in Omniglot's frame (a 105-unit square, y pointing up, t in ms):
// sent as strokes to a stroke index, rendered to a 105x105 PNG for an image index.
"use strict";
const $ = (id) => document.getElementById(id);
const FRAME = 105;
const state = { index: null, kind: "image", strokes: [], current: null, t0: 0, image: null, thumbs: {} };

function headers(json) {
  const h = json ? { "Content-Type": "application/json" } : {};
  const tok = localStorage.getItem("fewshot-token");
  if (tok) h["Authorization"] = "Bearer " + tok;
  return h;
}

async function api(method, path, body) {
  const res = await fetch("/v1" + path, { method, headers: headers(body !== undefined),
    body: body === undefined ? undefined : JSON.stringify(body) });
  if (res.status === 401) { $("auth").hidden = false; }
  if (!res.ok) {
    let msg = res.status + " " + res.statusText;
    try { msg = (await res.json()).error || msg; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return res;
}

function say(msg, isError) { $("status").textContent = msg; $("status").className = isError ? "error" : "muted"; }
const indexPath = () => "/indexes/" + encodeURIComponent(state.index);
// labels are any strings ("a/b", ".."): always sent as a query parameter, never as a path
const labelQuery = (label) => "?label=" + encodeURIComponent(label);

// --- drawing -------------------------------------------------------------------------------
const pad = $("pad"), ctx = pad.getContext("2d");

function toFrame(ev) {
  const r = pad.getBoundingClientRect();
  return [(ev.clientX - r.left) * FRAME / r.width, -(ev.clientY - r.top) * FRAME / r.height,
          Math.round(ev.timeStamp - state.t0)];
}

function redraw() {
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, pad.width, pad.height);
  ctx.strokeStyle = "#000"; ctx.lineWidth = 6; ctx.lineCap = "round"; ctx.lineJoin = "round";
  const k = pad.width / FRAME;
  for (const s of state.strokes.concat(state.current ? [state.current] : [])) {
    ctx.beginPath();
    s.forEach(([x, y], i) => (i ? ctx.lineTo(x * k, -y * k) : ctx.moveTo(x * k, -y * k)));
    if (s.length === 1) ctx.lineTo(s[0][0] * k + 0.1, -s[0][1] * k);
    ctx.stroke();
  }
}

pad.addEventListener("pointerdown", (ev) => {
  ev.preventDefault();
  pad.setPointerCapture(ev.pointerId);
  if (!state.strokes.length) state.t0 = ev.timeStamp;
  state.image = null; $("preview").hidden = true;
  state.current = [toFrame(ev)];
  redraw();
});
pad.addEventListener("pointermove", (ev) => {
  if (!state.current) return;
  const evs = ev.getCoalescedEvents ? ev.getCoalescedEvents() : [ev];
  for (const e of (evs.length ? evs : [ev])) state.current.push(toFrame(e));
  redraw();
});
function endStroke() {
  if (!state.current) return;
  state.strokes.push(state.current); state.current = null; redraw();
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function clearPad() { state.strokes = []; state.current = null; state.image = null; $("preview").hidden = true; redraw(); }

function renderPng() {  // the drawing as Omniglot draws its PNGs: 105x105, black ink on white
  const c = document.createElement("canvas"); c.width = c.height = FRAME;
  const g = c.getContext("2d");
  g.fillStyle = "#fff"; g.fillRect(0, 0, FRAME, FRAME);
  g.strokeStyle = "#000"; g.lineWidth = 3; g.lineCap = "round"; g.lineJoin = "round";
  for (const s of state.strokes) {
    g.beginPath();
    s.forEach(([x, y], i) => (i ? g.lineTo(x, -y) : g.moveTo(x, -y)));
    if (s.length === 1) g.lineTo(s[0][0] + 0.1, -s[0][1]);
    g.stroke();
  }
  return c.toDataURL("image/png");
}

function currentInput() {  // what is on the pad (or the uploaded image), as one API input
  if (state.image) return { name: state.image.name, image_base64: state.image.data };
  if (!state.strokes.length) throw new Error("draw something first (or upload an image)");
  if (state.kind === "sequence") return { name: "drawing", strokes: state.strokes };
  return { name: "drawing", image_base64: renderPng() };
}

// --- answers -------------------------------------------------------------------------------
async function thumb(label) {  // a stored example of the class, as an <img> source (token-aware)
  if (!state.thumbs[label]) {
    state.thumbs[label] = api("GET", indexPath() + "/example" + labelQuery(label) + "&format=png")
      .then((r) => r.blob()).then((b) => URL.createObjectURL(b)).catch(() => "");
  }
  return state.thumbs[label];
}

function item(label, text, extra) {
  const li = document.createElement("li");
  const img = document.createElement("img"); img.alt = label;
  thumb(label).then((src) => { if (src) img.src = src; });
  const name = document.createElement("span"); name.className = "name"; name.textContent = label;
  const score = document.createElement("span"); score.className = "score"; score.textContent = text;
  li.append(img, name, score);
  if (extra) li.append(extra);
  return li;
}

async function classify() {
  try {
    const thr = $("threshold").value === "" ? null : Number($("threshold").value);
    const res = await api("POST", indexPath() + "/classify",
      { inputs: [currentInput()], top_k: Number($("topk").value) || 3, threshold: thr });
    const [p] = await res.json();
    const ans = $("answer");
    ans.textContent = p.label === null ? "unknown" : p.label;
    ans.className = "big" + (p.label === null ? " unknown" : "");
    ans.dataset.label = p.label === null ? "" : p.label;
    $("candidates").replaceChildren(...p.candidates.map((c) =>
      item(c.label, "score " + c.score.toFixed(3))));
    say(p.label === null ? `unknown: best score ${p.score.toFixed(3)} is under the threshold ${thr}`
                         : `answer: ${p.label} (score ${p.score.toFixed(3)}, probability ${p.probability.toFixed(3)})`);
  } catch (e) { say(e.message, true); }
}

async function teach() {
  const label = $("label").value.trim();
  try {
    if (!label) throw new Error("type a name for the new class");
    const ex = Object.assign({ label }, currentInput());
    const res = await api("POST", indexPath() + "/examples", { examples: [ex] });
    const out = await res.json();
    delete state.thumbs[label];
    say(`taught ${label} (${out.count} examples in the index)`);
    $("label").value = ""; clearPad(); await loadClasses();
  } catch (e) { say(e.message, true); }
}

async function remove(label) {
  try {
    await api("DELETE", indexPath() + "/labels" + labelQuery(label));
    delete state.thumbs[label];
    say(`removed ${label}`); await loadClasses();
  } catch (e) { say(e.message, true); }
}

async function loadClasses() {
  const labels = await (await api("GET", indexPath() + "/labels")).json();
  const names = Object.keys(labels).sort();
  $("nclasses").textContent = `(${names.length})`;
  $("classes").replaceChildren(...names.map((lab) => {
    const b = document.createElement("button"); b.type = "button"; b.textContent = "remove";
    b.addEventListener("click", () => remove(lab));
    return item(lab, labels[lab] + " ex.", b);
  }));
}

async function loadIndexes() {
  try {
    const list = await (await api("GET", "/indexes")).json();
    $("index").replaceChildren(...list.map((ix) => new Option(`${ix.name} (${ix.input_kind})`, ix.name)));
    state.byName = Object.fromEntries(list.map((ix) => [ix.name, ix]));
    await selectIndex(list.length ? list[0].name : null);
  } catch (e) { say(e.message, true); }
}

async function selectIndex(name) {
  state.index = name; state.thumbs = {};
  if (!name) return;
  const ix = state.byName[name];
  state.kind = ix.input_kind;
  $("upload").parentElement.hidden = state.kind === "sequence";  // a stroke index takes drawings only
  $("kind").textContent = `${ix.encoder}: ${ix.input_kind === "sequence" ? "strokes are sent as pen trajectories"
                                                                          : "drawings are sent as images"}`;
  await loadClasses();
}

$("upload").addEventListener("change", () => {
  const f = $("upload").files[0];
  if (!f) return;
  const rd = new FileReader();
  rd.onload = () => {
    state.strokes = []; redraw();
    state.image = { name: f.name, data: rd.result };
    $("preview").src = rd.result; $("preview").hidden = false;
    classify();
  };
  rd.readAsDataURL(f);
});
$("classify").addEventListener("click", classify);
$("clear").addEventListener("click", clearPad);
$("teach").addEventListener("click", teach);
$("index").addEventListener("change", () => selectIndex($("index").value).catch((e) => say(e.message, true)));
$("save-token").addEventListener("click", () => {
  localStorage.setItem("fewshot-token", $("token").value.trim()); $("auth").hidden = true; loadIndexes();
});
redraw();
loadIndexes();
