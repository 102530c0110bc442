// The Agent box (SPEC 6.3, 9): ask this node's agent or a peer's, see the answer stream
// in, tool calls and their results, clear errors; cancel one turn or all (Ctrl+Enter
// asks). Unchanged in behaviour from the single-file page.

import {$, el, shortId, logLine} from "./dom.js";
import {store, on} from "./store.js";

let socket = null;
const H = {};  // "agent/event" -> handler

// A turn asks this node's own agent (`ask`) or a connected peer's (`ask_peer`). Its events
// (token, tool_call, tool_result, answer, error) come to this tab only, keyed by the
// turnId the page chose; the command's answer `done` says the turn is over. Every command
// carries a `req`, so an error the node answers before a turn exists (a refused field, a
// cancel that came too late) still finds its entry. Data from the node and from peers is
// only ever set as text.
const agent = {
  turns: new Map(),  // turnId -> entry (see agentEntry)
  reqs: new Map(),   // req -> {turnId, what: "ask" | "cancel"}
  seq: 0,
  targets: "",       // what the target list was built from (rebuilt only on change)
};
const AGENT_MAX_ENTRIES = 50;   // entries kept on the page; finished ones go first
const AGENT_EXCERPT_CHARS = 160;  // of a tool result, inline
const AGENT_ERRORS = {
  unsupported: "this node has no agent backend (start it with --agent-backend demo | openai:URL | command:CMD)",
  not_allowed: "the peer does not take agent requests (it needs an agent backend and allowRemoteAgent = true)",
  forbidden: "the peer does not trust this node: only its trusted peers may ask its agent",
  timeout: "no answer in time (the turn ran out of time)",
  cancelled: "the turn was cancelled; the agent was told to stop",
  busy: "too many turns at once; try again when one has finished",
  loop: "refused: the request would come back to a node that already asked",
  too_many_hops: "refused: too many hops (at most 3 nodes in a chain)",
  peer_gone: "the peer is not connected (no session with it)",
  backend: "the agent failed",
  bad_request: "the node refused the request",
  internal: "the node hit an internal error (see its log)",
};

function agentNotice(text) { $("agent-notice-text").textContent = text; $("agent-notice").hidden = false; logLine("agent: " + text); }
function agentClearNotice() { $("agent-notice").hidden = true; $("agent-notice-text").textContent = ""; }

function agentTargetName(nodeId) {
  if (!nodeId) return "this node's agent";
  const p = store.peers.get(nodeId);
  return (p && p.node_name ? p.node_name : "peer") + " (" + shortId(nodeId) + ")";
}
function agentTargetNote() {
  const id = $("agent-target").value, p = id ? store.peers.get(id) : null;
  let text = "";
  if (!id) {
    const backend = store.self ? store.self.agent_backend : undefined;
    text = backend ? "runs on this node (" + backend + " backend)"
      : backend === null ? "this node has no agent backend (start it with --agent-backend …)"
      : "runs on this node, if it has an agent backend";
  } else if (!p || p.status !== "connected") text = "not connected: asking will fail";
  else if ((p.capabilities || []).includes("agent")) text = "takes agent requests";
  else text = "does not say it takes agent requests: it may refuse";
  $("agent-target-note").textContent = text;
}
function renderAgentTargets() {
  const sel = $("agent-target");
  const keep = sel.value;
  const list = [...store.peers.values()]
    .filter((p) => p.status === "connected" || p.node_id === keep)
    .sort((a, b) => (a.node_name || "").localeCompare(b.node_name || "") || a.node_id.localeCompare(b.node_id));
  const opts = list.map((p) => {
    const note = p.status !== "connected" ? " — not connected" : (p.capabilities || []).includes("agent") ? " — takes agent requests" : "";
    return [p.node_id, agentTargetName(p.node_id) + note];
  });
  const sig = JSON.stringify(opts);
  if (sig !== agent.targets) {  // rebuilding closes an open drop-down: only when it changed
    agent.targets = sig;
    sel.replaceChildren(el("option", {value: ""}, "this node's agent"),
      ...opts.map(([v, label]) => el("option", {value: v}, label)));
    sel.value = keep;
    if (sel.value !== keep) sel.value = "";
  }
  agentTargetNote();
}

function agentRunning() { return [...agent.turns.values()].filter((t) => t.running); }
function agentButtons() {
  const live = agentRunning();
  const cancellable = live.filter((t) => t.state !== "cancelling");
  const b = $("agent-cancel");
  b.disabled = cancellable.length === 0;
  b.textContent = cancellable.length > 1 ? "Cancel all (" + cancellable.length + ")" : "Cancel";
  b.setAttribute("aria-label", cancellable.length > 1 ? "Cancel the " + cancellable.length + " running turns" : "Cancel the running turn");
  const text = live.length ? (live.length === 1 ? "1 turn running" : live.length + " turns running") : "";
  if ($("agent-running").textContent !== text) $("agent-running").textContent = text;
}

function agentEntry(id, target, prompt) {
  const stateEl = el("span", {class: "agent-state", "data-state": "running"}, "running…");
  const cancel = el("button", {type: "button", class: "agent-cancel-one", "aria-label": "Cancel this turn",
    onclick: () => agentCancel(id)}, "Cancel");
  const text = document.createTextNode("");
  const answer = el("div", {class: "agent-answer", "aria-live": "polite"});
  answer.append(text);
  const tools = el("ul", {class: "plain agent-tools", "aria-label": "tool calls", hidden: true});
  const error = el("div", {class: "agent-error", hidden: true});
  const li = el("li", {dataset: {turnId: id, state: "running"}},
    el("div", {class: "agent-head"},
      el("strong", {}, "to " + agentTargetName(target)),
      el("span", {class: "muted"}, new Date().toLocaleTimeString()),
      stateEl, cancel),
    el("div", {class: "agent-prompt-text"}, prompt),
    tools, answer, error);
  const t = {id, target, li, stateEl, cancel, answer, text, tools, error, calls: new Map(), running: true, state: "running"};
  agent.turns.set(id, t);
  $("agent-turns").prepend(li);
  // Keep the page bounded: drop the oldest finished entries.
  for (const old of [...agent.turns.values()]) {
    if (agent.turns.size <= AGENT_MAX_ENTRIES) break;
    if (!old.running) { old.li.remove(); agent.turns.delete(old.id); }
  }
  return t;
}
function agentState(t, state, label) {
  t.state = state;
  t.li.dataset.state = state;
  t.stateEl.dataset.state = state;
  t.stateEl.textContent = label;
}
function agentFinish(t) {
  t.running = false;
  t.cancel.hidden = true;
  agentButtons();
}

function agentAsk() {
  const prompt = $("agent-prompt").value;
  if (!prompt.trim()) { agentNotice("write a prompt first"); $("agent-prompt").focus(); return; }
  if (!socket || !socket.open) { agentNotice("not connected to this node (the page is reconnecting)"); return; }
  agentClearNotice();
  const target = $("agent-target").value;
  const id = "t" + (++agent.seq) + "-" + Date.now().toString(36);
  const req = "agent-" + id;
  agentEntry(id, target, prompt);
  agent.reqs.set(req, {turnId: id, what: "ask"});
  if (target) socket.send("agent", "ask_peer", {turnId: id, node_id: target, prompt, req});
  else socket.send("agent", "ask", {turnId: id, prompt, req});
  $("agent-prompt").value = "";
  agentButtons();
}
function agentCancel(id) {
  const t = agent.turns.get(id);
  if (!t || !t.running || t.state === "cancelling") return;
  const req = "agent-cancel-" + id;
  agent.reqs.set(req, {turnId: id, what: "cancel"});
  socket.send("agent", "cancel", {turnId: id, req});
  agentState(t, "cancelling", "cancelling…");
  agentButtons();
}

function agentFail(t, code, message) {
  const human = AGENT_ERRORS[code] || "the turn failed";
  // The node's line often repeats the code ("not_allowed: …"): show it once.
  let detail = String(message || "");
  if (detail.startsWith(code + ":")) detail = detail.slice(code.length + 1).trim();
  t.error.dataset.code = code;
  t.error.setAttribute("role", code === "cancelled" ? "status" : "alert");
  const parts = [el("strong", {}, code), " — " + human];
  if (detail && detail !== human && !human.includes(detail)) parts.push(el("span", {class: "detail"}, detail));
  t.error.replaceChildren(...parts);
  t.error.hidden = false;
  agentState(t, code === "cancelled" ? "cancelled" : "failed", code === "cancelled" ? "cancelled" : "failed: " + code);
}

function agentToolRow(t, id, name) {
  let row = t.calls.get(id);
  if (row) return row;
  const status = el("span", {class: "muted"}, "running…");
  const excerpt = el("span", {class: "mono"});
  const args = el("pre", {class: "mono"});
  const full = el("pre", {class: "mono"});
  const fullBox = el("details", {hidden: true}, el("summary", {}, "full result"), full);
  const li = el("li", {dataset: {callId: id}},
    el("strong", {class: "mono"}, name), " ", status, " ", excerpt, " ",
    el("details", {}, el("summary", {}, "arguments"), args), " ", fullBox);
  row = {li, status, excerpt, args, full, fullBox};
  t.calls.set(id, row);
  t.tools.append(li);
  t.tools.hidden = false;
  return row;
}

function agentTurn(d) {
  const t = agent.turns.get(d.turnId);
  if (!t) logLine("agent: event for a turn this page does not know (" + d.turnId + ")");
  return t;
}
H["agent/token"] = (d) => { const t = agentTurn(d); if (t && typeof d.delta === "string") t.text.appendData(d.delta); };
H["agent/tool_call"] = (d) => {
  const t = agentTurn(d);
  if (!t) return;
  const row = agentToolRow(t, String(d.id), String(d.name));
  let args;
  try { args = JSON.stringify(d.arguments, null, 2); } catch { args = String(d.arguments); }
  row.args.textContent = args;
};
H["agent/tool_result"] = (d) => {
  const t = agentTurn(d);
  if (!t) return;
  const row = agentToolRow(t, String(d.id), String(d.name));
  const content = String(d.content == null ? "" : d.content);
  row.status.textContent = d.ok ? "ok" : "failed";
  row.status.className = d.ok ? "ok" : "bad";
  const flat = content.replace(/\s+/g, " ").trim();
  row.excerpt.textContent = flat.length > AGENT_EXCERPT_CHARS ? flat.slice(0, AGENT_EXCERPT_CHARS) + "…" : flat;
  row.full.textContent = content;
  row.fullBox.hidden = flat.length <= AGENT_EXCERPT_CHARS;
};
H["agent/answer"] = (d) => {
  const t = agentTurn(d);
  if (!t) return;
  t.text.data = String(d.text == null ? "" : d.text);  // the whole answer, as the agent ended it
  t.answer.dataset.final = "";
  agentState(t, "answered", "answered");
};
H["agent/error"] = (d) => {
  const r = d.req ? agent.reqs.get(d.req) : null;
  if (r) agent.reqs.delete(d.req);
  const t = agent.turns.get(d.turnId || (r && r.turnId));
  if (r && r.what === "cancel") {
    // Nothing left to cancel: the turn ended on its own; its `done` says how.
    if (t && t.running && t.state === "cancelling") agentState(t, "running", "running…");
    logLine("agent: cancel " + d.code + ": " + d.message);
    agentButtons();
    return;
  }
  if (!t) { agentNotice("agent: " + (AGENT_ERRORS[d.code] || d.message || "error") + " (" + d.code + ")"); return; }
  agentFail(t, String(d.code || "error"), d.message);
  if (r) agentFinish(t);  // refused before the turn began: no `done` follows
};
H["agent/done"] = (d) => {
  if (d.req) agent.reqs.delete(d.req);
  const t = agentTurn(d);
  if (!t) return;
  if (t.state === "running" || t.state === "cancelling") {
    if (d.ok) agentState(t, "answered", "answered");
    else agentFail(t, "backend", "the turn ended without an answer");
  }
  agentFinish(t);
};
H["agent/started"] = (d) => { const t = agentTurn(d); if (t) t.li.dataset.taskId = String(d.taskId); };
H["agent/cancelling"] = (d) => { if (d.req) agent.reqs.delete(d.req); };

$("agent-form").onsubmit = (e) => { e.preventDefault(); agentAsk(); };
$("agent-prompt").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); agentAsk(); }
});
$("agent-cancel").onclick = () => { for (const t of agentRunning()) agentCancel(t.id); };
$("agent-target").onchange = agentTargetNote;


export function init(sock) {
  socket = sock;
  for (const [key, fn] of Object.entries(H)) {
    const [channel, event] = key.split("/");
    sock.on(channel, event, fn);
  }
  sock.addEventListener("state", () => {
    if (sock.open) return;
    // The turn is a task of the node and goes on; this entry no longer hears from it
    // (the new socket is another tab): its stream goes on under Tasks.
    for (const t of agentRunning()) {
      agentState(t, "detached", "goes on under Tasks");
      agentFinish(t);
    }
    agent.reqs.clear();
  });
  on("peers", renderAgentTargets);
  on("self", agentTargetNote);
  renderAgentTargets();
  agentButtons();
}
