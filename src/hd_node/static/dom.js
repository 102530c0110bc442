// Small DOM and formatting helpers shared by the panels. Data from the node or from
// peers only ever becomes text (textContent, attribute values): never markup.

export const $ = (id) => document.getElementById(id);

// el("button", {type: "button", onclick: f, dataset: {key: "x"}}, "text", child, ...)
export function el(tag, props, ...children) {
  const svg = tag.startsWith("svg:");
  const e = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on") && typeof v === "function") e.addEventListener(k.slice(2), v);
    else if (k === "value" && !svg) e.value = v;
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : String(v));
  }
  e.append(...children.flat().filter((c) => c !== null && c !== undefined && c !== false && c !== ""));
  return e;
}

// Replace a list's items without losing the keyboard focus: the element that had it
// is found again by its data-key (or the nearest focusable inside the same keyed item).
export function rebuild(list, items) {
  const a = document.activeElement;
  const key = a && list.contains(a) ? a.dataset.key : null;
  const openMenus = [...list.querySelectorAll("details[open][data-key]")].map((d) => d.dataset.key);
  list.replaceChildren(...items);
  for (const k of openMenus) {
    const d = findKey(list, k);
    if (d) d.open = true;
  }
  if (key) {
    const b = findKey(list, key);
    if (b) b.focus();
  }
}
export function findKey(root, key) {
  return [...root.querySelectorAll("[data-key]")].find((x) => x.dataset.key === key) || null;
}

export const shortId = (id) => String(id || "").slice(0, 8);

export function initials(name, id) {
  const words = String(name || "").trim().split(/[\s._-]+/).filter(Boolean);
  if (!words.length) return shortId(id).slice(0, 2).toUpperCase() || "?";
  const first = [...words[0]][0] || "";
  const second = words.length > 1 ? [...words[1]][0] || "" : [...words[0]][1] || "";
  return (first + second).toUpperCase();
}

// A stable hue per node id, so a person keeps their colour across pages and nodes.
export function hue(id) {
  let h = 0;
  for (const c of String(id || "")) h = (h * 31 + c.charCodeAt(0)) % 360;
  return h;
}

export function avatar(name, id, extraClass) {
  return el("span", {class: "avatar" + (extraClass ? " " + extraClass : ""), "aria-hidden": "true",
    dataset: {hue: String(Math.round(hue(id) / 30) % 12)}}, initials(name, id));
}

// Text only a screen reader reads.
export const srOnly = (text) => el("span", {class: "sr-only"}, text);

const pad = (n) => String(n).padStart(2, "0");
export function fmtTime(ts) {
  if (!ts) return "";
  const d = new Date(ts), now = new Date();
  const hm = pad(d.getHours()) + ":" + pad(d.getMinutes());
  if (d.toDateString() === now.toDateString()) return hm;
  const y = new Date(now); y.setDate(now.getDate() - 1);
  if (d.toDateString() === y.toDateString()) return "yesterday " + hm;
  return d.toLocaleDateString(undefined, {day: "numeric", month: "short"}) + " " + hm;
}
export function fmtDuration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return s + " s";
  const m = Math.round(s / 60);
  if (m < 60) return m + " min";
  const h = Math.floor(m / 60), rm = m % 60;
  if (h < 48) return h + " h" + (rm ? " " + rm + " min" : "");
  return Math.round(h / 24) + " days";
}
export function fmtAgo(ts) {
  if (!ts) return "never";
  const ms = Date.now() - ts;
  return ms < 45_000 ? "just now" : fmtDuration(ms) + " ago";
}
export function fmtRate(bps) {
  if (bps == null) return "—";
  const v = Number(bps);
  if (v < 1000) return Math.round(v) + " B/s";
  if (v < 1e6) return (v / 1000).toFixed(v < 1e4 ? 1 : 0) + " kB/s";
  return (v / 1e6).toFixed(1) + " MB/s";
}
export function fmtMs(ms) {
  if (ms == null) return "—";
  const v = Number(ms);
  return (v < 10 ? v.toFixed(1) : Math.round(v)) + " ms";
}

// Copy text; says so on the button for a moment (and to screen readers).
export async function copyText(text, button) {
  let ok = false;
  try {
    await navigator.clipboard.writeText(text);
    ok = true;
  } catch {
    // No clipboard API (or no permission): the old way, through a selection.
    const t = el("textarea", {class: "sr-only", "aria-hidden": "true"});
    t.value = text;
    document.body.append(t);
    t.select();
    try { ok = document.execCommand("copy"); } catch { ok = false; }
    t.remove();
  }
  if (button) {
    const label = button.dataset.label || button.textContent;
    button.dataset.label = label;
    button.textContent = ok ? "Copied" : "Copy failed";
    clearTimeout(button._copyTimer);
    button._copyTimer = setTimeout(() => { button.textContent = label; }, 1500);
  }
  announce(ok ? "Copied to the clipboard" : "Could not copy: select the text and copy it");
  return ok;
}

// A polite announcement for screen readers (one shared live region).
export function announce(text) {
  const r = $("announcer");
  if (!r) return;
  r.textContent = "";
  setTimeout(() => { r.textContent = text; }, 30);
}

// The Events list at the bottom of the page: a short, bounded log of what happened.
export function logLine(text) {
  const log = $("log");
  if (!log) return;
  log.prepend(el("li", {}, el("time", {}, fmtTime(Date.now())), " ", text));
  while (log.childNodes.length > 200) log.lastChild.remove();
}
