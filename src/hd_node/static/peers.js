// People: this node (name, id, rename) and its peers, by name with what a person needs
// at a glance: online or not and how, round-trip time, unread messages and the last
// one; the actions on a peer (chat, share the open pane, details, block, forget); and
// the per-peer details dialog (SPEC 9 PeerInfo; contract: rename, forget, richer rows).

import {$, el, avatar, rebuild, findKey, shortId, fmtAgo, fmtMs, fmtTime, copyText, announce, logLine, srOnly} from "./dom.js";
import {store, on, act, provide, setSelf, setPeers, putPeer, removePeer, displayName} from "./store.js";

const TRANSPORTS = {direct: "direct", relay: "relay", webrtc: "WebRTC", lan: "LAN"};
const LEVELS = {trusted: "trusted", guest: "guest"};
let socket = null;
let confirmForget = null;   // node id whose "Forget" asks to be confirmed
let detailsId = null;       // the peer shown in the details dialog
let detailsFrom = null;     // what had the focus before the dialog opened

// --- how a peer is described --------------------------------------------------------

// The status a person sees: "connected" in the protocol is "online" on the page.
export function peerStatus(p) {
  if (!store.online) return {key: "unknown", text: "status unknown (node offline)"};
  if (!p) return {key: "offline", text: "offline"};
  if (p.status === "blocked") return {key: "blocked", text: "blocked"};
  if (p.status === "connected") {
    const via = TRANSPORTS[p.transport] || p.transport;
    return {key: "connected", text: "online" + (via ? " via " + via : "")};
  }
  if (p.status === "connecting") return {key: "connecting", text: "connecting…"};
  return {key: "offline", text: p.last_seen ? "offline · seen " + fmtAgo(p.last_seen) : "offline"};
}

function trustText(p) {
  if (p.status === "blocked") return "blocked";
  return LEVELS[p.level] || "not trusted";
}

function sortPeers(list) {
  const rank = (p) => (p.status === "connected" ? 0 : p.status === "connecting" ? 1 : p.status === "blocked" ? 3 : 2);
  const lastTs = (p) => (store.last.get(p.node_id) || {}).ts || 0;
  return list.sort((a, b) => rank(a) - rank(b)
    || (store.unread.get(b.node_id) || 0) - (store.unread.get(a.node_id) || 0)
    || lastTs(b) - lastTs(a)
    || displayName(a.node_id).localeCompare(displayName(b.node_id))
    || a.node_id.localeCompare(b.node_id));
}

function lastLine(id) {
  const m = store.last.get(id);
  if (!m) return null;
  const text = String(m.text || "").replace(/\s+/g, " ").trim();
  return el("div", {class: "peer-last"},
    m.direction === "out" ? el("span", {class: "who"}, "You: ") : null,
    el("span", {class: "preview-text"}, text.length > 80 ? text.slice(0, 80) + "…" : text),
    m.ts ? el("time", {datetime: new Date(m.ts).toISOString()}, " · " + fmtTime(m.ts)) : null);
}

function unreadBadge(id) {
  const n = store.unread.get(id) || 0;
  if (!n) return null;
  return el("span", {class: "badge unread"}, String(n), srOnly(n === 1 ? " unread message" : " unread messages"));
}

function shareButton(p, key) {
  const pane = store.currentPane;
  const shared = (store.sharers.get(pane) || []).includes(p.node_id);
  return el("button", {type: "button", class: "share-pane", "aria-pressed": shared ? "true" : "false",
    dataset: {key, action: "share"},
    "aria-label": (shared ? "Sharing pane “" : "Share pane “") + pane + "” with " + displayName(p.node_id),
    title: shared ? "Stop sharing the pane “" + pane + "”" : "Share the pane “" + pane + "”",
    onclick: () => act("togglePaneShare", p.node_id)}, shared ? "Sharing pane" : "Share pane");
}

function menuItems(p, where) {
  const id = p.node_id, name = displayName(id);
  const items = [el("button", {type: "button", dataset: {key: where + "copy:" + id, action: "copy-id"},
    onclick: (e) => copyText(id, e.currentTarget)}, "Copy id")];
  if (p.status === "connected") {
    items.push(el("button", {type: "button", dataset: {key: where + "disconnect:" + id, action: "disconnect"},
      onclick: () => command("disconnect", {node_id: id}, "disconnecting " + name)}, "Disconnect"));
  }
  if (p.status === "blocked") {
    items.push(el("button", {type: "button", dataset: {key: where + "unblock:" + id, action: "unblock"},
      onclick: () => setTrust(id, false, false, "unblocking " + name, "Unblocked " + name)}, "Unblock"));
  } else {
    if (p.level !== "trusted") {
      items.push(el("button", {type: "button", dataset: {key: where + "trust:" + id, action: "trust"},
        onclick: () => setTrust(id, true, false, "trusting " + name, "Trusted " + name)}, "Trust"));
    }
    items.push(el("button", {type: "button", dataset: {key: where + "block:" + id, action: "block"},
      onclick: () => setTrust(id, false, true, "blocking " + name, "Blocked " + name)}, "Block"));
  }
  if (confirmForget === id) {
    items.push(el("div", {class: "confirm", role: "group", "aria-label": "Confirm forgetting " + name},
      el("span", {}, "Forget " + name + "? Pairing, addresses and trust go; the chat history stays."),
      el("button", {type: "button", class: "danger", dataset: {key: where + "forget-yes:" + id, action: "forget-confirm"},
        onclick: () => forget(id)}, "Forget"),
      el("button", {type: "button", dataset: {key: where + "forget-no:" + id, action: "forget-cancel"},
        onclick: () => { confirmForget = null; render(); focusKey(where + "forget:" + id); }}, "Keep")));
  } else {
    items.push(el("button", {type: "button", class: "danger", dataset: {key: where + "forget:" + id, action: "forget"},
      onclick: () => { confirmForget = id; render(); focusKey(where + "forget-yes:" + id); }}, "Forget…"));
  }
  return items;
}

function focusKey(key) {
  const b = [...document.querySelectorAll("[data-key]")].find((x) => x.dataset.key === key);
  if (b) b.focus();
}

function peerRow(p) {
  const id = p.node_id, name = displayName(id), st = peerStatus(p);
  const n = store.unread.get(id) || 0;
  const rtt = st.key === "connected" && p.rtt_ms != null ? " · " + fmtMs(p.rtt_ms) : "";
  return el("li", {class: "peer", dataset: {nodeId: id, status: st.key, key: "peer:" + id}},
    el("span", {class: "avatar-wrap"}, avatar(p.node_name, id), el("span", {class: "dot", "aria-hidden": "true"})),
    el("div", {class: "peer-main"},
      el("div", {class: "peer-top"},
        el("strong", {class: "peer-name"}, name),
        p.node_name ? null : el("code", {class: "id muted"}, shortId(id)),
        p.level === "guest" ? el("span", {class: "tag"}, "guest") : null,
        p.level !== "trusted" && p.level !== "guest" && p.status !== "blocked" ? el("span", {class: "tag"}, "not trusted") : null,
        unreadBadge(id)),
      el("div", {class: "peer-status status-text"}, st.text + rtt),
      lastLine(id)),
    el("div", {class: "peer-actions"},
      el("button", {type: "button", dataset: {key: "chat:" + id, action: "chat"},
        "aria-label": "Chat with " + name + (n ? ", " + n + " unread" : ""),
        onclick: () => act("openChat", id, true)}, "Chat"),
      shareButton(p, "share:" + id),
      el("button", {type: "button", dataset: {key: "details:" + id, action: "details"},
        "aria-label": "Details of " + name, onclick: (e) => openDetails(id, e.currentTarget)}, "Details"),
      el("details", {class: "menu", dataset: {key: "menu:" + id}},
        el("summary", {dataset: {key: "more:" + id}, "aria-label": "More actions for " + name}, "More"),
        el("div", {class: "menu-items"}, menuItems(p, "")))));
}

export function render() {
  const list = sortPeers([...store.peers.values()]);
  rebuild($("peer-list"), list.map(peerRow));
  $("people-empty").hidden = list.length > 0 || !store.online;
  const online = list.filter((p) => p.status === "connected").length;
  $("people-count").textContent = store.online && list.length ? online + " of " + list.length + " online" : "";
  renderSelf();
  if (detailsId) renderDetails();
}

// --- this node ------------------------------------------------------------------------

function renderSelf() {
  const s = store.self;
  const name = s ? s.node_name || "(no name)" : "";
  $("self-name").textContent = name;
  $("self-avatar").replaceWith(Object.assign(avatar(s && s.node_name, s && s.node_id), {id: "self-avatar"}));
  const idEl = $("self-id");
  idEl.textContent = s ? shortId(s.node_id) : "";
  idEl.title = s ? s.node_id : "";
  idEl.dataset.nodeId = s ? s.node_id : "";
  $("self-id-copy").hidden = !s;
  $("rename-open").hidden = !s || !$("rename-form").hidden;
  document.title = titleText();
}

export function titleText() {
  const n = [...store.unread.values()].reduce((a, b) => a + (b || 0), 0);
  const name = store.self && store.self.node_name ? " — " + store.self.node_name : "";
  return (n ? "(" + n + ") " : "") + "hd fabric" + name;
}

function openRename() {
  $("rename-form").hidden = false;
  $("rename-open").hidden = true;
  $("rename-error").hidden = true;
  $("rename-input").value = store.self ? store.self.node_name || "" : "";
  $("rename-input").focus();
  $("rename-input").select();
}
function closeRename() {
  $("rename-form").hidden = true;
  $("rename-open").hidden = false;
  $("rename-open").focus();
}
function renameError(text) {
  $("rename-error").textContent = text;
  $("rename-error").hidden = false;
}
async function rename(e) {
  e.preventDefault();
  const name = $("rename-input").value.trim();
  if (!name) { renameError("A node needs a name (1 to 64 characters)."); $("rename-input").focus(); return; }
  if ([...name].length > 64) { renameError("At most 64 characters."); $("rename-input").focus(); return; }
  $("rename-save").disabled = true;
  try {
    const {data} = await socket.request("network", "rename", {node_name: name});
    setSelf(data);
    $("rename-error").hidden = true;
    closeRename();
    announce("Renamed this node to " + name);
    logLine("renamed this node to " + name);
  } catch (err) {
    renameError(err.unsupported
      ? "This node cannot be renamed from the page yet: its hd-node does not serve “network rename”."
      : "Renaming failed: " + err.message + " (" + err.code + ")");
    $("rename-input").focus();
  } finally {
    $("rename-save").disabled = false;
  }
}

// --- commands on peers --------------------------------------------------------------------

function peopleError(text) {
  $("people-error").textContent = text;
  $("people-error").hidden = !text;
  if (text) logLine(text);
}

async function command(event, data, what) {
  peopleError("");
  try {
    const {event: ev, data: answer} = await socket.request("network", event, data);
    if (ev === "peer_update" && answer.peer) putPeer(answer.peer);
    return answer;
  } catch (err) {
    peopleError(what + " failed: " + (err.unsupported ? "this node does not serve “network " + event + "” yet" : err.message + " (" + err.code + ")"));
    return null;
  }
}

async function setTrust(id, trusted, blocked, what, done) {
  if (await command("set_trust", {node_id: id, trusted, blocked}, what)) announce(done);
}

async function forget(id) {
  const name = displayName(id);
  confirmForget = null;
  const answer = await command("forget", {node_id: id}, "forgetting " + name);
  if (answer) {
    forgotten(id);
    announce("Forgot " + name);
  } else {
    render();
  }
}

function forgotten(id) {
  if (detailsId === id) closeDetails();
  removePeer(id);
  logLine("forgot peer " + shortId(id));
}

// --- details dialog -------------------------------------------------------------------------

function openDetails(id, from) {
  detailsId = id;
  detailsFrom = from || document.activeElement;
  renderDetails();
  const d = $("peer-dialog");
  if (!d.open) d.showModal();
  $("pd-close").focus();
}
function closeDetails() {
  const d = $("peer-dialog");
  detailsId = null;
  if (d.open) d.close();
}

function fact(term, ...value) {
  return [el("dt", {}, term), el("dd", {}, ...value)];
}

function renderDetails() {
  const id = detailsId;
  const p = store.peers.get(id) || {node_id: id, status: "offline"};
  const name = displayName(id), st = peerStatus(p);
  $("pd-avatar").replaceChildren(avatar(p.node_name, id, "big"));
  $("pd-title").textContent = name;
  $("pd-status").textContent = st.text + (st.key === "connected" && p.rtt_ms != null ? " · " + fmtMs(p.rtt_ms) : "");
  $("peer-dialog").dataset.nodeId = id;
  $("peer-dialog").dataset.status = st.key;
  const facts = [
    ...fact("Node id", el("code", {class: "id"}, id), " ",
      el("button", {type: "button", class: "link", dataset: {key: "pd-copy-id"}, "aria-label": "Copy the node id of " + name,
        onclick: (e) => copyText(id, e.currentTarget)}, "Copy")),
    ...fact("Trust", trustText(p)),
  ];
  if (p.transport) facts.push(...fact("Link", TRANSPORTS[p.transport] || p.transport));
  if (p.address) facts.push(...fact("Address", el("code", {class: "id"}, p.address)));
  if (p.status !== "connected" && p.last_seen) facts.push(...fact("Last seen", fmtTime(p.last_seen) + " (" + fmtAgo(p.last_seen) + ")"));
  if (p.capabilities && p.capabilities.length) facts.push(...fact("Offers", p.capabilities.join(", ")));
  if (p.public_key) {
    facts.push(...fact("Public key", el("code", {class: "id"}, shortId(p.public_key) + "…"), " ",
      el("button", {type: "button", class: "link", dataset: {key: "pd-copy-key"}, "aria-label": "Copy the public key of " + name,
        onclick: (e) => copyText(p.public_key, e.currentTarget)}, "Copy")));
  }
  rebuild($("pd-facts"), facts);
  act("drawCharts", id, $("pd-rtt"), $("pd-rate"));
  rebuild($("pd-actions"), [
    el("button", {type: "button", class: "primary", dataset: {key: "pd-chat"}, onclick: () => { closeDetails(); act("openChat", id, true); }}, "Chat"),
    shareButton(p, "pd-share"),
    el("details", {class: "menu", dataset: {key: "pd-menu"}},
      el("summary", {dataset: {key: "pd-more"}, "aria-label": "More actions for " + name}, "More"),
      el("div", {class: "menu-items"}, menuItems(p, "pd-"))),
  ]);
}

// --- wiring -----------------------------------------------------------------------------------

export function init(s) {
  socket = s;
  s.on("network", "peers", (d) => { setSelf(d.self); setPeers(d.peers); });
  s.on("network", "peer_update", (d) => { if (d.peer) putPeer(d.peer); });
  s.on("network", "self", (d) => setSelf(d));
  s.on("network", "peer_removed", (d) => { if (d.node_id) forgotten(d.node_id); });
  s.on("network", "error", (d) => logLine("network error " + d.code + ": " + (d.message || "")));
  s.on("network", "lan_peers", (d) => setLan(true, d.peers));

  $("rename-open").addEventListener("click", openRename);
  $("rename-cancel").addEventListener("click", closeRename);
  $("rename-form").addEventListener("submit", rename);
  $("rename-form").addEventListener("keydown", (e) => { if (e.key === "Escape") { e.preventDefault(); closeRename(); } });
  $("self-id-copy").addEventListener("click", (e) => { if (store.self) copyText(store.self.node_id, e.currentTarget); });

  const dialog = $("peer-dialog");
  $("pd-close").addEventListener("click", closeDetails);
  dialog.addEventListener("close", () => {
    detailsId = null;
    // The browser gives the focus back itself when it can; the close event comes a
    // moment later, when the person may already be elsewhere: only a focus left on
    // nothing (or in the closed dialog) is moved. The row may have been re-rendered
    // while the dialog was open (an RTT every few seconds): then its new button with
    // the same data-key takes the focus.
    const a = document.activeElement;
    const lost = !a || a === document.body || dialog.contains(a);
    const back = detailsFrom && !document.contains(detailsFrom) && detailsFrom.dataset
      ? findKey(document, detailsFrom.dataset.key || "") : detailsFrom;
    if (lost && back && document.contains(back)) back.focus();
    detailsFrom = null;
  });
  dialog.addEventListener("click", (e) => {  // a click on the backdrop (outside the box) closes it
    const r = dialog.getBoundingClientRect();
    const outside = e.clientX < r.left || e.clientX > r.right || e.clientY < r.top || e.clientY > r.bottom;
    if (e.target === dialog && outside && e.detail > 0) closeDetails();
  });

  provide("peerDetails", openDetails);
  on("peers", () => { render(); renderLan(); });
  on("unread", render);
  on("self", renderSelf);
  on("pane", render);
  on("online", render);
  on("metrics", () => { if (detailsId) act("drawCharts", detailsId, $("pd-rtt"), $("pd-rate")); });
  render();
}

export async function load() {
  try {
    const {data} = await socket.request("network", "list_peers", {});
    setSelf(data.self);
    setPeers(data.peers);
    const lan = await socket.request("network", "lan_peers", {});
    setLan(!!lan.data.enabled, lan.data.peers);
  } catch (err) {
    if (err.code !== "offline") peopleError("Could not list the peers: " + err.message);
  }
}

// --- nodes seen on the LAN (mDNS, when the node runs with --lan) -------------------------

let lanEnabled = false;
let lanPeers = [];

function setLan(enabled, peers) {
  lanEnabled = enabled;
  lanPeers = Array.isArray(peers) ? peers : [];
  renderLan();
}

function lanState(p) {
  if (p.connected) return "connected over this network";
  if (p.known && p.level === "trusted") return "paired · reconnecting over this network";
  if (p.known) return "known, not trusted: not dialled";
  return "not paired: send an invite to talk";
}

function renderLan() {
  // Peers already in the list above show there; this lists the others this node saw.
  const rows = lanPeers.filter((p) => p && p.node_id && !(p.connected && store.peers.has(p.node_id)));
  $("lan").hidden = !lanEnabled || rows.length === 0;
  rebuild($("lan-list"), rows.map((p) => {
    const name = String(p.node_name || shortId(p.node_id));
    return el("li", {class: "lan-peer", dataset: {nodeId: p.node_id}},
      avatar(name, p.node_id),
      el("div", {class: "peer-main"},
        el("div", {class: "peer-name"}, name, " ", el("code", {class: "id"}, shortId(p.node_id))),
        el("div", {class: "peer-status muted"}, lanState(p))));
  }));
}

