// The overlays' shared library (overlay.js): safe element building, the theme and the
// event stream. Every overlay page loads this first, then its own script, which calls
// Overlay.start({...}).
//
// Chat text is hostile. Every viewer-supplied string goes into the page through el()
// (textContent) and nowhere else: no innerHTML, no insertAdjacentHTML, no document.write,
// and no href/src ever comes from chat. Theme values end up in CSS, so they are held to
// the same strict shapes the server's config accepts (streambot/config.py).
"use strict";

(function () {
  const CORNERS = ["top-left", "top-right", "bottom-left", "bottom-right"];
  const COLOUR = /^(#[0-9a-fA-F]{3,8}|rgba?\(\s*[0-9.%]+\s*(,\s*[0-9.%]+\s*){2,3}\)|[a-zA-Z]{3,20})$/;
  const FONT = /^[A-Za-z0-9 ,'\-]{1,120}$/;
  const DEFAULT_THEME = {
    font: "system-ui, sans-serif", text: "#ffffff", accent: "#ffd54a",
    background: "rgba(10, 12, 24, 0.78)", corner: "bottom-left", scale: 1.0,
  };
  const LAYOUT_WIDTH = 1920, LAYOUT_HEIGHT = 1080;  // what the pages are drawn for

  // ---- safe building ---------------------------------------------------------------------

  /** A new element; ``text`` (if given) goes in as text, never as markup. */
  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  /** ``text`` cut to ``max`` characters (whole code points), with an ellipsis when cut. */
  function truncate(text, max) {
    const chars = Array.from(text == null ? "" : String(text));
    return chars.length <= max ? chars.join("") : chars.slice(0, max - 1).join("").trimEnd() + "\u2026";
  }

  /** A set that forgets its oldest entries past ``limit``: ids seen, for dedupe. */
  class BoundedSet {
    constructor(limit) { this.limit = limit; this.items = new Set(); }
    has(key) { return this.items.has(key); }
    add(key) {
      if (this.items.has(key)) return;
      this.items.add(key);
      while (this.items.size > this.limit) this.items.delete(this.items.values().next().value);
    }
  }

  /** A list capped at ``limit`` entries (oldest dropped): what a page showed, for tests. */
  function remember(list, item, limit = 500) {
    list.push(item);
    if (list.length > limit) list.splice(0, list.length - limit);
  }

  // ---- query and theme -----------------------------------------------------------------

  const query = new URLSearchParams(location.search);
  const DECIMAL = /^\s*[0-9]+(\.[0-9]+)?\s*$/;  // no signs, exponents, hex or units

  /** A number from the query, or null when absent, not a number, or outside [lo, hi]. */
  function queryNumber(name, lo, hi) {
    const raw = query.get(name);
    if (raw === null || !DECIMAL.test(raw)) return null;
    const value = Number(raw);
    return Number.isFinite(value) && value >= lo && value <= hi ? value : null;
  }

  function validColour(value) { return typeof value === "string" && COLOUR.test(value.trim()) ? value.trim() : null; }
  function validFont(value) { return typeof value === "string" && FONT.test(value.trim()) ? value.trim() : null; }
  function validCorner(value) { return CORNERS.includes(value) ? value : null; }
  function validScale(value) {
    const n = typeof value === "number" ? value : (typeof value === "string" && DECIMAL.test(value) ? Number(value) : NaN);
    return Number.isFinite(n) && n >= 0.25 && n <= 4 ? n : null;
  }

  /** The theme: defaults, then the server's (each value checked), then the URL's (each checked). */
  function resolveTheme(server) {
    const theme = { ...DEFAULT_THEME };
    const checks = { font: validFont, text: validColour, accent: validColour, background: validColour,
                     corner: validCorner, scale: validScale };
    for (const source of [server || {}, Object.fromEntries(query.entries())]) {
      for (const [key, check] of Object.entries(checks)) {
        if (source[key] === undefined || source[key] === null) continue;
        const value = check(source[key]);
        if (value !== null) theme[key] = value;
      }
    }
    return theme;
  }

  function fit() {
    return Math.min(window.innerWidth / LAYOUT_WIDTH, window.innerHeight / LAYOUT_HEIGHT) || 1;
  }

  function applyTheme(theme) {
    const root = document.documentElement.style;
    root.setProperty("--font", theme.font);
    root.setProperty("--text", theme.text);
    root.setProperty("--accent", theme.accent);
    root.setProperty("--panel-bg", theme.background);
    document.body.dataset.corner = theme.corner;
    const resize = () => {
      const f = fit();
      root.setProperty("--fit", String(f));
      root.setProperty("--scale", String(f * theme.scale));
    };
    resize();
    window.addEventListener("resize", resize);
  }

  // ---- fetching ----------------------------------------------------------------------------

  async function getJSON(path) {
    const response = await fetch(path, { cache: "no-store", credentials: "same-origin" });
    if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
    return response.json();
  }

  const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

  /** ``fn`` at most once per ``interval`` ms, never two at a time; calls in between
   * are coalesced into one more run after the current one. */
  function coalesced(fn, interval) {
    let running = false, again = false, last = 0;
    async function run() {
      if (running) { again = true; return; }
      running = true;
      try {
        do {
          again = false;
          const wait = last + interval - Date.now();
          if (wait > 0) await sleep(wait);
          last = Date.now();
          try { await fn(); } catch (error) { console.warn("overlay:", error.message || error); }
        } while (again);
      } finally {
        running = false;
      }
    }
    return run;
  }

  // ---- the page's life: settings, state, stream ------------------------------------------

  const overlay = {
    ready: false, connected: false, opens: 0, gaps: 0, states: 0,
    theme: null, settings: null, page: null,
    el, truncate,
  };
  window.overlay = overlay;

  /**
   * Starts a page:
   *   name:    the page's name (shown in window.overlay.page)
   *   types:   the stream message types it follows (gap is added)
   *   state:   (state) => paint from GET /api/state; omit for pages that need none
   *   on:      {type: (data, event) => ...} for stream messages
   *   setup:   (settings, theme) => ... once the theme is known, before anything else
   * Stream messages that arrive while the state is being (re)read wait, then play in
   * order after it, so the state never overwrites something newer.
   */
  async function start(options) {
    overlay.page = options.name;
    let settings = {};
    try {
      settings = await getJSON("/api/overlays");
    } catch (error) {
      console.warn("overlay: no settings, using the defaults:", error.message || error);
    }
    overlay.settings = settings;
    overlay.theme = resolveTheme(settings.theme);
    applyTheme(overlay.theme);
    if (options.setup) options.setup(settings, overlay.theme);

    const types = [...new Set([...(options.types || []), "gap"])];
    let held = null;  // messages waiting for the state read in flight
    overlay.waiting = () => (held ? held.length : 0);
    let lastId = "";
    let source = null;

    function deliver(type, data, event) {
      const handler = options.on && options.on[type];
      if (!handler) return;
      try { handler(data, event); } catch (error) { console.error("overlay:", type, error); }
    }

    let reading = null, rereadWanted = false;
    async function readState() {
      if (!options.state) return;
      if (reading) { rereadWanted = true; return reading; }  // one read at a time; one more after
      held = held || [];
      reading = (async () => {
        do {
          rereadWanted = false;
          for (let attempt = 0; ; attempt++) {
            try {
              const state = await getJSON("/api/state");
              options.state(state);
              overlay.states += 1;
              break;
            } catch (error) {
              console.warn("overlay: state:", error.message || error);
              await sleep(Math.min(5000, 500 * (attempt + 1)));
            }
          }
        } while (rereadWanted);
        const waiting = held || [];
        held = null;
        for (const [type, data, event] of waiting) deliver(type, data, event);
      })();
      try { await reading; } finally { reading = null; }
    }

    function onMessage(event) {
      if (event.lastEventId) lastId = event.lastEventId;
      let data;
      try { data = JSON.parse(event.data); } catch (error) { return; }
      if (event.type === "gap") {
        // The product restarted, or this page fell too far behind: what was missed is
        // in the state. This connection reads on from now, so nothing falls in between.
        overlay.gaps += 1;
        readState();
        return;
      }
      if (held) held.push([event.type, data, event]);
      else deliver(event.type, data, event);
    }

    let firstOpen = null;
    const opened = new Promise(resolve => { firstOpen = resolve; });

    function open() {
      // A fresh EventSource sends no Last-Event-ID: ask to resume with ?after= instead.
      const after = lastId ? `&after=${encodeURIComponent(lastId)}` : "";
      const stream = new EventSource(`/api/stream?types=${types.join(",")}${after}`);
      source = stream;
      for (const type of types) stream.addEventListener(type, onMessage);
      stream.addEventListener("open", () => {
        overlay.connected = true;
        overlay.opens += 1;
        firstOpen();
      });
      stream.addEventListener("error", () => {
        overlay.connected = false;
        if (stream.readyState === EventSource.CLOSED && source === stream) {
          // The browser gave up (an HTTP error): try again ourselves, from where we were.
          source = null;
          setTimeout(open, 2000);
        }
        // Otherwise the browser reconnects by itself, with Last-Event-ID.
      });
    }

    // The stream first: whatever happens from then on arrives; the state covers the rest.
    held = options.state ? [] : null;
    open();
    await opened;
    await readState();
    overlay.ready = true;
    document.body.dataset.ready = "true";
  }

  window.Overlay = {
    start, el, truncate, BoundedSet, remember, coalesced, queryNumber, resolveTheme,
    validColour, validFont, validCorner, validScale, getJSON, sleep, CORNERS,
  };
})();
