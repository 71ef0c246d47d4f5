// The moments overlay (moments.html): a banner for each "moment" (a sub, a cheer or a
// channel-points redemption that changed the world). Banners wait their turn: one
// shows at a time, for a few seconds each (?linger=SECONDS), never two at once.
"use strict";

(function () {
  const { el, truncate, BoundedSet, remember, queryNumber, sleep } = window.Overlay;
  const banner = document.getElementById("banner");
  const kindLine = document.getElementById("banner-kind");
  const headline = document.getElementById("banner-headline");
  const summary = document.getElementById("banner-summary");
  const SECONDS = queryNumber("linger", 1, 60) || 5;
  // Past this many waiting, the oldest are dropped: a raid of subs must not queue for an hour.
  const MAX_WAITING = 50;

  const waiting = [];
  const seen = new BoundedSet(1000);
  let playing = false;
  const hook = { shown: [], showing: null, waiting: 0, overlaps: 0 };
  window.overlay.moments = hook;

  const KINDS = { reward: "channel points", cheer: "cheer", sub: "new sub" };

  /** [who, "cheered 500 bits"]: the headline, as text parts. */
  function words(m) {
    const user = truncate(m.user || "someone", 32);
    if (m.kind === "cheer") {
      const bits = Number.isFinite(Number(m.amount)) && m.amount !== null ? Number(m.amount) : null;
      return [user, bits === null ? "cheered" : `cheered ${bits} ${bits === 1 ? "bit" : "bits"}`];
    }
    if (m.kind === "sub") return [user, "subscribed"];
    return [user, m.title ? `redeemed ${truncate(m.title, 48)}` : "redeemed a reward"];
  }

  async function play() {
    if (playing) return;
    playing = true;
    try {
      while (waiting.length) {
        const m = waiting.shift();
        hook.waiting = waiting.length;
        const [who, what] = words(m);
        if (hook.showing !== null) hook.overlaps += 1;  // never: the loop shows one at a time
        hook.showing = `${who} ${what}`;
        kindLine.textContent = KINDS[m.kind] || "";
        headline.replaceChildren(el("span", "who", who), document.createTextNode(` ${what}`));
        summary.textContent = truncate(m.summary || "", 120);
        banner.dataset.kind = String(m.kind);
        banner.classList.remove("leaving");
        banner.hidden = false;
        // Restart the entrance animation for each banner.
        banner.style.animation = "none";
        void banner.offsetWidth;
        banner.style.animation = "";
        remember(hook.shown, { kind: m.kind, user: m.user, headline: hook.showing, summary: m.summary });
        await sleep(SECONDS * 1000);
        banner.classList.add("leaving");
        await sleep(550);
        banner.hidden = true;
        hook.showing = null;
        await sleep(150);  // a breath between two banners
      }
    } finally {
      playing = false;
      hook.waiting = waiting.length;
    }
  }

  function moment(data, event) {
    const key = event && event.lastEventId;
    if (key) {
      if (seen.has(key)) return;
      seen.add(key);
    }
    waiting.push(data);
    while (waiting.length > MAX_WAITING) waiting.shift();
    hook.waiting = waiting.length;
    play();
  }

  window.Overlay.start({
    name: "moments",
    types: ["moment"],
    on: { moment },
  });
})();
