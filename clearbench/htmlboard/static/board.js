"use strict";
// The board: reads the embedded JSON and draws one task's leaderboard at a time. Every text from the data
// goes through textContent, never innerHTML, so nothing in a card or run id can inject markup.
(function () {
  const data = JSON.parse(document.getElementById("board-data").textContent);
  const state = { task: 0, metric: data.metrics[0], published: true, sort: null, open: new Set() };

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) node.setAttribute(k, v);
    }
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }
  const num = (x) => typeof x === "number" && isFinite(x);
  const fmt = (x, d = 1) => (num(x) ? x.toFixed(d) : "–");
  const meanStd = (m, s) => (num(m) ? (num(s) ? fmt(m) + " ± " + fmt(s) : fmt(m)) : "–");
  const pValue = (p) => (num(p) ? (p < 0.001 ? "<0.001" : p.toFixed(3)) : "");

  function columns(task) {
    const cols = [
      { key: "rank", label: "#", value: (r) => r.rank, text: (r) => (num(r.rank) ? String(r.rank) : "") },
      { key: "encoder", label: "encoder", kind: "text", value: (r) => r.encoder, text: (r) => r.encoder },
    ];
    for (const name of [...task.labels, "average"]) {
      cols.push({ key: name, label: name, marked: true, value: (r) => r[name], text: (r) => meanStd(r[name], r[name + " std"]) });
    }
    cols.push({ key: "ci", label: "95% CI", value: (r) => r.ci_low,
      text: (r) => (num(r.ci_low) ? fmt(r.ci_low) + "–" + fmt(r.ci_high) : "") });
    cols.push({ key: "p_value", label: "p", value: (r) => r.p_value, text: (r) => pValue(r.p_value) });
    if (task.has_hit_rate) {
      cols.push({ key: "hit_rate", label: "hit rate % (chance)", value: (r) => r.hit_rate,
        text: (r) => (num(r.hit_rate) ? meanStd(r.hit_rate, r["hit_rate std"]) + " (" + fmt(r.hit_chance) + ")" : "") });
    }
    cols.push({ key: "n_test_scans", label: "test scans", value: (r) => r.n_test_scans, text: (r) => (num(r.n_test_scans) ? String(r.n_test_scans) : "") });
    cols.push({ key: "n_test_patients", label: "patients", value: (r) => r.n_test_patients, text: (r) => (num(r.n_test_patients) ? String(r.n_test_patients) : "") });
    cols.push({ key: "n_folds", label: "folds", value: (r) => r.n_folds, text: (r) => (num(r.n_folds) ? String(r.n_folds) : "") });
    cols.push({ key: "plots", label: "attention", value: (r) => plotsOf(task, r).length, text: null });
    return cols;
  }

  function plotsOf(task, row) {
    return (row.run_id && task.plots[row.run_id]) || [];
  }

  // Case-insensitive code-point order: the same on every machine, unlike locale collation.
  function cmpText(x, y) {
    const a = x.toLowerCase(), b = y.toLowerCase();
    return a < b ? -1 : a > b ? 1 : 0;
  }

  function sorted(rows, cols) {
    if (!state.sort) return rows;
    const col = cols.find((c) => c.key === state.sort.key);
    if (!col) return rows;
    const sign = state.sort.dir === "ascending" ? 1 : -1;
    return rows
      .map((r, i) => [r, i])
      .sort((a, b) => {
        const x = col.value(a[0]), y = col.value(b[0]);
        const xm = x === null || x === undefined || (typeof x === "number" && !isFinite(x));
        const ym = y === null || y === undefined || (typeof y === "number" && !isFinite(y));
        if (xm || ym) return xm === ym ? a[1] - b[1] : xm ? 1 : -1; // missing values last, either way
        const c = typeof x === "string" ? cmpText(x, y) : x - y;
        return c !== 0 ? sign * c : a[1] - b[1];
      })
      .map((p) => p[0]);
  }

  function provenance(task, row, span) {
    const tr = el("tr", { class: "prov", "data-run": row.run_id || "" });
    const td = el("td", { colspan: String(span) });
    const dl = el("dl");
    const items = [
      ["encoder card", row.card], ["weights sha256", row.weights_sha256], ["run id", row.run_id],
      ["config hash", row.config_hash], ["split", row.split_id], ["clearbench version", row.clearbench_version],
      ["finished", row.finished_at], ["source", row.source + (row.published_in ? " · " + row.published_in : "")],
      ["group", row.group + (row.reason ? " · " + row.reason : "")],
      ["scans without embeddings", num(row.n_missing) ? String(row.n_missing) : null],
    ];
    for (const [k, v] of items) {
      dl.append(el("dt", {}, k), el("dd", { "data-field": k }, v === null || v === undefined || v === "" ? "–" : String(v)));
    }
    td.append(dl);
    const plots = plotsOf(task, row);
    if (plots.length) {
      const p = el("div", { class: "plots" }, "attention across slices: ");
      for (const pl of plots) {
        const hit = num(pl.hit) ? " · hit " + fmt(100 * pl.hit) + "% (chance " + fmt(100 * pl.chance) + "%)" : "";
        p.append(el("a", { href: pl.href, target: "_blank" }, pl.scan + " fold " + pl.fold + hit));
      }
      td.append(p);
    }
    tr.append(td);
    return tr;
  }

  function drawTable() {
    const task = data.tasks[state.task];
    const cols = columns(task);
    const rows = sorted(task.boards[state.metric].filter((r) => state.published || r.source !== "published"), cols);
    document.getElementById("taskinfo").textContent = task.title + " · " + state.metric.toUpperCase() +
      " (%), test set, mean ± std over folds · " + rows.length + " rows";
    const table = document.getElementById("board");
    table.replaceChildren();
    const head = el("tr");
    for (const c of cols) {
      const sort = state.sort && state.sort.key === c.key ? state.sort.dir : null;
      const th = el("th", { "data-col": c.key, class: c.kind === "text" ? "text" : null, "aria-sort": sort, title: "sort by " + c.label }, c.label);
      th.addEventListener("click", () => {
        const same = state.sort && state.sort.key === c.key;
        const first = c.kind === "text" ? "ascending" : "descending";
        state.sort = { key: c.key, dir: same ? (state.sort.dir === "ascending" ? "descending" : "ascending") : first };
        drawTable();
      });
      head.append(th);
    }
    table.append(el("thead"));
    table.tHead.append(head);
    const body = el("tbody");
    for (const r of rows) {
      const id = r.source + "|" + r.encoder + "|" + (r.run_id || "");
      const tr = el("tr", { class: "row " + r.group, "data-encoder": r.encoder, "data-source": r.source, "data-run": r.run_id || "" });
      for (const c of cols) {
        const mark = c.marked && r._marks ? r._marks[c.key] : null;
        const td = el("td", { "data-col": c.key, class: [c.kind === "text" ? "text" : "", mark || ""].join(" ").trim() || null });
        if (c.key === "plots") {
          const plots = plotsOf(task, r);
          if (plots.length) td.append(el("a", { href: plots[0].href, target: "_blank" }, plots.length + " plot" + (plots.length > 1 ? "s" : "")));
        } else {
          td.textContent = c.text(r);
        }
        if (c.key === "encoder" && r.source === "published") td.append(el("span", { class: "badge" }, r.published_in || "published"));
        if (c.key === "encoder" && r.group === "apart") td.append(el("span", { class: "badge" }, "apart"));
        tr.append(td);
      }
      tr.addEventListener("click", (ev) => {
        if (ev.target.tagName === "A") return;
        state.open.has(id) ? state.open.delete(id) : state.open.add(id);
        drawTable();
      });
      body.append(tr);
      if (state.open.has(id)) body.append(provenance(task, r, cols.length));
    }
    table.append(body);
  }

  function drawControls() {
    const tabs = document.getElementById("tabs");
    tabs.replaceChildren();
    data.tasks.forEach((t, i) => {
      const b = el("button", { role: "tab", "data-task": t.name, "aria-selected": String(i === state.task) }, t.name);
      b.addEventListener("click", () => { state.task = i; state.sort = null; state.open.clear(); drawControls(); drawTable(); });
      tabs.append(b);
    });
    const metric = document.getElementById("metric");
    metric.replaceChildren();
    for (const m of data.metrics) {
      const b = el("button", { "data-metric": m, "aria-pressed": String(m === state.metric) }, m.toUpperCase());
      b.addEventListener("click", () => { state.metric = m; drawControls(); drawTable(); });
      metric.append(b);
    }
  }

  document.getElementById("show-published").addEventListener("change", (ev) => { state.published = ev.target.checked; drawTable(); });
  drawControls();
  drawTable();
})();
