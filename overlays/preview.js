// The streamer's preview: live video over WHEP, a local chat box and the world's state.
//
// The access token arrives in the URL fragment (#token=...), which browsers never
// send to the server; it is moved to sessionStorage and the fragment is cleared.
// Every request carries it as "Authorization: Bearer <token>".
// Chat text and names from the server are only ever inserted with textContent.
"use strict";

(() => {
  const TOKEN_KEY = "streambot.token";
  const WHEP_URL = "/whep";
  const ICE_GATHER_LIMIT_MS = 1000;
  const STATE_POLL_MS = 1000;
  const STATS_POLL_MS = 500;
  const DISCONNECTED_GRACE_MS = 4000; // "disconnected" often heals by itself; after this, start over
  const RETRY_FIRST_MS = 1000;
  const RETRY_MAX_MS = 15000;
  const MAX_LOG_LINES = 200;

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"),
    twitchBanner: $("twitch-banner"),
    video: $("video"),
    videoNote: $("video-note"),
    chatLog: $("chat-log"),
    chatForm: $("chat-form"),
    chatUser: $("chat-user"),
    chatRole: $("chat-role"),
    chatText: $("chat-text"),
    worldSummary: $("world-summary"),
    worldEntities: $("world-entities"),
    tokenDialog: $("token-dialog"),
    tokenForm: $("token-form"),
    tokenInput: $("token-input"),
  };

  // ---- token ---------------------------------------------------------------------------

  function takeTokenFromFragment() {
    const params = new URLSearchParams(location.hash.slice(1));
    const token = params.get("token");
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token);
      history.replaceState(null, "", location.pathname + location.search); // keep it out of the address bar
    }
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  function authHeaders(extra = {}) {
    return { ...extra, Authorization: `Bearer ${token()}` };
  }

  let tokenWaiters = [];

  function askForToken() {
    if (!ui.tokenDialog.open) ui.tokenDialog.showModal();
    return new Promise((resolve) => tokenWaiters.push(resolve));
  }

  ui.tokenForm.addEventListener("submit", () => {
    const value = ui.tokenInput.value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    ui.tokenInput.value = "";
    const waiters = tokenWaiters;
    tokenWaiters = [];
    waiters.forEach((resolve) => resolve());
  });

  function rejectedToken(response) {
    if (response.status !== 401 && response.status !== 403) return false;
    sessionStorage.removeItem(TOKEN_KEY);
    return true;
  }

  async function haveToken() {
    while (!token()) {
      showStatus("idle", "waiting for the access token");
      await askForToken();
    }
  }

  // ---- status line ---------------------------------------------------------------------

  const video = {
    pc: null,
    sessionUrl: null,
    connected: false,
    decodedEarlier: 0, // frames decoded by earlier connections
    decodedNow: 0, // by this one, from the receiver's stats
    presented: 0, // frames shown, from requestVideoFrameCallback
    fps: 0,
    lastPresentedAt: 0,
    retryMs: RETRY_FIRST_MS,
    retryTimer: null,
    disconnectedTimer: null,
    attempt: 0,
  };

  function showStatus(state, text) {
    ui.status.dataset.state = state;
    ui.status.textContent = text;
  }

  function refreshStatus() {
    if (video.connected) {
      const rate = video.fps > 0 ? ` · ${video.fps.toFixed(1)} fps` : "";
      const size = ui.video.videoWidth ? ` · ${ui.video.videoWidth}×${ui.video.videoHeight}` : "";
      showStatus("connected", `connected${rate}${size}`);
    }
  }

  // ---- video: WHEP client ----------------------------------------------------------------

  function waitForIceGathering(pc, limitMs) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      };
      const check = () => { if (pc.iceGatheringState === "complete") done(); };
      const timer = setTimeout(done, limitMs); // host candidates come at once; never wait long for others
      pc.addEventListener("icegatheringstatechange", check);
    });
  }

  async function connectVideo() {
    closeVideo();
    const attempt = video.attempt;
    await haveToken();
    if (attempt !== video.attempt) return; // another attempt started while the token was asked for
    showStatus("connecting", "connecting…");
    const pc = new RTCPeerConnection();
    video.pc = pc;
    pc.addTransceiver("video", { direction: "recvonly" });
    pc.addEventListener("track", (event) => {
      ui.video.srcObject = event.streams[0] || new MediaStream([event.track]);
      ui.video.play().catch(() => {}); // muted autoplay is allowed; the catch covers a racing reload
    });
    pc.addEventListener("connectionstatechange", () => onConnectionState(pc, attempt));

    try {
      await pc.setLocalDescription(await pc.createOffer());
      await waitForIceGathering(pc, ICE_GATHER_LIMIT_MS);
      const response = await fetch(WHEP_URL, {
        method: "POST",
        headers: authHeaders({ "Content-Type": "application/sdp" }),
        body: pc.localDescription.sdp,
      });
      const body = await response.text();
      const location = response.headers.get("Location");
      const sessionUrl = response.status === 201 && location ? new URL(location, response.url).href : null;
      if (attempt !== video.attempt) { // superseded while the offer was out: end what it started
        pc.close();
        if (sessionUrl) fetch(sessionUrl, { method: "DELETE", headers: authHeaders() }).catch(() => {});
        return;
      }
      video.sessionUrl = sessionUrl;
      if (rejectedToken(response)) {
        closeVideo();
        showStatus("failed", "the token was refused");
        await askForToken();
        return connectVideo();
      }
      if (response.status !== 201) throw new Error(`WHEP ${response.status}: ${body.trim() || response.statusText}`);
      await pc.setRemoteDescription({ type: "answer", sdp: body });
      // A server that ends the session says so over DTLS (close_notify); without this the
      // browser only notices after seconds of silence.
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
      ui.videoNote.hidden = true;
      refreshStatus();
    } else if (state === "failed" || state === "closed") {
      retryVideo(`connection ${state}`);
    } else if (state === "disconnected") {
      showStatus("connecting", "connection interrupted…");
      video.disconnectedTimer = setTimeout(() => retryVideo("connection lost"), DISCONNECTED_GRACE_MS);
    }
  }

  function retryVideo(reason) {
    closeVideo();
    const wait = video.retryMs;
    video.retryMs = Math.min(video.retryMs * 2, RETRY_MAX_MS);
    showStatus("failed", `${reason} · retrying in ${(wait / 1000).toFixed(0)} s`);
    ui.videoNote.hidden = false;
    ui.videoNote.textContent = "no video";
    video.retryTimer = setTimeout(connectVideo, wait); // set after closeVideo, which clears it
  }

  function closeVideo({ keepalive = false } = {}) {
    video.attempt++; // events and replies of the old connection are ignored from now on
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
      // keepalive lets the DELETE outlive the page when it is being unloaded
      fetch(video.sessionUrl, { method: "DELETE", headers: authHeaders(), keepalive }).catch(() => {});
      video.sessionUrl = null;
    }
  }

  window.addEventListener("pagehide", () => closeVideo({ keepalive: true }));

  // ---- video: measurements -------------------------------------------------------------

  function watchPresentedFrames() {
    if (!("requestVideoFrameCallback" in HTMLVideoElement.prototype)) return;
    let windowStart = performance.now();
    let windowFrames = 0;
    const onFrame = (now) => {
      video.presented++;
      if (now - video.lastPresentedAt > 2000) { // first frame after a gap: start a fresh window
        windowStart = now;
        windowFrames = 0;
      }
      video.lastPresentedAt = now;
      windowFrames++;
      if (now - windowStart >= 1000) {
        video.fps = (windowFrames * 1000) / (now - windowStart);
        windowStart = now;
        windowFrames = 0;
        refreshStatus();
      }
      ui.video.requestVideoFrameCallback(onFrame);
    };
    ui.video.requestVideoFrameCallback(onFrame);
  }

  async function pollStats() {
    if (video.fps && performance.now() - video.lastPresentedAt > 2000) { // the picture froze
      video.fps = 0;
      refreshStatus();
    }
    const pc = video.pc;
    if (pc && pc.connectionState === "connected") {
      try {
        const stats = await pc.getStats();
        stats.forEach((report) => {
          if (video.pc === pc && report.type === "inbound-rtp" && report.kind === "video" && report.framesDecoded) {
            video.decodedNow = report.framesDecoded;
          }
        });
      } catch (_) { /* the connection closed meanwhile */ }
    }
    setTimeout(pollStats, STATS_POLL_MS);
  }

  const lumaCanvas = document.createElement("canvas");
  lumaCanvas.width = 160;
  lumaCanvas.height = 90;
  const lumaContext = lumaCanvas.getContext("2d", { willReadFrequently: true });

  function videoMeanLuma() {
    if (!ui.video.videoWidth) return null;
    lumaContext.drawImage(ui.video, 0, 0, lumaCanvas.width, lumaCanvas.height);
    const pixels = lumaContext.getImageData(0, 0, lumaCanvas.width, lumaCanvas.height).data;
    let sum = 0;
    for (let i = 0; i < pixels.length; i += 4) {
      sum += 0.299 * pixels[i] + 0.587 * pixels[i + 1] + 0.114 * pixels[i + 2]; // BT.601 luma
    }
    return sum / (pixels.length / 4);
  }

  // ---- chat ----------------------------------------------------------------------------

  let lastReply = null;

  function logLine(who, text, kind) {
    const item = document.createElement("li");
    if (kind) item.className = kind;
    const name = document.createElement("span");
    name.className = "who";
    name.textContent = who;
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    item.append(name, body);
    ui.chatLog.append(item);
    while (ui.chatLog.children.length > MAX_LOG_LINES) ui.chatLog.firstElementChild.remove();
    item.scrollIntoView({ block: "end" });
  }

  async function errorMessage(response) {
    const text = await response.text().catch(() => "");
    try {
      const json = JSON.parse(text);
      return json.error || json.message || json.reply || text;
    } catch (_) {
      return text.trim() || response.statusText;
    }
  }

  ui.chatForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = ui.chatText.value.trim();
    if (!text) return;
    const user = ui.chatUser.value.trim() || "streamer";
    const role = ui.chatRole.value;
    ui.chatText.value = "";
    logLine(user, text);
    await haveToken();
    try {
      const response = await fetch("/api/chat", {
        method: "POST",
        headers: authHeaders({ "Content-Type": "application/json" }),
        body: JSON.stringify({ user, text, roles: [role] }),
      });
      if (!response.ok) {
        const message = await errorMessage(response);
        logLine("error", `HTTP ${response.status}: ${message}`, "error");
        if (rejectedToken(response)) askForToken();
        return;
      }
      const result = await response.json();
      if (typeof result.reply === "string" && result.reply) {
        lastReply = result.reply;
        logLine("bot", result.reply, "bot");
      }
    } catch (error) {
      logLine("error", `could not send: ${error.message || error}`, "error");
    }
  });

  // ---- engine ------------------------------------------------------------------------------

  // Switching what draws the frames keeps the world: only the backend changes.
  const backendForm = document.getElementById("backend-form");
  backendForm.addEventListener("submit", async (event) => {
    event.preventDefault();
    const backend = document.getElementById("backend").value;
    const steps = Number(document.getElementById("steps").value);
    await haveToken();
    logLine("engine", `switching to ${backend}…`, "bot");
    try {
      const response = await fetch("/api/backend", {
        method: "POST",
        headers: authHeaders({ "Content-Type": "application/json" }),
        body: JSON.stringify({ backend, steps }),
      });
      const message = response.ok ? `now drawing with ${(await response.json()).backend}` : `HTTP ${response.status}: ${await errorMessage(response)}`;
      logLine("engine", message, response.ok ? "bot" : "error");
    } catch (error) {
      logLine("error", `could not switch: ${error.message || error}`, "error");
    }
  });

  // ---- world ---------------------------------------------------------------------------

  function describeEntity(entity) {
    const item = document.createElement("li");
    const left = document.createElement("span");
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = String(entity.name ?? "?");
    const kind = document.createElement("span");
    kind.className = "kind";
    kind.textContent = entity.kind ? ` ${entity.kind}` : "";
    left.append(name, kind);
    const detail = document.createElement("span");
    detail.className = "detail";
    const where = typeof entity.x === "number" ? ` @ ${entity.x.toFixed(2)}` : "";
    detail.textContent = `${entity.action ?? ""}${where}`;
    item.append(left, detail);
    return item;
  }

  // Twitch's state needs the streamer's eye only when it is not connected.
  function showTwitch(twitch) {
    const trouble = twitch && twitch.state !== "connected";
    ui.twitchBanner.hidden = !trouble;
    if (!trouble) return;
    const what = { connecting: "Twitch: connecting…", reconnecting: "Twitch is reconnecting; the world runs on",
                   auth_failed: "Twitch needs a new login", stopped: "Twitch is stopped" }[twitch.state] || `Twitch: ${twitch.state}`;
    ui.twitchBanner.dataset.state = twitch.state;
    ui.twitchBanner.textContent = twitch.detail && twitch.state === "auth_failed" ? `${what}: ${twitch.detail}` : what;
  }

  async function pollState() {
    try {
      const response = await fetch("/api/state", { headers: authHeaders(), cache: "no-store" });
      if (response.ok) {
        const state = await response.json();
        const env = state.env || {};
        const entities = Array.isArray(state.entities) ? state.entities : [];
        const parts = [`tick ${state.tick ?? "?"}`];
        if (state.mode) parts.push(String(state.mode));
        if (env.time_of_day !== undefined) {
          parts.push(typeof env.time_of_day === "number" ? `time ${env.time_of_day.toFixed(1)}` : `time ${env.time_of_day}`);
        }
        if (env.weather) parts.push(String(env.weather));
        parts.push(`${entities.length} on stage`);
        ui.worldSummary.textContent = parts.join(" · ");
        ui.worldEntities.replaceChildren(...entities.map(describeEntity));
        showTwitch(state.twitch);
      } else {
        ui.worldSummary.textContent = `state unavailable (HTTP ${response.status})`;
      }
    } catch (_) {
      ui.worldSummary.textContent = "state unavailable (server unreachable)";
    }
    setTimeout(pollState, STATE_POLL_MS);
  }

  // ---- start ---------------------------------------------------------------------------

  window.preview = {
    framesDecoded: () => video.decodedEarlier + video.decodedNow,
    framesPresented: () => video.presented,
    fps: () => video.fps,
    connected: () => video.connected,
    lastReply: () => lastReply,
    videoMeanLuma,
  };

  takeTokenFromFragment();
  window.addEventListener("hashchange", () => {
    takeTokenFromFragment();
    if (!video.connected) connectVideo();
  });
  watchPresentedFrames();
  pollStats();
  pollState();
  connectVideo();
})();
