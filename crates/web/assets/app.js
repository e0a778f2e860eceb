// The videofarm pages: plain DOM, no build step, nothing from the internet. Every value from
// the farm (file names above all) goes into the page as text, never as HTML.
"use strict";
const videofarm = (() => {
  const token = new URLSearchParams(location.hash.slice(1)).get("token") || localStorage.getItem("videofarm-token");
  if (token) localStorage.setItem("videofarm-token", token);

  // A path is text, or {"unix_bytes": [...]} when its name is not UTF-8: shown as near as it
  // can be (never "[object Object]"), asked for by its bytes, sent back to the API as it came.
  const shownPath = (p) => p === null || p === undefined || typeof p === "string" ? p
    : new TextDecoder().decode(new Uint8Array(p.unix_bytes));

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else if (k === "onclick") node.addEventListener("click", v);
      else node[k] = v;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
    }
    return node;
  }

  const baseName = (path) => String(shownPath(path)).split("/").pop();
  const duration = (s) => {
    if (s === null || s === undefined || !isFinite(s)) return "-";
    if (s < 60) return s.toFixed(1) + "s";
    const t = Math.round(s), h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), sec = t % 60;
    return (h ? h + ":" + String(m).padStart(2, "0") : m) + ":" + String(sec).padStart(2, "0");
  };
  const size = (b) => {
    const units = ["B", "kB", "MB", "GB", "TB"];
    let v = b, u = 0;
    while (v >= 1000 && u < units.length - 1) { v /= 1000; u++; }
    return u ? v.toFixed(1) + " " + units[u] : b + " B";
  };

  // The token goes with every request: off loopback, reads need it too.
  const auth = () => token ? { Authorization: "Bearer " + token } : {};

  async function api(path, body) {
    const options = body === undefined ? { headers: auth() } : {
      method: "POST",
      headers: Object.assign({ "Content-Type": "application/json" }, auth()),
      body: JSON.stringify(body),
    };
    const response = await fetch(path, options);
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  function showError(e) {
    const box = document.getElementById("error");
    box.hidden = !e;
    box.textContent = e ? String(e.message || e) : "";
  }

  function replaceRows(table, rows, empty) {
    const body = document.querySelector(table + " tbody");
    body.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { class: "empty", colSpan: 6 }, empty))]));
  }

  function action(label, cls, path) {
    return el("button", { class: cls, type: "button", onclick: async (ev) => {
      ev.target.disabled = true;
      try { await api(path, {}); showError(null); refresh(); } catch (e) { showError(e); ev.target.disabled = false; }
    } }, label);
  }

  let refresh = async () => {};
  // The jobs listed per table: the page stays light whatever the size of the library.
  const PAGE = 100;

  // Refresh, then wait before the next one (a slow answer never piles requests up): `ms` after
  // a change, twice as long after each look that found nothing new, up to four times `ms`.
  // An idle page asks twice in four seconds.
  let unchanged = 0;
  async function every(ms) {
    const changed = await refresh();
    unchanged = changed === false ? unchanged + 1 : 0;
    setTimeout(() => every(ms), ms * Math.min(4, 2 ** unchanged));
  }

  // The farm's last hours, drawn here: bars of jobs finished (failed on top) per stretch, and a
  // line of the jobs waiting at the end of each (its own scale, on the right).
  // An SVG element; `text` (if any) as its text, never as markup.
  function shape(tag, attrs, text) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  async function drawChart() {
    const buckets = await api("/api/timeline?hours=6");
    const svg = document.getElementById("chart");
    const W = 720, H = 150, left = 34, right = 40, top = 8, bottom = 20;
    const plotW = W - left - right, plotH = H - top - bottom, step = plotW / Math.max(1, buckets.length);
    const most = Math.max(1, ...buckets.map((b) => b.succeeded + b.failed));
    const deepest = Math.max(1, ...buckets.map((b) => b.waiting));
    const y = (v, max) => top + plotH - (v / max) * plotH;
    const parts = [shape("line", { class: "axis", x1: left, x2: W - right, y1: top + plotH, y2: top + plotH })];
    buckets.forEach((b, i) => {
      const x = left + i * step + 1, w = Math.max(1, step - 2);
      const done = b.succeeded, failed = b.failed;
      if (done) parts.push(shape("rect", { class: "done", x, width: w, y: y(done, most), height: plotH - (y(done, most) - top) }));
      if (failed) parts.push(shape("rect", { class: "failed", x, width: w, y: y(done + failed, most), height: y(done, most) - y(done + failed, most) }));
    });
    const points = buckets.map((b, i) => (left + (i + 0.5) * step).toFixed(1) + "," + y(b.waiting, deepest).toFixed(1)).join(" ");
    parts.push(shape("polyline", { class: "waiting", points }));
    parts.push(shape("text", { x: 2, y: top + 8 }, String(most)), shape("text", { x: 2, y: top + plotH }, "0"));
    parts.push(shape("text", { x: W - right + 4, y: top + 8 }, String(deepest) + " w"));
    parts.push(shape("text", { x: left, y: H - 4 }, "6 h ago"), shape("text", { x: W - right - 20, y: H - 4 }, "now"));
    svg.replaceChildren(...parts);
    const finished = buckets.reduce((n, b) => n + b.succeeded, 0);
    const bytes = buckets.reduce((n, b) => n + b.bytes, 0);
    const media = buckets.reduce((n, b) => n + b.media_s, 0);
    document.getElementById("chart-summary").textContent =
      finished ? finished + " encoded, " + duration(media) + " of video, " + size(bytes) + " written" : "nothing encoded yet";
  }

  async function chartEvery(ms) {
    try { await drawChart(); } catch (e) { showError(e); }
    setTimeout(() => chartEvery(ms), ms);
  }

  // ffmpeg's last words for a failed job, fetched when the row is opened (the list leaves them
  // out: with hundreds of failures they were most of what the page moved).
  // The rows opened stay open when the list is drawn again.
  const opened = new Set();
  function stderrTail(id) {
    const pre = el("pre", {}, "…");
    const box = el("details", { class: "stderr" }, el("summary", {}, "ffmpeg said"), pre);
    box.addEventListener("toggle", async () => {
      if (!box.open) { opened.delete(id); return; }
      opened.add(id);
      try {
        const answer = await api("/api/jobs/" + encodeURIComponent(id));
        pre.textContent = answer.job.stderr_tail || "";
      } catch (e) { pre.textContent = String(e.message || e); }
    });
    if (opened.has(id)) box.open = true;
    return box;
  }

  // The overview as the server has it now. The page names the answer it holds (its ETag), and
  // gets "not modified" while nothing changed, or only what changed: the status, and of each
  // list the jobs' ids in order with the rows it does not hold as they are now. Asked past the
  // browser's cache: the answer to the same question differs with what the page holds.
  let held = null;
  async function currentOverview() {
    const path = "/api/overview" + (held ? "?since=" + encodeURIComponent(held.tag) : "");
    const response = await fetch(path, { headers: auth(), cache: "no-store" });
    if (response.status === 304 && held) return held.view;
    const data = await response.json();
    if (!response.ok) throw new Error(data.error || response.statusText);
    if (data.since === undefined) {
      held = { tag: response.headers.get("ETag"), view: data };
      return data;
    }
    const view = applied(held.view, data);
    if (!view) { held = null; return currentOverview(); }
    held = { tag: data.tag, view };
    return view;
  }

  // What the page holds with the changes applied, or null if a row it needs is not there.
  function applied(view, changes) {
    const next = Object.assign({}, view, { status: changes.status });
    for (const [name, list] of Object.entries(changes.lists)) {
      const rows = new Map(view[name].map((j) => [j.id, j]));
      for (const row of list.rows) rows.set(row.id, row);
      next[name] = list.ids.map((id) => rows.get(id));
      if (next[name].includes(undefined)) return null;
    }
    return next;
  }

  async function overview() {
    let shownLists = "";
    let lastSeen = "";
    refresh = async () => {
      try {
        // Pages, not the whole library: the counts say how many there are. Two requests a
        // second, each answered "not modified" while nothing changed: the workers' progress,
        // and everything else (only what changed, when something did).
        const [view, workers] = await Promise.all([currentOverview(), api("/api/workers")]);
        const seen = JSON.stringify([view, workers]);
        if (seen === lastSeen) return false;
        lastSeen = seen;
        const { status, failed, waiting } = view;
        const done = view.recent.filter((j) => j.result);
        showError(null);
        document.getElementById("counts").replaceChildren(
          ...["queued", "running", "succeeded", "failed", "cancelled"].map((k) => el("span", { class: "count-" + k }, k + " " + (status[k] || 0))),
          el("span", {}, status.workers + " worker" + (status.workers === 1 ? "" : "s")));
        // What a watch folder cannot do (two files that would become one, a file it cannot
        // read, the folder gone): said where the operator looks, not only in its log.
        const watchProblems = (status.watch_problems || []).flatMap((w) =>
          w.problems.map((p) => el("li", { class: "watch-problem" }, "on " + w.host + " (pid " + w.pid + "): " + p)));
        const watchBox = document.getElementById("watch-problems");
        watchBox.hidden = watchProblems.length === 0;
        watchBox.querySelector("ul").replaceChildren(...watchProblems);
        const box = document.getElementById("workers");
        box.replaceChildren(...(workers.length ? workers.map((w) => el("div", { class: "worker", "data-name": w.name },
          el("div", {}, el("span", { class: "name" }, w.name), " on " + w.host + " (pid " + w.pid + "), " + w.active.length + "/" + w.concurrency + " busy"),
          w.profiles ? el("div", { class: "can-run" }, "can run: " + w.profiles.join(", ") + (w.tags && w.tags.length ? "; tags: " + w.tags.join(", ") : "")) : null,
          ...w.active.map((j) => el("div", { class: "active", "data-id": j.id },
            el("a", { class: "file", href: "/job/" + encodeURIComponent(j.id) }, baseName(j.input)),
            el("div", { class: "bar", title: (j.progress * 100).toFixed(1) + "%" }, el("div", { style: "width:" + (j.progress * 100).toFixed(1) + "%" })),
            el("span", { class: "pace" }, (j.progress * 100).toFixed(1) + "%  " + (j.transfer
              ? (j.transfer.sending ? "sending the output " : "fetching the input ") + size(j.transfer.bytes) + " of " + size(j.transfer.total) + " at " + size(j.transfer.rate) + "/s"
              : j.fps.toFixed(0) + " fps  " + j.speed.toFixed(2) + "x") + "  eta " + duration(j.eta_s)))))) :
          [el("p", { class: "empty" }, "No live workers.")]));

        // Drawn again only when they changed: an opened row stays open.
        const lists = JSON.stringify([failed, waiting, done]);
        if (lists !== shownLists) {
          shownLists = lists;
          replaceRows("#failed", failed.map((j) => el("tr", { class: "failed-job", "data-id": j.id },
            el("td", {}, el("a", { class: "file", href: "/job/" + encodeURIComponent(j.id) }, baseName(j.input))),
            el("td", {}, el("div", { class: "reason" }, j.error || ""), j.stderr_tail_bytes ? stderrTail(j.id) : null),
            el("td", {}, j.attempts),
            el("td", {}, action("Retry", "retry", "/api/jobs/" + encodeURIComponent(j.id) + "/retry")))), "Nothing failed.");

          replaceRows("#waiting", waiting.map((j) => el("tr", { class: "waiting-job", "data-id": j.id },
            el("td", {}, el("a", { class: "file", href: "/job/" + encodeURIComponent(j.id) }, baseName(j.input))),
            el("td", {}, j.profile), el("td", { class: "state" }, j.state, j.waiting_for ? el("div", { class: "waiting-for" }, j.waiting_for) : null),
            el("td", {}, action("Cancel", "cancel", "/api/jobs/" + encodeURIComponent(j.id) + "/cancel")))), "Nothing waiting.");

          replaceRows("#recent", done.map((j) => el("tr", { class: "done-job", "data-id": j.id },
            el("td", {}, el("a", { class: "file", href: "/job/" + encodeURIComponent(j.id) }, baseName(j.input))),
            el("td", {}, size(j.result.input_size) + " → " + size(j.result.output_size)),
            el("td", {}, duration(j.result.elapsed_s)),
            el("td", {}, j.result.elapsed_s > 0 ? (j.result.duration_s / j.result.elapsed_s).toFixed(2) + "x" : "-"))), "Nothing finished yet.");

        }
        const more = (shown, total, what) => total > shown ? " (the first " + shown + " of " + total + " " + what + ")" : "";
        document.getElementById("failed-more").textContent = more(failed.length, status.failed || 0, "failed");
        document.getElementById("waiting-more").textContent = more(waiting.length, (status.queued || 0) + (status.running || 0), "waiting or running");
        // Batch ETA: what the running encodes still need, plus the waiting jobs at the recent
        // average time per job, spread over the workers' slots.
        const slots = Math.max(1, workers.reduce((n, w) => n + w.concurrency, 0));
        const left = workers.flatMap((w) => w.active).reduce((s, j) => s + (j.eta_s || 0), 0);
        const avg = done.length ? done.reduce((s, j) => s + j.result.elapsed_s, 0) / done.length : 0;
        const queued = status.queued || 0;
        const eta = (left + queued * avg) / slots;
        document.getElementById("batch-eta").textContent = (queued || left) ? "batch ETA " + duration(eta) : "";
      } catch (e) { showError(e); }
    };
    every(1000);
    chartEvery(30000);
    await setupEnqueue();
  }

  async function setupEnqueue() {
    const form = document.getElementById("enqueue");
    const chosen = new Set();
    try {
      const profiles = await api("/api/profiles");
      document.getElementById("profile").replaceChildren(...profiles.profiles.map((p) =>
        el("option", { value: p.name, selected: p.name === profiles.default }, p.name + " (." + p.extension + ")")));
    } catch (e) { showError(e); }
    const pathQuery = (p) => typeof p === "string" ? "?path=" + encodeURIComponent(p)
      : "?path_bytes=" + p.unix_bytes.map((b) => b.toString(16).padStart(2, "0")).join("");
    async function show(path) {
      const box = document.getElementById("browser");
      try {
        const listing = await api("/api/browse" + (path ? pathQuery(path) : ""));
        box.replaceChildren(el("div", {}, listing.path ? "In " + shownPath(listing.path) : "Media roots"), el("ul", {}, ...listing.entries.map((e) => {
          const key = JSON.stringify(e.path);
          return el("li", {}, el("input", { type: "checkbox", checked: chosen.has(key), onclick: (ev) => { ev.target.checked ? chosen.add(key) : chosen.delete(key); } }), " ",
            e.dir ? el("a", { href: "#", onclick: (ev) => { ev.preventDefault(); show(e.path); } }, e.name + "/") : el("span", {}, e.name));
        })));
      } catch (e) { box.replaceChildren(el("p", { class: "empty" }, String(e.message || e))); }
    }
    show(null);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const result = document.getElementById("enqueue-result");
      try {
        const r = await api("/api/jobs", { paths: [...chosen].map((k) => JSON.parse(k)), out: document.getElementById("out").value, profile: document.getElementById("profile").value });
        result.textContent = r.queued.length + " queued, " + r.already_known.length + " already known";
        refresh();
      } catch (e) { result.textContent = String(e.message || e); }
    });
  }

  // A tape's report: its signal along the tape (luma range and average on the 0-255 scale with
  // the broadcast range dashed, audio peak in dBFS on the right) and its faults as spans above,
  // each with its words as a tooltip.
  const clock = (t) => {
    const s = Math.floor(t), pad = (n) => String(n).padStart(2, "0");
    return pad(Math.floor(s / 3600)) + ":" + pad(Math.floor(s / 60) % 60) + ":" + pad(s % 60);
  };
  function drawTape(tape) {
    const section = document.getElementById("tape");
    section.hidden = !tape;
    if (!tape) return;
    document.getElementById("tape-verdict").textContent = tape.verdict + (tape.treatment ? "; " + tape.treatment : "");
    const W = 720, H = 190, left = 34, right = 44, lane = 18, top = 6 + lane, bottom = 20;
    const plotW = W - left - right, plotH = H - top - bottom, length = Math.max(tape.duration_s, 0.001);
    const x = (t) => left + Math.min(1, Math.max(0, t / length)) * plotW;
    const y = (v) => top + plotH - (Math.min(255, Math.max(0, v)) / 255) * plotH;
    const yDb = (db) => top + plotH - ((Math.min(0, Math.max(-60, db)) + 60) / 60) * plotH;
    const parts = [shape("line", { class: "axis", x1: left, x2: W - right, y1: top + plotH, y2: top + plotH })];
    for (const level of [16, 235]) parts.push(shape("line", { class: "range", x1: left, x2: W - right, y1: y(level), y2: y(level) }));
    const points = tape.timeline;
    const band = points.map((p) => x(p.t).toFixed(1) + "," + y(p.ymax).toFixed(1))
      .concat(points.slice().reverse().map((p) => x(p.t).toFixed(1) + "," + y(p.ymin).toFixed(1)));
    parts.push(shape("polygon", { class: "luma-range", points: band.join(" ") }));
    parts.push(shape("polyline", { class: "luma", points: points.map((p) => x(p.t).toFixed(1) + "," + y(p.yavg).toFixed(1)).join(" ") }));
    const loud = points.filter((p) => p.peak_db !== undefined && p.peak_db !== null);
    if (loud.length) parts.push(shape("polyline", { class: "audio", points: loud.map((p) => x(p.t).toFixed(1) + "," + yDb(p.peak_db).toFixed(1)).join(" ") }));
    for (const e of tape.events) {
      const span = shape("rect", { class: "fault " + e.kind, x: x(e.start_s), y: 4, width: Math.max(2, x(e.end_s) - x(e.start_s)), height: lane - 6 });
      span.appendChild(shape("title", {}, e.text));
      parts.push(span);
    }
    parts.push(shape("text", { x: 2, y: y(235) + 3 }, "235"), shape("text", { x: 2, y: y(16) + 3 }, "16"));
    parts.push(shape("text", { x: W - right + 4, y: top + 8 }, "0 dB"), shape("text", { x: W - right + 4, y: top + plotH }, "-60"));
    parts.push(shape("text", { x: left, y: H - 4 }, "00:00:00"), shape("text", { x: W - right - 44, y: H - 4 }, clock(tape.duration_s)));
    document.getElementById("tape-chart").replaceChildren(...parts);
    const events = tape.events.map((e) => el("li", { class: e.kind }, e.text));
    if (tape.more_events) events.push(el("li", {}, "… and " + tape.more_events + " more"));
    document.getElementById("tape-events").replaceChildren(...events);
  }

  async function jobPage() {
    const id = decodeURIComponent(location.pathname.split("/").pop());
    document.getElementById("job-id").textContent = id;
    refresh = async () => {
      try {
        const { job, history } = await api("/api/jobs/" + encodeURIComponent(id));
        showError(null);
        const rows = [["File", shownPath(job.input)], ["Output", shownPath(job.output)], ["Profile", job.profile], ["State", job.state],
          ["Attempts", job.attempts + " of " + job.max_attempts], ["Worker", job.worker || "-"], ["Reason", job.error || "-"]];
        if (job.waiting_for) rows.push(["Waiting", job.waiting_for]);
        if (job.result) rows.push(["Size in → out", size(job.result.input_size) + " → " + size(job.result.output_size)], ["Took", duration(job.result.elapsed_s)]);
        if (job.result && job.result.ssim !== undefined && job.result.ssim !== null) rows.push(["Quality (SSIM)", job.result.ssim.toFixed(4)]);
        for (const w of (job.result && job.result.warnings) || []) rows.push(["Damaged input", w]);
        if (job.result && job.result.note) rows.push(["Note", job.result.note]);
        drawTape(job.result && job.result.tape);
        document.getElementById("job").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, String(v))]));
        const actions = [];
        if (job.state === "failed" || job.state === "cancelled") actions.push(action("Retry", "retry", "/api/jobs/" + encodeURIComponent(id) + "/retry"));
        if (job.state === "queued" || job.state === "running") actions.push(action("Cancel", "cancel", "/api/jobs/" + encodeURIComponent(id) + "/cancel"));
        document.getElementById("actions").replaceChildren(...actions);
        const stderr = document.getElementById("stderr");
        stderr.hidden = !job.stderr_tail;
        stderr.textContent = job.stderr_tail || "";
        const when = (ms) => ms ? new Date(ms).toLocaleString() : "-";
        replaceRows("#history", history.map((a) => el("tr", {}, el("td", {}, a.attempt), el("td", {}, a.worker), el("td", {}, when(a.started_ms)),
          el("td", {}, when(a.finished_ms)), el("td", {}, a.outcome), el("td", {}, a.error || ""))), "No attempts yet.");
      } catch (e) { showError(e); }
    };
    refresh();
    every(2000);
  }

  return { overview, jobPage };
})();
// Started from here, not from an inline script: the page's Content-Security-Policy allows
// scripts from this server only.
(videofarm[document.body.dataset.page] || (() => {}))();
