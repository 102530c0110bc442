// Shared panes (SPEC 6.1, 9): the panes this node has, who shares each and who is
// editing now; one open pane with its text; sharing with a peer in one click (here, or
// from the peer's row). Writes are last-writer-wins with a revision check: a stale
// write comes back `rejected` and the local edit is rebased onto it (SPEC 6.1.1).
// Contract: `collab list` lists the panes; without it the page knows the panes it has
// seen (the open one, and any a peer writes to).

import {$, el, rebuild, logLine, announce, srOnly} from "./dom.js";
import {store, on, emit, provide, displayName, selfId} from "./store.js";
import {rebase} from "./rebase.js";

const PANE_KEY = /^[A-Za-z0-9_.:-]{1,128}$/;
const EDITING_MS = 10_000;   // "editing now" for this long after a peer's last write
const WRITE_DELAY_MS = 150;

let socket = null;
const panes = new Map();  // paneKey -> {paneKey, rev, author, sharers, members, editing: Map(id -> at), fromPeer}
const ed = {key: "scratch", rev: 0, author: "", base: "", inflight: null, timer: null};
let editingTimer = null;

function pane(key) {
  let p = panes.get(key);
  if (!p) {
    p = {paneKey: key, rev: 0, author: "", sharers: [], members: [], editing: new Map(), fromPeer: ""};
    panes.set(key, p);
  }
  return p;
}

function note(d) {
  const p = pane(d.paneKey);
  if (typeof d.rev === "number" && d.rev >= p.rev) { p.rev = d.rev; p.author = d.author || p.author; }
  if (Array.isArray(d.sharers)) { p.sharers = d.sharers; store.sharers.set(d.paneKey, d.sharers); emit("pane"); }
  if (Array.isArray(d.members)) p.members = d.members;
  if (Array.isArray(d.editing)) {  // contract, optional: [{node_id | "local", name, at}]
    for (const e of d.editing) if (e && e.node_id && e.node_id !== "local") p.editing.set(e.node_id, Date.now());
  }
  return p;
}

function editors(p) {
  const now = Date.now();
  return [...p.editing].filter(([, at]) => now - at < EDITING_MS).map(([id]) => id);
}

// --- rendering ---------------------------------------------------------------------------

function sharedText(p) {
  const names = p.sharers.map(displayName);
  return names.length ? "with " + names.join(", ") : "not shared";
}

function renderList() {
  pane(ed.key);
  const items = [...panes.values()].sort((a, b) => a.paneKey.localeCompare(b.paneKey)).map((p) => {
    const busy = editors(p);
    const here = p.paneKey === ed.key;
    return el("li", {dataset: {paneKey: p.paneKey}},
      el("button", {type: "button", class: "pane-open", dataset: {key: "pane:" + p.paneKey},
        "aria-current": here ? "true" : null, onclick: () => openPane(p.paneKey, true)},
        el("strong", {}, p.paneKey),
        el("span", {class: "pane-meta"}, (p.rev ? "rev " + p.rev + " · " : "") + sharedText(p)
          + (p.fromPeer && !here ? " · from " + displayName(p.fromPeer) : "")),
        busy.length ? el("span", {class: "pane-busy"}, busy.map(displayName).join(", ") + " editing") : null));
  });
  rebuild($("pane-list"), items);
}

function renderEditor() {
  const p = pane(ed.key);
  $("pane-title").textContent = ed.key;
  $("pane-label").textContent = "Text of the pane " + ed.key;
  const local = p.members.length > 1 ? " · open in " + p.members.length + " tabs here" : "";
  $("pane-rev").textContent = (ed.rev ? "rev " + ed.rev + (ed.author ? " by " + (ed.author === selfId() ? "you" : displayName(ed.author)) : "") : "empty") + local;
  const busy = editors(p);
  const text = busy.length ? busy.map(displayName).join(", ") + (busy.length > 1 ? " are" : " is") + " editing now" : "";
  if ($("pane-editing").textContent !== text) $("pane-editing").textContent = text;
  $("pane-editing").dataset.editors = busy.join(" ");

  const sharers = p.sharers;
  rebuild($("pane-sharers"), sharers.length ? sharers.map((id) => el("li", {dataset: {nodeId: id}},
    el("span", {class: "chip"}, displayName(id),
      el("button", {type: "button", class: "chip-x", dataset: {key: "unshare:" + id, action: "unshare"},
        "aria-label": "Stop sharing the pane " + ed.key + " with " + displayName(id),
        onclick: () => share(id, false)}, "✕")))) : [el("li", {class: "muted"}, "nobody yet")]);

  const candidates = [...store.peers.values()]
    .filter((q) => !sharers.includes(q.node_id) && q.status !== "blocked")
    .sort((a, b) => (a.status === "connected" ? 0 : 1) - (b.status === "connected" ? 0 : 1)
      || displayName(a.node_id).localeCompare(displayName(b.node_id)));
  rebuild($("pane-share-with"), candidates.length ? candidates.map((q) => el("li", {dataset: {nodeId: q.node_id}},
    el("button", {type: "button", class: "chip-btn", dataset: {key: "share-to:" + q.node_id, action: "share"},
      "aria-label": "Share the pane " + ed.key + " with " + displayName(q.node_id)},
    "+ " + displayName(q.node_id), q.status === "connected" ? null : srOnly(" (offline)")))) : [el("li", {class: "muted"}, "no peer to share with")]);
  for (const b of $("pane-share-with").querySelectorAll("button")) {
    const id = b.closest("li").dataset.nodeId;
    b.onclick = () => share(id, true);
  }
}

function render() { renderList(); renderEditor(); }

function paneError(text) {
  $("pane-error").textContent = text || "";
  $("pane-error").hidden = !text;
  if (text) logLine("pane: " + text);
}

// --- editing -----------------------------------------------------------------------------

function adopt(d) {
  const area = $("pane");
  const local = area.value;
  const dirty = local !== ed.base;
  ed.rev = d.rev; ed.author = d.author;
  if (dirty) {
    // Keep what the person typed on top of the newer text.
    const merged = rebase(ed.base, local, d.text);
    ed.base = d.text;
    const {selectionStart, selectionEnd} = area;
    area.value = merged;
    if (document.activeElement === area) area.setSelectionRange(selectionStart, selectionEnd);
    scheduleWrite();
  } else {
    ed.base = d.text;
    area.value = d.text;
  }
}

function scheduleWrite() {
  clearTimeout(ed.timer);
  ed.timer = setTimeout(write, WRITE_DELAY_MS);
}

function write() {
  const text = $("pane").value;
  if (text === ed.base || ed.inflight !== null || !store.online) return;
  ed.inflight = text;
  socket.send("collab", "op", {paneKey: ed.key, baseRev: ed.rev, text});
}

function onState(d) {
  const p = note(d);
  if (d.paneKey === ed.key) {
    if (typeof d.text === "string" && d.rev >= ed.rev) adopt(d);
    renderEditor();
  }
  void p;
  renderList();
}

function onOp(d) {
  const p = note(d);
  const from = d.from || d.author;
  const mine = ed.inflight !== null && d.paneKey === ed.key && from === selfId() && d.author === selfId() && d.text === ed.inflight;
  if (from && from !== selfId()) {
    p.editing.set(from, Date.now());
    if (!p.sharers.includes(from)) p.sharers = [...p.sharers, from];
    if (d.paneKey !== ed.key && !p.fromPeer) {
      p.fromPeer = from;
      announce(displayName(from) + " wrote in the pane " + d.paneKey);
    }
    logLine(displayName(from) + " edited the pane " + d.paneKey);
    clearTimeout(editingTimer);
    editingTimer = setTimeout(render, EDITING_MS + 50);
  }
  if (d.paneKey === ed.key) {
    if (mine) {
      ed.inflight = null; ed.base = d.text; ed.rev = d.rev; ed.author = d.author;
      if ($("pane").value !== ed.base) scheduleWrite();
    } else if (d.rev > ed.rev || (d.rev === ed.rev && d.author > ed.author)) {
      adopt(d);
    }
  }
  render();
}

function onRejected(d) {
  note(d);
  if (d.paneKey !== ed.key) return;
  ed.inflight = null;
  adopt(d);  // rebases the local edit and writes it again
  logLine("pane edit rebased onto rev " + d.rev);
  renderEditor();
}

// --- commands --------------------------------------------------------------------------------

export function openPane(key, byUser) {
  if (!PANE_KEY.test(key)) {
    paneError("A pane name is 1 to 128 letters, digits or _ . : -");
    return false;
  }
  paneError("");
  if (key !== ed.key) {
    clearTimeout(ed.timer);
    if ($("pane").value !== ed.base && ed.inflight === null) write();  // nothing typed is lost
    socket.send("collab", "leave", {paneKey: ed.key});
    Object.assign(ed, {key, rev: 0, author: "", base: "", inflight: null, timer: null});
    $("pane").value = "";
    pane(key).fromPeer = "";
    store.currentPane = key;
    sessionStorage.setItem("hd-pane", key);
    socket.send("collab", "join", {paneKey: key});
    emit("pane");
  }
  render();
  if (byUser) $("pane").focus();
  return true;
}

async function share(id, yes) {
  paneError("");
  const key = ed.key, name = displayName(id);
  try {
    const {data} = await socket.request("collab", yes ? "share" : "unshare", {paneKey: key, node_id: id});
    note(data);
    render();
    announce((yes ? "Sharing the pane " + key + " with " : "Stopped sharing the pane " + key + " with ") + name);
    // Keep the focus where the person was: the control moved from one list to the other.
    const moved = document.querySelector(`[data-key="${yes ? "unshare:" : "share-to:"}${CSS.escape(id)}"]`);
    if (moved && document.activeElement === document.body) moved.focus();
  } catch (err) {
    paneError((yes ? "Sharing with " : "Unsharing with ") + name + " failed: " + err.message + " (" + err.code + ")");
  }
}

function togglePaneShare(id) {
  const shared = pane(ed.key).sharers.includes(id);
  return share(id, !shared);
}

// --- loading ---------------------------------------------------------------------------------

export async function load() {
  try {
    const {data} = await socket.request("collab", "list", {});
    for (const p of data.panes || []) note(p);
  } catch (err) {
    if (!err.unsupported && err.code !== "offline") paneError("Could not list the panes: " + err.message);
  }
  ed.inflight = null;  // whatever was in flight on the old socket is answered by the state
  socket.send("collab", "join", {paneKey: ed.key});
  render();
}

export function init(s) {
  socket = s;
  const saved = sessionStorage.getItem("hd-pane");
  if (saved && PANE_KEY.test(saved)) ed.key = saved;
  store.currentPane = ed.key;
  s.on("collab", "state", onState);
  s.on("collab", "op", onOp);
  // A write in a pane this tab has not joined: who wrote where, without the text.
  s.on("collab", "written", (d) => { if (d.paneKey !== ed.key) onOp(d); });
  s.on("collab", "rejected", onRejected);
  s.on("collab", "presence", (d) => { note(d); if (d.paneKey === ed.key) renderEditor(); });
  s.on("collab", "panes", (d) => { for (const p of d.panes || []) note(p); render(); });
  s.on("collab", "error", (d) => { ed.inflight = null; paneError(d.message + " (" + d.code + ")"); });
  $("pane").addEventListener("input", scheduleWrite);
  $("pane-new-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const key = $("pane-new").value.trim();
    if (openPane(key, true)) $("pane-new").value = "";
    else $("pane-new").focus();
  });
  provide("togglePaneShare", togglePaneShare);
  provide("openPane", openPane);
  on("peers", render);
  render();
}
