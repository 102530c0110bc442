// What every panel shares: who this node is, its peers, and a few page-wide facts.
// Panels change it through the functions here and listen for "changed" events by name
// ("self", "peers", "unread", "pane", "online"), so no panel calls another's internals.

const bus = new EventTarget();
export const on = (name, fn) => bus.addEventListener(name, () => fn());
export const emit = (name) => bus.dispatchEvent(new Event(name));

export const store = {
  socket: null,        // the NodeSocket
  online: false,       // the socket to the node is open
  self: null,          // network self / peers.self: {node_id, node_name, ...}
  peers: new Map(),    // node_id -> PeerInfo (SPEC 9, plus unread/last_message when served)
  unread: new Map(),   // node_id -> unread count (peerchat unread, conversations)
  last: new Map(),     // node_id -> the last message of the conversation ({text, ts, direction, status})
  currentPane: "scratch",
  sharers: new Map(),  // paneKey -> [node_id]
};

export function selfId() { return store.self ? store.self.node_id : ""; }

export function peerName(id) {
  const p = store.peers.get(id);
  if (p && p.node_name) return p.node_name;
  if (id && id === selfId()) return (store.self && store.self.node_name) || "this node";
  return "";
}
// A name to show a person: the peer's name, else a short id.
export function displayName(id) { return peerName(id) || String(id || "").slice(0, 8) || "unknown"; }

export function setSelf(info) {
  if (!info || !info.node_id) return;
  store.self = Object.assign({}, store.self, info);
  emit("self");
}

export function setPeers(list) {
  store.peers.clear();
  for (const p of list || []) if (p && p.node_id) putPeer(p, false);
  emit("peers");
}

export function putPeer(p, notify = true) {
  store.peers.set(p.node_id, p);
  // Contract: PeerInfo may carry the conversation's unread count and last message.
  if (typeof p.unread === "number") store.unread.set(p.node_id, p.unread);
  if (p.last_message) setLast(p.node_id, p.last_message, false);
  if (notify) { emit("peers"); emit("unread"); }
}

export function removePeer(id) {
  store.peers.delete(id);
  emit("peers");
}

// Keeps the newest message of a conversation (by local seq, then time).
export function setLast(id, m, notify = true) {
  if (!m) return;
  const old = store.last.get(id);
  const newer = !old || (m.seq != null && old.seq != null ? m.seq >= old.seq : (m.ts || 0) >= (old.ts || 0));
  if (newer) store.last.set(id, m);
  else if (old && old.id === m.id) store.last.set(id, Object.assign({}, old, m));
  if (notify) emit("unread");
}

export function totalUnread() {
  let n = 0;
  for (const v of store.unread.values()) n += v || 0;
  return n;
}

// "connected" peers are online; the page says "online" to people (SPEC's word in code).
export function isOnline(p) { return !!p && p.status === "connected" && store.online; }

// Actions one panel offers the others ("openChat", "sharePane", "peerDetails", ...),
// so that panels never import each other.
const actions = new Map();
export const provide = (name, fn) => actions.set(name, fn);
export const act = (name, ...args) => {
  const fn = actions.get(name);
  return fn ? fn(...args) : undefined;
};
