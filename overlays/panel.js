// The streamer's control panel: the live picture, the world and its locks, the audience
// (mode, votes, timeouts, redemptions), takes, figures and refusals.
//
// The page is served only to a browser holding the panel's cookie (POST /panel/login
// sets it), and that cookie goes along with every same-origin fetch: no token lives in
// this script. The world is read from GET /api/state, again whenever the event stream
// (GET /api/stream) says it changed, at most a few times a second.
// Text from chat and from the world is only ever inserted with textContent.
"use strict";

(() => {
  const REFRESH_MIN_MS = 250; // state re-reads: at most four a second, however busy the stream
  const FIGURE_SAMPLES = 300; // one a second: five minutes
  const LAST_REFUSALS = 10;
  const REASONS_SHOWN = 8;
  const WORLD_SCOPES = ["layout", "weather", "time", "camera"];
  const REFUSED = new Set(["refused", "denied", "invalid"]);
  // Stream events after which the world (GET /api/state) is read again.
  const WORLD_EVENTS = new Set([
    "event_applied", "lock", "frozen", "take_restored", "mode", "redemptions", "twitch", "store_failed",
    "vote_opened", "vote_closed", "backend", "obs",
  ]);
  const STREAM_TYPES = [...WORLD_EVENTS, "take_saved", "chat", "figures", "vote_counted"];

  const $ = (id) => document.getElementById(id);

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null) continue;
      if (key === "text") node.textContent = String(value);
      else if (key === "className") node.className = value;
      else if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "hidden" || key === "disabled") node[key] = Boolean(value);
      else node.setAttribute(key, String(value));
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  // ---- status line and requests ---------------------------------------------------------------

  const statusInfo = { seq: 0, kind: "idle", text: "ready" };

  function showStatus(kind, text) {
    statusInfo.seq++;
    statusInfo.kind = kind;
    statusInfo.text = text;
    const line = $("status");
    line.dataset.kind = kind;
    line.textContent = text;
  }

  let sessionLost = false;

  function loginLost() {
    if (sessionLost) return;
    sessionLost = true;
    $("banner-session").hidden = false;
  }

  // One request; never throws. ``data`` is the JSON answer, or {error} for anything else.
  async function api(path, { method = "GET", body } = {}) {
    const init = { method, headers: {}, cache: "no-store", credentials: "same-origin" };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (error) {
      return { ok: false, status: 0, data: { error: `the bot cannot be reached (${error.message || error})` } };
    }
    const text = await response.text().catch(() => "");
    let data;
    try {
      data = text ? JSON.parse(text) : {};
    } catch (_) {
      data = { error: text.trim() || response.statusText };
    }
    if (response.status === 401) loginLost();
    return { ok: response.ok, status: response.status, data };
  }

  function answerText(result, fallback) {
    const data = result.data || {};
    const text = data.reply || data.reason || data.error || data.message;
    if (typeof text === "string" && text) return text;
    return result.ok ? fallback : `HTTP ${result.status}`;
  }

  // A control's request, with its answer in the status line: the server's reply or
  // reason, ``success(data)`` for a plain success, or the error. Returns the result.
  async function act(label, path, body, { fallback = "done", success = null } = {}) {
    showStatus("busy", `${label}…`);
    const result = await api(path, { method: "POST", body });
    const status = result.data && result.data.status;
    const ok = result.ok && !REFUSED.has(status);
    const text = ok && success ? success(result.data) : answerText(result, fallback);
    showStatus(ok ? "ok" : "error", `${label}: ${text}`);
    scheduleRefresh();
    return result;
  }

  const direct = (label, action) => act(label, "/api/events", { action });
  const chatAsStreamer = (label, text) =>
    act(label, "/api/chat", { user: "streamer", text, roles: ["broadcaster"] }, { fallback: "(no reply)" });

  // ---- the world: read, coalesced --------------------------------------------------------------

  let state = null;
  let stateReads = 0;
  let refreshTimer = null;
  let refreshing = false;
  let refreshAgain = false;
  let lastRefreshAt = -Infinity;

  function scheduleRefresh() {
    if (refreshing) {
      refreshAgain = true;
      return;
    }
    if (refreshTimer !== null) return;
    const wait = Math.max(0, lastRefreshAt + REFRESH_MIN_MS - performance.now());
    refreshTimer = setTimeout(refreshState, wait);
  }

  async function refreshState() {
    refreshTimer = null;
    refreshing = true;
    lastRefreshAt = performance.now();
    try {
      const result = await api("/api/state");
      if (result.ok) {
        state = result.data;
        stateReads++;
        renderState(state);
        if (staleLine(state.line)) setTimeout(scheduleRefresh, LINE_RETRY_MS);
      } else {
        $("world-line").textContent = `state unavailable: ${answerText(result, "")}`;
      }
    } finally {
      refreshing = false;
      if (refreshAgain) {
        refreshAgain = false;
        scheduleRefresh();
      }
    }
  }

  // ---- the world: drawing ----------------------------------------------------------------------

  const clock = (hours) => {
    if (typeof hours !== "number" || !Number.isFinite(hours)) return "?";
    const minutes = Math.round(hours * 60) % (24 * 60);
    return `${String(Math.floor(minutes / 60)).padStart(2, "0")}:${String(minutes % 60).padStart(2, "0")}`;
  };
  const num = (value, digits = 1) => (typeof value === "number" && Number.isFinite(value) ? value.toFixed(digits) : "?");
  const rgb = (colour) => (Array.isArray(colour) && colour.length === 3
    ? `rgb(${colour.map((c) => Math.max(0, Math.min(255, Number(c) || 0))).join(", ")})` : "transparent");

  function renderState(s) {
    const frozen = Boolean(s.frozen);
    const freeze = $("freeze");
    freeze.textContent = frozen ? "Unfreeze" : "Freeze";
    freeze.setAttribute("aria-pressed", String(frozen));
    const world = $("pill-world");
    world.dataset.state = frozen ? "warn" : "ok";
    world.textContent = frozen ? "world: FROZEN" : "world: running";

    const locks = new Set(Array.isArray(s.locks) ? s.locks : []);
    for (const scope of WORLD_SCOPES) {
      const button = $(`lock-${scope}`);
      button.setAttribute("aria-pressed", String(locks.has(scope)));
      button.title = locks.has(scope) ? `${scope} is locked: press to unlock` : `press to lock the ${scope}`;
    }

    const layout = s.layout || {};
    const env = s.env || {};
    const camera = s.camera || {};
    const props = Array.isArray(layout.props) ? layout.props.length : 0;
    $("fact-set").textContent = `${layout.ground ?? "?"} ground, ${layout.backdrop ?? "?"} backdrop, ${props} props`;
    const intensity = env.intensity && typeof env.intensity === "object"
      ? Object.entries(env.intensity).filter(([, v]) => v > 0.01).map(([k, v]) => `${k} ${Math.round(v * 100)}%`) : [];
    $("fact-weather").textContent = `${env.weather ?? "?"}${intensity.length ? ` (${intensity.join(", ")})` : ""}`;
    const turning = typeof env.time_target === "number" && Math.abs(env.time_target - env.time_of_day) > 0.01;
    $("fact-time").textContent = `${clock(env.time_of_day)}${turning ? ` → ${clock(env.time_target)}` : ""}`;
    $("fact-camera").textContent = `x ${num(camera.x)}, zoom ${num(camera.zoom, 2)}${camera.follow ? `, following ${camera.follow}` : ""}`;
    $("fact-line").textContent = `${s.line ?? "?"}, tick ${s.tick ?? "?"}`;
    const video = s.video || {};
    const stats = s.stats || {};
    $("fact-video").textContent = `${video.width ?? "?"}×${video.height ?? "?"} @ ${video.fps ?? "?"} fps, ${video.backend ?? "?"}`
      + ` · ${stats.frames ?? 0} frames, ${stats.late ?? 0} late, ${stats.dropped ?? 0} dropped`;
    const entities = Array.isArray(s.entities) ? s.entities : [];
    $("world-line").textContent = `${s.mode ?? "?"} · ${env.weather ?? "?"} · ${clock(env.time_of_day)} · `
      + `${entities.length} on stage${frozen ? " · frozen" : ""}`;

    renderCharacters(entities, Array.isArray(s.wings) ? s.wings : []);
    renderMode(s);
    showTwitch(s.twitch);
    showObs(s.obs);
    if (s.store_failure) showStoreFailure(s.store_failure.error, null, s.store_failure.time);
    if (s.redemptions !== undefined) renderRedemptions(s.redemptions);
  }

  // Lists are rebuilt only when what they show changed, and the focused control is
  // found again afterwards (by its data-key), so Tab never loses its place.
  const shown = new Map();

  function rebuild(container, signature, build) {
    const key = container.id;
    if (shown.get(key) === signature) return false;
    shown.set(key, signature);
    const focused = container.contains(document.activeElement) ? document.activeElement.dataset.key : null;
    container.replaceChildren(...build());
    if (focused) { // the same control again; if it went (a rejected redemption), the list's first
      const keyed = [...container.querySelectorAll("[data-key]")];
      const again = keyed.find((node) => node.dataset.key === focused) || keyed[0];
      if (again) again.focus();
    }
    return true;
  }

  function lockButton(entity, scope, locked) {
    const button = el("button", {
      type: "button", className: `toggle small lock-${scope}`, "aria-pressed": String(locked),
      dataset: { key: `${entity.id}:${scope}` },
      "aria-label": `${entity.name}'s ${scope} locked`,
      title: locked ? `${scope} locked: press to unlock` : `press to lock ${entity.name}'s ${scope}`,
      text: scope,
    });
    button.addEventListener("click", () => direct(`${locked ? "unlock" : "lock"} ${entity.name}'s ${scope}`,
      { type: locked ? "unlock" : "lock", scope, target: entity.name }));
    return button;
  }

  function looks(entity) {
    const identity = entity.identity || {};
    const cell = el("td", { className: "looks" });
    for (const [part, colour] of [["skin", identity.skin], ["outfit", identity.outfit], ["accent", identity.accent]]) {
      const swatch = el("span", { className: "swatch", title: `${part} ${rgb(colour)}` });
      swatch.style.background = rgb(colour);
      cell.append(swatch);
    }
    const hat = identity.hat && identity.hat !== "none" ? `${identity.hat} hat` : "no hat";
    const pattern = identity.pattern && identity.pattern !== "plain" ? `, ${identity.pattern}` : "";
    cell.append(el("span", { className: "sub", text: `${hat}${pattern}` }));
    return cell;
  }

  function renderCharacters(entities, wings) {
    $("characters-count").textContent = `(${entities.length} on stage)`;
    $("characters-empty").hidden = entities.length > 0;
    const signature = JSON.stringify(entities.map((e) => [e.id, e.name, e.kind, e.owner, e.identity, e.locks, e.action, e.speech && e.speech.text]));
    rebuild($("characters"), signature, () => entities.map((entity) => {
      const locks = new Set(Array.isArray(entity.locks) ? entity.locks : []);
      const remove = el("button", {
        type: "button", className: "small danger-outline remove", dataset: { key: `${entity.id}:remove` },
        "aria-label": `Remove ${entity.name}`, text: "Remove",
      });
      remove.addEventListener("click", () => direct(`remove ${entity.name}`, { type: "remove", target: entity.name }));
      const doing = entity.speech && entity.speech.text ? `${entity.action ?? ""}: “${entity.speech.text}”` : String(entity.action ?? "");
      const who = entity.owner ? `${entity.kind ?? "?"} · ${entity.owner}'s` : `${entity.kind ?? "?"} · the scene's`;
      return el("tr", { dataset: { name: String(entity.name ?? "") } },
        el("th", { scope: "row", className: "name" }, el("span", { text: entity.name ?? "?" }),
          el("span", { className: "sub", text: who })),
        looks(entity),
        el("td", { className: "doing", text: doing }),
        el("td", { className: "lock-cell" }, lockButton(entity, "identity", locks.has("identity")),
          lockButton(entity, "wardrobe", locks.has("wardrobe"))),
        el("td", {}, remove));
    }));
    const names = wings.map((w) => (w && typeof w === "object" ? w.name : w)).filter(Boolean);
    $("wings").textContent = names.length ? `In the wings (${names.length}): ${names.slice(0, 12).join(", ")}${names.length > 12 ? "…" : ""}` : "";
  }

  let voteWindowEdited = false;

  function renderMode(s) {
    const democracy = s.mode === "democracy";
    $("mode-anarchy").setAttribute("aria-pressed", String(!democracy));
    $("mode-democracy").setAttribute("aria-pressed", String(democracy));
    const input = $("vote-window");
    if (!voteWindowEdited && document.activeElement !== input && typeof s.vote_window === "number") {
      input.value = String(Math.round(s.vote_window * 10) / 10);
    }
    const votes = s.votes || {};
    vote.democracy = democracy;
    vote.window = s.vote_window;
    vote.open = Boolean(votes.open);
    vote.total = votes.total ?? 0;
    vote.leader = votes.leader;
    vote.closesAt = performance.now() + (Number(votes.seconds_left) || 0) * 1000;
    showVote();
  }

  // The vote's countdown runs here between two reads of the world.
  const vote = { democracy: false, open: false, window: null, total: 0, leader: null, closesAt: 0 };

  function showVote() {
    let text;
    if (!vote.democracy) text = "anarchy: every command applies at once";
    else if (vote.open) {
      const left = Math.max(0, Math.ceil((vote.closesAt - performance.now()) / 1000));
      const leader = vote.leader ? `, leading: ${vote.leader}` : "";
      text = `vote open: ${left} s left, ${vote.total} votes${leader}`;
    } else text = `democracy: commands become votes of ${num(vote.window, 0)} s`;
    const line = $("vote-status");
    if (line.textContent !== text) line.textContent = text;
  }

  // ---- banners ---------------------------------------------------------------------------------

  function showTwitch(twitch) {
    const pill = $("pill-twitch");
    const banner = $("banner-twitch");
    if (!twitch) {
      pill.dataset.state = "off";
      pill.textContent = "Twitch: off";
      banner.hidden = true;
      return;
    }
    const connected = twitch.state === "connected";
    pill.dataset.state = connected ? "ok" : twitch.state === "auth_failed" ? "bad" : "warn";
    pill.textContent = `Twitch: ${twitch.state}`;
    banner.hidden = connected;
    if (connected) return;
    const what = {
      connecting: "Twitch: connecting…", reconnecting: "Twitch is reconnecting; the world runs on",
      auth_failed: "Twitch needs a new login", stopped: "Twitch is stopped",
    }[twitch.state] || `Twitch: ${twitch.state}`;
    banner.dataset.level = twitch.state === "auth_failed" || twitch.state === "stopped" ? "bad" : "warn";
    banner.dataset.state = String(twitch.state);
    banner.textContent = twitch.detail && twitch.state === "auth_failed" ? `${what}: ${twitch.detail}` : what;
  }

  // The hook for OBS: state.obs and "obs" stream events ({state, detail}); null when not configured.
  function showObs(obs) {
    const banner = $("banner-obs");
    const trouble = obs && obs.state !== "connected";
    banner.hidden = !trouble;
    if (trouble) banner.textContent = `OBS: ${obs.state}${obs.detail ? ` (${obs.detail})` : ""}`;
  }

  let storeShownAt = null; // the failure's time (server clock) on the banner now
  let storeDismissedAt = null;

  function showStoreFailure(error, rolledBackTo, time) {
    if (typeof time === "number" && storeDismissedAt !== null && time <= storeDismissedAt) return;
    if (typeof time === "number") storeShownAt = Math.max(storeShownAt ?? 0, time);
    const back = rolledBackTo === undefined || rolledBackTo === null ? "" : rolledBackTo === "lost"
      ? " The world could not be rebuilt and runs on unsaved." : ` The world went back to tick ${rolledBackTo}.`;
    const when = typeof time === "number" ? ` (at ${new Date(time * 1000).toLocaleTimeString()})` : "";
    $("banner-store-text").textContent = `The world store failed${when}: ${error}.${back} Check the disk.`;
    $("banner-store").hidden = false;
  }

  $("banner-store-dismiss").addEventListener("click", () => {
    $("banner-store").hidden = true;
    storeDismissedAt = storeShownAt ?? Date.now() / 1000;
  });

  // ---- controls --------------------------------------------------------------------------------

  async function toggleFreeze() {
    if (!state) await refreshState();
    const frozen = Boolean(state && state.frozen);
    return direct(frozen ? "unfreeze" : "freeze", { type: frozen ? "unfreeze" : "freeze" });
  }

  function setMode(mode, voteWindow) {
    const body = { mode };
    if (voteWindow !== undefined) body.vote_window = voteWindow;
    return act(`mode ${mode}`, "/api/mode", body, {
      success: (data) => `now ${data.mode}${typeof data.vote_window === "number" ? `, votes last ${data.vote_window} s` : ""}`,
    });
  }

  async function toggleMode() {
    if (!state) await refreshState();
    return setMode(state && state.mode === "democracy" ? "anarchy" : "democracy");
  }

  $("freeze").addEventListener("click", toggleFreeze);

  function openResetConfirm(open) {
    $("reset-confirm").hidden = !open;
    $("reset").setAttribute("aria-expanded", String(open));
    (open ? $("reset-no") : $("reset")).focus();
  }

  $("reset").addEventListener("click", () => openResetConfirm($("reset-confirm").hidden));
  $("reset-no").addEventListener("click", () => {
    openResetConfirm(false);
    showStatus("idle", "reset cancelled");
  });
  $("reset-yes").addEventListener("click", () => {
    openResetConfirm(false);
    direct("reset", { type: "reset" });
  });
  $("reset-confirm").addEventListener("keydown", (event) => {
    if (event.key === "Escape") {
      event.preventDefault();
      openResetConfirm(false);
    }
  });

  for (const scope of WORLD_SCOPES) {
    $(`lock-${scope}`).addEventListener("click", () => {
      const locked = Boolean(state && Array.isArray(state.locks) && state.locks.includes(scope));
      direct(`${locked ? "unlock" : "lock"} the ${scope}`, { type: locked ? "unlock" : "lock", scope });
    });
  }

  $("mode-anarchy").addEventListener("click", () => setMode("anarchy"));
  $("mode-democracy").addEventListener("click", () => setMode("democracy"));
  $("vote-window").addEventListener("input", () => { voteWindowEdited = true; });
  $("vote-window-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const seconds = Number($("vote-window").value);
    if (!Number.isFinite(seconds) || seconds < 1 || seconds > 600) {
      showStatus("error", "the vote window is 1 to 600 seconds");
      return;
    }
    const result = await setMode(state && state.mode === "democracy" ? "democracy" : "anarchy", seconds);
    if (result.ok) voteWindowEdited = false;
  });

  // A viewer's name as it goes into a chat command: one word, an "@" allowed.
  function viewerName() {
    const name = $("mod-user").value.trim().replace(/^@/, "");
    if (!/^[^\s!]{1,64}$/.test(name)) {
      showStatus("error", "give the viewer's name (one word)");
      $("mod-user").focus();
      return null;
    }
    return name;
  }

  $("mod-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const name = viewerName();
    if (!name) return;
    const duration = $("mod-duration").value.trim().toLowerCase().replace(/\s+/g, "");
    if (duration && !/^\d{1,9}(\.\d+)?(s|sec|m|min|h)?$/.test(duration)) {
      showStatus("error", "how long? seconds, or e.g. 10m or 1h");
      $("mod-duration").focus();
      return;
    }
    chatAsStreamer(`time out ${name}`, `!timeout ${name}${duration ? ` ${duration}` : ""}`);
  });
  $("mod-pardon").addEventListener("click", () => {
    const name = viewerName();
    if (name) chatAsStreamer(`pardon ${name}`, `!pardon ${name}`);
  });

  $("command-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("command-text").value.trim();
    if (!text) return;
    $("command-text").value = "";
    chatAsStreamer(text, text);
  });

  // A form's own POST would go out as a navigation, which under "Referrer-Policy:
  // no-referrer" carries "Origin: null", and the server refuses the cookie then; fetch
  // sends the page's origin.
  $("logout-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await fetch("/panel/logout", { method: "POST", credentials: "same-origin", redirect: "manual", cache: "no-store" });
    } catch (_) { /* the login page below says what is what */ }
    closeVideo();
    if (stream) stream.close();
    location.replace("/panel");
  });

  // ---- takes -----------------------------------------------------------------------------------

  let takesList = { line: null, takes: [] };

  // Going back to a take answers (and says so on the stream) a moment before the server
  // reports the new line: until it does, both reads are tried again.
  const LINE_RETRY_MS = 300;
  let lineExpected = null; // {line, until}

  function expectLine(line) {
    if (typeof line === "string" && line) lineExpected = { line, until: performance.now() + 10000 };
  }

  function staleLine(line) {
    return lineExpected !== null && performance.now() < lineExpected.until && line !== lineExpected.line;
  }

  async function refreshTakes() {
    const result = await api("/api/takes");
    if (!result.ok) return;
    takesList = result.data;
    if (staleLine(takesList.line)) setTimeout(refreshTakes, LINE_RETRY_MS);
    const takes = Array.isArray(takesList.takes) ? takesList.takes : [];
    $("takes-line").textContent = String(takesList.line ?? "?");
    const lines = [...new Set(takes.map((t) => t.branch).filter(Boolean))];
    $("takes-lines").textContent = lines.length ? `takes on lines: ${lines.join(", ")}` : "";
    $("takes-empty").hidden = takes.length > 0;
    const newestFirst = [...takes].sort((a, b) => (b.created ?? 0) - (a.created ?? 0));
    rebuild($("takes"), JSON.stringify([takesList.line, newestFirst]), () => newestFirst.map((take) => {
      const back = el("button", {
        type: "button", className: "small back", dataset: { key: `take:${take.name}` },
        "aria-label": `Go back to take ${take.name}`, text: "Go back",
      });
      back.addEventListener("click", async () => {
        const result = await act(`back to take ${take.name}`, `/api/takes/${encodeURIComponent(take.name)}/back`, undefined, {
          success: (data) => `now on the new line ${data.line}, from tick ${data.tick}`,
        });
        if (result.ok) expectLine(result.data.line);
        refreshTakes();
      });
      const when = typeof take.created === "number" ? new Date(take.created * 1000).toLocaleTimeString() : "";
      return el("li", { dataset: { take: String(take.name) } },
        el("span", { className: "take-name", text: take.name }),
        el("span", { className: "muted", text: ` line ${take.branch ?? "?"}, tick ${take.tick ?? "?"}${when ? `, ${when}` : ""}` }),
        take.note ? el("span", { className: "note", text: ` — ${take.note}` }) : null,
        back);
    }));
  }

  $("take-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("take-name").value.trim();
    if (!name) return;
    const result = await act(`save take ${name}`, "/api/takes", { name, note: $("take-note").value.trim() }, {
      success: (data) => `saved at tick ${data.tick} on line ${data.branch}`,
    });
    if (result.ok) {
      $("take-name").value = "";
      $("take-note").value = "";
    }
    refreshTakes();
  });

  // ---- redemptions -----------------------------------------------------------------------------

  let twitchOn = null; // null: not known yet

  async function refreshRedemptions() {
    const result = await api("/api/redemptions");
    if (result.status === 404) renderRedemptions(null);
    else if (result.ok) renderRedemptions(result.data);
  }

  const SETTLED = { approve: "approved: it runs in its turn", reject: "rejected: the points go back",
                   front: "it runs next" };

  function renderRedemptions(queue) {
    const note = $("redemptions-note");
    twitchOn = queue !== null && queue !== undefined;
    if (!twitchOn) {
      note.textContent = "Twitch is off";
      rebuild($("redemptions"), "off", () => []);
      return;
    }
    const waiting = Array.isArray(queue.waiting) ? queue.waiting : [];
    note.textContent = waiting.length === 0 ? "nothing waiting"
      : `${waiting.length} waiting${queue.held ? "; each runs only once you approve it" : ""}`;
    rebuild($("redemptions"), JSON.stringify(waiting), () => waiting.map((item, index) => {
      const buttons = [];
      const add = (action, label, aria) => {
        const button = el("button", {
          type: "button", className: `small ${action}`, dataset: { key: `${item.id}:${action}` }, "aria-label": aria, text: label,
        });
        button.addEventListener("click", async () => {
          const result = await act(`${label.toLowerCase()} ${item.user}'s ${item.reward}`,
            `/api/redemptions/${encodeURIComponent(item.id)}/${action}`, undefined, { success: () => SETTLED[action] });
          if (result.ok && result.data && Array.isArray(result.data.waiting)) renderRedemptions(result.data);
        });
        buttons.push(button);
      };
      if (!item.approved) add("approve", "Approve", `Approve ${item.user}'s ${item.reward}`);
      add("reject", "Reject", `Reject and refund ${item.user}'s ${item.reward}`);
      if (index > 0) add("front", "Skip to front", `Run ${item.user}'s ${item.reward} next`);
      return el("li", { dataset: { id: String(item.id) }, className: item.approved ? "approved" : "held" },
        el("span", { className: "who", text: item.user }),
        el("span", { className: "reward", text: ` ${item.reward}` }),
        item.input ? el("span", { className: "input", text: ` “${item.input}”` }) : null,
        el("span", { className: "muted", text: item.approved ? " · approved, waiting its turn" : " · waiting for you" }),
        el("span", { className: "actions" }, ...buttons));
    }));
  }

  // ---- overlays --------------------------------------------------------------------------------

  async function copyText(text, input) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch (_) {
      input.focus(); // not a secure context (a LAN address): copy the old way
      input.select();
      try { return document.execCommand("copy"); } catch (__) { return false; }
    }
  }

  async function loadOverlays() {
    const result = await api("/api/overlays");
    if (!result.ok) {
      $("overlays").replaceChildren(el("li", { className: "muted", text: `unavailable: ${answerText(result, "")}` }));
      return;
    }
    const pages = Object.entries(result.data.pages || {});
    if (result.data.panel) pages.push(["panel", result.data.panel]);
    $("overlays").replaceChildren(...pages.map(([name, url]) => {
      const id = `overlay-url-${name.replace(/[^\w-]/g, "_")}`;
      const input = el("input", { id, readonly: "", value: url, spellcheck: "false" });
      const copy = el("button", { type: "button", className: "small copy", "aria-label": `Copy the ${name} URL`, text: "Copy" });
      copy.addEventListener("click", async () => {
        const done = await copyText(url, input);
        showStatus(done ? "ok" : "error", done ? `copied the ${name} URL` : `could not copy: select the ${name} URL and copy it`);
      });
      return el("li", {}, el("label", { for: id, text: name }), input, copy);
    }));
  }

  // ---- figures ---------------------------------------------------------------------------------

  const samples = [];
  let lastLate = null;
  let draws = 0;

  const PLOTS = [
    { canvas: "plot-fps", label: "fig-fps", value: (s) => s.fps, guide: (s) => s.target, colour: "#5fd38d",
      format: (v, s) => `${num(v)} / ${s.target ?? "?"}` },
    { canvas: "plot-late", label: "fig-late", value: (s) => s.late, colour: "#f3c05b", format: (v) => num(v, 0) },
    { canvas: "plot-latency", label: "fig-latency", value: (s) => s.p99, colour: "#ff8f6b",
      format: (v) => (v === null || v === undefined ? "–" : `${Math.round(v)} ms`) },
    { canvas: "plot-chat", label: "fig-chat", value: (s) => s.chat, colour: "#8ab4ff", format: (v) => num(v, 2) },
  ];

  function onFigures(data) {
    const late = typeof data.late === "number" ? data.late : null;
    const lateDelta = late !== null && lastLate !== null ? Math.max(0, late - lastLate) : 0; // a restart resets it
    lastLate = late;
    samples.push({
      time: data.time, fps: data.fps, target: data.target_fps, late: lateDelta,
      p99: typeof data.event_to_frame_p99 === "number" ? data.event_to_frame_p99 * 1000 : null,
      chat: data.chat_lines_per_s,
    });
    while (samples.length > FIGURE_SAMPLES) samples.shift();
    drawPlots();
  }

  function drawSpark(canvas, values, colour, guide) {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, canvas.clientWidth);
    const height = Math.max(1, canvas.clientHeight);
    if (canvas.width !== Math.round(width * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(width * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const finite = values.filter((v) => typeof v === "number" && Number.isFinite(v));
    const top = Math.max(1e-6, guide || 0, ...finite) * 1.15;
    const pad = 3;
    const y = (v) => height - pad - (v / top) * (height - 2 * pad);
    const step = width / (span(values.length) - 1);
    const x = (i) => width - (values.length - 1 - i) * step; // the newest on the right edge

    ctx.strokeStyle = "rgba(255,255,255,0.12)";
    ctx.lineWidth = 1;
    ctx.beginPath();
    ctx.moveTo(0, y(0) + 0.5);
    ctx.lineTo(width, y(0) + 0.5);
    ctx.stroke();
    if (guide) {
      ctx.setLineDash([4, 4]);
      ctx.strokeStyle = "rgba(255,255,255,0.35)";
      ctx.beginPath();
      ctx.moveTo(0, y(guide));
      ctx.lineTo(width, y(guide));
      ctx.stroke();
      ctx.setLineDash([]);
    }
    ctx.strokeStyle = colour;
    ctx.fillStyle = `${colour}33`;
    ctx.lineWidth = 1.5;
    let run = []; // consecutive points; a missing value breaks the line
    const flush = () => {
      if (run.length === 0) return;
      ctx.beginPath();
      run.forEach(([px, py], i) => (i ? ctx.lineTo(px, py) : ctx.moveTo(px, py)));
      if (run.length === 1) ctx.lineTo(run[0][0] - 1, run[0][1]);
      ctx.stroke();
      ctx.lineTo(run[run.length - 1][0], y(0));
      ctx.lineTo(run[0][0], y(0));
      ctx.closePath();
      ctx.fill();
      run = [];
    };
    values.forEach((v, i) => {
      if (typeof v === "number" && Number.isFinite(v)) run.push([x(i), y(v)]);
      else flush();
    });
    flush();
  }

  // The plots show the last minute at first, then widen with what there is, up to five.
  const span = (count) => Math.min(FIGURE_SAMPLES, Math.max(60, count));

  function drawPlots() {
    const newest = samples[samples.length - 1];
    const minutes = Math.round(span(samples.length) / 60);
    $("figures-span").textContent = minutes <= 1 ? "(last minute)" : `(last ${minutes} minutes)`;
    for (const plot of PLOTS) {
      const values = samples.map(plot.value);
      const guide = plot.guide && newest ? plot.guide(newest) : null;
      drawSpark($(plot.canvas), values, plot.colour, guide);
      $(plot.label).textContent = newest ? plot.format(plot.value(newest), newest) : "–";
    }
    draws++;
  }

  window.addEventListener("resize", () => { if (samples.length) drawPlots(); });

  // ---- refusals --------------------------------------------------------------------------------

  const refusalsByStatus = new Map();
  const refusalsByReason = new Map();
  const lastRefusals = [];

  // "@kim you are timed out from directing — 9 min left" -> "you are timed out": the
  // reply's first words, before a dash or a colon, numbers blurred, so alike ones group.
  function reasonOf(reply) {
    const text = String(reply || "").replace(/^@\S+\s+/, "").split(/\s[—–-]\s|:\s/)[0];
    const words = text.replace(/\d+(\.\d+)?/g, "#").split(/\s+/).filter(Boolean).slice(0, 4);
    return words.join(" ") || "(no reason given)";
  }

  function onChat(data) {
    if (!REFUSED.has(data.status)) return;
    refusalsByStatus.set(data.status, (refusalsByStatus.get(data.status) || 0) + 1);
    const reason = `${data.status}: ${reasonOf(data.reply)}`;
    refusalsByReason.set(reason, (refusalsByReason.get(reason) || 0) + 1);
    lastRefusals.unshift({ time: data.time, user: data.user, text: data.text, status: data.status, reply: data.reply });
    lastRefusals.length = Math.min(lastRefusals.length, LAST_REFUSALS);
    renderRefusals();
  }

  function renderRefusals() {
    $("refusals-by-status").replaceChildren(...["refused", "denied", "invalid"].map((status) =>
      el("li", { dataset: { status } }, el("span", { className: "count", text: refusalsByStatus.get(status) || 0 }),
        el("span", { text: ` ${status}` }))));
    const top = [...refusalsByReason.entries()].sort((a, b) => b[1] - a[1]).slice(0, REASONS_SHOWN);
    $("refusals-by-reason").replaceChildren(...top.map(([reason, count]) =>
      el("li", {}, el("span", { className: "count", text: count }), el("span", { text: ` ${reason}` }))));
    $("refusals-empty").hidden = lastRefusals.length > 0;
    $("refusals-last").replaceChildren(...lastRefusals.map((r) => {
      const when = typeof r.time === "number" ? new Date(r.time * 1000).toLocaleTimeString() : "";
      return el("li", { dataset: { status: r.status } },
        el("span", { className: "muted", text: `${when} ` }),
        el("span", { className: "who", text: r.user }),
        el("span", { className: "said", text: ` ${r.text}` }),
        el("span", { className: `badge ${r.status}`, text: r.status }),
        el("span", { className: "reason", text: r.reply || "(no reply)" }));
    }));
  }

  // ---- the event stream ------------------------------------------------------------------------

  let stream = null;
  let streamUp = false;

  function setStreamState(up, text) {
    streamUp = up;
    const pill = $("pill-stream");
    pill.dataset.state = up ? "ok" : "bad";
    pill.textContent = up ? "events: live" : "events: down";
    const banner = $("banner-stream");
    banner.hidden = up;
    if (!up) banner.textContent = text;
  }

  function onStreamMessage(type, event) {
    let data;
    try {
      data = JSON.parse(event.data);
    } catch (_) {
      return;
    }
    if (type === "figures") onFigures(data);
    else if (type === "chat") onChat(data);
    else if (type === "twitch") showTwitch(data);
    else if (type === "obs") showObs(data);
    else if (type === "redemptions") renderRedemptions({ waiting: data.waiting, held: data.held });
    else if (type === "store_failed") {
      showStoreFailure(data.error, data.rolled_back_to === null ? "lost" : data.rolled_back_to, data.time);
    }
    if (type === "take_restored") expectLine(data.line);
    if (type === "take_saved" || type === "take_restored") refreshTakes();
    if (WORLD_EVENTS.has(type) || type === "vote_counted") scheduleRefresh();
  }

  function openStream() {
    const source = new EventSource(`/api/stream?types=${STREAM_TYPES.join(",")}`);
    stream = source;
    source.addEventListener("open", () => {
      setStreamState(true, "");
      scheduleRefresh(); // whatever happened while it was down
    });
    source.addEventListener("error", () => {
      if (stream !== source) return;
      if (source.readyState === EventSource.CLOSED) { // it gave up (an error status): start a new one
        source.close();
        setStreamState(false, "The event stream is disconnected: the panel is not live. Retrying…");
        setTimeout(() => { if (stream === source) openStream(); }, 3000);
      } else {
        setStreamState(false, "The event stream is disconnected: the panel is not live. Reconnecting…");
      }
    });
    for (const type of STREAM_TYPES) source.addEventListener(type, (event) => onStreamMessage(type, event));
    source.addEventListener("gap", () => { // it missed some: read everything again
      scheduleRefresh();
      refreshTakes();
      refreshRedemptions();
    });
  }

  // ---- video: WHEP (as the preview page plays it; the cookie authorises) ----------------------

  const ICE_GATHER_LIMIT_MS = 1000;
  const DISCONNECTED_GRACE_MS = 4000;
  const RETRY_FIRST_MS = 1000;
  const RETRY_MAX_MS = 15000;
  const VIDEO_OFF_RETRY_MS = 30000;
  const videoEl = $("video");
  const video = {
    pc: null, sessionUrl: null, connected: false, attempt: 0, retryMs: RETRY_FIRST_MS,
    retryTimer: null, disconnectedTimer: null, decodedEarlier: 0, decodedNow: 0,
  };

  function videoState(state, text) {
    const pill = $("pill-video");
    pill.dataset.state = state;
    pill.textContent = `video: ${text}`;
    const note = $("video-note");
    note.hidden = state === "ok";
    if (state !== "ok") note.textContent = text;
  }

  function waitForIceGathering(pc, limitMs) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      };
      const check = () => { if (pc.iceGatheringState === "complete") done(); };
      const timer = setTimeout(done, limitMs);
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  async function connectVideo() {
    closeVideo();
    const attempt = video.attempt;
    videoState("connecting", "connecting…");
    const pc = new RTCPeerConnection();
    video.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addEventListener("track", (event) => {
      videoEl.srcObject = event.streams[0] || new MediaStream([event.track]);
      videoEl.play().catch(() => {});
    });
    pc.addEventListener("connectionstatechange", () => onConnectionState(pc, attempt));
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc, ICE_GATHER_LIMIT_MS);
      const response = await fetch("/whep", {
        method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp,
        credentials: "same-origin",
      });
      const body = await response.text();
      const location = response.headers.get("Location");
      const sessionUrl = response.status === 201 && location ? new URL(location, response.url).href : null;
      if (attempt !== video.attempt) {
        pc.close();
        if (sessionUrl) fetch(sessionUrl, { method: "DELETE", credentials: "same-origin" }).catch(() => {});
        return;
      }
      video.sessionUrl = sessionUrl;
      if (response.status === 401) {
        loginLost();
        closeVideo();
        videoState("bad", "login needed");
        return;
      }
      if (response.status === 404) { // no WebRTC output in the config
        closeVideo();
        videoState("off", "off (outputs.webrtc is disabled)");
        video.retryTimer = setTimeout(connectVideo, VIDEO_OFF_RETRY_MS);
        return;
      }
      if (response.status !== 201) throw new Error(`WHEP ${response.status}: ${body.trim() || response.statusText}`);
      await pc.setRemoteDescription({ type: "answer", sdp: body });
      const dtls = pc.getReceivers()[0]?.transport;
      dtls?.addEventListener("statechange", () => {
        if (attempt === video.attempt && (dtls.state === "closed" || dtls.state === "failed")) {
          retryVideo("the server ended the session");
        }
      });
    } catch (error) {
      if (attempt !== video.attempt) return;
      retryVideo(String(error.message || error));
    }
  }

  function onConnectionState(pc, attempt) {
    if (attempt !== video.attempt) return;
    const state = pc.connectionState;
    clearTimeout(video.disconnectedTimer);
    if (state === "connected") {
      video.connected = true;
      video.retryMs = RETRY_FIRST_MS;
      videoState("ok", "live");
    } else if (state === "failed" || state === "closed") {
      retryVideo(`connection ${state}`);
    } else if (state === "disconnected") {
      videoState("warn", "interrupted…");
      video.disconnectedTimer = setTimeout(() => retryVideo("connection lost"), DISCONNECTED_GRACE_MS);
    }
  }

  function retryVideo(reason) {
    closeVideo();
    const wait = video.retryMs;
    video.retryMs = Math.min(video.retryMs * 2, RETRY_MAX_MS);
    videoState("bad", `${reason}; retrying in ${(wait / 1000).toFixed(0)} s`);
    video.retryTimer = setTimeout(connectVideo, wait);
  }

  function closeVideo({ keepalive = false } = {}) {
    video.attempt++;
    video.connected = false;
    clearTimeout(video.retryTimer);
    clearTimeout(video.disconnectedTimer);
    video.decodedEarlier += video.decodedNow;
    video.decodedNow = 0;
    if (video.pc) {
      video.pc.close();
      video.pc = null;
    }
    if (video.sessionUrl) {
      fetch(video.sessionUrl, { method: "DELETE", credentials: "same-origin", keepalive }).catch(() => {});
      video.sessionUrl = null;
    }
  }

  async function pollVideoStats() {
    const pc = video.pc;
    if (pc && pc.connectionState === "connected") {
      try {
        const stats = await pc.getStats();
        stats.forEach((report) => {
          if (video.pc === pc && report.type === "inbound-rtp" && report.kind === "video" && report.framesDecoded) {
            video.decodedNow = report.framesDecoded;
          }
        });
      } catch (_) { /* closed meanwhile */ }
    }
    setTimeout(pollVideoStats, 1000);
  }

  window.addEventListener("pagehide", () => closeVideo({ keepalive: true }));

  // ---- keyboard --------------------------------------------------------------------------------

  function typing(target) {
    if (!(target instanceof Element)) return false;
    return target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName);
  }

  const SHORTCUTS = {
    f: () => toggleFreeze(),
    d: () => toggleMode(),
    r: () => { scheduleRefresh(); refreshTakes(); refreshRedemptions(); showStatus("idle", "world re-read"); },
    c: () => $("command-text").focus(),
    t: () => $("mod-user").focus(),
    s: () => $("take-name").focus(),
  };

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && typing(event.target)) {
      event.target.blur();
      return;
    }
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (typing(event.target)) return; // a letter typed into a field is just a letter
    const key = event.key.toLowerCase();
    if (!Object.hasOwn(SHORTCUTS, key)) return;
    const run = SHORTCUTS[key];
    event.preventDefault(); // also keeps the letter out of a field the shortcut focuses
    run();
  });

  // ---- start -----------------------------------------------------------------------------------

  window.panel = {
    state: () => state,
    stateReads: () => stateReads,
    lastStatus: () => ({ ...statusInfo }),
    samples: () => samples.length,
    draws: () => draws,
    refusals: () => lastRefusals.map((r) => ({ ...r })),
    streamConnected: () => streamUp,
    videoConnected: () => video.connected,
    framesDecoded: () => video.decodedEarlier + video.decodedNow,
    twitchOn: () => twitchOn,
    takes: () => takesList,
  };

  const dropFragment = () => { // a "#token=" link opened while logged in: keep the token out of sight
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);
  };
  window.addEventListener("hashchange", dropFragment);
  dropFragment();
  renderRefusals();
  setInterval(showVote, 1000);
  // The stream says when the world changes; what moves by itself (the clock, walkers,
  // frame counts) is read again every few seconds.
  setInterval(() => { if (document.visibilityState === "visible") scheduleRefresh(); }, 5000);
  openStream();
  refreshState();
  refreshTakes();
  refreshRedemptions();
  loadOverlays();
  pollVideoStats();
  connectVideo();
})();
