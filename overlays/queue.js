// The queue overlay (queue.html): channel-points redemptions waiting their turn, and
// commands on their global cooldown, counting down.
//
// Redemptions: /api/state's "redemptions" (null: Twitch is off) and then every
// "redemptions" message, which carries the whole queue. Cooldowns: /api/state's
// "cooldowns" and then each "cooldown" message ({command, seconds}); the countdown runs
// here, on the page's clock.
"use strict";

(function () {
  const { el, truncate, queryNumber } = window.Overlay;
  const redemptionsCard = document.getElementById("redemptions-card");
  const redemptionsList = document.getElementById("redemptions");
  const cooldownsCard = document.getElementById("cooldowns-card");
  const cooldownsList = document.getElementById("cooldowns");
  const MAX_REDEMPTIONS = queryNumber("rows", 1, 50) || 8;

  const cooling = new Map();  // command -> {until: ms (performance.now clock), total: s, node}
  const hook = { redemptions: [], held: false, cooldowns: {}, twitch: false };
  window.overlay.queue = hook;

  function paintRedemptions(queue) {
    hook.twitch = queue !== null && queue !== undefined;
    const waiting = (queue && Array.isArray(queue.waiting)) ? queue.waiting : [];
    hook.held = !!(queue && queue.held);
    hook.redemptions = waiting.map(r => ({ id: r.id, user: r.user, reward: r.reward, approved: r.approved }));
    redemptionsList.replaceChildren(...waiting.slice(0, MAX_REDEMPTIONS).map((r, i) => {
      const item = el("li", "redemption");
      item.dataset.id = String(r.id);
      item.append(el("span", "pos", `${i + 1}.`), el("span", "who accent", truncate(r.user, 28)),
                  el("span", "reward", truncate(r.reward, 40)));
      if (r.approved === false) item.append(el("span", "held", "waiting for approval"));
      if (r.input) item.append(el("span", "input", `\u201c${truncate(r.input, 80)}\u201d`));
      return item;
    }));
    if (waiting.length > MAX_REDEMPTIONS) {
      redemptionsList.append(el("li", "more small muted", `+${waiting.length - MAX_REDEMPTIONS} more`));
    }
    redemptionsCard.hidden = waiting.length === 0;
  }

  function cool(command, seconds) {
    const left = Number(seconds);
    if (typeof command !== "string" || !Number.isFinite(left)) return;
    const old = cooling.get(command);
    if (left <= 0) {
      if (old) { old.node.remove(); cooling.delete(command); }
      tick();
      return;
    }
    let entry = old;
    if (!entry) {
      const node = el("li", "cooldown");
      node.dataset.command = command;
      const text = el("span", "text");
      text.append(el("span", "command", truncate(command, 24)), el("span", "rest", ""));
      const bar = el("div", "bar");
      const fill = el("div", "fill");
      bar.append(fill);
      node.append(text, bar);
      cooldownsList.append(node);
      entry = { node, fill, rest: text.lastChild, total: left, until: 0, draining: null };
      cooling.set(command, entry);
    }
    entry.total = Math.max(left, old ? entry.total : left);
    entry.until = performance.now() + left * 1000;
    // The bar drains on its own, from the share left to nothing (an animation: it runs
    // whether or not the card is shown yet).
    if (entry.draining) entry.draining.cancel();
    entry.fill.style.width = "0%";
    entry.draining = entry.fill.animate([{ width: `${((left / entry.total) * 100).toFixed(2)}%` }, { width: "0%" }],
                                        { duration: left * 1000, easing: "linear" });
    tick();
  }

  function tick() {
    const now = performance.now();
    const shown = {};
    for (const [command, entry] of cooling) {
      const left = (entry.until - now) / 1000;
      if (left <= 0) {
        entry.node.remove();
        cooling.delete(command);
        continue;
      }
      const whole = Math.ceil(left);
      entry.rest.textContent = ` ready in ${whole} s`;
      entry.node.dataset.seconds = String(whole);
      shown[command] = whole;
    }
    hook.cooldowns = shown;
    cooldownsCard.hidden = cooling.size === 0;
  }
  setInterval(tick, 200);

  window.Overlay.start({
    name: "queue",
    types: ["redemptions", "cooldown"],
    state(state) {
      paintRedemptions(state.redemptions);
      const now = new Map((state.cooldowns || []).map(c => [c.command, c.seconds]));
      for (const command of [...cooling.keys()]) if (!now.has(command)) cool(command, 0);
      for (const [command, seconds] of now) cool(command, seconds);
    },
    on: {
      redemptions: data => paintRedemptions(data),
      cooldown: data => cool(data.command, data.seconds),
    },
  });
})();
