// The Django Q dashboard: fetches its data every few seconds and redraws charts (SVG) and tables in place.
"use strict";
(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const W = 600, H = 180, LEFT = 44, RIGHT = 8, TOP = 8, BOTTOM = 20;

  function el(name, attrs, text) {
    const node = document.createElementNS(SVG, name);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function number(v) {
    if (v === null || v === undefined) return "-";
    if (v >= 100) return Math.round(v).toString();
    if (v >= 1) return v.toFixed(1);
    return v.toPrecision(2);
  }

  function clock(epoch) {
    const d = new Date(epoch * 1000);
    return String(d.getHours()).padStart(2, "0") + ":" + String(d.getMinutes()).padStart(2, "0");
  }

  // A line chart of `series` ([{name, values}]) over `times` (epoch seconds); null values leave gaps.
  function chart(box, times, series) {
    const svg = el("svg", {viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img"});
    const all = series.flatMap(s => s.values).filter(v => v !== null);
    const top = Math.max(...all, 0) || 1;
    const x = i => LEFT + (W - LEFT - RIGHT) * (times.length > 1 ? i / (times.length - 1) : 0);
    const y = v => TOP + (H - TOP - BOTTOM) * (1 - v / top);
    for (const f of [0, 0.5, 1]) {
      svg.append(el("line", {class: "axis", x1: LEFT, x2: W - RIGHT, y1: y(top * f), y2: y(top * f)}));
      svg.append(el("text", {x: LEFT - 4, y: y(top * f) + 3, "text-anchor": "end"}, number(top * f)));
    }
    for (const i of [0, Math.floor((times.length - 1) / 2), times.length - 1]) {
      svg.append(el("text", {x: x(i), y: H - 6, "text-anchor": i ? (i === times.length - 1 ? "end" : "middle") : "start"},
        clock(times[i])));
    }
    series.forEach((s, n) => {
      let d = "";
      s.values.forEach((v, i) => { d += v === null ? "" : `${d && s.values[i - 1] !== null ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`; });
      if (d) svg.append(el("path", {class: `line s${n}`, d: d, "vector-effect": "non-scaling-stroke", "data-series": s.name}));
    });
    const legend = document.createElement("div");
    legend.className = "dq-legend";
    series.forEach((s, n) => {
      const last = s.values.filter(v => v !== null).pop();
      legend.insertAdjacentHTML("beforeend", `<i class="s${n}"></i>`);
      legend.append(`${s.name}: ${number(last === undefined ? null : last)}`);
    });
    box.replaceChildren(svg, legend);
  }

  function cell(row, text, cls) {
    const td = row.insertCell();
    if (text instanceof Node) td.append(text); else td.textContent = text === null || text === undefined ? "-" : text;
    if (cls) td.className = cls;
    return td;
  }

  function link(href, text) {
    const a = document.createElement("a");
    a.href = href;
    a.textContent = text;
    return a;
  }

  function rows(table, items, fill, empty) {
    const body = table.tBodies[0];
    body.replaceChildren();
    for (const item of items) fill(body.insertRow(), item);
    if (!items.length) {
      const td = body.insertRow().insertCell();
      td.colSpan = table.tHead.rows[0].cells.length;
      td.textContent = empty;
    }
  }

  function seconds(v) { return v === null || v === undefined ? "-" : number(v) + " s"; }
  function kib(v) { return v === null || v === undefined ? "-" : (v / 1024).toFixed(1) + " MiB"; }

  function draw(root, section, q) {
    const error = section.querySelector(".dq-error");
    error.hidden = !q.error;  // .dq-error[hidden] in the CSS: the admin's errornote would show it anyway
    error.textContent = q.error || "";
    if (q.minutes) {
      chart(section.querySelector("[data-chart=rates] .dq-plot"), q.minutes,
        [{name: "started", values: q.started}, {name: "succeeded", values: q.succeeded}, {name: "failed", values: q.failed}]);
      chart(section.querySelector("[data-chart=depth] .dq-plot"), q.minutes, [{name: "depth", values: q.depth}]);
      chart(section.querySelector("[data-chart=wait] .dq-plot"), q.minutes,
        [{name: "p50", values: q.wait_p50}, {name: "p95", values: q.wait_p95}]);
      const only = "?func__exact=";
      rows(section.querySelector(".dq-functions"), q.functions, (row, f) => {
        cell(row, link(root.dataset.successUrl + only + encodeURIComponent(f.func), f.func));
        cell(row, f.runs, "num");
        cell(row, f.failed ? link(root.dataset.failureUrl + only + encodeURIComponent(f.func), f.failed) : "0",
          f.failed ? "num bad" : "num");
        cell(row, (100 * f.failure_rate).toFixed(1) + " %", "num");
        cell(row, seconds(f.p50), "num");
        cell(row, seconds(f.p95), "num");
      }, "No task finished in the last hour.");
    }
    const workers = [];
    for (const c of q.clusters) {
      workers.push({cluster: c, first: true});
      for (const w of c.workers) workers.push({cluster: c, worker: w});
    }
    rows(section.querySelector(".dq-workers"), workers, (row, item) => {
      const c = item.cluster, w = item.worker;
      if (!w) {
        row.className = "dq-cluster";
        cell(row, c.id.slice(0, 8));
        cell(row, c.host);
        cell(row, c.pid, "num");
        cell(row, c.state);
        cell(row, `${number(c.rate)} tasks/s · ${c.done} done · ${c.failed} failed · ${c.queued} queued`);
        cell(row, "");
        cell(row, kib(c.rss), "num");
        cell(row, "");
        cell(row, c.done + c.failed, "num");
        return;
      }
      cell(row, `  worker ${w.index}`);
      cell(row, c.host);
      cell(row, w.pid, "num");
      cell(row, w.task ? "busy" : "idle");
      cell(row, w.task ? `${w.task} (${seconds(w.running_for)})` : "");
      cell(row, w.progress);
      cell(row, kib(w.rss), "num");
      cell(row, w.cpu === null ? "-" : w.cpu.toFixed(1) + " %", "num");
      cell(row, w.tasks, "num");
    }, "No cluster of this queue is running.");
    section.querySelector("[data-count=dead]").textContent = `(${q.dead_letters.count})`;
    rows(section.querySelector(".dq-dead"), q.dead_letters.latest, (row, d) => {
      cell(row, new Date(d.created).toLocaleString());
      cell(row, d.reason);
    }, "None.");
    rows(section.querySelector(".dq-schedules"), q.schedules, (row, s) => {
      cell(row, new Date(s.next_run).toLocaleString());
      cell(row, s.name);
      cell(row, s.func);
    }, "None.");
  }

  async function refresh(root) {
    try {
      const response = await fetch(root.dataset.url, {headers: {Accept: "application/json"}, credentials: "same-origin"});
      if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
      const data = await response.json();
      for (const q of data.queues) {
        const section = root.querySelector(`.dq-queue[data-queue="${CSS.escape(q.queue)}"]`);
        if (section) draw(root, section, q);
      }
      document.getElementById("dq-updated").textContent = "Updated " + new Date(data.now * 1000).toLocaleTimeString();
      root.dataset.drawn = String(Number(root.dataset.drawn || 0) + 1);
    } catch (err) {
      document.getElementById("dq-updated").textContent = "Could not load the data: " + err.message;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.querySelector(".dq-dashboard");
    if (!root) return;
    refresh(root);
    setInterval(() => refresh(root), 1000 * Number(root.dataset.refresh || 5));
  });
})();
