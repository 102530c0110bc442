// The Lobby panel (SPEC 7, 9): connect to a lobby, see who is online and the public
// rooms, create, join and leave rooms. Unchanged in behaviour from the single-file page.

import {$, el, rebuild, shortId, logLine} from "./dom.js";
import {store, on} from "./store.js";

let socket = null;
const H = {};  // "lobby/event" -> handler

// The node keeps the lobby connection; this panel asks it (`lobby` channel) and shows
// what it pushes. Commands carry a `req` so their answers and errors can be told apart
// from pushes; an error is always shown in #lobby-error, never dropped.
const lobby = {
  connected: false, url: null, attemptAt: 0, self: null,
  rooms: [], directory: [],
  hosted: new Set(), joined: new Map(),  // room id -> {via, peer} (empty until we hear)
  known: new Map(),    // room id -> the last room object seen (names of our rooms)
  pending: new Map(),  // req -> {what, roomId, shown}
  tokenFor: null, tokenDraft: "",  // the locked room whose token field is open
  seq: 0,
};
const LOBBY_CONNECT_GRACE_MS = 3000;  // the node tells no dial failure: after this, say so
const LOBBY_POLL_MS = 1500;

const roomName = (id) => { const r = lobby.known.get(id); return r && r.name ? "“" + r.name + "”" : "room " + shortId(id); };

function lobbySend(event, data, what, roomId) {
  if (!socket || !socket.open) {
    if (what) lobbyError("not connected to this node (the page is reconnecting)");
    return null;
  }
  const req = "lobby-" + (++lobby.seq);
  if (what) lobby.pending.set(req, {what, roomId, shown: false});
  socket.send("lobby", event, Object.assign({}, data, {req}));
  return req;
}
const lobbyBusy = (what, roomId) => [...lobby.pending.values()].some((p) => p.what === what && p.roomId === roomId);
function lobbyTake(d) {
  if (!d.req) return null;
  const p = lobby.pending.get(d.req) || null;
  lobby.pending.delete(d.req);
  return p;
}

function lobbyError(text) {
  $("lobby-error-text").textContent = text;
  $("lobby-error").hidden = false;
  logLine("lobby: " + text);
}
function lobbyClearError() { $("lobby-error").hidden = true; $("lobby-error-text").textContent = ""; }
function lobbyNote(text, cls) {
  const li = el("li", {class: cls || ""}, el("span", {class: "muted"}, new Date().toLocaleTimeString() + " "), text);
  $("lobby-activity").prepend(li);
  while ($("lobby-activity").childNodes.length > 50) $("lobby-activity").lastChild.remove();
  logLine("lobby: " + text);
}
function remember(rooms) { for (const r of rooms) if (r && r.id) lobby.known.set(r.id, r); }

function lobbyStatus() {
  const s = $("lobby-status");
  let state, text, cls;
  if (lobby.connected) { state = "connected"; text = "connected to " + lobby.url; cls = "ok"; }
  else if (lobby.url && Date.now() - lobby.attemptAt < LOBBY_CONNECT_GRACE_MS) {
    state = "connecting"; text = "connecting to " + lobby.url + "…"; cls = "muted";
  } else if (lobby.url) {
    state = "disconnected"; text = "disconnected: no lobby answers at " + lobby.url + " (the node keeps trying)"; cls = "bad";
  } else { state = "disconnected"; text = "disconnected"; cls = "muted"; }
  if (s.dataset.state !== state || s.textContent !== text) { s.dataset.state = state; s.textContent = text; s.className = cls; }
  $("lobby-self").textContent = lobby.self && lobby.connected ? "— you are " + (lobby.self.node_name || "") + " (" + shortId(lobby.self.node_id) + ")" : "";
}

function renderDirectory() {
  const items = [...lobby.directory]
    .sort((a, b) => (a.node_name || "").localeCompare(b.node_name || "") || a.node_id.localeCompare(b.node_id))
    .map((e) => {
      const p = store.peers.get(e.node_id);
      return el("li", {dataset: {nodeId: e.node_id}},
        el("strong", {}, e.node_name || "(no name)"), " ",
        el("span", {class: "mono muted", title: e.node_id}, shortId(e.node_id)),
        e.status && e.status !== "online" ? el("span", {class: "muted"}, " · " + e.status) : null,
        p && p.status === "connected" ? el("span", {class: "ok"}, " · online" + (p.level ? " (" + p.level + ")" : "")) : null);
    });
  if (!items.length) items.push(el("li", {class: "muted"}, lobby.connected ? "nobody else is online" : "not connected"));
  rebuild($("lobby-directory"), items);
}

function joinForm(r) {
  const input = el("input", {type: "password", id: "token-" + r.id, autocomplete: "off", dataset: {key: "token:" + r.id},
    oninput: (e) => { lobby.tokenDraft = e.target.value; }});
  input.value = lobby.tokenDraft;
  const cancel = () => { lobby.tokenFor = null; lobby.tokenDraft = ""; renderRooms(); focusKey($("lobby-rooms"), "join:" + r.id); };
  const form = el("form", {class: "row", novalidate: true,
    onsubmit: (e) => { e.preventDefault(); joinRoom(r, input.value); },
    onkeydown: (e) => { if (e.key === "Escape") { e.preventDefault(); cancel(); } }},
    el("label", {for: "token-" + r.id}, "Token for " + r.name), input,
    el("button", {type: "submit", dataset: {key: "token-join:" + r.id}}, "Join with token"),
    el("button", {type: "button", onclick: cancel}, "Cancel"));
  return form;
}
function focusKey(list, key) { const b = [...list.querySelectorAll("[data-key]")].find((x) => x.dataset.key === key); if (b) b.focus(); }

function joinRoom(r, tok) {
  if (r.locked && !tok) { lobbyError("room " + r.name + " needs a token"); return; }
  lobbyClearError();
  lobby.known.set(r.id, r);
  lobbyNote("joining " + roomName(r.id) + " hosted by " + (r.host_name || shortId(r.host)) + "…", "muted");
  lobbySend("join_room", r.locked ? {roomId: r.id, token: tok} : {roomId: r.id}, "join", r.id);
  renderRooms();
}

function renderRooms() {
  const me = lobby.self && lobby.self.node_id;
  const items = (lobby.connected ? lobby.rooms : []).map((r) => {
    const joining = lobbyBusy("join", r.id);
    let action;
    if (r.host === me) action = el("span", {class: "muted"}, " · yours");
    else if (lobby.joined.has(r.id)) action = el("span", {class: "ok"}, " · joined");
    else action = el("button", {type: "button", dataset: {key: "join:" + r.id}, disabled: joining,
      "aria-label": "Join " + r.name + (r.locked ? " (needs a token)" : ""),
      onclick: () => {
        if (!r.locked) { joinRoom(r); return; }
        lobby.tokenFor = r.id; lobby.tokenDraft = ""; renderRooms(); focusKey($("lobby-rooms"), "token:" + r.id);
      }}, joining ? "Joining…" : "Join");
    const members = r.members === 1 ? "1 member" : (r.members || 0) + " members";
    return el("li", {dataset: {roomId: r.id}},
      r.locked ? el("span", {role: "img", "aria-label": "locked", title: "needs a token"}, "🔒 ") : null,
      el("strong", {}, r.name), " ",
      el("span", {class: "muted"}, "by " + (r.host_name || shortId(r.host)) + " · " + members + " · " + r.joinPolicy
        + (r.visibility && r.visibility !== "public" ? " · " + r.visibility : "")),
      action,
      lobby.tokenFor === r.id && !joining ? joinForm(r) : null);
  });
  if (!items.length) items.push(el("li", {class: "muted"}, lobby.connected ? "no public rooms" : "not connected"));
  rebuild($("lobby-rooms"), items);
}

function renderMine() {
  const leave = (id) => el("button", {type: "button", dataset: {key: "leave:" + id}, disabled: lobbyBusy("leave", id),
    "aria-label": "Leave " + roomName(id), onclick: () => { lobbyClearError(); lobbySend("leave_room", {roomId: id}, "leave", id); renderMine(); }},
    lobbyBusy("leave", id) ? "Leaving…" : "Leave");
  const items = [];
  for (const id of lobby.hosted) {
    const r = lobby.known.get(id);
    items.push(el("li", {dataset: {roomId: id, role: "host"}}, el("strong", {}, roomName(id)), " ",
      el("span", {class: "muted"}, "you host" + (r ? " · " + r.visibility + " · " + r.joinPolicy : "")
        + (r && r.visibility === "unlisted" ? " · id " + id : "")), leave(id)));
  }
  for (const [id, j] of lobby.joined) {
    const r = lobby.known.get(id);
    const host = (j.peer && j.peer.node_name) || (r && r.host_name) || "";
    items.push(el("li", {dataset: {roomId: id, role: "guest"}}, el("strong", {}, roomName(id)), " ",
      el("span", {class: "muted"}, "joined" + (host ? " · host " + host : "") + (j.via ? " · via " + j.via : "")), leave(id)));
  }
  if (!items.length) items.push(el("li", {class: "muted"}, "none"));
  rebuild($("lobby-mine"), items);
}

function renderLobby() { lobbyStatus(); renderDirectory(); renderRooms(); renderMine(); }

H["lobby/state"] = (d) => {
  const p = lobbyTake(d);
  const was = lobby.connected, wasUrl = lobby.url;
  lobby.url = d.url || null;
  // connect and disconnect answer before the node has dropped the old session: the
  // "connected" in their answer is about the session being replaced, so not ours.
  const replacing = p && (p.what === "connect" || p.what === "disconnect");
  lobby.connected = !!(d.connected && d.url) && !replacing;
  if (d.self) lobby.self = d.self;
  if (Array.isArray(d.rooms)) { lobby.rooms = d.rooms; remember(d.rooms); }
  lobby.directory = Array.isArray(d.directory) ? d.directory : [];
  lobby.hosted = new Set(d.hosted || []);
  const joined = new Set(d.joined || []);
  for (const id of [...lobby.joined.keys()]) if (!joined.has(id)) lobby.joined.delete(id);
  for (const id of joined) if (!lobby.joined.has(id)) lobby.joined.set(id, {});
  if (!lobby.connected && lobby.url && (was || replacing || wasUrl !== lobby.url || !lobby.attemptAt)) lobby.attemptAt = Date.now();
  if (lobby.url && !$("lobby-url").value) $("lobby-url").value = lobby.url;
  if (lobby.connected && !was) { lobbyNote("connected to the lobby at " + lobby.url, "ok"); lobbySend("list_rooms", {}, "list"); }
  else if (was && !lobby.connected && !replacing) lobbyNote(lobby.url ? "lost the lobby at " + lobby.url + "; reconnecting" : "disconnected from the lobby", "bad");
  else if (p && p.what === "disconnect") lobbyNote("disconnected from the lobby", "muted");
  renderLobby();
};
H["lobby/directory"] = (d) => { lobby.directory = Array.isArray(d.directory) ? d.directory : []; renderDirectory(); };
H["lobby/rooms"] = (d) => { lobbyTake(d); lobby.rooms = d.rooms || []; remember(lobby.rooms); renderRooms(); renderMine(); };
H["lobby/room_created"] = (d) => {
  lobbyTake(d);
  const r = d.room;
  lobby.known.set(r.id, r);
  lobby.hosted.add(r.id);
  lobbyNote("created room " + roomName(r.id) + " (" + r.visibility + ", " + r.joinPolicy + ")", "ok");
  $("room-name").value = ""; $("room-token").value = "";
  if (r.visibility === "public") lobbySend("list_rooms", {}, "list");
  renderLobby();
};
H["lobby/joined"] = (d) => {
  const p = lobbyTake(d);
  // The tab that asked hears a join twice: the push to every tab, then its answer.
  if (!(p && p.shown)) {
    if (!d.req) for (const q of lobby.pending.values()) if (q.what === "join" && q.roomId === d.roomId) q.shown = true;
    lobby.joined.set(d.roomId, {via: d.via, peer: d.peer});
    if (lobby.tokenFor === d.roomId) { lobby.tokenFor = null; lobby.tokenDraft = ""; }
    const who = (d.peer && (d.peer.node_name || shortId(d.peer.node_id))) || "the host";
    lobbyNote("joined " + who + " via " + d.via + " in room " + roomName(d.roomId), "ok");
  }
  renderRooms(); renderMine();
};
H["lobby/peer_joining"] = (d) => {
  const g = d.guest || {};
  lobbyNote((g.node_name || shortId(g.node_id)) + " joined your room " + roomName(d.roomId), "ok");
  if (lobby.connected) lobbySend("list_rooms", {}, "list");  // its member count changed
};
H["lobby/room_closed"] = (d) => {
  const p = lobbyTake(d);
  const id = d.roomId, name = roomName(id), hosted = lobby.hosted.has(id);
  lobby.hosted.delete(id); lobby.joined.delete(id);
  if (lobby.tokenFor === id) lobby.tokenFor = null;
  lobbyNote(p ? (hosted ? "closed your room " + name : "left room " + name) : "room " + name + " was closed", "muted");
  if (lobby.connected) lobbySend("list_rooms", {}, "list");
  renderLobby();
};
H["lobby/error"] = (d) => {
  const p = lobbyTake(d);
  const what = p ? {connect: "connecting to the lobby", disconnect: "disconnecting", list: "listing rooms",
    create: "creating the room", join: "joining " + roomName(p.roomId), leave: "leaving " + roomName(p.roomId)}[p.what] : null;
  lobbyError((what ? what + " failed: " : "lobby: ") + (d.message || "error") + " (" + d.code + ")");
  renderLobby();
};

$("lobby-connect-form").onsubmit = (e) => {
  e.preventDefault();
  lobbyClearError();
  const url = $("lobby-url").value.trim();
  lobbySend("connect", url ? {url} : {}, "connect");
};
$("lobby-disconnect").onclick = () => { lobbyClearError(); lobbySend("disconnect", {}, "disconnect"); };
$("lobby-refresh").onclick = () => { lobbyClearError(); lobbySend("list_rooms", {}, "list"); };
$("lobby-error-dismiss").onclick = () => { lobbyClearError(); $("lobby-url").focus(); };
$("room-policy").onchange = () => { $("room-token-field").hidden = $("room-policy").value !== "token"; };
$("room-form").onsubmit = (e) => {
  e.preventDefault();
  const name = $("room-name").value.trim(), policy = $("room-policy").value, tok = $("room-token").value;
  if (!name) { lobbyError("a room needs a name"); $("room-name").focus(); return; }
  if (policy === "token" && !tok) { lobbyError("a token room needs a token"); $("room-token").focus(); return; }
  lobbyClearError();
  const data = {name, visibility: $("room-visibility").value, joinPolicy: policy};
  if (policy === "token") data.token = tok;
  lobbySend("create_room", data, "create");
};
// While a lobby URL is set but not connected, ask again: the node pushes no word when
// a dial fails, only when a session it had ends.
setInterval(() => { if (lobby.url && !lobby.connected) lobbySend("state", {}); lobbyStatus(); }, LOBBY_POLL_MS);


export function load() { lobbySend("state", {}); }

export function init(sock) {
  socket = sock;
  for (const [key, fn] of Object.entries(H)) {
    const [channel, event] = key.split("/");
    sock.on(channel, event, fn);
  }
  sock.addEventListener("state", () => { if (!sock.open) { lobby.pending.clear(); renderLobby(); } });
  on("peers", renderDirectory);
  renderLobby();
}
