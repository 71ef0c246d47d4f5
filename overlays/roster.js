// The roster overlay (roster.html): who is on stage, who created them, what is locked.
//
// Everything comes from GET /api/state (entities with owner and locks; the world's
// locks; frozen). When the world changes (a spawn, rename, removal, lock, unlock,
// freeze) the page reads the state again, at most about four times a second however
// busy chat is: the newest state always wins, and nothing is patched by hand.
"use strict";

(function () {
  const { el, truncate, coalesced, queryNumber, getJSON } = window.Overlay;
  const list = document.getElementById("entities");
  const count = document.getElementById("roster-count");
  const more = document.getElementById("roster-more");
  const world = document.getElementById("world");
  const MAX_ROWS = queryNumber("rows", 1, 64) || 12;
  const ENTITY_SCOPES = ["identity", "wardrobe"];
  const WORLD_SCOPES = ["weather", "time", "camera", "layout"];

  const hook = { paints: 0, fetches: 0, entities: [], locks: [] };
  window.overlay.roster = hook;

  function lock(scope) {
    const node = el("span", "lock");
    node.dataset.scope = scope;
    // The icon is overlays/lock.svg as a mask (overlay.css), painted in the theme's accent.
    const icon = el("span", "lock-icon");
    icon.setAttribute("role", "img");
    icon.setAttribute("aria-label", "locked");
    node.append(icon, el("span", "scope", scope));
    return node;
  }

  function paint(state) {
    const entities = Array.isArray(state.entities) ? state.entities : [];
    const rows = entities.slice(0, MAX_ROWS).map(e => {
      const item = el("li", "entity");
      item.dataset.name = String(e.name);
      item.dataset.id = String(e.id);
      const locks = (e.locks || []).filter(s => ENTITY_SCOPES.includes(s));
      item.dataset.locks = locks.join(" ");
      item.append(el("span", "name", truncate(e.name, 24)), el("span", "kind", e.kind));
      if (locks.length) {
        const box = el("span", "locks");
        box.append(...locks.map(lock));
        item.append(box);
      }
      if (e.owner) item.append(el("span", "owner", `by ${truncate(e.owner, 40)}`));
      return item;
    });
    list.replaceChildren(...rows);
    count.textContent = String(entities.length);
    const hiddenCount = entities.length - rows.length;
    const wings = Array.isArray(state.wings) ? state.wings.length : 0;
    const extra = [];
    if (hiddenCount > 0) extra.push(`+${hiddenCount} more on stage`);
    if (wings > 0) extra.push(`${wings} in the wings`);
    more.textContent = extra.join(" \u00b7 ");
    more.hidden = extra.length === 0;

    const worldLocks = (state.locks || []).filter(s => WORLD_SCOPES.includes(s));
    world.replaceChildren(...worldLocks.map(lock));
    if (state.frozen) world.append(el("span", "frozen", "frozen"));
    world.hidden = world.childElementCount === 0;

    hook.paints += 1;
    hook.entities = entities.map(e => ({ name: e.name, owner: e.owner, locks: e.locks || [] }));
    hook.locks = worldLocks;
    hook.frozen = !!state.frozen;
  }

  const refresh = coalesced(async () => {
    hook.fetches += 1;
    paint(await getJSON("/api/state"));
  }, 250);

  window.Overlay.start({
    name: "roster",
    types: ["event_applied", "lock", "frozen"],
    state: paint,
    on: {
      event_applied: () => refresh(),
      lock: () => refresh(),
      frozen: () => refresh(),
    },
  });
})();
