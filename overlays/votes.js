// The votes overlay (votes.html): democracy mode's vote, live.
//
// vote_opened / vote_counted carry every option with its votes: the bars are redrawn
// from them (width = the option's share of the votes). The time left drains as a CSS
// transition from seconds_left to zero. vote_closed shows the winner for a few seconds
// (?linger=SECONDS), with the final counts.
"use strict";

(function () {
  const { el, truncate, remember, queryNumber } = window.Overlay;
  const panel = document.getElementById("votes");
  const title = document.getElementById("votes-title");
  const hint = document.getElementById("votes-hint");
  const list = document.getElementById("options");
  const drain = document.getElementById("drain");
  const winnerLine = document.getElementById("winner");
  const WINNER_SECONDS = queryNumber("linger", 1, 120) || 6;
  const OPTION_CHARS = 60;

  let mode = "anarchy";
  let windowSeconds = 15;
  let open = false;
  let announcing = null;  // the timer that ends the winner's announcement
  let lastWinner = null;
  let prefix = "!";
  const hook = { opened: 0, counted: 0, closed: 0, winners: [], open: false, options: [] };
  window.overlay.votes = hook;

  function visible() {
    panel.hidden = !(mode === "democracy" || announcing !== null);
  }

  /** The time-left line: from ``left / total`` of its width down to nothing, in ``left`` seconds.
   * An animation (not a transition), so it runs on even while the panel is hidden. */
  let draining = null;
  function drainFrom(left, total) {
    const share = total > 0 ? Math.max(0, Math.min(1, left / total)) : 0;
    if (draining) draining.cancel();
    draining = null;
    drain.style.width = "0%";  // where it rests when the time is up
    if (left > 0 && share > 0) {
      draining = drain.animate([{ width: `${(share * 100).toFixed(2)}%` }, { width: "0%" }],
                               { duration: left * 1000, easing: "linear" });
    }
    drain.dataset.secondsLeft = String(left);
  }

  function drawOptions(options, total, leader, won) {
    const sum = total || options.reduce((n, o) => n + (o.votes || 0), 0);
    hook.options = options.map(o => ({ number: o.number, text: o.text, votes: o.votes }));
    list.replaceChildren(...options.map(o => {
      const votes = Number(o.votes) || 0;
      const share = sum > 0 ? votes / sum : 0;
      const item = el("li", "option");
      if (leader !== null && leader !== undefined && o.number === leader) item.classList.add("leader");
      if (won !== undefined && won !== null && o.text === won) item.classList.add("won");
      item.dataset.number = String(o.number);
      item.dataset.votes = String(votes);
      const label = el("span", "label");
      label.append(el("span", "number", `#${o.number}`), document.createTextNode(" "),
                   el("span", "text", truncate(o.text, OPTION_CHARS)));
      const row = el("div", "row");
      row.append(label, el("span", "count", String(votes)));
      const bar = el("div", "bar");
      const fill = el("div", "fill");
      fill.style.width = `${(share * 100).toFixed(2)}%`;
      fill.dataset.share = share.toFixed(4);
      bar.append(fill);
      item.append(row, bar);
      return item;
    }));
    const first = options.find(o => typeof o.text === "string");
    const match = first && /^[^A-Za-z0-9\s]{1,3}/.exec(first.text);
    if (match) prefix = match[0];
  }

  function idle() {
    panel.classList.remove("closed");
    open = false;
    hook.open = false;
    title.textContent = "Democracy";
    hint.textContent = "every command is a vote: type one to start";
    winnerLine.hidden = true;
    list.replaceChildren();
    hook.options = [];
    drainFrom(0, 1);
    visible();
  }

  function running(vote) {
    if (announcing !== null) { clearTimeout(announcing); announcing = null; }
    panel.classList.remove("closed");
    open = true;
    hook.open = true;
    winnerLine.hidden = true;
    const leader = vote.leader && typeof vote.leader === "object" ? vote.leader.number : vote.leader;
    drawOptions(vote.options || [], vote.total, leader);
    title.textContent = "Vote";
    hint.textContent = `vote with ${prefix}vote NUMBER, or type another command`;
    if (typeof vote.window === "number" && vote.window > 0) windowSeconds = vote.window;
    drainFrom(Number(vote.seconds_left) || 0, windowSeconds);
    visible();
  }

  function closed(result) {
    open = false;
    hook.open = false;
    hook.closed += 1;
    remember(hook.winners, result.winner);
    lastWinner = result.winner;
    panel.classList.add("closed");
    drawOptions(result.options || [], result.total, null, result.winner);
    title.textContent = "Vote over";
    hint.textContent = `${result.total || 0} ${result.total === 1 ? "vote" : "votes"}`;
    winnerLine.textContent = result.winner ? `${truncate(result.winner, OPTION_CHARS)} wins` : "no winner";
    winnerLine.hidden = false;
    drainFrom(0, 1);
    if (announcing !== null) clearTimeout(announcing);
    announcing = setTimeout(() => {
      announcing = null;
      if (!open) idle();
      visible();
    }, WINNER_SECONDS * 1000);
    visible();
  }

  window.Overlay.start({
    name: "votes",
    types: ["mode", "vote_opened", "vote_counted", "vote_closed"],
    state(state) {
      mode = state.mode || mode;
      if (typeof state.vote_window === "number") windowSeconds = state.vote_window;
      const vote = state.votes || {};
      if (typeof vote.window === "number" && vote.window > 0) windowSeconds = vote.window;
      if (vote.open) running(vote);
      else if (announcing === null) idle();
      visible();
    },
    on: {
      mode(data) {
        mode = data.mode;
        if (typeof data.vote_window === "number") windowSeconds = data.vote_window;
        if (mode !== "democracy") {
          // Democracy ended: an open vote closed with nothing played; that is no news.
          if (announcing !== null && !lastWinner) { clearTimeout(announcing); announcing = null; }
          if (open || announcing === null) idle();
        }
        visible();
      },
      vote_opened(data) { hook.opened += 1; running(data); },
      vote_counted(data) { hook.counted += 1; running(data); },
      vote_closed(data) { closed(data); },
    },
  });
})();
