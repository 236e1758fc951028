// fashion-cir's page: a gallery picker and search (composed, text only, image only; scope and filters), and the
// validation queries, over the JSON API.
"use strict";

const GALLERY_PAGE = 24;
const QUERIES_PAGE = 10;
const state = {
  reference: null,  // {name} for a gallery image, {file, url} for an upload
  filters: [],      // "column op value" strings, sent as `where`
  columns: {},      // what /api/filters says can be filtered on
  maxUpload: 8 * 1024 * 1024,
  gallery: {offset: 0, total: 0},
  queries: {offset: 0, total: 0},
};

const $ = (selector) => document.querySelector(selector);

// An element with properties and children; text goes in as text, never as HTML.
function el(tag, props = {}, children = []) {
  const node = Object.assign(document.createElement(tag), props);
  for (const child of [].concat(children)) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const imageUrl = (name) => `/images/${encodeURIComponent(name)}`;

// GET or POST to the API; a 4xx/5xx answer's one sentence becomes the thrown error's message. A 401 (the
// server needs its API key) shows the key form.
async function api(url, options) {
  const response = await fetch(url, options);
  if (response.status === 401) $("#key-form").hidden = false;
  const body = await response.json().catch(() => ({error: `the server answered ${response.status}.`}));
  if (!response.ok) throw new Error(body.error || `the server answered ${response.status}.`);
  return body;
}

// One thumbnail card: image, name, and a meta line (category, score or rank).
function thumb(name, src, meta, extra = {}) {
  const {tag = "div", className = "", onClick, title = ""} = extra;
  const card = el(tag, {className: `thumb ${className}`, title});
  card.dataset.name = name;
  if (tag === "button") card.type = "button";
  if (onClick) card.addEventListener("click", onClick);
  card.append(el("img", {src, alt: name, width: 128, height: 128}), el("span", {className: "name"}, name),
              el("span", {className: "meta"}, meta.map((m) => el("span", {className: m.className || ""}, m.text))));
  return card;
}

function setPager(pager, offset, pageSize, total) {
  const end = Math.min(offset + pageSize, total);
  pager.querySelector(".range").textContent = total ? `${offset + 1}–${end} of ${total}` : "nothing found";
  pager.querySelector(".prev").disabled = offset === 0;
  pager.querySelector(".next").disabled = end >= total;
}

function fillCategories(select, categories) {
  if (select.options.length > 1) return;
  for (const category of categories) select.append(el("option", {value: category}, category));
}

// ---- views -------------------------------------------------------------------------------------------------
function showView() {
  const view = location.hash === "#queries" ? "queries" : "search";
  $("#view-search").hidden = view !== "search";
  $("#view-queries").hidden = view !== "queries";
  $("#nav-search").classList.toggle("active", view === "search");
  $("#nav-queries").classList.toggle("active", view === "queries");
  if (view === "queries") {
    loadRecall();
    loadQueries();
  }
}

// ---- gallery -----------------------------------------------------------------------------------------------
async function loadGallery() {
  const params = new URLSearchParams({category: $("#gallery-category").value, q: $("#gallery-q").value.trim(),
                                      offset: state.gallery.offset, limit: GALLERY_PAGE});
  const grid = $("#gallery");
  try {
    const page = await api(`/api/gallery?${params}`);
    fillCategories($("#gallery-category"), page.categories);
    state.gallery.total = page.total;
    grid.replaceChildren(...page.items.map(galleryCard));
    setPager($("#gallery-pager"), page.offset, GALLERY_PAGE, page.total);
  } catch (error) {
    grid.replaceChildren(el("p", {className: "status error"}, error.message));
  }
}

function galleryCard(item) {
  const selected = state.reference && state.reference.name === item.name;
  return thumb(item.name, imageUrl(item.name), [{text: item.category}, {text: item.split}],
               {tag: "button", className: selected ? "selected" : "", title: item.caption,
                onClick: () => chooseReference({name: item.name, caption: item.caption})});
}

function chooseReference(reference) {
  if (state.reference && state.reference.url) URL.revokeObjectURL(state.reference.url);
  state.reference = reference;
  const preview = $("#ref-preview");
  preview.classList.toggle("chosen", Boolean(reference));
  preview.replaceChildren(reference ? el("img", {src: reference.url || imageUrl(reference.name), alt: "reference"})
                                    : el("span", {}, "no reference"));
  $("#ref-label").textContent = reference ? reference.name || `upload: ${reference.file.name}`
                                          : "Pick one from the gallery, or upload an image.";
  $("#ref-label").title = reference ? reference.caption || "" : "";
  $("#clear-reference").hidden = !reference;
  for (const card of document.querySelectorAll("#gallery .thumb")) {
    card.classList.toggle("selected", Boolean(reference) && card.dataset.name === reference.name);
  }
  $("#text").focus();
}

function chooseUpload(event) {
  const file = event.target.files[0];
  if (!file) return;
  if (file.size > state.maxUpload) {
    showStatus(`That file is ${(file.size / 1048576).toFixed(1)} MB; the limit is ` +
               `${state.maxUpload / 1048576} MB.`, true);
    event.target.value = "";
    return;
  }
  chooseReference({file, url: URL.createObjectURL(file)});
  event.target.value = "";
}

// ---- search ------------------------------------------------------------------------------------------------
function showStatus(message, isError = false) {
  const status = $("#search-status");
  status.textContent = message;
  status.classList.toggle("error", isError);
}

// ---- filters ------------------------------------------------------------------------------------------------
async function loadFilters() {
  const answer = await api("/api/filters").catch(() => null);
  if (!answer) return;
  state.columns = answer.columns;
  const select = $("#filter-column");
  select.replaceChildren(...Object.keys(answer.columns).map((column) => el("option", {value: column}, column)));
  const categories = (answer.columns.category || {}).values || [];
  $("#scope").append(...categories.map((category) => el("option", {value: category}, `only ${category}`)));
  describeColumn();
}

function describeColumn() {
  const column = state.columns[$("#filter-column").value] || {};
  const values = column.kind === "text" ? column.values : [];
  $("#filter-values").replaceChildren(...values.map((value) => el("option", {value})));
  $("#filter-value").placeholder = column.kind === "number" ? `${column.min} to ${column.max}` : "value";
}

function addFilter() {
  const value = $("#filter-value").value.trim();
  if (!value) return showStatus("Type a value for the filter, e.g. red.", true);
  state.filters.push(`${$("#filter-column").value} ${$("#filter-op").value} ${value}`);
  $("#filter-value").value = "";
  drawFilters();
}

function drawFilters() {
  $("#filters").replaceChildren(...state.filters.map((filter, i) => el("span", {className: "chip"}, [
    filter, el("button", {type: "button", title: "remove", ariaLabel: `remove ${filter}`,
                          onclick: () => { state.filters.splice(i, 1); drawFilters(); }}, "\u00d7")])));
}

async function search(event) {
  event.preventDefault();
  const text = $("#text").value.trim();
  if (!state.reference && !text) {
    return showStatus("Type a query (\u201ca red floral dress\u201d), pick a reference, or both.", true);
  }
  const form = new FormData();
  form.append("text", text);
  form.append("k", $("#k").value);
  if (state.reference && state.reference.file) form.append("image", state.reference.file);
  else if (state.reference) form.append("reference", state.reference.name);
  const scope = $("#scope").value;
  if (scope === "*") form.append("every_category", "true");
  else if (scope) form.append("where", `category = ${scope}`);
  for (const filter of state.filters) form.append("where", filter);
  $("#submit").disabled = true;
  showStatus("Searching…");
  try {
    drawResults(await api("/api/search", {method: "POST", body: form}));
    showStatus("");
  } catch (error) {
    showStatus(error.message, true);
  } finally {
    $("#submit").disabled = false;
  }
}

function drawResults(answer) {
  const reference = answer.kind === "text" ? null : state.reference;
  const asked = [];
  if (reference) asked.push(el("b", {}, reference.name || "the uploaded image"));
  if (reference && answer.text) asked.push(" + ");
  if (answer.text) asked.push(`\u201c${answer.text}\u201d`);
  const within = answer.filters.length ? ` within ${answer.filters.join(" and ")}` : " in every category";
  $("#query-info").replaceChildren(
    el("div", {}, [el("b", {}, `${answer.hits.length} results`), ` in ${answer.milliseconds.toFixed(0)} ms, `,
                   el("span", {id: "query-kind"}, `${answer.kind} query`), ": ", ...asked,
                   el("span", {id: "query-filters"}, within)]),
    answer.query_text ? el("div", {}, ["The model read: ", el("code", {id: "query-text"}, answer.query_text)]) : "");
  const cards = reference ? [thumb(reference.name || "upload", reference.url || imageUrl(reference.name),
                                   [{text: "reference", className: "rank"}], {className: "reference-card"})] : [];
  const hits = answer.hits.map((hit) => thumb(hit.name, imageUrl(hit.name), [
    {text: `#${hit.rank}`, className: "rank"}, {text: hit.category}, {text: hit.score.toFixed(3)}],
    {className: "hit", title: `score ${hit.score}`}));
  $("#results").replaceChildren(...cards, ...hits);
}

// ---- recall in context -------------------------------------------------------------------------------------
// Each category's recall beside its gallery size, the chance level of its gallery and the stage-1 model's recall
// (metrics/eval_context.json); a category whose chance R@10 reaches the server's threshold is marked.
const pct = (value) => value.toFixed(1);

function recallRow(label, row, {small = false, className = ""} = {}) {
  const cells = [el("th", {scope: "row"}, small ? [label, " ", el("span", {className: "small-mark"}, "small gallery")]
                                                : label),
                 el("td", {}, row.gallery ?? `${row.categories} categories`),
                 el("td", {}, row.queries),
                 el("td", {className: "model"}, pct(row["R@10"])), el("td", {}, pct(row.stage1_sum["R@10"])),
                 el("td", {}, pct(row.chance["R@10"])),
                 el("td", {className: "model"}, pct(row["R@50"])), el("td", {}, pct(row.stage1_sum["R@50"])),
                 el("td", {}, pct(row.chance["R@50"]))];
  const tr = el("tr", {className: `${className} ${small ? "small" : ""}`}, cells);
  tr.dataset.category = label;
  return tr;
}

// `context` is metrics/eval_context.json: categories and their averages, or one split's block (CIRR).
function recallTable(context, threshold) {
  if (!context.average) context = {val: context, average: {}};
  const categories = Object.keys(context).filter((name) => name !== "average");
  const head = el("tr", {}, ["", "gallery", "queries", "R@10", "stage 1", "chance", "R@50", "stage 1", "chance"]
    .map((text) => el("th", {scope: "col"}, text)));
  const rows = categories.map((name) => recallRow(name, context[name], {small: context[name].small}));
  const averages = [["macro average", "macro"], ["average over queries", "over_queries"],
                    ["macro average, small galleries left out", "macro_without_small"]];
  for (const [label, key] of averages) {
    const average = context.average[key];
    if (average && average.categories) rows.push(recallRow(label, average, {className: "average"}));
  }
  const small = categories.filter((name) => context[name].small);
  const note = small.length
    ? `Marked: chance R@10 is ${threshold}% or more, so their recall says little about the model.`
    : `No gallery is small enough for chance to reach ${threshold}% at R@10.`;
  return [el("h3", {}, "Recall in context"),
          el("table", {id: "recall-table"}, [el("thead", {}, head), el("tbody", {}, rows)]),
          el("p", {className: "legend"}, ["Stage 1: the warm-up model composing by the sum of its features, on the " +
                                          "same queries. Chance: a random ranking. ", note])];
}

async function loadRecall() {
  const box = $("#recall");
  try {
    const answer = await api("/api/recall");
    if (!answer.available) {
      box.replaceChildren(el("p", {className: "notice"}, answer.message));
      return;
    }
    box.replaceChildren(...recallTable(answer.context, answer.small_chance_r10));
  } catch (error) {
    box.replaceChildren(el("p", {className: "status error"}, error.message));
  }
}

// ---- validation queries ------------------------------------------------------------------------------------
async function loadQueries() {
  const params = new URLSearchParams({category: $("#queries-category").value, offset: state.queries.offset,
                                      limit: QUERIES_PAGE});
  const list = $("#queries");
  try {
    const page = await api(`/api/queries?${params}`);
    if (!page.available) {
      $("#queries-pager").hidden = true;
      list.replaceChildren(el("div", {className: "card notice", id: "queries-missing"}, page.message));
      return;
    }
    $("#queries-pager").hidden = false;
    fillCategories($("#queries-category"), page.categories);
    state.queries.total = page.total;
    $("#queries-summary").textContent = `${page.total} queries, ${page.failures} with the target outside the top 10`;
    setPager($("#queries-pager"), page.offset, QUERIES_PAGE, page.total);
    list.replaceChildren(...page.items.map(queryCard));
  } catch (error) {
    list.replaceChildren(el("p", {className: "status error"}, error.message));
  }
}

function rankText(query) {
  if (query.target_rank === 0) return "target not ranked";
  return query.hit ? `target at rank ${query.target_rank}` : `target at rank ${query.target_rank} (missed)`;
}

function queryCard(query) {
  const outcome = query.hit ? "hit" : "fail";
  const modification = [query.caption1, query.caption2].filter((c) => c.trim()).join(" and ");
  const head = el("div", {className: "query-head"}, [
    el("span", {className: "id"}, query.triplet_id),
    el("span", {className: "tags"}, `${query.category} · ${query.source}`),
    el("span", {className: `badge ${outcome}`}, rankText(query))]);
  const body = el("div", {className: "query-body"}, [
    thumb(query.reference, imageUrl(query.reference), [{text: "reference", className: "rank"}],
          {className: "reference-card"}),
    thumb(query.target, imageUrl(query.target), [{text: "target", className: "target-label"}], {className: "target"}),
    el("div", {className: "texts"}, [
      el("p", {className: "modification"}, `\u201c${modification}\u201d`),
      el("p", {className: "read"}, ["The model read: ", el("code", {}, query.query_text)])])]);
  const top = el("div", {className: "grid strip"}, query.top.map((hit, i) => {
    const isTarget = hit.name === query.target;
    const meta = [{text: `#${i + 1}`, className: "rank"},
                  isTarget ? {text: "target", className: "target-label"} : {text: hit.score.toFixed(3)}];
    return thumb(hit.name, imageUrl(hit.name), meta,
                 {className: `hit ${isTarget ? "target" : ""}`, title: `${hit.category}, score ${hit.score}`});
  }));
  const card = el("article", {className: `card query ${outcome}`},
                  [head, body, el("div", {className: "label strip-label"}, "the model's top 10"), top]);
  card.dataset.triplet = query.triplet_id;
  return card;
}

// ---- start -------------------------------------------------------------------------------------------------
function pageButtons(pagerId, key, pageSize, load) {
  const pager = $(pagerId);
  pager.querySelector(".prev").addEventListener("click", () => {
    state[key].offset = Math.max(0, state[key].offset - pageSize);
    load();
  });
  pager.querySelector(".next").addEventListener("click", () => {
    state[key].offset += pageSize;
    load();
  });
}

function debounce(action, ms) {
  let timer;
  return () => { clearTimeout(timer); timer = setTimeout(action, ms); };
}

async function showHealth() {
  const health = await api("/health").catch(() => null);
  if (!health) return;
  state.maxUpload = health.max_upload_bytes;
  $("#health").textContent = `${health.images} gallery images`;
}

// The key goes in a cookie of this site only, so every request the page makes (thumbnails too) carries it.
function useKey(event) {
  event.preventDefault();
  const key = $("#key-input").value.trim();
  if (!key) return;
  document.cookie = `fashion_cir_key=${encodeURIComponent(key)}; path=/; SameSite=Strict`;
  location.reload();
}

function start() {
  const refilterGallery = () => { state.gallery.offset = 0; loadGallery(); };
  $("#gallery-category").addEventListener("change", refilterGallery);
  $("#gallery-q").addEventListener("input", debounce(refilterGallery, 250));
  $("#queries-category").addEventListener("change", () => { state.queries.offset = 0; loadQueries(); });
  pageButtons("#gallery-pager", "gallery", GALLERY_PAGE, loadGallery);
  pageButtons("#queries-pager", "queries", QUERIES_PAGE, loadQueries);
  $("#upload").addEventListener("change", chooseUpload);
  $("#clear-reference").addEventListener("click", () => chooseReference(null));
  $("#filter-column").addEventListener("change", describeColumn);
  $("#add-filter").addEventListener("click", addFilter);
  $("#search-form").addEventListener("submit", search);
  $("#key-form").addEventListener("submit", useKey);
  window.addEventListener("hashchange", showView);
  showHealth();
  loadFilters();
  loadGallery();
  showView();
}

start();
