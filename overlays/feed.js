// The feed overlay (feed.html): applied commands as they happen, and the running vote.
"use strict";
// Every viewer-supplied string goes in with textContent: chat can never inject markup.
const feed = document.getElementById("feed");
const votes = document.getElementById("votes");
const options = document.getElementById("options");
const title = document.getElementById("votes-title");
const MAX_LINES = 6;

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
}

function line(r) {
  const node = el("div", "line");
  node.append(el("span", "who", r.user), el("span", "what", r.text));
  return node;
}

// A hostile viewer must not be able to fill the stream with error messages.
const shown = r => r.status === "applied";

function showLines(lines) {
  feed.replaceChildren(...lines.slice(-MAX_LINES).map(line));
}

function showVote(v) {
  const opts = (v && v.options) || [];
  votes.style.display = mode === "democracy" && opts.length ? "block" : "none";
  title.textContent = "Vote" + (v && v.seconds_left != null ? ` (${Math.ceil(v.seconds_left)} s)` : "");
  options.replaceChildren(...opts.map(o => {
    const row = el("div", "opt");
    row.append(el("span", "", `#${o.number} ${o.text}`), el("span", "", String(o.votes)));
    return row;
  }));
}

// The state once (what was on screen before this page opened), then the event
// stream: EventSource reconnects by itself and resumes after the last id it saw.
let mode = "anarchy";
let lines = [];
async function start() {
  try {
    const response = await fetch("/api/state", { cache: "no-store" });
    if (response.ok) {
      const state = await response.json();
      mode = state.mode || mode;
      lines = (state.recent || []).filter(shown).slice(-MAX_LINES);
      showLines(lines);
      showVote(state.votes);
    }
  } catch (e) { /* the stream below still comes */ }
  const stream = new EventSource("/api/stream?types=chat,mode,vote_opened,vote_counted,vote_closed,gap");
  stream.addEventListener("chat", e => {
    const r = JSON.parse(e.data);
    if (!shown(r)) return;
    lines = [...lines, r].slice(-MAX_LINES);
    showLines(lines);
  });
  stream.addEventListener("mode", e => { mode = JSON.parse(e.data).mode; showVote(null); });
  stream.addEventListener("vote_opened", e => showVote(JSON.parse(e.data)));
  stream.addEventListener("vote_counted", e => showVote(JSON.parse(e.data)));
  stream.addEventListener("vote_closed", () => showVote(null));
  stream.addEventListener("gap", () => { stream.close(); setTimeout(start, 500); });  // too far behind: start over
}
start();
