// mesh's dashboard: reads meshd's /api/v1 and draws the views. Every name
// that came from the mesh is put in the page as text (textContent), never
// as markup, so a service named like HTML stays a name.
"use strict";

const $ = (sel) => document.querySelector(sel);
const main = $("#main");
const state = { timer: null, tail: null, sort: { key: "per_second", asc: false }, filter: "" };

// el makes an element: attrs are properties (className, href, onclick...)
// or "data-*"; children are nodes or strings (as text).
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

function params(extra) {
  const p = new URLSearchParams({ range: $("#range").value, scope: $("#scope").value });
  for (const [k, v] of Object.entries(extra || {})) if (v !== "" && v !== undefined) p.set(k, v);
  return p.toString();
}

async function getJSON(path) {
  const res = await fetch(path, { headers: { Accept: "application/json" } });
  if (!res.ok) throw new Error((await res.text()).trim() || res.statusText);
  return res.json();
}

const fmt = {
  rate: (v) => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)),
  pct: (v, calls) => (calls ? (100 * v).toFixed(v >= 0.9995 || v === 0 ? 0 : 2) + "%" : "—"),
  span: (s) => (s >= 120 ? Math.round(s / 60) + " min" : Math.round(s) + " s"),
  ms: (v, calls) => (calls ? (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2)) + " ms" : "—"),
};

function successClass(r) {
  if (!r.calls) return "muted";
  return r.success >= 0.999 ? "ok" : r.success >= 0.99 ? "warn" : "bad";
}

function serviceLink(name) {
  return el("a", { href: "#/service/" + encodeURIComponent(name) }, name);
}

function setStatus(text, isError) {
  const s = $("#status");
  s.textContent = text;
  s.className = isError ? "error" : "";
}

function showMeshds(meshds) {
  const box = $("#meshds");
  box.replaceChildren();
  if (!meshds) return;
  const down = meshds.filter((m) => !m.ok);
  box.append(`${meshds.length - down.length} of ${meshds.length} meshds answered`);
  for (const m of down) {
    box.append(" ", el("span", { className: "down", title: m.error }, "✕ " + m.meshd));
  }
}

// table draws rows under columns {key, label, num, render}; clicking a
// header sorts by it.
function table(columns, rows, sort, onSort) {
  const head = el("tr", {}, columns.map((c) =>
    el("th", {
      className: (c.num ? "num " : "") + (sort && sort.key === c.key ? "sorted" + (sort.asc ? " asc" : "") : ""),
      onclick: () => onSort && onSort(c.key),
    }, c.label)));
  const body = document.createDocumentFragment();
  for (const r of rows) {
    body.append(el("tr", {}, columns.map((c) => el("td", { className: c.num ? "num" : "" }, c.render ? c.render(r) : r[c.key]))));
  }
  return el("table", {}, el("thead", {}, head), el("tbody", {}, body));
}

function sortRows(rows, sort) {
  const k = sort.key;
  return rows.slice().sort((a, b) => {
    const x = a[k], y = b[k];
    const c = typeof x === "string" ? x.localeCompare(y) : (x || 0) - (y || 0);
    return sort.asc ? c : -c;
  });
}

function figureColumns(first) {
  return [
    first,
    { key: "per_second", label: "calls/s", num: true, render: (r) => fmt.rate(r.per_second) },
    { key: "success", label: "success", num: true, render: (r) => el("span", { className: successClass(r) }, fmt.pct(r.success, r.calls)) },
    { key: "p50_ms", label: "p50", num: true, render: (r) => fmt.ms(r.p50_ms, r.calls) },
    { key: "p99_ms", label: "p99", num: true, render: (r) => fmt.ms(r.p99_ms, r.calls) },
    { key: "calls", label: "calls", num: true },
  ];
}

function instanceChips(list) {
  return (list || []).map((i) => el("span", {
    className: "chip " + i.breaker + (i.served ? "" : " gone"),
    title: `${i.id} on ${i.node || i.addr}: breaker ${i.breaker}` + (i.open_at ? ` (open at ${i.open_at} meshds)` : "") + (i.served ? "" : "; no meshd serves it now"),
    "data-instance": i.id,
  }, i.node || i.addr));
}

// Services: every service with its figures and instances.
async function viewServices() {
  const data = await getJSON("/api/v1/services?" + params());
  showMeshds(data.meshds);
  const filter = el("input", { type: "search", placeholder: "filter services", value: state.filter, id: "filter" });
  const count = el("span", { className: "muted" });
  const holder = el("div", { id: "services" });
  const draw = () => {
    const f = state.filter.toLowerCase();
    const rows = sortRows(data.services.filter((s) => s.name.toLowerCase().includes(f)), state.sort);
    count.textContent = `${rows.length} of ${data.services.length} services, over the last ${fmt.span(data.range_seconds)}`;
    const cols = figureColumns({ key: "name", label: "service", render: (r) => serviceLink(r.name) });
    cols.push({ key: "callers", label: "callers", num: true });
    cols.push({ key: "instances", label: "instances (breaker)", render: (r) => instanceChips(r.instances) });
    holder.replaceChildren(table(cols, rows, state.sort, (k) => {
      state.sort = { key: k, asc: state.sort.key === k ? !state.sort.asc : k === "name" };
      draw();
    }));
  };
  filter.oninput = () => { state.filter = filter.value; draw(); };
  const hadFocus = document.activeElement && document.activeElement.id === "filter";
  main.replaceChildren(el("h1", {}, "Services"), el("div", { className: "filters" }, filter, count), holder);
  draw();
  performance.mark("services-drawn"); // for the benchmark: time from navigation to a full table
  if (hadFocus) { filter.focus(); filter.setSelectionRange(filter.value.length, filter.value.length); }
}

// chart draws a service's history: calls/s (line), p99 (dashed) and
// failed steps (red marks).
function chart(series) {
  const W = 900, H = 160, pad = 30;
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("width", "100%");
  if (!series || series.length === 0) {
    const t = document.createElementNS(svg.namespaceURI, "text");
    t.setAttribute("x", 10); t.setAttribute("y", 20); t.textContent = "no calls in this range";
    svg.append(t);
    return svg;
  }
  if (series.length === 1) series = [{ ...series[0], at: new Date(new Date(series[0].at).getTime() - 10000).toISOString() }, series[0]];
  const t0 = new Date(series[0].at).getTime(), t1 = new Date(series[series.length - 1].at).getTime();
  const x = (p) => pad + (W - 2 * pad) * (t1 > t0 ? (new Date(p.at).getTime() - t0) / (t1 - t0) : 1);
  const line = (key, max, cls) => {
    const path = document.createElementNS(svg.namespaceURI, "polyline");
    path.setAttribute("points", series.map((p) => `${x(p).toFixed(1)},${(H - pad - (H - 2 * pad) * (max ? p[key] / max : 0)).toFixed(1)}`).join(" "));
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", cls === "p99" ? "#9a6700" : "#0b5cad");
    if (cls === "p99") path.setAttribute("stroke-dasharray", "4 3");
    path.setAttribute("stroke-width", "1.5");
    svg.append(path);
  };
  const maxRate = Math.max(...series.map((p) => p.per_second)), maxP99 = Math.max(...series.map((p) => p.p99_ms));
  line("per_second", maxRate, "rate");
  line("p99_ms", maxP99, "p99");
  for (const p of series) {
    if (p.calls && p.success < 0.99) {
      const r = document.createElementNS(svg.namespaceURI, "rect");
      r.setAttribute("x", x(p) - 2); r.setAttribute("y", H - pad + 2); r.setAttribute("width", 4); r.setAttribute("height", 6);
      r.setAttribute("fill", "#cf222e");
      svg.append(r);
    }
  }
  const label = (text, xx, yy) => {
    const t = document.createElementNS(svg.namespaceURI, "text");
    t.setAttribute("x", xx); t.setAttribute("y", yy); t.textContent = text;
    svg.append(t);
  };
  label(`calls/s max ${fmt.rate(maxRate)} (solid) · p99 max ${fmt.ms(maxP99, 1)} (dashed) · red: under 99% success`, pad, 12);
  label(new Date(t0).toLocaleTimeString(), pad, H - 4);
  label(new Date(t1).toLocaleTimeString(), W - pad - 50, H - 4);
  return svg;
}

// A service: its figures, history, callers, callees, methods, instances,
// what governs it, and its traces.
async function viewService(name) {
  const data = await getJSON("/api/v1/services/" + encodeURIComponent(name) + "?" + params());
  showMeshds(data.meshds);
  const card = (k, v, cls) => el("div", { className: "card" }, el("div", { className: "v " + (cls || "") }, v), el("div", { className: "k" }, k));
  const edgeTable = (rows, linkify) => rows.length === 0 ? el("p", { className: "muted" }, "none in the last " + fmt.span(data.edge_range_seconds)) :
    table(figureColumns({ key: "name", label: "name", render: (r) => linkify ? linkify(r.name) : r.name }), rows);
  const d = data.details || {};
  const intentions = (d.intentions || []).map((r) => el("li", {}, `${r.source} => ${r.destination} (${r.action})`));
  for (const x of d.intention_defaults || []) intentions.push(el("li", { className: "muted" }, x));
  const traceBox = el("div", { id: "traces" }, el("button", { onclick: () => loadTraces(name, "", traceBox) }, "show the slowest and failed traces"));
  main.replaceChildren(
    el("h1", {}, "Service ", el("span", { id: "service-name" }, data.name)),
    el("div", { className: "cards" },
      card("calls/s", fmt.rate(data.per_second)),
      card("success", fmt.pct(data.success, data.calls), successClass(data)),
      card("p50", fmt.ms(data.p50_ms, data.calls)),
      card("p99", fmt.ms(data.p99_ms, data.calls)),
      card("calls", String(data.calls))),
    el("h2", {}, "History"), chart(data.series),
    el("div", { className: "grid2" },
      el("div", {}, el("h2", {}, "Callers"), edgeTable(data.callers, (n) => n === "anonymous" ? n : serviceLink(n))),
      el("div", {}, el("h2", {}, "Callees"), edgeTable(data.callees, serviceLink))),
    el("h2", {}, "Methods"),
    edgeTable(data.methods, (m) => el("a", { href: "#", onclick: (ev) => { ev.preventDefault(); loadTraces(name, m, traceBox); } }, m)),
    el("h2", {}, "Instances"),
    table([
      { key: "id", label: "instance" }, { key: "addr", label: "meshd" }, { key: "node", label: "node" },
      { key: "served", label: "served", render: (r) => (r.served ? "yes" : el("span", { className: "muted" }, "no meshd serves it")) },
      { key: "breaker", label: "breaker", render: (r) => el("span", { className: r.breaker === "closed" ? "ok" : "bad" }, r.breaker + (r.open_at ? ` (open at ${r.open_at} meshds)` : "")) },
    ], data.instances || []),
    el("div", { className: "grid2" },
      el("div", {}, el("h2", {}, "Policy in force"), el("p", { className: "muted" }, "from " + (d.policy_source || "defaults")),
        el("pre", {}, JSON.stringify(d.policy || {}, null, 2)),
        el("h2", {}, "Rejected policy reloads"),
        (d.policy_rejections || []).length === 0 ? el("p", { className: "muted" }, "none") :
          el("ul", {}, d.policy_rejections.map((r) => el("li", {}, `${new Date(r.at).toLocaleString()} ${r.source}: ${r.error}`)))),
      el("div", {}, el("h2", {}, "Intentions that apply"), el("ul", { id: "intentions" }, intentions))),
    el("h2", {}, "Traces"), traceBox);
}

// loadTraces fetches the slowest and failed traces of a service (and
// method) from the trace backend and lists them; a click draws one.
async function loadTraces(service, method, box) {
  box.replaceChildren(el("p", { className: "muted" }, "reading traces…"));
  let data;
  try {
    data = await getJSON("/api/v1/traces?" + new URLSearchParams(method ? { service, method } : { service }));
  } catch (e) {
    box.replaceChildren(el("p", { className: "error" }, e.message));
    return;
  }
  const detail = el("div", {});
  const list = (title, traces) => el("div", {}, el("h2", {}, title + (method ? " of " + method : "")),
    traces.length === 0 ? el("p", { className: "muted" }, "none in the last hour") :
      el("ul", {}, traces.map((t) => el("li", {},
        el("a", { href: "#", className: "trace-link", onclick: (ev) => { ev.preventDefault(); detail.replaceChildren(waterfall(t)); } },
          `${t.ms.toFixed(2)} ms · ${t.spans.length} spans · ${t.root}`),
        t.error ? el("span", { className: "bad" }, " failed") : "",
        " ", el("a", { href: t.link, target: "_blank", rel: "noopener" }, "open in " + data.backend)))));
  box.replaceChildren(el("div", { className: "grid2" }, list("Slowest", data.slowest), list("Failed", data.failed)), detail);
}

// waterfall draws a trace's spans on one time axis, with meshd's routing
// decision on each hop.
function waterfall(t) {
  const rows = t.spans.map((s) => {
    const left = t.ms ? (100 * s.start_ms) / t.ms : 0, width = t.ms ? (100 * s.ms) / t.ms : 100;
    const bar = el("div", { className: s.error ? "err" : "" });
    bar.style.left = left + "%";
    bar.style.width = Math.max(width, 0.2) + "%";
    const tags = s.tags || {};
    const why = [tags["mesh.hop"] && "hop " + tags["mesh.hop"], tags["mesh.instance"] && "to " + tags["mesh.instance"],
      tags["mesh.decision"], tags["mesh.result"] && "result " + tags["mesh.result"]].filter(Boolean).join(" · ");
    return [
      el("div", { className: "span-name" }, `${s.service} ${s.name} (${s.ms.toFixed(2)} ms)`),
      el("div", { className: "span-bar" }, bar),
      why ? el("div", { className: "span-tags mesh-decision" }, why) : null,
    ];
  });
  return el("div", { className: "waterfall", "data-trace": t.id },
    el("h2", {}, `trace ${t.id} · ${t.ms.toFixed(2)} ms `, el("a", { href: t.link, target: "_blank", rel: "noopener" }, "open")),
    el("div", {}, rows.map((r) => el("div", { className: "span-row" }, r))));
}

// Live tail: calls as they end, newest first, with their explanation.
function viewTail() {
  showMeshds(null);
  const f = {
    service: el("input", { type: "text", placeholder: "service", id: "tail-service" }),
    caller: el("input", { type: "text", placeholder: "caller", id: "tail-caller" }),
    method: el("input", { type: "text", placeholder: "method", id: "tail-method" }),
    outcome: el("input", { type: "text", placeholder: "result (e.g. timeout)", id: "tail-outcome" }),
    failed: el("input", { type: "checkbox", id: "tail-failed" }),
    slow: el("input", { type: "number", placeholder: "slower than ms", min: 0, id: "tail-slow" }),
  };
  const list = el("div", { className: "tail", id: "tail" });
  const note = el("span", { className: "muted" });
  const start = () => {
    if (state.tail) state.tail.close();
    list.replaceChildren();
    const q = new URLSearchParams();
    for (const k of ["service", "caller", "method", "outcome"]) if (f[k].value) q.set(k, f[k].value);
    if (f.failed.checked) q.set("failed", "1");
    if (f.slow.value) q.set("slow_ms", f.slow.value);
    const es = new EventSource("/api/v1/tail?" + q);
    state.tail = es;
    note.textContent = "listening…";
    es.addEventListener("call", (ev) => {
      list.prepend(tailRow(JSON.parse(ev.data), Number(f.slow.value) || 0));
      while (list.childElementCount > 500) list.lastChild.remove();
      note.textContent = "";
    });
    es.addEventListener("missed", (ev) => { note.textContent = `${ev.data} calls went by faster than the tail reads them`; });
    es.onerror = () => { note.textContent = "the stream broke; reconnecting…"; };
  };
  for (const k of Object.keys(f)) f[k].onchange = start;
  main.replaceChildren(el("h1", {}, "Live tail"),
    el("div", { className: "filters" }, f.service, f.caller, f.method, f.outcome, el("label", {}, f.failed, " failed only"), f.slow, note), list);
  start();
}

function tailRow(c, slowMs) {
  const answered = c.outcome === "ok" || c.outcome === "app_error";
  const why = [];
  if (c.stage) why.push(`refused at ${c.stage}: ${c.refused}`);
  for (const a of c.attempts || []) why.push(`${a.instance}: ${a.why} → ${a.result} (${a.ms} ms)`);
  return el("div", { className: "call" + (answered ? "" : " failed") + (slowMs && c.ms >= slowMs ? " slow" : "") },
    el("span", { className: "muted" }, new Date(c.at).toLocaleTimeString(), " "),
    el("b", {}, c.caller || "?"), " → ", serviceLink(c.service), c.method ? "::" + c.method : "", " ",
    el("span", { className: answered ? "ok outcome" : "bad outcome" }, c.outcome || c.result), ` ${c.ms} ms`,
    el("div", { className: "why" }, why.join(" · ")));
}

async function route() {
  clearTimeout(state.timer);
  if (state.tail && !location.hash.startsWith("#/tail")) { state.tail.close(); state.tail = null; }
  const hash = location.hash || "#/services";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", hash.startsWith("#/" + a.dataset.view));
  try {
    if (hash.startsWith("#/service/")) {
      await viewService(decodeURIComponent(hash.slice("#/service/".length)));
    } else if (hash.startsWith("#/tail")) {
      viewTail();
      setStatus("");
      return; // the stream updates itself
    } else {
      await viewServices();
    }
    setStatus("updated " + new Date().toLocaleTimeString());
  } catch (e) {
    setStatus(e.message, true);
  }
  state.timer = setTimeout(refresh, 5000);
}

// refresh redraws the current view, unless the user is in a trace.
function refresh() {
  if (document.querySelector(".waterfall") || document.querySelector("#traces ul")) {
    state.timer = setTimeout(refresh, 5000);
    return;
  }
  route();
}

window.addEventListener("hashchange", route);
$("#range").addEventListener("change", route);
$("#scope").addEventListener("change", route);
route();
