// The peer monitor (SPEC 6.4, 9 `peer_metrics`): one card per measured peer with its
// round-trip time and traffic, and the figures over time (kept on the page, from the
// pushes every 5 s) drawn as small SVG charts here and in a peer's details.

import {$, el, avatar, rebuild, fmtMs, fmtRate, fmtDuration} from "./dom.js";
import {store, on, emit, act, provide, displayName} from "./store.js";
import {peerStatus} from "./peers.js";

const KEEP = 120;  // samples per peer: 10 minutes at one every 5 s
let socket = null;
const rows = new Map();     // node_id -> the last row
const history = new Map();  // node_id -> [{t, rtt, srtt, in, out}]

function record(list) {
  const t = Date.now();
  const seen = new Set();
  for (const r of list || []) {
    if (!r || !r.node_id) continue;
    seen.add(r.node_id);
    rows.set(r.node_id, r);
    const h = history.get(r.node_id) || [];
    h.push({t, rtt: r.rtt_ms, srtt: r.srtt_ms, in: r.rate_in_bps || 0, out: r.rate_out_bps || 0});
    while (h.length > KEEP) h.shift();
    history.set(r.node_id, h);
    // The monitor's RTT is fresher than the last peer_update's.
    const p = store.peers.get(r.node_id);
    if (p && r.status === "connected" && r.rtt_ms != null) p.rtt_ms = r.rtt_ms;
  }
  for (const id of [...rows.keys()]) if (!seen.has(id)) rows.delete(id);
  render();
  emit("metrics");
}

// --- charts ---------------------------------------------------------------------------------

// A small line chart: series [{values, cls, label}], y from 0 to the maximum seen.
function chart(series, {unit, format, title}) {
  const W = 320, H = 90, L = 44, B = 16, T = 6, R = 6;
  const all = series.flatMap((s) => s.values.filter((v) => v != null));
  const n = Math.max(2, ...series.map((s) => s.values.length));
  const max = Math.max(1e-9, ...all) * 1.15;
  const x = (i) => L + (i * (W - L - R)) / (n - 1);
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const parts = [
    el("svg:line", {x1: L, y1: H - B, x2: W - R, y2: H - B, class: "axis"}),
    el("svg:line", {x1: L, y1: T, x2: L, y2: H - B, class: "axis"}),
    el("svg:text", {x: L - 4, y: T + 8, class: "tick-label", "text-anchor": "end"}, format(max / 1.15)),
    el("svg:text", {x: L - 4, y: H - B, class: "tick-label", "text-anchor": "end"}, "0"),
    el("svg:text", {x: W - R, y: H - 3, class: "tick-label", "text-anchor": "end"}, "now"),
    el("svg:text", {x: L, y: H - 3, class: "tick-label"}, "−" + fmtDuration((n - 1) * 5000)),
  ];
  for (const s of series) {
    const pts = s.values.map((v, i) => (v == null ? null : x(i + n - s.values.length).toFixed(1) + "," + y(v).toFixed(1))).filter(Boolean);
    if (pts.length === 1) pts.push(pts[0]);
    if (pts.length) parts.push(el("svg:polyline", {points: pts.join(" "), class: "line " + s.cls, fill: "none"}));
  }
  const svg = el("svg:svg", {viewBox: `0 0 ${W} ${H}`, class: "chart-svg", role: "img", "aria-label": title}, parts);
  const legend = el("ul", {class: "legend"}, series.map((s) => {
    const vals = s.values.filter((v) => v != null);
    const now = vals.at(-1);
    return el("li", {class: s.cls}, el("span", {class: "swatch", "aria-hidden": "true"}), s.label + ": " + (now == null ? "—" : format(now))
      + (vals.length > 1 ? " (min " + format(Math.min(...vals)) + ", max " + format(Math.max(...vals)) + ")" : ""));
  }));
  void unit;
  return [svg, legend];
}

function summary(values, format) {
  const v = values.filter((x) => x != null);
  if (!v.length) return "no samples yet";
  return "now " + format(v.at(-1)) + ", min " + format(Math.min(...v)) + ", max " + format(Math.max(...v)) + " over " + fmtDuration((v.length - 1) * 5000);
}

export function drawCharts(id, rttBox, rateBox) {
  const h = history.get(id) || [];
  const name = displayName(id);
  if (!h.length) {
    rttBox.replaceChildren(el("p", {class: "muted"}, "No measurements yet: the node measures a connected peer every 5 s."));
    rateBox.replaceChildren();
    rttBox.dataset.samples = "0";
    return;
  }
  const rtt = h.map((s) => s.rtt), srtt = h.map((s) => s.srtt);
  rttBox.replaceChildren(...chart([{values: rtt, cls: "s1", label: "RTT"}, {values: srtt, cls: "s2", label: "smoothed"}],
    {format: fmtMs, title: "Round-trip time to " + name + ": " + summary(rtt, fmtMs)}));
  rttBox.dataset.samples = String(h.length);
  const inn = h.map((s) => s.in), out = h.map((s) => s.out);
  rateBox.replaceChildren(...chart([{values: inn, cls: "s1", label: "in"}, {values: out, cls: "s3", label: "out"}],
    {format: fmtRate, title: "Traffic with " + name + ": in " + summary(inn, fmtRate) + "; out " + summary(out, fmtRate)}));
}

// A sparkline of the RTT for a card.
function spark(id) {
  const h = (history.get(id) || []).map((s) => s.rtt).filter((v) => v != null);
  if (h.length < 2) return null;
  const W = 120, H = 28, max = Math.max(...h) * 1.1 || 1;
  const pts = h.map((v, i) => ((i * W) / (h.length - 1)).toFixed(1) + "," + (H - 2 - ((H - 4) * v) / max).toFixed(1));
  return el("svg:svg", {viewBox: `0 0 ${W} ${H}`, class: "spark", "aria-hidden": "true"},
    el("svg:polyline", {points: pts.join(" "), class: "line s1", fill: "none"}));
}

// --- cards ------------------------------------------------------------------------------------

function render() {
  const items = [...rows.values()].sort((a, b) => displayName(a.node_id).localeCompare(displayName(b.node_id))).map((r) => {
    const id = r.node_id, name = displayName(id);
    const p = store.peers.get(id);
    const lost = r.status !== "connected";
    return el("li", {class: "mcard", dataset: {nodeId: id, status: r.status}},
      el("div", {class: "mcard-head"}, avatar(p?.node_name, id),
        el("strong", {}, name),
        el("span", {class: "status-text"}, lost ? "lost" + (r.reason ? " (" + r.reason + ")" : "") : peerStatus(p).text)),
      el("dl", {class: "figures"},
        el("dt", {}, "RTT"), el("dd", {class: "rtt"}, fmtMs(r.rtt_ms)),
        el("dt", {}, "smoothed"), el("dd", {}, fmtMs(r.srtt_ms) + (r.rttvar_ms != null ? " ± " + fmtMs(r.rttvar_ms) : "")),
        el("dt", {}, "in"), el("dd", {}, fmtRate(r.rate_in_bps)),
        el("dt", {}, "out"), el("dd", {}, fmtRate(r.rate_out_bps)),
        el("dt", {}, "missed pings"), el("dd", {}, String(r.timeouts ?? 0))),
      spark(id),
      el("button", {type: "button", dataset: {key: "mdetails:" + id, action: "details"}, "aria-label": "Details and charts of " + name,
        onclick: (e) => act("peerDetails", id, e.currentTarget)}, "Details"));
  });
  rebuild($("monitor-list"), items);
  $("monitor-empty").hidden = items.length > 0;
}

export async function load() {
  try {
    const {data} = await socket.request("network", "list_metrics", {});
    record(data.metrics);
  } catch { /* shown on the next push */ }
}

export function init(s) {
  socket = s;
  s.on("network", "peer_metrics", (d) => record(d.metrics));
  s.on("network", "bench_result", () => {});
  provide("drawCharts", drawCharts);
  on("peers", render);
  on("online", () => { if (!store.online) { rows.clear(); render(); } });
  render();
}
