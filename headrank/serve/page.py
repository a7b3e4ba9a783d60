"""The page `headrank serve` answers at GET /: paste a query and passages, see the ranking, the calibrated
relevance and each passage's evidence highlighted. One inline HTML document (no build step, no external assets);
it calls POST /v1/rerank with return_highlights. A URL fragment `#q=QUERY&p=PASSAGE&p=PASSAGE...` fills the form
and submits it on load (for links, and for the headless-browser test)."""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>headrank</title>
<style>
  body { font: 15px/1.45 system-ui, sans-serif; max-width: 60rem; margin: 1.5rem auto; padding: 0 1rem; color: #222; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
  p.lead { margin: 0 0 1rem; color: #555; }
  label { display: block; font-weight: 600; margin: .6rem 0 .2rem; }
  input, textarea { width: 100%; box-sizing: border-box; font: inherit; padding: .4rem; }
  textarea { min-height: 12rem; }
  button { margin-top: .6rem; font: inherit; padding: .4rem 1.2rem; }
  #status { color: #a00; margin: .6rem 0; }
  ol { padding-left: 0; list-style: none; }
  li { border: 1px solid #ddd; border-radius: 6px; padding: .6rem .8rem; margin: .5rem 0; }
  .meta { font-size: .85rem; color: #555; margin-bottom: .3rem; }
  .bar { display: inline-block; height: .6rem; background: #3a7; vertical-align: middle; margin-left: .4rem; }
  .text { white-space: pre-wrap; }
  mark { border-radius: 3px; padding: 0 1px; }
</style>
</head>
<body>
<h1>headrank</h1>
<p class="lead">Paste a query and passages (one per paragraph: separate them with a blank line). The ranking comes
from the attention of the selected heads; relevance is the calibrated P(relevant) (the list-relative one when the
ranker has no calibration); the marked sentences are those the heads read most (darker: more).</p>
<form id="form">
  <label for="query">Query</label>
  <input id="query" name="query" required>
  <label for="passages">Passages</label>
  <textarea id="passages" name="passages" required></textarea>
  <button type="submit" id="rank">Rank</button>
</form>
<div id="status" role="status"></div>
<ol id="results"></ol>
<script>
"use strict";
const form = document.getElementById("form");
const statusLine = document.getElementById("status");
const list = document.getElementById("results");

function passagesOf(text) {
  return text.split(/\\n\\s*\\n/).map(p => p.trim()).filter(p => p.length > 0);
}

function marked(text, highlights) {
  // Python's offsets count code points: slice an array of them, not UTF-16 units
  const chars = Array.from(text);
  const box = document.createElement("div");
  box.className = "text";
  const top = Math.max(...highlights.map(h => h.weight), 0);
  const spans = highlights.filter(h => h.weight > 0).sort((a, b) => a.start - b.start);
  let at = 0;
  for (const h of spans) {
    box.append(chars.slice(at, h.start).join(""));
    const mark = document.createElement("mark");
    mark.style.background = "rgba(255, 190, 0, " + (0.15 + 0.75 * h.weight / top).toFixed(2) + ")";
    mark.title = "share of the heads' attention: " + h.weight.toFixed(3);
    mark.textContent = chars.slice(h.start, h.end).join("");
    box.append(mark);
    at = h.end;
  }
  box.append(chars.slice(at).join(""));
  return box;
}

function show(passages, results, kind) {
  list.replaceChildren();
  results.forEach((r, rank) => {
    const item = document.createElement("li");
    item.className = "result";
    item.dataset.index = r.index;
    item.dataset.relevance = r.relevance_score;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = "#" + (rank + 1) + " \\u00b7 passage " + (r.index + 1) + " \\u00b7 " + kind + " " +
      r.relevance_score.toFixed(3);
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = (6 * r.relevance_score).toFixed(2) + "rem";
    meta.append(bar);
    item.append(meta, marked(passages[r.index], r.highlights || []));
    list.append(item);
  });
  document.body.dataset.state = "ranked";
}

async function request(query, passages, relevance) {
  const answer = await fetch("v1/rerank", {
    method: "POST",
    headers: {"Content-Type": "application/json"},
    body: JSON.stringify({query: query, documents: passages, return_documents: false, return_highlights: true,
                          relevance: relevance}),
  });
  return [answer, await answer.json()];
}

async function rank(query, passages) {
  statusLine.textContent = "ranking " + passages.length + " passages\\u2026";
  document.body.dataset.state = "ranking";
  try {
    const health = await (await fetch("health")).json();
    const kind = health.ranker.calibrated ? "calibrated relevance" : "list-relative relevance";
    const [answer, body] = await request(query, passages, "calibrated");
    if (!answer.ok) {
      throw new Error(typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail));
    }
    statusLine.textContent = "";
    document.body.dataset.relevance = kind;
    show(passages, body.results, kind);
  } catch (err) {
    statusLine.textContent = "error: " + err.message;
    document.body.dataset.state = "error";
  }
}

form.addEventListener("submit", event => {
  event.preventDefault();
  rank(document.getElementById("query").value, passagesOf(document.getElementById("passages").value));
});

const given = new URLSearchParams(location.hash.slice(1));
if (given.get("q")) {
  document.getElementById("query").value = given.get("q");
  document.getElementById("passages").value = given.getAll("p").join("\\n\\n");
  form.requestSubmit();
}
</script>
</body>
</html>
"""
