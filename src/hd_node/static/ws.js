// The page's one client of the node's /ws socket (SPEC 9): frames {channel, event, data}.
//
// It owns the socket: opens it with the page's token, reconnects after a loss, and
// tells the page what state it is in ("connecting", "open", "offline", "refused").
// A socket that opened once and closed means the node went away (or restarted); a
// socket that never opens is either a stopped node or a refused token, which the
// browser cannot tell apart (both look like code 1006), so it asks /api/self with the
// token: 403 is "refused", no answer is "offline".
//
// Commands: `send` fires and forgets; `request` adds a `req` that the node echoes in its
// direct answer and returns a promise of that answer (rejected with the error's code).
// Frames that answer nobody's request go to the handlers registered with `on`.

const PING_EVERY_MS = 1500;   // a silent node is noticed in about 4 s (SPEC: offline in < 5 s)
const SILENT_MS = 4000;
const RETRY_MS = [500, 1000, 2000, 3000];
const REQUEST_TIMEOUT_MS = 20000;
const UNSUPPORTED = new Set(["unknown_event", "unsupported", "unknown_channel"]);

export class CommandError extends Error {
  constructor(code, message) {
    super(message || code);
    this.code = code || "error";
    this.unsupported = UNSUPPORTED.has(this.code);
  }
}

export class NodeSocket extends EventTarget {
  constructor(token) {
    super();
    this.token = token;
    this.ws = null;
    this.state = "connecting";
    this.handlers = new Map();
    this.pending = new Map();  // req -> {resolve, reject, timer, what}
    this.unsupported = new Set();  // "channel/event" the node does not serve
    this.seq = 0;
    this.failures = 0;
    this.lastFrameAt = 0;
    this.retryTimer = null;
    this.pingTimer = null;
    this.nextRetryAt = 0;
  }

  on(channel, event, fn) {
    const key = channel + "/" + event;
    if (!this.handlers.has(key)) this.handlers.set(key, []);
    this.handlers.get(key).push(fn);
  }

  get open() { return this.ws !== null && this.ws.readyState === WebSocket.OPEN && this.state === "open"; }

  send(channel, event, data) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify({channel, event, data: data || {}}));
    return true;
  }

  request(channel, event, data, timeoutMs = REQUEST_TIMEOUT_MS) {
    const what = channel + "/" + event;
    if (this.unsupported.has(what)) {
      return Promise.reject(new CommandError("unsupported", what + " is not served by this node"));
    }
    const req = "r" + (++this.seq);
    return new Promise((resolve, reject) => {
      if (!this.send(channel, event, Object.assign({}, data, {req}))) {
        reject(new CommandError("offline", "not connected to the node"));
        return;
      }
      const timer = setTimeout(() => {
        this.pending.delete(req);
        reject(new CommandError("timeout", "the node did not answer " + what));
      }, timeoutMs);
      this.pending.set(req, {resolve, reject, timer, what});
    });
  }

  start() {
    clearTimeout(this.retryTimer);
    let ws;
    try {
      ws = new WebSocket((location.protocol === "https:" ? "wss://" : "ws://") + location.host
        + "/ws?token=" + encodeURIComponent(this.token));
    } catch {
      this.lost(false);
      return;
    }
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      opened = true;
      this.failures = 0;
      this.lastFrameAt = Date.now();
      this.setState("open");
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.heartbeat(), PING_EVERY_MS);
    };
    ws.onmessage = (m) => {
      this.lastFrameAt = Date.now();
      let f;
      try { f = JSON.parse(m.data); } catch { return; }
      if (f && typeof f === "object") this.dispatch(f);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return;
      this.ws = null;
      this.lost(opened);
    };
  }

  retryNow() {
    if (this.state === "open" || this.state === "refused") return;
    clearTimeout(this.retryTimer);
    this.start();
  }

  heartbeat() {
    if (!this.open) return;
    if (Date.now() - this.lastFrameAt > SILENT_MS) {
      // The node stopped answering (frozen, or the machine is gone): treat as lost.
      const ws = this.ws;
      this.ws = null;
      try { ws.close(); } catch { /* already closing */ }
      this.lost(true);
      return;
    }
    this.send("system", "ping", {});
  }

  async lost(wasOpen) {
    clearInterval(this.pingTimer);
    for (const [req, p] of this.pending) {
      clearTimeout(p.timer);
      p.reject(new CommandError("offline", "the connection to the node dropped"));
      this.pending.delete(req);
    }
    this.setState("offline");
    if (!wasOpen) {
      // Never opened: a refused token, or nothing listening. Ask with the token.
      const verdict = await this.probe();
      if (verdict === "refused") { this.setState("refused"); return; }
    }
    const delay = RETRY_MS[Math.min(this.failures, RETRY_MS.length - 1)];
    this.failures += 1;
    this.nextRetryAt = Date.now() + delay;
    this.dispatchEvent(new Event("retry"));
    this.retryTimer = setTimeout(() => this.start(), delay);
  }

  async probe() {
    try {
      const r = await fetch("/api/self", {headers: {Authorization: "Bearer " + this.token},
        cache: "no-store", credentials: "omit"});
      return r.status === 403 ? "refused" : "up";
    } catch {
      return "down";
    }
  }

  setState(state) {
    if (this.state === state) return;
    this.state = state;
    this.dispatchEvent(new Event("state"));
  }

  dispatch(f) {
    const data = f.data && typeof f.data === "object" ? f.data : {};
    const req = typeof data.req === "string" ? data.req : null;
    const p = req ? this.pending.get(req) : null;
    if (p) {
      this.pending.delete(req);
      clearTimeout(p.timer);
      if (f.event === "error") {
        const err = new CommandError(data.code, data.message);
        if (err.unsupported) this.unsupported.add(p.what);
        p.reject(err);
      } else {
        p.resolve({event: f.event, data});
      }
      return;
    }
    const list = this.handlers.get(f.channel + "/" + f.event) || [];
    for (const fn of list) {
      try { fn(data, f); } catch (e) { console.error("handler", f.channel, f.event, e); }
    }
    if (!list.length) {
      const any = this.handlers.get("*/*") || [];
      for (const fn of any) fn(data, f);
    }
  }
}
