// lmscore token surprisal viewer: calls the public REST API only (/v1/models,
// /v1/references, /v1/score/text, /v1/score/chat). No framework, no build step.
"use strict";

const LN2 = Math.LN2;
const MAX_BITS = 16; // the colour scale saturates here
const CHUNK = 800; // spans rendered per task, so long documents never freeze the tab
// Viridis (perceptually uniform), 9 stops from 0 to 1.
const VIRIDIS = [
  [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
  [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37],
];
// Diverging blue-white-red for "second model minus first", in bits.
const DIVERGING = [[33, 102, 172], [247, 247, 247], [178, 24, 43]];

const state = { apiKey: "", models: [], references: [], last: null, busy: false };
const $ = (id) => document.getElementById(id);

function interpolate(stops, t) {
  const x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  return stops[i].map((c, k) => Math.round(c + f * (stops[i + 1][k] - c)));
}

function colours(rgb) {
  const [r, g, b] = rgb.map((c) => {
    const s = c / 255;
    return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
  });
  const luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  return { background: `rgb(${rgb.join(",")})`, color: luminance > 0.22 ? "#111" : "#fff" };
}

function rampCss(stops) {
  const parts = stops.map((c, i) => `rgb(${c.join(",")}) ${(100 * i) / (stops.length - 1)}%`);
  return `linear-gradient(to right, ${parts.join(", ")})`;
}

function fmt(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const abs = Math.abs(value);
  if (abs !== 0 && (abs >= 1e5 || abs < 1e-3)) return value.toExponential(2);
  return value.toFixed(digits);
}

async function api(path, body) {
  const headers = { "content-type": "application/json" };
  if (state.apiKey) headers.authorization = `Bearer ${state.apiKey}`;
  const init = body === undefined ? { headers } : { method: "POST", headers, body: JSON.stringify(body) };
  const response = await fetch(path, init);
  let data = null;
  try {
    data = await response.json();
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const message = data && data.error ? data.error.message : `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return data;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

// ---- setup -----------------------------------------------------------------------------
async function loadModels() {
  try {
    state.models = (await api("/v1/models")).data;
  } catch (error) {
    const hint = state.apiKey ? " (check the API key, then Score)" : " (enter the API key, then Score)";
    showError(`Could not list the models: ${error.message}${error.status === 401 ? hint : ""}`);
    return;
  }
  const first = $("model");
  const second = $("model-b");
  first.replaceChildren();
  second.replaceChildren(new Option("(none)", ""));
  for (const model of state.models) {
    first.append(new Option(`${model.id} (${model.dtype}, ${model.backend})`, model.id));
    second.append(new Option(model.id, model.id));
  }
  second.disabled = state.models.length < 2;
  showError("");
  await loadReferences();
}

async function loadReferences() {
  try {
    state.references = (await api("/v1/references")).data;
  } catch (_) {
    state.references = []; // an older server: no profiles to offer
  }
  fillProfiles();
}

function fillProfiles() {
  const select = $("profile");
  const model = $("model").value;
  const usable = state.references.filter((r) => r.model === model);
  select.replaceChildren(new Option("(none)", ""));
  for (const ref of usable) select.append(new Option(`${ref.name} (${ref.metric})`, ref.name));
  select.disabled = usable.length === 0;
}

function modelCard(id) {
  return state.models.find((m) => m.id === id);
}

function addMessage(role = "user", content = "") {
  const row = document.createElement("div");
  row.className = "message";
  const index = $("messages").children.length + 1;
  const roleSelect = document.createElement("select");
  roleSelect.setAttribute("aria-label", `Role of message ${index}`);
  for (const r of ["system", "user", "assistant"]) roleSelect.append(new Option(r, r, false, r === role));
  const text = document.createElement("textarea");
  text.setAttribute("aria-label", `Content of message ${index}`);
  text.value = content;
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "Remove";
  remove.setAttribute("aria-label", `Remove message ${index}`);
  remove.addEventListener("click", () => row.remove());
  row.append(roleSelect, text, remove);
  $("messages").append(row);
}

// ---- scoring ---------------------------------------------------------------------------
function mode() {
  return document.querySelector("input[name=mode]:checked").value;
}

function requestFor(model) {
  const card = modelCard(model);
  const rich = card && card.backend === "transformers"; // entropy and words need the full distribution
  const body = { model, return_tokens: true, top_k: 5 };
  if (rich) body.return_entropy = true;
  const profile = $("profile").value;
  if (profile && model === $("model").value) body.reference = profile;
  if (mode() === "chat") {
    const messages = [...$("messages").children].map((row) => ({
      role: row.querySelector("select").value,
      content: row.querySelector("textarea").value,
    }));
    const roles = [...document.querySelectorAll("input[name=role]:checked")].map((b) => b.value);
    return { path: "/v1/score/chat", body: { ...body, conversations: [messages], score_roles: roles } };
  }
  if (rich) body.words = true;
  return { path: "/v1/score/text", body: { ...body, texts: [$("text").value] } };
}

async function score() {
  if (state.busy) return; // one request at a time: answers could come back out of order
  state.busy = true;
  const button = $("score");
  button.disabled = true;
  try {
    await scoreOnce();
  } finally {
    state.busy = false;
    button.disabled = false;
  }
}

async function scoreOnce() {
  state.apiKey = $("api-key").value;
  if (!state.models.length) await loadModels();
  if (!state.models.length) return;
  showError("");
  try {
    const models = [$("model").value, $("model-b").value].filter((m, i) => m && (i === 0 || m !== $("model").value));
    const answers = await Promise.all(models.map(async (model) => {
      const { path, body } = requestFor(model);
      const response = await api(path, body);
      return { model, response, result: response.results[0] };
    }));
    state.last = answers;
    render();
  } catch (error) {
    state.last = null; // the results shown were for another text: do not leave them up
    $("results").hidden = true;
    hideTip();
    showError(error.message);
  }
}

// ---- rendering -------------------------------------------------------------------------
function bits(logprob) {
  return logprob === null || logprob === undefined ? null : -logprob / LN2;
}

// Two panels' units line up when they cut the text at the same places (same tokenizer, or
// words): then "second minus first" compares like with like, whatever the colouring.
function aligned(x, y) {
  return x.length > 0 && x.length === y.length && x.every((item, i) => item.text === y[i].text);
}

function difference(items, base) {
  return items.map((item, i) => {
    const a = base[i].value;
    return { ...item, value: item.value === null || a === null ? null : item.value - a };
  });
}

function header(answer, extra) {
  const r = answer.result;
  const h = document.createElement("h2");
  const stat = (label, value, key) => {
    const span = document.createElement("span");
    span.className = "stat";
    span.dataset.stat = key;
    if (typeof value === "number") span.dataset.value = String(value);
    span.append(`${label} `);
    const b = document.createElement("b");
    b.textContent = typeof value === "number" ? fmt(value) : value;
    span.append(b);
    return span;
  };
  h.append(document.createTextNode(answer.model + (extra || "")));
  h.append(stat("PPL", r.ppl, "ppl"), stat("bits/char", r.bits_per_char, "bits_per_char"));
  h.append(stat("tokens", String(r.num_tokens), "num_tokens"));
  if (r.percentile !== null && r.percentile !== undefined) {
    h.append(stat("percentile", r.percentile, "percentile"));
    if (r.is_outlier) {
      const flag = document.createElement("span");
      flag.className = "outlier";
      flag.textContent = "outlier";
      h.append(flag);
    }
  }
  return h;
}

// The difference panel's own header: what is subtracted from what, and its scale. Its
// numbers are differences, not the second model's own (its panel shows those).
function differenceHeader(answer, base) {
  const h = header(answer, ` − ${base.model}`);
  for (const stat of h.querySelectorAll(".stat")) stat.remove();
  const delta = answer.result.bits_per_char - base.result.bits_per_char;
  const span = document.createElement("span");
  span.className = "stat";
  span.dataset.stat = "bits_per_char_difference";
  if (Number.isFinite(delta)) span.dataset.value = String(delta);
  span.append("Δ bits/char ");
  const b = document.createElement("b");
  b.textContent = fmt(delta);
  span.append(b);
  h.append(span);
  const wrap = document.createElement("div");
  const note = document.createElement("p");
  note.className = "hint";
  note.textContent = `Surprisal of ${answer.model} minus ${base.model}, in bits per unit: blue where ${answer.model} is less surprised, red where more (the colours saturate at ±4 bits).`;
  wrap.append(h, note);
  return wrap;
}

function units(answer) {
  const unit = document.querySelector("input[name=unit]:checked").value;
  if (unit === "word" && answer.result.words) {
    return answer.result.words.map((w) => ({ text: w.text, value: w.surprisal_bits, word: w }));
  }
  const colourBy = document.querySelector("input[name=colour]:checked").value;
  const out = [];
  let pieces = [];
  for (const token of answer.result.tokens || []) {
    pieces.push(token);
    if (token.text === "") continue; // part of a character: it joins the token completing it
    out.push(tokenUnit(pieces, colourBy));
    pieces = [];
  }
  if (pieces.length) out.push(tokenUnit([...(out.length ? out.pop().parts : []), ...pieces], colourBy));
  return out;
}

// Byte-level tokenizers split a character over several tokens, all but the last without
// text of their own: shown as one span, the character's surprisal is the sum of its
// pieces' (bits), unknown if one of them is unscored.
function tokenUnit(parts, colourBy) {
  const first = parts[0];
  let value;
  if (colourBy === "entropy" && first.entropy !== null && first.entropy !== undefined) {
    value = first.entropy / LN2; // the uncertainty where the character starts
  } else {
    value = parts.some((p) => p.logprob === null) ? null : parts.reduce((sum, p) => sum + bits(p.logprob), 0);
  }
  const token = parts[parts.length - 1];
  const scored = parts.every((p) => p.scored !== false);
  return { text: parts.map((p) => p.text).join(""), value, token, parts, scored };
}

function renderPanel(answer, items, container, diffAgainst) {
  const panel = document.createElement("section");
  panel.className = "panel";
  panel.append(diffAgainst ? differenceHeader(answer, diffAgainst) : header(answer, ""));
  const body = document.createElement("div");
  body.className = "tokens";
  body.dataset.model = answer.model;
  panel.append(body);
  container.append(panel);
  let lastMessage = null;
  let index = 0;
  const step = () => {
    const fragment = document.createDocumentFragment();
    const end = Math.min(items.length, index + CHUNK);
    for (; index < end; index += 1) {
      const item = items[index];
      const token = item.token;
      if (token && token.message_index !== null && token.message_index !== undefined && token.message_index !== lastMessage) {
        lastMessage = token.message_index;
        const sep = document.createElement("span");
        sep.className = "msg-sep";
        sep.setAttribute("aria-hidden", "true");
        sep.textContent = `message ${token.message_index}`;
        fragment.append(sep);
      }
      const span = document.createElement("span");
      span.className = item.word ? "tok word" : "tok";
      span.tabIndex = 0;
      span.dataset.index = String(index);
      span.textContent = item.text;
      const value = item.value;
      const unscored = value === null || item.scored === false;
      if (unscored) {
        span.classList.add("unscored");
      } else {
        span.dataset.value = String(value);
        const rgb = diffAgainst ? interpolate(DIVERGING, 0.5 + value / 8) : interpolate(VIRIDIS, value / MAX_BITS);
        const c = colours(rgb);
        span.style.background = c.background;
        span.style.color = c.color;
      }
      fragment.append(span);
    }
    body.append(fragment);
    if (index < items.length) setTimeout(step, 0); // yield to the event loop between chunks
    else body.dataset.rendered = "true";
  };
  step();
  body.addEventListener("mouseover", (e) => showTip(e.target, items, diffAgainst));
  body.addEventListener("focusin", (e) => showTip(e.target, items, diffAgainst));
  body.addEventListener("mouseleave", hideTip);
  body.addEventListener("focusout", hideTip);
}

function render() {
  const answers = state.last;
  if (!answers) return;
  const panels = $("panels");
  panels.replaceChildren();
  hideTip();
  const rich = answers[0].result.tokens && answers[0].result.tokens.some((t) => t.entropy !== null && t.entropy !== undefined);
  $("colour-entropy").disabled = !rich;
  $("unit-word").disabled = !answers[0].result.words;
  const items = answers.map(units);
  answers.forEach((answer, i) => renderPanel(answer, items[i], panels, null));
  if (answers.length === 2 && aligned(items[0], items[1])) {
    renderPanel(answers[1], difference(items[1], items[0]), panels, answers[0]);
  }
  const dtypes = answers.map((a) => (modelCard(a.model) || {}).dtype).filter(Boolean);
  $("precision-note").textContent = dtypes.some((d) => d !== "float32")
    ? "Scored in reduced precision (" + dtypes.join(", ") + "): on short texts bf16 moves PPL by up to several percent; serve with --dtype float32 for reference numbers."
    : "Scored in float32.";
  $("results").hidden = false;
}

// ---- details on hover and keyboard focus ------------------------------------------------
function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) {
    const td = document.createElement("td");
    if (cell instanceof Node) td.append(cell);
    else td.textContent = cell;
    tr.append(td);
  }
  return tr;
}

function code(text) {
  const c = document.createElement("code");
  c.textContent = text;
  return c;
}

function showTip(target, items, diffAgainst) {
  if (!(target instanceof HTMLElement) || !target.classList.contains("tok")) return;
  const item = items[Number(target.dataset.index)];
  if (!item) return;
  const tip = $("tip");
  tip.replaceChildren();
  const title = document.createElement("div");
  title.append(code(item.text));
  tip.append(title);
  const table = document.createElement("table");
  if (diffAgainst) {
    table.append(row([`− ${diffAgainst.model}`, item.value === null ? "–" : `${fmt(item.value)} bits`]));
  }
  if (item.word) {
    const w = item.word;
    table.append(row(["surprisal", `${fmt(w.surprisal_bits)} bits`]), row(["logprob", `${fmt(w.logprob)} nats`]), row(["tokens", String(w.num_tokens)]));
  } else if (item.parts.length > 1) {
    const known = item.parts.every((p) => p.logprob !== null);
    const nats = item.parts.reduce((sum, p) => sum + (p.logprob || 0), 0);
    table.append(row(["tokens", `${item.parts.length}, one character split across them`]));
    table.append(row(["logprob", known ? `${fmt(nats)} nats (sum)` : "partly unscored"]));
    if (known) table.append(row(["surprisal", `${fmt(bits(nats))} bits (${item.parts.map((p) => fmt(bits(p.logprob), 2)).join(" + ")})`]));
    if (!item.scored) table.append(row(["", "not in a scored role"]));
  } else {
    const t = item.token;
    table.append(row(["logprob", t.logprob === null ? "unscored (nothing before it)" : `${fmt(t.logprob)} nats`]));
    if (t.logprob !== null) table.append(row(["surprisal", `${fmt(bits(t.logprob))} bits`]), row(["rank", String(t.rank)]));
    if (t.entropy !== null && t.entropy !== undefined) table.append(row(["entropy", `${fmt(t.entropy / LN2)} bits`]));
    if (t.scored === false) table.append(row(["", "not in a scored role"]));
  }
  tip.append(table);
  const top = item.token && item.token.top;
  if (top && top.length) {
    const alternatives = document.createElement("table");
    alternatives.className = "alternatives";
    alternatives.append(row(["top 5", "p"]));
    for (const alt of top) {
      const tr = row([code(alt.text), `${fmt(100 * Math.exp(alt.logprob), 1)}%`]);
      if (alt.id === item.token.id) tr.className = "chosen";
      alternatives.append(tr);
    }
    tip.append(alternatives);
  }
  tip.hidden = false;
  const box = target.getBoundingClientRect();
  const left = Math.min(window.innerWidth - tip.offsetWidth - 8, Math.max(8, box.left));
  const below = box.bottom + 6 + tip.offsetHeight < window.innerHeight;
  tip.style.left = `${left}px`;
  tip.style.top = `${below ? box.bottom + 6 : Math.max(8, box.top - tip.offsetHeight - 6)}px`;
}

function hideTip() {
  $("tip").hidden = true;
}

// ---- wiring ----------------------------------------------------------------------------
function init() {
  $("ramp").style.background = rampCss(VIRIDIS);
  $("form").addEventListener("submit", (e) => {
    e.preventDefault();
    score();
  });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      score();
    }
    if (e.key === "Escape") hideTip();
  });
  for (const radio of document.querySelectorAll("input[name=mode]")) {
    radio.addEventListener("change", () => {
      $("text-input").hidden = mode() !== "text";
      $("chat-input").hidden = mode() !== "chat";
    });
  }
  for (const radio of document.querySelectorAll("input[name=unit], input[name=colour]")) {
    radio.addEventListener("change", render);
  }
  $("model").addEventListener("change", fillProfiles);
  $("add-message").addEventListener("click", () => addMessage());
  addMessage("user", "What is the capital of France?");
  addMessage("assistant", "The capital of France is Paris.");
  loadModels();
}

init();
