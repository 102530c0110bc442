// The Tasks list (SPEC 6.3, 9 `agent`): every agent turn of this node, whichever tab
// started it — state, who asked, which agent answers, elapsed time — with Show (follow
// its stream) and Cancel. A turn is the node's, not the tab's: after a reload the
// running tasks are followed again and their streams shown from the start; after a
// dropped socket, from the number this page had reached (`follow {taskId, fromSeq}`),
// so no token shows twice. Every string from the node or a peer is set as text.

import {$, el, shortId, logLine} from "./dom.js";
import {store} from "./store.js";

let socket = null;
const FINAL = new Set(["completed", "canceled", "failed", "rejected"]);
const STATE_LABEL = {
  "submitted": "submitted", "working": "working…", "input-required": "needs input",
  "completed": "completed", "canceled": "canceled", "failed": "failed", "rejected": "rejected",
};
const MAX_ROWS = 50;  // tasks shown; the node keeps more (`agent tasks` lists them all)
const tasks = new Map();  // taskId -> {summary, row, stream, next, followed, text, ...}

function peerName(id) {
  const p = store.peers.get(id);
  return (p && p.node_name ? p.node_name : "peer") + " (" + shortId(id) + ")";
}
function askerText(a) {
  if (!a) return "?";
  if (a.kind === "peer") return "peer " + peerName(a.id);
  if (a.kind === "mcp") return "MCP client " + a.id;
  return "a tab (" + a.id + ")";
}
function elapsed(s) {
  const end = FINAL.has(s.state) ? s.updated : Date.now();
  const secs = Math.max(0, Math.round((end - s.created) / 1000));
  return secs < 60 ? secs + " s" : Math.floor(secs / 60) + " min " + (secs % 60) + " s";
}

function entry(s) {
  let t = tasks.get(s.taskId);
  if (t) return t;
  const state = el("span", {class: "agent-state"});
  const time = el("span", {class: "muted task-elapsed"});
  const show = el("button", {type: "button", class: "task-show", "aria-expanded": "false",
    onclick: () => (t.followed ? unfollow(t) : follow(t, 0))}, "Show");
  const cancel = el("button", {type: "button", class: "task-cancel",
    onclick: () => cancelTask(t)}, "Cancel");
  const text = document.createTextNode("");
  const stream = el("div", {class: "agent-answer task-stream", "aria-live": "polite", hidden: true}, text);
  const error = el("div", {class: "agent-error", hidden: true});
  const li = el("li", {dataset: {taskId: s.taskId}},
    el("div", {class: "agent-head"},
      el("strong", {class: "task-target"}), el("span", {class: "muted task-asker"}),
      state, time, show, cancel),
    el("div", {class: "agent-prompt-text"}), stream, error);
  t = {summary: s, li, state, time, show, cancel, text, stream, error, next: 0, followed: false};
  tasks.set(s.taskId, t);
  $("agent-tasks").prepend(li);
  for (const old of [...tasks.values()]) {  // keep the list bounded: oldest finished go
    if (tasks.size <= MAX_ROWS) break;
    if (FINAL.has(old.summary.state)) { old.li.remove(); tasks.delete(old.summary.taskId); }
  }
  return t;
}

function render(t) {
  const s = t.summary;
  t.li.dataset.state = s.state;
  t.state.dataset.state = s.state;
  t.state.textContent = STATE_LABEL[s.state] || String(s.state);
  t.li.querySelector(".task-target").textContent = "to " + (s.target ? peerName(s.target) : "this node's agent");
  t.li.querySelector(".task-asker").textContent = "asked by " + askerText(s.asker);
  t.li.querySelector(".agent-prompt-text").textContent = String(s.prompt || "");
  t.time.textContent = elapsed(s);
  t.cancel.hidden = FINAL.has(s.state);
  t.cancel.setAttribute("aria-label", "Cancel the task " + shortId(s.taskId));
  t.error.hidden = !s.error || s.state === "completed";
  t.error.textContent = s.error ? String(s.error) : "";
  $("agent-tasks-empty").hidden = tasks.size > 0;
}

function upsert(s) {
  const t = entry(s);
  t.summary = s;
  render(t);
  return t;
}

async function follow(t, fromSeq) {
  t.followed = true;
  t.stream.hidden = false;
  t.show.textContent = "Hide";
  t.show.setAttribute("aria-expanded", "true");
  if (fromSeq === 0) { t.text.data = ""; t.next = 0; }
  try {
    const {data} = await socket.request("agent", "follow", {taskId: t.summary.taskId, fromSeq});
    upsert(data.task);
  } catch (e) {
    logLine("tasks: follow failed: " + e.message);
  }
}
function unfollow(t) {
  t.followed = false;
  t.stream.hidden = true;
  t.show.textContent = "Show";
  t.show.setAttribute("aria-expanded", "false");
  socket.send("agent", "unfollow", {taskId: t.summary.taskId});
}
async function cancelTask(t) {
  t.cancel.disabled = true;
  try {
    upsert((await socket.request("agent", "cancel_task", {taskId: t.summary.taskId})).data);
  } catch (e) {
    logLine("tasks: cancel: " + e.message);
  } finally {
    t.cancel.disabled = false;
  }
}

function onEvent(d) {
  const t = tasks.get(d.taskId);
  if (!t || !t.followed || typeof d.seq !== "number") return;
  if (d.seq < t.next) return;  // already shown (a follow again from an earlier number)
  t.next = d.seq + 1;
  const data = d.data || {};
  if (d.event === "token" && typeof data.delta === "string") t.text.appendData(data.delta);
  else if (d.event === "answer") t.text.data = String(data.text == null ? "" : data.text);
  else if (d.event === "tool_call") t.text.appendData("\n[tool " + String(data.name) + "]\n");
}

export function init(sock) {
  socket = sock;
  sock.on("agent", "task", (s) => upsert(s));
  sock.on("agent", "task_event", onEvent);
  sock.addEventListener("state", () => {
    if (sock.open) return;
    for (const t of tasks.values()) t.resumeFrom = t.followed ? t.next : null;
  });
  setInterval(() => {
    for (const t of tasks.values()) if (!FINAL.has(t.summary.state)) t.time.textContent = elapsed(t.summary);
  }, 1000);
}

export async function load() {
  let answer;
  try {
    answer = (await socket.request("agent", "tasks", {})).data;
  } catch (e) {
    logLine("tasks: " + e.message);
    return;
  }
  const list = (answer.tasks || []).slice(0, MAX_ROWS).reverse();  // oldest first: prepend
  for (const s of list) upsert(s);
  for (const t of tasks.values()) {
    // Running tasks are followed: from where this page was, or from the start.
    if (typeof t.resumeFrom === "number") follow(t, t.resumeFrom);
    else if (!FINAL.has(t.summary.state) && !t.followed) follow(t, 0);
    t.resumeFrom = null;
  }
}
