// Chat (SPEC 6.2, 9): the conversations, with unread counts known on load (contract:
// `peerchat conversations`), one open conversation with its history paged
// (`peerchat open {node_id, before, limit}` → `history {messages, more}`), sender, time
// and delivery state (queued / sent / delivered / failed) per message, and a notice
// when a message comes in while the page is in the background (title, Notification).
// A node that does not serve the newer commands still works: the page falls back to
// `peerchat unread` and to the whole history.

import {$, el, avatar, rebuild, fmtTime, srOnly, logLine, announce} from "./dom.js";
import {store, on, emit, provide, setLast, displayName} from "./store.js";
import {peerStatus, titleText} from "./peers.js";

const PAGE = 50;                  // messages per page of history
const FALLBACK_PEERS = 50;        // conversations read one by one when `conversations` is missing
const STATUS_TEXT = {queued: "queued: not sent yet", sent: "sent", delivered: "delivered", failed: "failed: the peer refused it"};

let socket = null;
const convs = new Map();  // node_id -> {node_id, node_name, messages: Map(id -> msg), more, loaded}
let openId = null;
let rendered = new Map(); // message id -> <li> of the open conversation
let loadingMore = false;

function conv(id, name) {
  let c = convs.get(id);
  if (!c) {
    c = {node_id: id, node_name: name || "", messages: new Map(), more: false, loaded: false};
    convs.set(id, c);
  }
  if (name && !c.node_name) c.node_name = name;
  return c;
}
const convName = (id) => {
  const c = convs.get(id);
  const n = displayName(id);
  return c && c.node_name && !store.peers.get(id)?.node_name ? c.node_name : n;
};

// --- icons (inline SVG, built from paths: no markup strings) ----------------------------

const ICONS = {
  queued: ["M8 1.75a6.25 6.25 0 1 0 0 12.5a6.25 6.25 0 1 0 0-12.5z", "M8 4.5V8l2.5 1.75"],
  sent: ["M2.5 8.5l3.5 3.5 7.5-8"],
  delivered: ["M0.75 8.5l3.5 3.5 7.5-8", "M6.5 11.25l.75.75 7.5-8"],
  failed: ["M8 1.5l6.75 12.5H1.25z", "M8 6v4", "M8 11.5v1.25"],
};
function statusIcon(status) {
  const svg = el("svg:svg", {viewBox: "0 0 16 16", width: "16", height: "16", "aria-hidden": "true", focusable: "false"},
    (ICONS[status] || ICONS.sent).map((d) => el("svg:path", {d, fill: "none", stroke: "currentColor", "stroke-width": "1.6",
      "stroke-linecap": "round", "stroke-linejoin": "round"})));
  return el("span", {class: "tick", dataset: {status}, role: "img", "aria-label": STATUS_TEXT[status] || status,
    title: STATUS_TEXT[status] || status}, svg);
}

// --- the conversation list ----------------------------------------------------------------

function renderList() {
  const ids = new Set([...convs.keys(), ...store.last.keys()].filter((id) =>
    store.last.has(id) || convs.get(id)?.messages.size || id === openId));
  const items = [...ids].sort((a, b) => ((store.last.get(b) || {}).ts || 0) - ((store.last.get(a) || {}).ts || 0)
    || convName(a).localeCompare(convName(b))).map((id) => {
    const m = store.last.get(id), n = store.unread.get(id) || 0, name = convName(id);
    const text = m ? String(m.text || "").replace(/\s+/g, " ").trim() : "";
    return el("li", {dataset: {nodeId: id}},
      el("button", {type: "button", class: "conv", dataset: {key: "conv:" + id, nodeId: id},
        "aria-current": id === openId ? "true" : null, onclick: () => openChat(id, true)},
        avatar(store.peers.get(id)?.node_name || name, id),
        el("span", {class: "conv-main"},
          el("span", {class: "conv-top"}, el("strong", {}, name),
            m && m.ts ? el("time", {class: "muted", datetime: new Date(m.ts).toISOString()}, fmtTime(m.ts)) : null),
          el("span", {class: "conv-preview"}, m && m.direction === "out" ? "You: " : "", text.length > 60 ? text.slice(0, 60) + "…" : text)),
        n ? el("span", {class: "badge unread"}, String(n), srOnly(n === 1 ? " unread message" : " unread messages")) : null));
  });
  rebuild($("conversations"), items);
  $("conv-empty").hidden = items.length > 0;
  const total = [...store.unread.values()].reduce((a, b) => a + (b || 0), 0);
  $("nav-unread").hidden = !total;
  $("nav-unread").textContent = total ? String(total) : "";
  if (total) $("nav-unread").setAttribute("aria-label", total + " unread");
  document.title = titleText();
}

// --- the open conversation --------------------------------------------------------------------

function messageItem(m) {
  const out = m.direction === "out";
  const sender = out ? "You" : (store.peers.get(m.node_id)?.node_name || m.from_name || convName(m.node_id));
  const when = m.ts ? new Date(m.ts) : null;
  const li = el("li", {class: "msg " + (out ? "out" : "in"), dataset: {id: m.id, status: m.status || "", seq: String(m.seq ?? "")}},
    el("div", {class: "msg-meta"},
      el("span", {class: "sender"}, sender),
      when ? el("time", {datetime: when.toISOString(), title: when.toLocaleString()}, fmtTime(m.ts)) : null,
      out ? statusIcon(m.status) : null),
    el("p", {class: "msg-text"}, String(m.text ?? "")));
  return li;
}

function renderConversation(scroll) {
  const box = $("conversation");
  if (!openId) { box.hidden = true; return; }
  const c = conv(openId);
  box.hidden = false;
  box.dataset.nodeId = openId;
  const p = store.peers.get(openId);
  $("conv-avatar").replaceChildren(avatar(p?.node_name || c.node_name, openId));
  $("conv-title").textContent = convName(openId);
  const st = peerStatus(p);
  $("conv-status").textContent = st.text;
  $("conv-status").dataset.status = st.key;
  $("chat-input-label").textContent = "Message to " + convName(openId);
  $("chat-more").hidden = !c.more;
  $("chat-more").disabled = loadingMore;

  const list = $("messages");
  const boxEl = $("messages-box");
  const nearBottom = boxEl.scrollHeight - boxEl.scrollTop - boxEl.clientHeight < 40;
  const ordered = [...c.messages.values()].sort((a, b) => (a.seq ?? 0) - (b.seq ?? 0) || (a.ts || 0) - (b.ts || 0));
  const keep = new Set(ordered.map((m) => m.id));
  for (const [id, li] of rendered) if (!keep.has(id)) { li.remove(); rendered.delete(id); }
  let prev = null;
  for (const m of ordered) {
    let li = rendered.get(m.id);
    if (!li || li.dataset.status !== (m.status || "")) {
      const fresh = messageItem(m);
      if (li) li.replaceWith(fresh);
      li = fresh;
      rendered.set(m.id, li);
    }
    const want = prev ? prev.nextSibling : list.firstChild;
    if (want !== li) list.insertBefore(li, want);
    prev = li;
  }
  if (scroll === "bottom" || (scroll !== "keep" && nearBottom)) boxEl.scrollTop = boxEl.scrollHeight;
}

function chatError(text) {
  $("chat-error").textContent = text || "";
  $("chat-error").hidden = !text;
  if (text) logLine("chat: " + text);
}

async function openChat(id, byUser) {
  const first = openId !== id;
  if (first) {
    openId = id;
    rendered = new Map();
    $("messages").replaceChildren();
    $("chat-input").value = "";
  }
  conv(id);
  chatError("");
  renderList();
  renderConversation("bottom");
  if (byUser) {
    $("chat").scrollIntoView({block: "start"});
    $("chat-input").focus({preventScroll: true});
  }
  await loadHistory(id);
  // Opening it is reading it: every tab clears its badge (the node pushes `unread`).
  if (byUser || seen()) markRead(id);
}

async function loadHistory(id) {
  try {
    const {data} = await socket.request("peerchat", "open", {node_id: id, limit: PAGE});
    const c = conv(id);
    c.messages = new Map((data.messages || []).map((m) => [m.id, m]));
    c.more = data.more === true;  // a node without paging sends the whole history
    c.loaded = true;
    const last = (data.messages || []).at(-1);
    if (last) setLast(id, last, false);
    if (openId === id) { rendered.forEach((li) => li.remove()); rendered = new Map(); renderConversation("bottom"); }
    renderList();
  } catch (err) {
    if (err.code !== "offline") chatError("Could not load the conversation: " + err.message + " (" + err.code + ")");
  }
}

async function loadEarlier() {
  const id = openId, c = conv(id);
  const seqs = [...c.messages.values()].map((m) => m.seq).filter((s) => typeof s === "number");
  if (!seqs.length || loadingMore) return;
  loadingMore = true;
  renderConversation("keep");
  const boxEl = $("messages-box");
  const before = boxEl.scrollHeight - boxEl.scrollTop;
  try {
    const {data} = await socket.request("peerchat", "open", {node_id: id, before: Math.min(...seqs), limit: PAGE});
    for (const m of data.messages || []) c.messages.set(m.id, m);
    c.more = data.more === true;
    announce((data.messages || []).length + " earlier messages loaded");
  } catch (err) {
    chatError("Could not load earlier messages: " + err.message + " (" + err.code + ")");
  } finally {
    loadingMore = false;
  }
  if (openId !== id) return;
  renderConversation("keep");
  boxEl.scrollTop = boxEl.scrollHeight - before;  // the messages in view stay in view
  if (!c.more) boxEl.focus();
}

function markRead(id) {
  if ((store.unread.get(id) || 0) > 0 || !convs.get(id)?.readSent) {
    socket.send("peerchat", "read", {node_id: id});
    conv(id).readSent = true;
  }
}

// The person can see the open conversation right now.
const seen = () => document.visibilityState === "visible" && document.hasFocus();

async function sendMessage(e) {
  e.preventDefault();
  const input = $("chat-input");
  const text = input.value;
  if (!openId) return;
  if (!text.trim()) { chatError("Write something first."); input.focus(); return; }
  chatError("");
  const id = openId;
  input.value = "";
  try {
    await socket.request("peerchat", "send", {node_id: id, text});
  } catch (err) {
    if (!input.value) input.value = text;  // nothing typed is lost
    const why = {too_large: "the message is too long for one envelope", empty: "the message is empty",
      offline: "the page is not connected to the node"}[err.code];
    chatError("Not sent: " + (why || err.message) + " (" + err.code + ")");
  }
  input.focus();
}

// --- pushes ------------------------------------------------------------------------------------

function onMessage(m) {
  if (!m || !m.node_id) return;
  const c = conv(m.node_id, m.direction === "in" ? m.from_name : "");
  c.messages.set(m.id, m);
  setLast(m.node_id, m, false);
  if (openId === m.node_id) renderConversation();
  renderList();
  emit("unread");
  if (m.direction !== "in") return;
  if (openId === m.node_id && seen()) { markRead(m.node_id); return; }
  notify(m);
}

function notify(m) {
  const name = store.peers.get(m.node_id)?.node_name || m.from_name || convName(m.node_id);
  logLine("message from " + name);
  if (document.visibilityState === "visible" && document.hasFocus()) return;
  if (typeof Notification === "function" && Notification.permission === "granted") {
    try {
      const n = new Notification(name, {body: String(m.text || "").slice(0, 140), tag: "hd-chat-" + m.node_id});
      n.onclick = () => { window.focus(); openChat(m.node_id, true); n.close(); };
    } catch { /* some browsers only allow notifications from a service worker */ }
  }
}

function onStatus(d) {
  const c = convs.get(d.node_id);
  const m = c && c.messages.get(d.id);
  if (m) { m.status = d.status; if (openId === d.node_id) renderConversation(); }
  const last = store.last.get(d.node_id);
  if (last && last.id === d.id) setLast(d.node_id, Object.assign({}, last, {status: d.status}));
}

function onUnread(d) {
  const counts = d.counts || {};
  for (const id of new Set([...store.unread.keys(), ...Object.keys(counts)])) store.unread.set(id, counts[id] || 0);
  emit("unread");
  renderList();
}

// --- loading -------------------------------------------------------------------------------------

export async function load() {
  try {
    const {data} = await socket.request("peerchat", "conversations", {});
    for (const it of data.items || []) {
      conv(it.node_id, it.node_name);
      store.unread.set(it.node_id, it.unread || 0);
      if (it.last) setLast(it.node_id, Object.assign({node_id: it.node_id}, it.last), false);
    }
  } catch (err) {
    if (!err.unsupported) { if (err.code !== "offline") chatError("Could not list the conversations: " + err.message); return; }
    await loadFallback();
  }
  emit("unread");
  renderList();
  if (openId) { await loadHistory(openId); if (seen()) markRead(openId); }
}

// Without `peerchat conversations`: counts from `peerchat unread`, last messages from
// each known peer's history (as many requests as peers, so only up to a bound).
async function loadFallback() {
  try {
    const {data} = await socket.request("peerchat", "unread", {});
    for (const [id, n] of Object.entries(data.counts || {})) store.unread.set(id, n);
  } catch { return; }
  const ids = new Set([...store.unread.keys(), ...store.peers.keys()]);
  await Promise.all([...ids].slice(0, FALLBACK_PEERS).map(async (id) => {
    try {
      const {data} = await socket.request("peerchat", "open", {node_id: id, limit: 1});
      const last = (data.messages || []).at(-1);
      if (last) { conv(id, last.direction === "in" ? last.from_name : ""); setLast(id, last, false); }
    } catch { /* not a conversation */ }
  }));
}

export function init(s) {
  socket = s;
  s.on("peerchat", "message", onMessage);
  s.on("peerchat", "status", onStatus);
  s.on("peerchat", "unread", onUnread);
  s.on("peerchat", "history", (d) => {  // a history nobody asked for with a req
    const c = conv(d.node_id);
    for (const m of d.messages || []) c.messages.set(m.id, m);
    if (openId === d.node_id) renderConversation();
  });
  s.on("peerchat", "conversations", (d) => {
    for (const it of d.items || []) {
      conv(it.node_id, it.node_name);
      store.unread.set(it.node_id, it.unread || 0);
      if (it.last) setLast(it.node_id, Object.assign({node_id: it.node_id}, it.last), false);
    }
    emit("unread"); renderList();
  });
  s.on("peerchat", "error", (d) => chatError(d.message + " (" + d.code + ")"));

  $("chat-form").addEventListener("submit", sendMessage);
  $("chat-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); $("chat-form").requestSubmit(); }
  });
  $("chat-more").addEventListener("click", loadEarlier);
  const back = () => { if (openId && seen() && (store.unread.get(openId) || 0) > 0) markRead(openId); };
  document.addEventListener("visibilitychange", back);
  window.addEventListener("focus", back);

  provide("openChat", openChat);
  on("peers", () => { renderList(); if (openId) renderConversation(); });
  on("online", () => { renderList(); if (openId) renderConversation(); });
  renderList();
}

