// siogate dashboard: polls v1/stats (same origin; the browser sends the credentials it
// was asked for when it opened the page) and draws the last minutes with SVG.
// No dependencies, no build step; see docs/dashboard.md.
"use strict";

(() => {
  const WINDOW = 300; // seconds shown
  const POLL_MS = 2000;
  const SVGNS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  // node id -> Map(sample time -> sample), oldest first
  const series = new Map();
  let now = 0; // the answering node's clock, from the last answer
  let interval = 1;
  let loaded = false;

  async function poll() {
    // The whole history once, then only the last seconds (samples are merged by time).
    const url = loaded ? "v1/stats?last=10" : "v1/stats";
    try {
      const response = await fetch(url, {
        cache: "no-store",
        credentials: "same-origin",
        headers: { accept: "application/json" },
      });
      if (!response.ok) throw new Error(`v1/stats answered ${response.status}`);
      update(await response.json());
      loaded = true;
    } catch (err) {
      setStatus("error", `no data: ${err.message}`);
    } finally {
      setTimeout(poll, POLL_MS);
    }
  }

  function setStatus(state, text) {
    const el = $("status");
    el.dataset.state = state;
    el.textContent = text;
  }

  function update(body) {
    now = body.time;
    for (const node of body.stats) {
      interval = node.interval || interval;
      let samples = series.get(node.node);
      if (!samples) series.set(node.node, (samples = new Map()));
      for (const s of node.samples) samples.set(s.t, s);
    }
    const since = now - WINDOW;
    for (const [node, samples] of series) {
      for (const t of samples.keys()) if (t < since) samples.delete(t);
      if (samples.size === 0) series.delete(node);
    }
    const missing = body.nodes.missing;
    const time = new Date(now * 1000).toLocaleTimeString();
    if (body.partial) {
      const who = missing.length ? `missing: ${missing.join(", ")}` : "broker unreachable";
      setStatus("partial", `partial · ${body.nodes.answered} node(s) answered, ${who} · ${time}`);
    } else {
      setStatus("live", `live · ${body.nodes.answered} node(s) · updated ${time}`);
    }
    cards(body.stats, missing);
    table(body.stats, missing);
    charts();
  }

  // Numbers

  function fmt(v, digits = 1) {
    if (v == null || Number.isNaN(v)) return "–";
    if (Math.abs(v) >= 1e6) return `${(v / 1e6).toFixed(1)}M`;
    if (Math.abs(v) >= 1e4) return `${(v / 1e3).toFixed(1)}k`;
    return Number.isInteger(v) ? String(v) : v.toFixed(digits);
  }

  function sum(values) {
    return values.reduce((a, b) => a + (b || 0), 0);
  }

  function recent(node, seconds) {
    const samples = series.get(node);
    return samples ? [...samples.values()].filter((s) => s.t > now - seconds) : [];
  }

  function mean(samples, field) {
    return samples.length ? sum(samples.map((s) => s[field])) / samples.length : 0;
  }

  // Webhook latency over samples: mean weighted by calls, and the highest p95.
  function latency(samples) {
    let weight = 0;
    let total = 0;
    let p95 = null;
    for (const s of samples) {
      if (s.webhook_ms == null) continue;
      const calls = s.webhook_calls_per_s || 1;
      weight += calls;
      total += s.webhook_ms * calls;
      if (s.webhook_p95_ms != null) p95 = Math.max(p95 ?? 0, s.webhook_p95_ms);
    }
    return [weight ? total / weight : null, p95];
  }

  function cards(stats, missing) {
    const metric = (name) => sum(stats.map((n) => n.metrics[name]));
    $("nodes").textContent = missing.length
      ? `${stats.length} (+${missing.length} missing)`
      : String(stats.length);
    $("sockets").textContent = fmt(metric("siogate_sockets"));
    $("rooms").textContent = fmt(metric("siogate_rooms"));
    $("out-rate").textContent = fmt(sum(stats.map((n) => mean(recent(n.node, 10), "packets_out_per_s"))));
    $("in-rate").textContent = fmt(sum(stats.map((n) => mean(recent(n.node, 10), "client_events_per_s"))));
    if (!stats.some((n) => "siogate_webhook_calls_total" in n.metrics)) {
      $("hook-ms").textContent = $("hook-errors").textContent = "no webhook";
      return;
    }
    const lastMinute = stats.flatMap((n) => recent(n.node, 60));
    const [ms, p95] = latency(lastMinute);
    $("hook-ms").textContent = `${fmt(ms)} / ${fmt(p95)}`;
    const errors = sum(lastMinute.map((s) => s.webhook_errors_per_s * interval));
    $("hook-errors").textContent = `${fmt(errors, 0)} / ${fmt(metric("siogate_webhook_failures_total"))}`;
  }

  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
  }

  function table(stats, missing) {
    const rows = [];
    stats.forEach((n, i) => {
      const m = n.metrics;
      const last = recent(n.node, 10);
      const row = document.createElement("tr");
      row.dataset.node = n.node;
      cell(row, i === 0 ? `${n.node} (this node)` : n.node);
      cell(row, m.siogate_broker_connected === 0 ? "no broker" : "up");
      for (const name of ["siogate_sockets", "siogate_rooms", "siogate_sessions", "siogate_http_connections"]) {
        cell(row, fmt(m[name]));
      }
      for (const field of ["packets_out_per_s", "client_events_per_s", "webhook_calls_per_s", "webhook_errors_per_s"]) {
        cell(row, fmt(mean(last, field)));
      }
      cell(row, fmt(latency(recent(n.node, 60))[0]));
      rows.push(row);
    });
    for (const node of missing) {
      const row = document.createElement("tr");
      row.className = "missing";
      row.dataset.node = node;
      cell(row, node);
      cell(row, "did not answer");
      for (let i = 0; i < 9; i++) cell(row, "–");
      rows.push(row);
    }
    $("node-table").tBodies[0].replaceChildren(...rows);
  }

  // Series for the charts

  function sorted(node) {
    return [...series.get(node).values()].sort((a, b) => a.t - b.t);
  }

  function points(node, field) {
    return sorted(node).filter((s) => s[field] != null).map((s) => [s.t, s[field]]);
  }

  // One value per `interval` over all nodes: each node's latest sample at that time
  // (nodes sample at their own moments), combined by `combine`.
  function overNodes(field, combine) {
    const nodes = [...series.keys()].map(sorted);
    const at = nodes.map(() => -1);
    const out = [];
    for (let t = now - WINDOW; t <= now + 1e-9; t += interval) {
      const found = [];
      nodes.forEach((samples, i) => {
        while (at[i] + 1 < samples.length && samples[at[i] + 1].t <= t) at[i] += 1;
        const s = samples[at[i]];
        if (s && t - s.t <= 2 * interval) found.push(s);
      });
      const value = found.length ? combine(found, field) : null;
      if (value != null) out.push([t, value]);
    }
    return out;
  }

  const total = (found, field) => sum(found.map((s) => s[field]));
  const weighted = (found, field) => {
    const hits = found.filter((s) => s[field] != null);
    if (!hits.length) return null;
    const w = sum(hits.map((s) => s.webhook_calls_per_s || 1));
    return sum(hits.map((s) => s[field] * (s.webhook_calls_per_s || 1))) / w;
  };
  const highest = (found, field) => {
    const hits = found.filter((s) => s[field] != null);
    return hits.length ? Math.max(...hits.map((s) => s[field])) : null;
  };

  function charts() {
    const nodes = [...series.keys()];
    const sockets = nodes.map((node) => ({ label: node, points: points(node, "sockets") }));
    if (nodes.length > 1) sockets.push({ label: "all nodes", points: overNodes("sockets", total) });
    draw($("chart-sockets"), sockets);
    draw($("chart-messages"), [
      { label: "packets out", points: overNodes("packets_out_per_s", total) },
      { label: "client events", points: overNodes("client_events_per_s", total) },
      { label: "emits", points: overNodes("emits_per_s", total) },
      { label: "API requests", points: overNodes("api_requests_per_s", total) },
    ]);
    draw($("chart-latency"), [
      { label: "mean", points: overNodes("webhook_ms", weighted) },
      { label: "p95 (bucket bound)", points: overNodes("webhook_p95_ms", highest) },
    ]);
    draw($("chart-hooks"), [
      { label: "calls", points: overNodes("webhook_calls_per_s", total) },
      { label: "errors", points: overNodes("webhook_errors_per_s", total) },
    ]);
  }

  // Drawing

  function svg(name, attrs, parent) {
    const el = document.createElementNS(SVGNS, name);
    for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, value);
    parent.appendChild(el);
    return el;
  }

  function ceiling(max) {
    if (max <= 0) return 1;
    const step = 10 ** Math.floor(Math.log10(max));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= max) return m * step;
    return 10 * step;
  }

  function runs(points) {
    const out = [];
    for (const point of points) {
      const run = out[out.length - 1];
      if (run && point[0] - run[run.length - 1][0] <= 2.5 * interval) run.push(point);
      else out.push([point]);
    }
    return out;
  }

  function draw(chart, lines) {
    const [W, H, L, R, T, B] = [600, 170, 46, 10, 8, 20];
    chart.replaceChildren();
    const top = ceiling(Math.max(0, ...lines.flatMap((l) => l.points.map((p) => p[1]))));
    const x = (t) => L + ((t - (now - WINDOW)) / WINDOW) * (W - L - R);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    for (let i = 0; i <= 4; i++) {
      const v = (top * i) / 4;
      svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }, chart);
      const tick = svg("text", { x: L - 5, y: y(v) + 3, class: "axis", "text-anchor": "end" }, chart);
      tick.textContent = v >= 1e4 ? fmt(v) : String(Number(v.toFixed(2)));
    }
    for (let m = 0; m <= WINDOW / 60; m++) {
      const anchor = m === 0 ? "end" : m === WINDOW / 60 ? "start" : "middle";
      const label = svg("text", { x: x(now - m * 60), y: H - 5, class: "axis", "text-anchor": anchor }, chart);
      label.textContent = m === 0 ? "now" : `−${m} min`;
    }
    const legend = chart.nextElementSibling;
    legend.replaceChildren();
    lines.forEach((line, i) => {
      const cls = `c${i % 6}`;
      // A gap in the samples (no webhook call, a node restarting) breaks the line; a
      // lone point is a dot.
      for (const run of runs(line.points)) {
        const attrs = { class: `${run.length > 1 ? "line" : "dot"} ${cls}`, "data-series": line.label };
        if (run.length > 1) {
          attrs.points = run.map(([t, v]) => `${x(t).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
          svg("polyline", attrs, chart);
        } else {
          svg("circle", { ...attrs, cx: x(run[0][0]).toFixed(1), cy: y(run[0][1]).toFixed(1), r: 2.5 }, chart);
        }
      }
      const key = document.createElement("span");
      key.className = cls;
      key.textContent = line.label;
      legend.appendChild(key);
    });
  }

  poll();
})();
