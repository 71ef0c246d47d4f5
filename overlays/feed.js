// The feed overlay (feed.html): who just did what, in words, fading after a while.
//
// A line is the chat message's summary ("alice summoned a dragon called Zed"), with the
// command underneath in small type. Only applied commands show; if the server's
// show_refusals is above 0, refused and denied ones show that many seconds, muted.
// Each line shows once: chat lines are known by their id (a line from /api/state by its
// first event's id, which is the chat message's id), through reconnects and restarts.
"use strict";

(function () {
  const { el, truncate, BoundedSet, remember, queryNumber } = window.Overlay;
  const feed = document.getElementById("feed");
  const MAX_LINES = queryNumber("lines", 1, 20) || 6;
  const LINGER = queryNumber("linger", 1, 3600) || 12;  // seconds an applied line stays
  const REFUSAL_CHARS = 80;
  const WHO_CHARS = 40;
  const REFUSED = new Set(["refused", "denied"]);

  const seen = new BoundedSet(2000);
  let showRefusals = 0;
  const hook = { history: [], shown: 0 };
  window.overlay.feed = hook;

  /** "alice summoned a dragon" -> ["alice", "summoned a dragon"]; [null, summary] when it
   * does not start with the user. */
  function split(user, summary) {
    if (user && summary.startsWith(user + " ")) return [user, summary.slice(user.length + 1)];
    return [null, summary];
  }

  function remove(node) {
    if (!node.isConnected || node.classList.contains("leaving")) return;
    node.classList.add("leaving");
    setTimeout(() => node.remove(), 650);
  }

  function show(entry, via) {
    const refusal = entry.status !== "applied";
    const node = el("div", refusal ? "line refusal enter" : "line enter");
    node.dataset.id = entry.id;
    node.dataset.status = entry.status;
    // Spaces between the parts are text too, so the line reads (and copies) as a sentence.
    const space = () => document.createTextNode(" ");
    if (refusal) {
      node.append(el("span", "who", truncate(entry.user, WHO_CHARS)), space(),
                  el("span", "what", truncate(entry.reply || entry.status, REFUSAL_CHARS)), space(),
                  el("span", "cmd", truncate(entry.text, REFUSAL_CHARS)));
    } else {
      const [who, what] = split(entry.user, entry.summary || entry.text || "");
      if (who !== null) node.append(el("span", "who", truncate(who, WHO_CHARS)), space());
      node.append(el("span", "what", truncate(what, 160)), space(), el("span", "cmd", truncate(entry.text, 80)));
    }
    feed.append(node);
    const live = [...feed.querySelectorAll(".line:not(.leaving)")];
    for (const old of live.slice(0, Math.max(0, live.length - MAX_LINES))) remove(old);
    setTimeout(() => remove(node), (refusal ? showRefusals : LINGER) * 1000);
    hook.shown += 1;
    remember(hook.history, { id: entry.id, status: entry.status, user: entry.user, text: entry.text,
                             summary: entry.summary, via });
  }

  function wanted(entry) {
    if (entry.status === "applied") return true;
    return showRefusals > 0 && REFUSED.has(entry.status);
  }

  function take(entry, via) {
    if (!entry || !entry.id || seen.has(entry.id)) return;
    if (!wanted(entry)) return;
    seen.add(entry.id);
    show(entry, via);
  }

  window.Overlay.start({
    name: "feed",
    types: ["chat"],
    setup(settings) {
      const seconds = Number(settings.show_refusals);
      showRefusals = Number.isFinite(seconds) && seconds > 0 ? Math.min(seconds, 60) : 0;
      hook.showRefusals = showRefusals;
    },
    state(state) {
      // What happened just before this page opened (or while it was away): applied lines
      // only; a refusal from then is stale news.
      const recent = (state.recent || []).filter(r => r.status === "applied" && r.events && r.events.length);
      for (const r of recent.slice(-MAX_LINES)) {
        take({ id: r.events[0].id, user: r.user, text: r.text, status: r.status, reply: r.reply,
               summary: r.summary }, "state");
      }
      // Lines older than these are not news any more, but they must not come back later either.
      for (const r of recent) if (r.events[0].id) seen.add(r.events[0].id);
    },
    on: {
      chat: data => take(data, "stream"),
    },
  });
})();
