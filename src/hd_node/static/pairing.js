// Pairing (SPEC 4.2, 9): create an invite (copy it, or show it as a QR code drawn
// here, with its expiry), list and revoke invites, redeem one with errors a person
// can act on.

import {$, el, rebuild, copyText, fmtTime, fmtDuration, announce, logLine, shortId} from "./dom.js";
import {putPeer, displayName} from "./store.js";
import qrcode from "./qrcode.js";

let socket = null;
let current = null;  // the invite on show: {invite, expires, token_id}
let tick = null;

const PAIR_ERRORS = {
  bad_invite: "That is not a whole invite. An invite starts with hd1: — check that it was copied completely.",
  expired: "This invite has expired. Ask for a new one.",
  wrong_node: "This invite is this node's own. Send it to the other person instead.",
  key_mismatch: "This node already knows that peer with another key, so the invite does not match it. If the peer really changed its identity, forget it first.",
  unreachable: "None of the invite's addresses answered. Is the other node running, and can this machine reach it?",
  pairing_required: "The other node refused: the invite's token was not accepted (revoked, used, or expired).",
  blocked: "The other node refused this node (blocked).",
  busy: "The other node is too busy right now. Try again in a moment.",
  timeout: "The other node did not answer in time.",
  offline: "The page is not connected to this node.",
};

function expiryText(exp) {
  const left = exp - Date.now();
  return left <= 0 ? "expired" : "expires in " + fmtDuration(left) + " (" + fmtTime(exp) + ")";
}

function drawQr(text) {
  const canvas = $("invite-qr");
  let qr;
  try {
    qr = qrcode(0, "M");
    qr.addData(text, "Byte");
    qr.make();
  } catch {
    canvas.hidden = true;  // longer than a QR code holds: the text is still there
    return;
  }
  const n = qr.getModuleCount(), quiet = 4, scale = Math.max(2, Math.floor(240 / (n + 2 * quiet)));
  const size = (n + 2 * quiet) * scale;
  canvas.width = size; canvas.height = size;
  canvas.dataset.modules = String(n);
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, size, size);
  ctx.fillStyle = "#000";
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) if (qr.isDark(r, c)) ctx.fillRect((c + quiet) * scale, (r + quiet) * scale, scale, scale);
  }
  canvas.hidden = false;
}

function showInvite(inv) {
  current = inv;
  $("invite-box").hidden = false;
  $("invite-out").value = inv.invite;
  $("invite-box").dataset.tokenId = inv.token_id || "";
  $("invite-expiry").textContent = expiryText(inv.expires);
  drawQr(inv.invite);
}

async function createInvite(e) {
  e.preventDefault();
  const ttl = Number($("invite-ttl").value);
  $("invite-create").disabled = true;
  try {
    const {data} = await socket.request("network", "invite_create", {ttl});
    showInvite(data);
    announce("Invite created, " + expiryText(data.expires));
    logLine("invite created, " + expiryText(data.expires));
    await listInvites();
  } catch (err) {
    result(false, "Could not create an invite: " + (err.code === "no_address"
      ? "the node has no address to put in it (start it with --advertise ws://HOST:PORT/peer-ws)" : err.message) + " (" + err.code + ")");
  } finally {
    $("invite-create").disabled = false;
  }
}

function inviteState(i) {
  if (i.revoked) return ["revoked", "revoked"];
  if (i.redeemed_by) return ["redeemed", "used by " + (i.redeemed_by_name || displayName(i.redeemed_by))];
  if (i.expired || i.expires <= Date.now()) return ["expired", "expired " + fmtTime(i.expires)];
  return ["active", expiryText(i.expires)];
}

function renderInvites(list) {
  const items = [...list].sort((a, b) => b.created_at - a.created_at).map((i) => {
    const [state, text] = inviteState(i);
    return el("li", {dataset: {tokenId: i.token_id, state}},
      el("span", {class: "inv-main"},
        el("span", {class: "tag " + state}, state),
        " created " + fmtTime(i.created_at) + " · " + text),
      state === "active" ? el("button", {type: "button", dataset: {key: "revoke:" + i.token_id, action: "revoke"},
        "aria-label": "Revoke the invite created " + fmtTime(i.created_at), onclick: () => revoke(i.token_id)}, "Revoke") : null);
  });
  if (!items.length) items.push(el("li", {class: "muted"}, "no invites yet"));
  rebuild($("invites"), items);
}

async function listInvites() {
  try {
    const {data} = await socket.request("network", "invite_list", {});
    renderInvites(data.invites || []);
  } catch (err) {
    if (err.code !== "offline") logLine("invites: " + err.message);
  }
}

async function revoke(tokenId) {
  try {
    const {data} = await socket.request("network", "invite_revoke", {token_id: tokenId});
    renderInvites(data.invites || []);
    if (current && current.token_id === tokenId) {
      $("invite-expiry").textContent = "revoked: this invite no longer works";
      current = null;
    }
    announce("Invite revoked");
    $("invite-create").focus();
  } catch (err) {
    result(false, "Could not revoke the invite: " + err.message + " (" + err.code + ")");
  }
}

function result(ok, text) {
  const r = $("pair-result");
  r.setAttribute("role", ok ? "status" : "alert");
  r.className = "result " + (ok ? "ok" : "bad");
  r.textContent = text;
  r.dataset.ok = ok ? "true" : "false";
  logLine(text);
}

async function redeem(e) {
  e.preventDefault();
  const input = $("invite-in");
  const inv = input.value.trim();
  if (!inv) { result(false, "Paste the invite first."); input.focus(); return; }
  if (!inv.startsWith("hd1:")) { result(false, PAIR_ERRORS.bad_invite + " (bad_invite)"); input.focus(); return; }
  $("invite-redeem").disabled = true;
  const r = $("pair-result");
  r.setAttribute("role", "status"); r.className = "result"; r.textContent = "Pairing…"; r.dataset.ok = "";
  try {
    const {data} = await socket.request("network", "pair_redeem", {invite: inv}, 60000);
    if (data.ok) {
      putPeer(data.peer);
      result(true, "Paired with " + (data.peer.node_name || shortId(data.peer.node_id)) + ".");
      input.value = "";
    } else {
      result(false, (PAIR_ERRORS[data.error] || "Pairing failed: " + (data.message || data.error)) + " (" + data.error + ")");
      input.focus();
    }
  } catch (err) {
    result(false, (PAIR_ERRORS[err.code] || "Pairing failed: " + err.message) + " (" + err.code + ")");
  } finally {
    $("invite-redeem").disabled = false;
  }
}

export async function load() { await listInvites(); }

export function init(s) {
  socket = s;
  s.on("network", "invite", (d) => showInvite(d));
  s.on("network", "invites", (d) => renderInvites(d.invites || []));
  s.on("network", "pair_result", (d) => { if (d.ok && d.peer) putPeer(d.peer); });
  $("invite-form").addEventListener("submit", createInvite);
  $("redeem-form").addEventListener("submit", redeem);
  $("invite-copy").addEventListener("click", (e) => copyText($("invite-out").value, e.currentTarget));
  clearInterval(tick);
  tick = setInterval(() => { if (current) $("invite-expiry").textContent = expiryText(current.expires); }, 30_000);
}
