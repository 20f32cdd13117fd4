// rlft label: rank K responses per prompt. Data is rendered with textContent only (no HTML sinks).
"use strict";

const NAME_KEY = "rlft-label-annotator";
const state = { annotator: "", item: null, cards: [], busy: false, dragged: null };
const $ = (id) => document.getElementById(id);

function csrfToken() {
  return document.querySelector('meta[name="csrf-token"]').getAttribute("content");
}

async function api(path, body) {
  const opts = { credentials: "same-origin", headers: { "Accept": "application/json" } };
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.headers["X-CSRF-Token"] = csrfToken();
    opts.body = JSON.stringify(body);
  }
  const res = await fetch(path, opts);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = new Error(typeof data.detail === "string" ? data.detail : `HTTP ${res.status}`);
    err.status = res.status;
    throw err;
  }
  return data;
}

function setStatus(text, isError) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", Boolean(isError));
}

function showProgress(p) {
  let text = `${p.ranked} of ${p.total} ranked by you`;
  if (p.skipped) text += ` (${p.skipped} skipped)`;
  $("progress").textContent = text;
}

// ---- ranking model: each card has a rank number; equal numbers are a tie ----

function sortCards() {
  state.cards = state.cards.map((c, i) => [c, i]).sort((a, b) => a[0].rank - b[0].rank || a[1] - b[1])
    .map((pair) => pair[0]);
}

function groups() {
  sortCards();
  const out = [];
  for (const c of state.cards) {
    const last = out[out.length - 1];
    if (last && last[0].rank === c.rank) last.push(c); else out.push([c]);
  }
  return out;
}

function applyGroups(gs) {
  const flat = [];
  gs.filter((g) => g.length).forEach((g, i) => g.forEach((c) => { c.rank = i + 1; flat.push(c); }));
  state.cards = flat;
}

function detach(card) {
  // Remove `card` from its group; return [groups, index its group had, whether that group remains].
  const gs = groups();
  const gi = gs.findIndex((g) => g.includes(card));
  gs[gi] = gs[gi].filter((c) => c !== card);
  const remains = gs[gi].length > 0;
  if (!remains) gs.splice(gi, 1);
  return [gs, gi, remains];
}

function move(card, delta) {
  const [gs, gi, remains] = detach(card);
  let at;
  if (remains) at = delta < 0 ? gi : gi + 1;
  else at = delta < 0 ? Math.max(gi - 1, 0) : Math.min(gi + 1, gs.length);
  gs.splice(at, 0, [card]);
  applyGroups(gs);
}

function placeRelative(card, target, where) {
  if (card === target) return;
  const [gs] = detach(card);
  const ti = gs.findIndex((g) => g.includes(target));
  if (where === "tie") gs[ti].push(card);
  else gs.splice(where === "before" ? ti : ti + 1, 0, [card]);
  applyGroups(gs);
}

function toggleTie(card) {
  sortCards();
  const pos = state.cards.indexOf(card);
  if (pos === 0) { setStatus("The first card has no card above to tie with."); return; }
  const above = state.cards[pos - 1];
  if (above.rank === card.rank) {
    const [gs, gi] = detach(card);
    gs.splice(gi + 1, 0, [card]);
    applyGroups(gs);
  } else {
    placeRelative(card, above, "tie");
  }
}

function currentRanking() {
  return groups().map((g) => (g.length === 1 ? g[0].index : g.map((c) => c.index).sort((a, b) => a - b)));
}

// ---- rendering ----

function render(focusCard) {
  sortCards();
  const list = $("cards");
  list.replaceChildren();
  state.cards.forEach((card, pos) => {
    const prev = state.cards[pos - 1];
    const next = state.cards[pos + 1];
    const tied = (prev && prev.rank === card.rank) || (next && next.rank === card.rank);
    card.el.querySelector(".rank").textContent = String(card.rank);
    card.el.querySelector(".tie-badge").hidden = !tied;
    card.el.classList.toggle("tied", Boolean(tied));
    card.el.setAttribute("aria-label", `Rank ${card.rank}${tied ? " (tie)" : ""}`);
    list.appendChild(card.el);
  });
  if (focusCard) focusCard.el.focus();
}

function makeCard(response) {
  const el = $("card-template").content.firstElementChild.cloneNode(true);
  const card = { index: response.index, rank: 0, el };
  el.dataset.index = String(response.index);
  el.querySelector(".text").textContent = response.text;
  el.querySelector(".up").addEventListener("click", () => { move(card, -1); render(card); });
  el.querySelector(".down").addEventListener("click", () => { move(card, 1); render(card); });
  el.querySelector(".tie").addEventListener("click", () => { toggleTie(card); render(card); });
  el.addEventListener("keydown", (ev) => onCardKey(ev, card));
  el.addEventListener("dragstart", (ev) => {
    state.dragged = card;
    ev.dataTransfer.effectAllowed = "move";
    ev.dataTransfer.setData("text/plain", String(card.index));
  });
  el.addEventListener("dragover", (ev) => onDragOver(ev, card));
  el.addEventListener("dragleave", () => clearDropMarks(el));
  el.addEventListener("drop", (ev) => onDrop(ev, card));
  el.addEventListener("dragend", () => { state.dragged = null; state.cards.forEach((c) => clearDropMarks(c.el)); });
  return card;
}

function onCardKey(ev, card) {
  if (ev.target !== card.el || ev.altKey || ev.ctrlKey || ev.metaKey) return;
  const digit = Number(ev.key);
  if (Number.isInteger(digit) && digit >= 1 && digit <= state.cards.length) {
    card.rank = digit;
  } else if (ev.key === "ArrowUp") {
    move(card, -1);
  } else if (ev.key === "ArrowDown") {
    move(card, 1);
  } else if (ev.key === "t" || ev.key === "=") {
    toggleTie(card);
  } else {
    return;
  }
  ev.preventDefault();
  render(card);
}

function dropZone(ev, el) {
  const box = el.getBoundingClientRect();
  const y = (ev.clientY - box.top) / Math.max(box.height, 1);
  return y < 0.3 ? "before" : y > 0.7 ? "after" : "tie";
}

function clearDropMarks(el) {
  el.classList.remove("drop-before", "drop-after", "drop-tie");
}

function onDragOver(ev, card) {
  if (!state.dragged || state.dragged === card) return;
  ev.preventDefault();
  clearDropMarks(card.el);
  card.el.classList.add(`drop-${dropZone(ev, card.el)}`);
}

function onDrop(ev, card) {
  ev.preventDefault();
  clearDropMarks(card.el);
  const dragged = state.dragged;
  state.dragged = null;
  if (!dragged || dragged === card) return;
  placeRelative(dragged, card, dropZone(ev, card.el));
  render(dragged);
}

// ---- flow ----

function showSection(name) {
  for (const id of ["intro", "task", "done"]) $(id).hidden = id !== name;
}

async function loadNext() {
  if (!state.annotator) { showSection("intro"); return; }
  try {
    const data = await api(`/api/next?annotator=${encodeURIComponent(state.annotator)}`);
    showProgress(data.progress);
    if (data.done) { state.item = null; showSection("done"); return; }
    state.item = data.item;
    $("prompt").textContent = data.item.prompt;
    state.cards = data.item.responses.map(makeCard);
    state.cards.forEach((c, i) => { c.rank = i + 1; });
    render(null);
    showSection("task");
  } catch (err) {
    setStatus(`Could not load the next prompt: ${err.message}`, true);
  }
}

async function decide(kind) {
  if (state.busy || !state.item) return;
  state.busy = true;
  $("submit").disabled = $("skip").disabled = true;
  const body = { prompt_id: state.item.id, annotator: state.annotator };
  if (kind === "rank") body.ranking = currentRanking();
  try {
    await api(`/api/${kind}`, body);
    setStatus(kind === "rank" ? "Saved." : "Skipped.");
  } catch (err) {
    if (err.status !== 409) { setStatus(`Not saved: ${err.message}`, true); return; }
    setStatus("You had already decided this prompt; moving on.");
  } finally {
    state.busy = false;
    $("submit").disabled = $("skip").disabled = false;
  }
  await loadNext();
}

function setAnnotator(name) {
  state.annotator = name.trim();
  if (state.annotator) localStorage.setItem(NAME_KEY, state.annotator);
  setStatus("");
  loadNext();
}

function init() {
  const url = new URL(window.location.href);
  if (url.searchParams.has("token")) {
    // The server set an HttpOnly cookie; drop the token from the address bar and history.
    url.searchParams.delete("token");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  $("name-form").addEventListener("submit", (ev) => { ev.preventDefault(); setAnnotator($("annotator").value); });
  $("submit").addEventListener("click", () => decide("rank"));
  $("skip").addEventListener("click", () => decide("skip"));
  const saved = localStorage.getItem(NAME_KEY) || "";
  $("annotator").value = saved;
  if (saved) setAnnotator(saved); else showSection("intro");
}

document.addEventListener("DOMContentLoaded", init);
