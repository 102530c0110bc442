// The page's entry point: the token, the socket, the page-wide states (no token,
// refused token, node offline), and the panels. Each panel module has `init(socket)`
// (wire its handlers and controls) and `load()` (read its state from the node), which
// runs again after every reconnect: the node may have changed anything meanwhile.

import {$, logLine} from "./dom.js";
import {NodeSocket} from "./ws.js";
import {store, emit} from "./store.js";
import * as peers from "./peers.js";
import * as chat from "./chat.js";
import * as panes from "./panes.js";
import * as pairing from "./pairing.js";
import * as monitor from "./monitor.js";
import * as lobby from "./lobby.js";
import * as agent from "./agent.js";
import * as tasks from "./tasks.js";

const panels = [peers, chat, panes, pairing, monitor, lobby, agent, tasks];

// The token comes in the URL (`hd-node ui` prints it); it is kept for this tab only
// and taken out of the address bar, so it is not left in history or shown on screen.
function takeToken() {
  const params = new URLSearchParams(location.search);
  const fromUrl = params.get("token");
  if (fromUrl) {
    sessionStorage.setItem("hd-token", fromUrl);
    history.replaceState(null, "", location.pathname + location.hash);
    return fromUrl;
  }
  return sessionStorage.getItem("hd-token") || "";
}

function showAuth(why) {
  document.body.dataset.conn = "refused";
  $("app").hidden = true;
  $("offline").hidden = true;
  $("auth").hidden = false;
  $("auth-why").textContent = why;
  document.title = "hd fabric — open the page from its link";
  $("auth-h").setAttribute("tabindex", "-1");
  $("auth-h").focus();
}

const CONN_TEXT = {connecting: "connecting…", open: "connected", offline: "node offline, retrying…", refused: "token refused"};

function onState(socket) {
  const state = socket.state;
  document.body.dataset.conn = state;
  const pill = $("conn");
  pill.textContent = CONN_TEXT[state] || state;
  pill.dataset.state = state;
  if (state === "refused") {
    sessionStorage.removeItem("hd-token");
    showAuth("This node refused the page's access token: the link is from another node or an older data directory.");
    return;
  }
  const wasOnline = store.online;
  store.online = state === "open";
  // Offline: every control is disabled at once (one disabled fieldset) and greyed out.
  $("app").disabled = state !== "open";
  $("app").setAttribute("aria-busy", state === "open" ? "false" : "true");
  $("offline").hidden = state !== "offline";
  if (wasOnline !== store.online) {
    emit("online");
    logLine(store.online ? "connected to the node" : "lost the node; retrying");
  }
  if (state === "open") reload();
}

async function reload() {
  await peers.load();  // the others need the peers' names
  await Promise.all([chat.load(), panes.load(), pairing.load(), monitor.load(), lobby.load(),
    tasks.load()]);
}

function offlineCountdown(socket) {
  if (socket.state !== "offline") return;
  const s = Math.max(0, Math.ceil((socket.nextRetryAt - Date.now()) / 1000));
  $("offline-detail").textContent = s > 0 ? "(next try in " + s + " s)" : "(trying…)";
}

function notifications() {
  const b = $("notify-enable");
  const can = typeof Notification === "function";
  b.hidden = !can || Notification.permission !== "default";
  b.addEventListener("click", async () => {
    try { await Notification.requestPermission(); } catch { /* refused */ }
    b.hidden = Notification.permission !== "default";
  });
}

function main() {
  const token = takeToken();
  if (!token) {
    showAuth("This address has no access token.");
    return;
  }
  const socket = new NodeSocket(token);
  store.socket = socket;
  for (const p of panels) p.init(socket);
  socket.on("system", "hello", (d) => { if (!store.self) store.self = {node_id: d.node_id}; });
  socket.on("system", "pong", () => {});
  socket.on("system", "error", (d) => logLine("error " + d.code + ": " + (d.message || "")));
  socket.on("*", "*", (d, f) => logLine(f.channel + " " + f.event));  // what no panel shows
  socket.addEventListener("state", () => onState(socket));
  socket.addEventListener("retry", () => offlineCountdown(socket));
  setInterval(() => offlineCountdown(socket), 500);
  $("retry-now").addEventListener("click", () => socket.retryNow());
  notifications();
  onState(socket);
  socket.start();
}

main();
