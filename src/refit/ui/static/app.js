"use strict";
// refit's dashboard: reads /ui/api/ and draws every chart itself as SVG (no library, no CDN).
(function () {
  const API = "/ui/api";
  const SLOW = 5000; // registry views
  const FAST = 2000; // this server's metrics
  const MAX_BACKOFF = 60000;
  const HISTORY = 90; // traffic points kept for the chart
  const HIDDEN_ROUTES = /^\/(ui|metrics|health|docs|redoc|openapi)/;
  const KEY = "refit-api-key"; // this tab's key, never in the URL
  const $ = (id) => document.getElementById(id);
  const NS = "http://www.w3.org/2000/svg";
  let model = null;
  let failures = 0;
  let previous = null;
  const history = [];

  function esc(value) {
    return String(value === null || value === undefined ? "" : value).replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  }
  function num(value, digits) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    if (typeof value !== "number") return esc(value);
    const d = digits === undefined ? 4 : digits;
    if (Math.abs(value) >= 1000) return value.toLocaleString(undefined, {maximumFractionDigits: 0});
    const text = value.toFixed(d);
    return text.includes(".") ? text.replace(/\.?0+$/, "") || "0" : text;
  }
  function ago(iso) {
    if (!iso) return "–";
    const s = (Date.parse(iso) - Date.now()) / 1000;
    const a = Math.abs(s);
    const text = a < 60 ? `${Math.round(a)} s` : a < 3600 ? `${Math.round(a / 60)} min` : a < 172800 ? `${Math.round(a / 3600)} h` : `${Math.round(a / 86400)} d`;
    return s > 0 ? `in ${text}` : `${text} ago`;
  }
  function when(iso) {
    return iso ? `<span title="${esc(iso)}">${ago(iso)}</span>` : "–";
  }
  async function get(path) {
    const headers = {accept: "application/json"};
    const key = sessionStorage.getItem(KEY);
    if (key) headers["X-API-Key"] = key;
    const response = await fetch(API + path, {headers, cache: "no-store"});
    if (response.status === 401 || response.status === 403) askKey(response.status);
    if (!response.ok) {
      let message = `${response.status}`;
      try { message += ` ${(await response.json()).error.message}`; } catch (_) { /* not JSON */ }
      throw new Error(message);
    }
    return response.json();
  }
  function askKey(status) {
    const form = $("key");
    if (!form.hidden) return;
    form.hidden = false;
    $("key-why").textContent = status === 401 ? "This server needs an API key to show its data." : "This key may not read the dashboard's data.";
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      sessionStorage.setItem(KEY, $("key-value").value.trim());
      form.hidden = true;
    }, {once: true});
  }
  function table(id, head, rows, empty) {
    const el = $(id);
    if (!rows.length) { el.innerHTML = `<tr><td class="empty">${esc(empty)}</td></tr>`; return; }
    el.innerHTML = "<thead><tr>" + head.map((h) => `<th class="${h.endsWith("#") ? "num" : ""}">${esc(h.replace(/#$/, ""))}</th>`).join("") + "</tr></thead><tbody>" + rows.map((r) => "<tr>" + r.join("") + "</tr>").join("") + "</tbody>";
  }
  const td = (html, cls) => `<td class="${cls || ""}">${html}</td>`;
  const pill = (text, kind) => `<span class="pill ${kind}">${esc(text)}</span>`;

  // --- SVG ----------------------------------------------------------------------------
  function svg(width, height) {
    const el = document.createElementNS(NS, "svg");
    el.setAttribute("viewBox", `0 0 ${width} ${height}`);
    el.setAttribute("role", "img");
    return el;
  }
  function add(parent, name, attrs, text) {
    const el = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    parent.appendChild(el);
    return el;
  }
  function scale(d0, d1, r0, r1) {
    const span = d1 - d0 || 1;
    return (v) => r0 + ((v - d0) / span) * (r1 - r0);
  }
  function extent(values, pad) {
    const finite = values.filter((v) => typeof v === "number" && Number.isFinite(v));
    if (!finite.length) return [0, 1];
    let lo = Math.min(...finite), hi = Math.max(...finite);
    if (lo === hi) { lo -= 0.5 * (Math.abs(lo) || 1) * (pad || 0.1); hi += 0.5 * (Math.abs(hi) || 1) * (pad || 0.1); }
    const m = (hi - lo) * (pad || 0.08);
    return [lo - m, hi + m];
  }
  function axes(root, box, y, ticks, format) {
    const step = (y.hi - y.lo) / ticks;
    const digits = Math.min(6, Math.max(0, Math.ceil(-Math.log10(step || 1)) + 1));
    format = format || ((n) => n.toFixed(digits));
    for (let i = 0; i <= ticks; i++) {
      const v = y.lo + ((y.hi - y.lo) * i) / ticks;
      const py = y.at(v);
      add(root, "line", {x1: box.l, x2: box.r, y1: py, y2: py, class: "grid"});
      add(root, "text", {x: box.l - 6, y: py + 4, "text-anchor": "end"}, format(v));
    }
  }
  function timeLabels(root, box, x, t0, t1) {
    const span = t1 - t0;
    const n = box.r - box.l > 600 ? 4 : 2;
    for (let i = 0; i <= n; i++) {
      const t = t0 + (span * i) / n;
      const d = new Date(t);
      const label = span > 2 * 86400000 ? d.toLocaleDateString([], {month: "short", day: "numeric"}) : d.toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: span < 600000 ? "2-digit" : undefined});
      add(root, "text", {x: x(t), y: box.b + 16, "text-anchor": i === 0 ? "start" : i === n ? "end" : "middle"}, label);
    }
  }
  function path(points) {
    let d = "";
    let pen = false;
    for (const [px, py] of points) {
      if (py === null || !Number.isFinite(py)) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${px.toFixed(1)},${py.toFixed(1)}`;
      pen = true;
    }
    return d;
  }
  function tip(el, text) { el.setAttribute("data-tip", text); return el; }
  function empty(id, text) { $(id).innerHTML = `<div class="empty">${esc(text)}</div>`; }

  // --- the served version ---------------------------------------------------------------
  function renderSummary(s) {
    const v = s.version;
    const served = s.serving !== null ? `v${s.serving}` : "nothing yet";
    const behind = s.production !== null && s.serving !== s.production ? ` <span class="pill warn">production is v${esc(s.production)}</span>` : "";
    $("served").innerHTML = `${esc(s.name)} serves <span class="tag" data-testid="served-version">${esc(served)}</span>${behind}`;
    if (!v) { $("lineage").innerHTML = `<div class="card"><h3>Production</h3><div class="big">not set</div><p class="empty">Train a version: refit train</p></div>`; return; }
    const sn = s.snapshot, run = s.run, p = s.promotion;
    const metrics = Object.entries(v.metrics || {}).map(([k, x]) => `<dt>${esc(k)}</dt><dd>${num(x)}</dd>`).join("");
    const params = Object.entries(v.params || {}).slice(0, 12).map(([k, x]) => `<dt>${esc(k)}</dt><dd>${esc(typeof x === "object" ? JSON.stringify(x) : x)}</dd>`).join("");
    const live = s.servers.filter((x) => !x.stale);
    $("lineage").innerHTML = [
      `<div class="card"><h3>In production</h3><div class="big">v${esc(v.version)}</div><dl><dt>${esc(v.metric)}</dt><dd>${num(v.value)}</dd><dt>trained</dt><dd>${when(v.created_at)}</dd><dt>flavor</dt><dd>${esc(v.flavor)}${v.onnx === "ok" ? " + onnx" : ""}</dd><dt>code</dt><dd>${esc((v.code_revision || "–").slice(0, 12))}</dd></dl></div>`,
      `<div class="card"><h3>Snapshot</h3><div class="big">${sn ? num(sn.rows) + " rows" : "–"}</div>${sn ? `<dl><dt>id</dt><dd>${esc(sn.id.slice(0, 12))}</dd><dt>data</dt><dd>${when(sn.data_from)} → ${when(sn.data_to)}</dd><dt>mode</dt><dd>${esc(sn.mode)}</dd><dt>columns</dt><dd>${esc(sn.columns)}</dd></dl>` : ""}</div>`,
      `<div class="card"><h3>How it was made</h3><div class="big">${run ? esc(run.trigger) : "–"}</div>${run ? `<dl><dt>run</dt><dd>${esc(run.id.slice(0, 12))} (${esc(run.status)})</dd><dt>started</dt><dd>${when(run.started_at)}</dd>${run.cause ? `<dt>cause</dt><dd>${esc(run.cause)}</dd>` : ""}</dl>` : ""}</div>`,
      `<div class="card wide"><h3>Promoted</h3><div class="big">${p ? when(p.created_at) : "–"}</div>${p ? `<dl><dt>by</dt><dd>${esc(p.action)} · ${esc(p.actor)}</dd><dt>why</dt><dd>${esc(p.reason)}</dd><dt>champion</dt><dd>${p.previous_version !== null ? "v" + esc(p.previous_version) + " " + num(p.champion_value) : "none"}</dd></dl>` : ""}</div>`,
      `<div class="card"><h3>Holdout metrics</h3><dl>${metrics}</dl></div>`,
      `<div class="card wide"><h3>Parameters</h3><dl>${params || "<dt>–</dt><dd>defaults</dd>"}</dl></div>`,
      `<div class="card"><h3>Servers</h3><div class="big">${live.length} live</div><dl>${live.slice(0, 4).map((x) => `<dt>${esc(x.host)}:${esc(x.pid)}</dt><dd>v${esc(x.version)} · ${when(x.seen_at)}</dd>`).join("")}</dl></div>`,
    ].join("");
    table("servers", ["host", "pid#", "version#", "serving since", "seen", "state"], s.servers.map((x) => [
      td(esc(x.host)), td(esc(x.pid), "num"), td(x.version === null ? "–" : "v" + esc(x.version), "num"), td(when(x.serving_since)), td(when(x.seen_at)),
      td(x.stale ? pill("stale", "warn") : x.refused_version ? pill(`refused v${x.refused_version}`, "no") : pill("live", "ok")),
    ]), "no server has reported yet");
  }

  // --- versions timeline ----------------------------------------------------------------
  function renderVersions(data) {
    const versions = data.versions;
    if (!versions.length) { empty("timeline", "no version yet"); table("decisions", [], [], "no decision yet"); return; }
    const W = 960, H = 260, box = {l: 52, r: W - 12, t: 12, b: H - 26};
    const times = versions.map((v) => Date.parse(v.created_at)).concat(data.decisions.map((d) => Date.parse(d.created_at)));
    const now = Date.now();
    const t0 = Math.min(...times), t1 = Math.max(Math.max(...times), Math.min(now, Math.max(...times) + 60000));
    const x = scale(t0, t1, box.l, box.r);
    const values = versions.map((v) => v.value).concat(data.decisions.map((d) => d.champion_value));
    const [lo, hi] = extent(values);
    const y = {lo, hi, at: scale(lo, hi, box.b, box.t)};
    const root = svg(W, H);
    data.periods.forEach((p, i) => {
      const a = x(Math.max(t0, Date.parse(p.from))), b = x(p.to ? Date.parse(p.to) : t1);
      tip(add(root, "rect", {x: a, y: box.t, width: Math.max(1, b - a), height: box.b - box.t, class: "prod", "fill-opacity": i % 2 ? 0.55 : 1}), `v${p.version} in production from ${p.from}${p.to ? " to " + p.to : " (now)"}`);
      if (b - a > 24) add(root, "text", {x: a + 4, y: box.t + 12}, `v${p.version}`);
    });
    axes(root, box, y, 4);
    timeLabels(root, box, x, t0, t1);
    add(root, "path", {d: path(versions.map((v) => [x(Date.parse(v.created_at)), v.value === null ? null : y.at(v.value)])), class: "line"});
    for (const v of versions) {
      if (v.value === null) continue;
      tip(add(root, "circle", {cx: x(Date.parse(v.created_at)), cy: y.at(v.value), r: 3, class: "pt"}), `v${v.version}: ${v.metric} ${num(v.value)} (${v.status}, ${v.trigger})`);
    }
    for (const d of data.decisions) {
      const value = d.candidate_value;
      if (value === null) continue;
      const cx = x(Date.parse(d.created_at)), cy = y.at(value);
      const mark = d.promoted ? add(root, "circle", {cx, cy, r: 6, class: "ok", "data-decision": "promoted"}) : add(root, "path", {d: `M${cx - 5},${cy - 5}L${cx + 5},${cy + 5}M${cx + 5},${cy - 5}L${cx - 5},${cy + 5}`, stroke: "var(--no)", "stroke-width": 2.5, "data-decision": "rejected"});
      const champion = d.champion_value === null ? "no champion" : `champion v${d.previous_version} ${num(d.champion_value)} on the same rows`;
      const interval = d.difference ? `; difference ${d.difference} at ${num(d.evidence.confidence * 100)}%` : "";
      const text = `v${d.candidate_version} ${d.promoted ? "promoted" : "rejected"} (${d.action}): ${d.reason}. ${d.metric || ""} ${num(value)}; ${champion}${interval}`;
      tip(mark, text);
      tip(add(root, "circle", {cx, cy, r: 10, class: "hit"}), text);
    }
    const el = $("timeline");
    el.replaceChildren(root);
    table("decisions", ["when", "version#", "decision", "metric", "value#", "champion#", "difference#", "reason"], data.decisions.slice().reverse().slice(0, 100).map((d) => [
      td(when(d.created_at)), td("v" + esc(d.candidate_version), "num"), td(pill(d.promoted ? "promoted" : "rejected", d.promoted ? "ok" : "no") + " " + esc(d.action)),
      td(esc(d.metric || "–")), td(num(d.candidate_value), "num"), td(d.champion_value === null ? "–" : `v${esc(d.previous_version)} ${num(d.champion_value)}`, "num"), td(esc(d.difference || "–"), "num"), td(esc(d.reason), "wrap"),
    ]), "no decision yet");
  }

  // --- snapshots and schedule -----------------------------------------------------------
  function renderSnapshots(data) {
    table("jobs", ["job", "schedule", "last run", "status", "next"], data.jobs.map((j) => [
      td(esc(j.job)), td(esc(j.schedule || "off")), td(when(j.last_started_at)),
      td(j.last_status ? pill(j.last_status, j.last_status === "failed" ? "no" : j.last_status === "succeeded" ? "ok" : "") : "–"), td(when(j.next_at)),
    ]), "");
    table("batches", ["arrived", "status", "read#", "valid#", "rejected#", "snapshot", "note"], data.batches.map((b) => [
      td(when(b.created_at)), td(pill(b.status, b.status === "refused" ? "no" : b.status === "accepted" ? "ok" : "")), td(num(b.rows_read), "num"), td(num(b.rows_valid), "num"),
      td(b.rows_rejected ? `<b>${num(b.rows_rejected)}</b>` : "0", "num"), td(esc((b.snapshot_id || "–").slice(0, 12))), td(esc(b.reason || ""), "wrap"),
    ]), "no data ingested yet");
  }

  // --- drift ----------------------------------------------------------------------------
  function renderDrift(data) {
    const latest = data.latest;
    if (!latest || !latest.features.length) {
      empty("drift-chart", latest ? `the last report judged ${latest.rows} rows: too few to judge drift` : "no monitor report yet");
      $("hists").innerHTML = ""; $("drift-note").textContent = ""; return;
    }
    $("drift-note").textContent = `${latest.rows} rows, ${ago(latest.created_at)}; ${latest.drifted.length ? latest.drifted.length + " flagged" : "nothing flagged"}`;
    const shown = latest.features.slice(0, 6).map((f) => f.name);
    const W = 960, H = 220, box = {l: 52, r: W - 150, t: 12, b: H - 26};
    const reports = data.reports;
    const times = reports.map((r) => Date.parse(r.created_at));
    const t0 = Math.min(...times), t1 = Math.max(...times, t0 + 1000);
    const x = scale(t0, t1, box.l, box.r);
    const all = reports.flatMap((r) => shown.map((f) => r.scores[f]));
    const [, hi] = extent(all.concat([0]));
    const y = {lo: 0, hi, at: scale(0, hi, box.b, box.t)};
    const root = svg(W, H);
    axes(root, box, y, 4);
    timeLabels(root, box, x, t0, t1);
    const colours = ["var(--no)", "var(--accent)", "var(--warn)", "var(--ok)", "#8e6bd6", "#3aa6b9"];
    shown.forEach((feature, i) => {
      const scored = reports.map((r) => [Date.parse(r.created_at), typeof r.scores[feature] === "number" ? r.scores[feature] : null]);
      add(root, "path", {d: path(scored.map(([t, v]) => [x(t), v === null ? null : y.at(v)])), fill: "none", stroke: colours[i], "stroke-width": 2, "data-feature": feature});
      for (const [t, v] of scored) if (v !== null) tip(add(root, "circle", {cx: x(t), cy: y.at(v), r: 3, fill: colours[i]}), `${feature}: drift score ${num(v, 3)} (${new Date(t).toLocaleString()})`);
      add(root, "rect", {x: box.r + 14, y: box.t + i * 18, width: 10, height: 10, fill: colours[i]});
      add(root, "text", {x: box.r + 30, y: box.t + i * 18 + 9}, feature.length > 16 ? feature.slice(0, 15) + "…" : feature);
    });
    $("drift-chart").replaceChildren(root);
    const hists = $("hists");
    hists.replaceChildren(...latest.features.map(histogram));
  }
  function histogram(f) {
    const card = document.createElement("div");
    card.className = "hist" + (f.drifted ? " flag" : "");
    const h = f.histogram || {bins: [], reference: [], live: []};
    const stat = f.psi !== undefined && f.psi !== null ? `psi ${num(f.psi, 3)}` : `score ${num(f.score, 3)}`;
    card.innerHTML = `<h4>${esc(f.name)} <span>${f.drifted ? pill("drifted", "no") + " " : ""}${esc(stat)}</span></h4>`;
    const n = h.reference.length;
    const W = 240, H = 80, root = svg(W, H);
    const top = Math.max(...h.reference, ...h.live, 1e-9);
    const bw = (W - 4) / Math.max(n, 1);
    for (let i = 0; i < n; i++) {
      const label = typeof h.bins[0] === "number" ? `${num(h.bins[i], 3)} – ${num(h.bins[i + 1], 3)}` : String(h.bins[i]);
      const rh = (h.reference[i] / top) * (H - 6), lh = (h.live[i] / top) * (H - 6);
      add(root, "rect", {x: 2 + i * bw, y: H - rh, width: Math.max(bw / 2 - 1, 1), height: rh, class: "ref"});
      add(root, "rect", {x: 2 + i * bw + bw / 2, y: H - lh, width: Math.max(bw / 2 - 1, 1), height: lh, class: "live"});
      tip(add(root, "rect", {x: 2 + i * bw, y: 0, width: bw, height: H, class: "hit"}), `${label}: reference ${(100 * h.reference[i]).toFixed(1)}%, live ${(100 * h.live[i]).toFixed(1)}%`);
    }
    card.appendChild(root);
    if (f.reasons && f.reasons.length) card.insertAdjacentHTML("beforeend", `<div class="legend">${esc(f.reasons.join("; "))}</div>`);
    return card;
  }

  // --- live quality ---------------------------------------------------------------------
  function renderQuality(data) {
    const rows = [];
    const series = [];
    for (const r of data.reports) {
      const versions = Object.entries(r.versions || {});
      if (!versions.length) continue;
      const [version, q] = versions[versions.length - 1];
      const metric = q.metric;
      series.push({t: Date.parse(r.created_at), live: q.live ? q.live[metric] : null, est: q.estimated ? q.estimated[metric] : null, holdout: q.holdout, metric, version});
    }
    const last = data.reports.length ? data.reports[data.reports.length - 1] : null;
    for (const [version, q] of Object.entries(last ? last.versions : {})) {
      rows.push([td("v" + esc(version), "num"), td(esc(q.metric)), td(num(q.holdout), "num"), td(q.live ? num(q.live[q.metric]) : "–", "num"), td(num(q.labelled), "num"), td(q.estimated ? num(q.estimated[q.metric]) : "–", "num"), td(num(q.rows), "num")]);
    }
    table("quality", ["version#", "metric", "holdout#", "live#", "labelled#", "estimate#", "rows#"], rows, "no monitor report yet");
    if (!series.length) { empty("quality-chart", "no monitor report yet"); return; }
    const W = 480, H = 180, box = {l: 46, r: W - 8, t: 10, b: H - 24};
    const t0 = series[0].t, t1 = Math.max(series[series.length - 1].t, t0 + 1000);
    const x = scale(t0, t1, box.l, box.r);
    const [lo, hi] = extent(series.flatMap((p) => [p.live, p.est, p.holdout]));
    const y = {lo, hi, at: scale(lo, hi, box.b, box.t)};
    const root = svg(W, H);
    axes(root, box, y, 3);
    timeLabels(root, box, x, t0, t1);
    add(root, "path", {d: path(series.map((p) => [x(p.t), p.est === null ? null : y.at(p.est)])), class: "line2"});
    add(root, "path", {d: path(series.map((p) => [x(p.t), p.live === null ? null : y.at(p.live)])), class: "line"});
    for (const p of series) tip(add(root, "circle", {cx: x(p.t), cy: y.at(p.live !== null ? p.live : p.est !== null ? p.est : lo), r: 8, class: "hit"}), `v${p.version} ${p.metric}: live ${num(p.live)}, estimate ${num(p.est)}, holdout ${num(p.holdout)}`);
    add(root, "text", {x: box.r, y: box.t + 10, "text-anchor": "end"}, "— live   - - estimate");
    $("quality-chart").replaceChildren(root);
  }

  // --- live traffic (rates and percentiles from successive samples) -----------------------
  function merged(list, keep) {
    const out = {count: 0, sum: 0, buckets: new Map()};
    for (const h of list) {
      if (!keep(h)) continue;
      out.count += h.count; out.sum += h.sum;
      for (const [le, c] of h.buckets) out.buckets.set(le, (out.buckets.get(le) || 0) + c);
    }
    return out;
  }
  function minus(a, b) {
    if (!b) return a;
    const buckets = new Map();
    for (const [le, c] of a.buckets) buckets.set(le, c - (b.buckets.get(le) || 0));
    return {count: a.count - b.count, sum: a.sum - b.sum, buckets};
  }
  function quantile(h, q) {
    if (h.count <= 0) return null;
    const edges = [...h.buckets.entries()].sort((p, r) => (p[0] === null ? Infinity : p[0]) - (r[0] === null ? Infinity : r[0]));
    const rank = q * h.count;
    let below = 0, lower = 0;
    for (const [le, c] of edges) {
      if (c >= rank) {
        if (le === null) return lower;
        const inside = c - below;
        return inside > 0 ? lower + ((le - lower) * (rank - below)) / inside : le;
      }
      below = c; lower = le === null ? lower : le;
    }
    return lower;
  }
  function sample(t) {
    const predict = (route) => !HIDDEN_ROUTES.test(route);
    let requests = 0, errors = 0;
    for (const r of t.requests) {
      if (!predict(r.route)) continue;
      requests += r.count;
      if (Number(r.status) >= 500) errors += r.count;
    }
    return {
      at: t.time_ms / 1000, requests, errors,
      latency: merged(t.latency, (h) => predict(h.route)),
      batch: merged(t.batch_rows, (h) => !model || h.model === model),
      models: t.models,
    };
  }
  function renderTraffic(t) {
    const now = sample(t);
    const before = previous;
    previous = now;
    const dt = before ? now.at - before.at : 0;
    const window = before && dt > 0 && now.requests >= before.requests ? {
      rate: (now.requests - before.requests) / dt,
      errors: (now.errors - before.errors) / dt,
      latency: minus(now.latency, before.latency),
      batch: minus(now.batch, before.batch),
    } : null;
    const lat = window && window.latency.count > 0 ? window.latency : now.latency;
    const batch = window && window.batch.count > 0 ? window.batch : now.batch;
    const ms = (v) => (v === null ? "–" : v < 0.01 ? `${(v * 1000).toFixed(2)} ms` : `${(v * 1000).toFixed(1)} ms`);
    if (window) history.push({t: now.at, rate: window.rate, p95: window.latency.count > 0 ? quantile(window.latency, 0.95) : null});
    while (history.length > HISTORY) history.shift();
    const mine = now.models.find((m) => m.model === model) || {};
    const stats = [
      ["requests/s", window ? num(window.rate, 1) : "…", "rate"],
      ["p50", ms(quantile(lat, 0.5)), "p50"],
      ["p95", ms(quantile(lat, 0.95)), "p95"],
      ["p99", ms(quantile(lat, 0.99)), "p99"],
      ["errors/s (5xx)", window ? num(window.errors, 2) : "…", "errors"],
      ["rows per call", batch.count > 0 ? num(batch.sum / batch.count, 1) : "–", "batch"],
      ["requests", num(now.requests, 0), "requests"],
      ["swaps", num(mine.swaps || 0, 0), "swaps"],
    ];
    $("traffic-stats").innerHTML = stats.map(([label, value, key]) => `<div class="stat"><b data-stat="${key}">${value}</b><span>${esc(label)}</span></div>`).join("");
    $("traffic-note").textContent = window ? `over the last ${dt.toFixed(1)} s, this server` : "since this server started";
    if (history.length < 2) { empty("traffic-chart", "collecting samples…"); return; }
    const W = 480, H = 150, box = {l: 46, r: W - 46, t: 10, b: H - 22};
    const t0 = history[0].t * 1000, t1 = history[history.length - 1].t * 1000;
    const x = scale(t0, t1, box.l, box.r);
    const [, top] = extent(history.map((p) => p.rate).concat([0]));
    const y = {lo: 0, hi: top, at: scale(0, top, box.b, box.t)};
    const [, ptop] = extent(history.map((p) => p.p95).concat([0]));
    const py = scale(0, ptop, box.b, box.t);
    const root = svg(W, H);
    axes(root, box, y, 3, (v) => num(v, 1));
    timeLabels(root, box, x, t0, t1);
    add(root, "path", {d: path(history.map((p) => [x(p.t * 1000), y.at(p.rate)])), class: "line"});
    add(root, "path", {d: path(history.map((p) => [x(p.t * 1000), p.p95 === null ? null : py(p.p95)])), class: "line2"});
    add(root, "text", {x: box.r + 4, y: box.t + 8}, ms(ptop));
    add(root, "text", {x: box.r, y: box.b - 4, "text-anchor": "end"}, "— req/s   - - p95");
    $("traffic-chart").replaceChildren(root);
  }

  // --- polling --------------------------------------------------------------------------
  function status(text, bad) { const el = $("status"); el.textContent = text; el.className = "status" + (bad ? " err" : ""); }
  function loop(task, every) {
    let wait = every;
    async function run() {
      try {
        await task();
        wait = every;
        if (failures > 0) failures -= 1;
        if (failures === 0) status(`updated ${new Date().toLocaleTimeString()}`);
      } catch (error) {
        failures += 1;
        wait = Math.min(wait * 2, MAX_BACKOFF);
        status(`could not refresh (${error.message}); retrying in ${Math.round(wait / 1000)} s`, true);
      }
      setTimeout(run, document.hidden ? Math.max(wait, 15000) : wait);
    }
    return run();
  }
  async function slow() {
    if (!model) return;
    const name = encodeURIComponent(model);
    const [s, v, sn, d, q] = await Promise.all(["summary", "versions", "snapshots", "drift", "quality"].map((p) => get(`/models/${name}/${p}`)));
    renderSummary(s); renderVersions(v); renderSnapshots(sn); renderDrift(d); renderQuality(q);
  }
  async function fast() { renderTraffic(await get("/traffic")); }

  function tooltips() {
    const box = $("tip");
    function show(event) {
      const target = event.target.closest ? event.target.closest("[data-tip]") : null;
      if (!target) { box.hidden = true; return; }
      box.textContent = target.getAttribute("data-tip");
      box.hidden = false;
      const x = Math.min(event.clientX + 12, window.innerWidth - box.offsetWidth - 8);
      const y = Math.min(event.clientY + 12, window.innerHeight - box.offsetHeight - 8);
      box.style.left = `${Math.max(4, x)}px`; box.style.top = `${Math.max(4, y)}px`;
    }
    document.addEventListener("pointermove", show);
    document.addEventListener("click", show);
  }

  async function start() {
    tooltips();
    const select = $("model");
    const wanted = new URLSearchParams(location.search).get("model");
    let models = [];
    try { models = (await get("/models")).models; } catch (error) { status(`could not load (${error.message})`, true); }
    select.innerHTML = models.map((m) => `<option value="${esc(m.name)}">${esc(m.name)}</option>`).join("");
    model = models.some((m) => m.name === wanted) ? wanted : models.length ? models[0].name : null;
    if (model) select.value = model;
    select.addEventListener("change", () => {
      model = select.value; previous = null; history.length = 0;
      window.history.replaceState(null, "", `?model=${encodeURIComponent(model)}`);
      slow().catch((error) => status(`could not refresh (${error.message})`, true));
    });
    loop(slow, SLOW);
    loop(fast, FAST);
  }
  document.addEventListener("DOMContentLoaded", start);
})();
