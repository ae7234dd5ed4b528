// Conveyor dashboard: plain ES module, no build step. Data from /api (the gateway's
// own servicers, with the caller's key); live updates from server-sent events.
// Everything shown is built with DOM calls (never innerHTML with data).

const $main = document.getElementById("main");
const me = { auth: "on", authenticated: false, may: {}, role: "", tenant: "" };
const store = { queues: new Map(), workers: null, overview: null, jobStream: null, view: null };
const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED"]);

// ---- helpers -----------------------------------------------------------------------
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "dataset") Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}
const svgNS = "http://www.w3.org/2000/svg";
function s(tag, attrs = {}) {
  const el = document.createElementNS(svgNS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}
const stateName = (st) => String(st || "").replace("JOB_STATE_", "") || "—";
const may = (method) => Boolean(me.may[method]);
function dur(text) {
  if (text === undefined || text === null || text === "") return "—";
  const secs = parseFloat(String(text));
  if (Number.isNaN(secs)) return String(text);
  if (secs < 1) return `${Math.round(secs * 1000)} ms`;
  if (secs < 120) return `${secs.toFixed(secs < 10 ? 2 : 1)} s`;
  return `${(secs / 60).toFixed(1)} min`;
}
function when(ts) {
  if (!ts) return "—";
  const d = new Date(ts);
  return Number.isNaN(d.getTime()) ? String(ts) : d.toLocaleString();
}
function ago(ts) {
  if (!ts) return "—";
  const secs = (Date.now() - new Date(ts).getTime()) / 1000;
  if (secs < 0) return `in ${Math.round(-secs)} s`;
  return secs < 90 ? `${Math.round(secs)} s ago` : `${Math.round(secs / 60)} min ago`;
}
function toast(text) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 4000);
}
async function api(path, { method = "GET", body } = {}) {
  const init = { method, headers: { "X-Conveyor-Dashboard": "1" }, credentials: "same-origin" };
  if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
  const res = await fetch(path, init);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) {
    const err = new Error((data.error && data.error.message) || `${res.status} ${res.statusText}`);
    err.status = res.status;
    err.reason = data.error && data.error.reason;
    throw err;
  }
  return data;
}
async function act(label, path, body) {
  try {
    await api(path, { method: "POST", body: body || {} });
    toast(`${label}: done`);
    return true;
  } catch (err) {
    toast(`${label}: ${err.message}`);
    return false;
  }
}
function progressBar(pct) {
  const value = Math.max(0, Math.min(100, Number(pct) || 0));
  const fill = h("span");
  fill.style.width = `${value}%`;
  return h("span", { class: "bar", role: "progressbar", "aria-valuenow": value }, fill);
}
function badge(state) {
  const name = stateName(state);
  return h("span", { class: `state ${name}`, "data-state": name }, name);
}
// replaceChildren without the blanks of conditional parts.
function put(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
}
function debounce(fn, ms) {
  let timer = null;
  return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
}

// Throughput of the last hour: completed (green) and failed (red) per minute, one bar each.
function sparkline(stats) {
  const ok = (stats && stats.completedPerMinute) || [];
  const bad = (stats && stats.failedPerMinute) || [];
  const n = Math.max(ok.length, bad.length, 1);
  const width = 150, height = 30, bw = width / n;
  const top = Math.max(1, ...ok.map((v, i) => Number(v) + Number(bad[i] || 0)));
  const svg = s("svg", { class: "spark", width, height, viewBox: `0 0 ${width} ${height}`, role: "img",
                         "aria-label": "jobs per minute, last hour" });
  for (let i = 0; i < n; i++) {
    const g = Number(ok[i] || 0), r = Number(bad[i] || 0);
    const gh = (g / top) * height, rh = (r / top) * height;
    if (g) svg.append(s("rect", { class: "ok", x: i * bw, y: height - gh, width: Math.max(1, bw - 0.5), height: gh }));
    if (r) svg.append(s("rect", { class: "bad", x: i * bw, y: height - gh - rh, width: Math.max(1, bw - 0.5), height: rh }));
  }
  const title = s("title");
  title.textContent = `last minute: ${ok[n - 1] || 0} completed, ${bad[n - 1] || 0} failed`;
  svg.append(title);
  return svg;
}

// The queue's health verdict and the issues that make it so (queue.health / queue.issues;
// absent from a gateway without them).
function healthOf(q) {
  const raw = q.health || (q.stats && q.stats.health) || null;
  if (!raw || raw === "QUEUE_HEALTH_UNSPECIFIED") return null;
  const verdict = typeof raw === "string" ? raw : raw.verdict || raw.status || "";
  const list = q.issues || (typeof raw === "object" && raw.issues) || [];
  const issues = list.map((i) => (typeof i === "string" ? i : i.message || i.reason || JSON.stringify(i)));
  return { verdict: String(verdict).replace("QUEUE_HEALTH_", ""), issues };
}

// ---- live: server-sent events --------------------------------------------------------
function setLive(on) {
  const el = document.getElementById("live");
  el.textContent = on ? "live" : "offline";
  el.classList.toggle("on", on);
}
function openOverview() {
  if (store.overview) return;
  const es = new EventSource("/api/stream");
  store.overview = es;
  es.addEventListener("open", () => setLive(true));
  es.addEventListener("error", () => setLive(false));
  es.addEventListener("queue", (e) => {
    const q = JSON.parse(e.data);
    store.queues.set(q.name, q);
    if (store.view && store.view.onQueue) store.view.onQueue(q);
  });
  es.addEventListener("events", (e) => {
    const events = JSON.parse(e.data);
    if (store.view && store.view.onEvents) store.view.onEvents(events);
  });
  es.addEventListener("workers", (e) => {
    store.workers = JSON.parse(e.data);
    if (store.view && store.view.onWorkers) store.view.onWorkers(store.workers);
  });
  es.addEventListener("failure", (e) => { toast(JSON.parse(e.data).message || "live updates stopped"); });
}
function closeStreams() {
  if (store.overview) { store.overview.close(); store.overview = null; }
  if (store.jobStream) { store.jobStream.close(); store.jobStream = null; }
  setLive(false);
}

// ---- pages ---------------------------------------------------------------------------
const COUNTS = ["waiting", "delayed", "active", "completed", "failed", "cancelled"];

function queueActions(q) {
  const out = h("div", { class: "actions" });
  const path = `/api/queues/${encodeURIComponent(q.name)}`;
  if (q.paused ? may("QueueService/ResumeQueue") : may("QueueService/PauseQueue")) {
    out.append(q.paused
      ? h("button", { "data-action": "resume", onclick: () => act(`resume ${q.name}`, `${path}/resume`) }, "Resume")
      : h("button", { "data-action": "pause", onclick: () => act(`pause ${q.name}`, `${path}/pause`) }, "Pause"));
  }
  if (may("QueueService/RetryFailedJobs")) {
    out.append(h("button", { "data-action": "retry-failed",
      onclick: () => act(`retry failed of ${q.name}`, `${path}/retry-failed`) }, "Retry failed"));
  }
  if (may("QueueService/CleanQueue")) {
    const which = h("select", { "aria-label": "state to clean" },
      h("option", { value: "completed" }, "completed"), h("option", { value: "failed" }, "failed"),
      h("option", { value: "cancelled" }, "cancelled"));
    out.append(which, h("button", { "data-action": "clean", class: "danger",
      onclick: () => act(`clean ${which.value} of ${q.name}`, `${path}/clean`, { state: which.value }) }, "Clean"));
  }
  return out;
}

function statCards(q) {
  const cards = h("div", { class: "cards" });
  const stats = q.stats || {};
  for (const [k, v] of Object.entries(stats)) {
    if (Array.isArray(v) || k === "health" || (v && typeof v === "object")) continue;
    let text = String(v);
    if (typeof v === "string" && /^[0-9.]+s$/.test(v)) text = dur(v);
    else if (typeof v === "number" && /rate/i.test(k) && v <= 1) text = `${(v * 100).toFixed(1)} %`;
    else if (typeof v === "number" && !Number.isInteger(v)) text = v.toFixed(2);
    cards.append(h("div", { class: "card" }, h("div", { class: "k" }, k.replace(/([A-Z])/g, " $1").toLowerCase()),
      h("div", { class: "v" }, text)));
  }
  return cards;
}

function queueRow(q) {
  const health = healthOf(q);
  return h("tr", { dataset: { queue: q.name } },
    h("td", {}, h("a", { href: `#/jobs?queue=${encodeURIComponent(q.name)}` }, q.name),
      q.paused ? h("div", { class: "paused" }, "paused") : null),
    ...COUNTS.map((c) => h("td", { class: "num", "data-count": c }, String((q.counts || {})[c] || 0))),
    h("td", { class: "num" }, String(q.concurrency || 0)),
    h("td", {}, sparkline(q.stats)),
    h("td", { class: "health-cell" }, health ? h("span", { class: `health ${health.verdict}`, "data-health": health.verdict }, health.verdict) : "—",
      health && health.issues.length ? h("div", { class: "muted" }, health.issues.join("; ")) : null),
    h("td", {}, queueActions(q)));
}

function queuesPage() {
  const body = h("tbody");
  const detail = h("div");
  const render = () => {
    body.replaceChildren(...[...store.queues.values()].sort((a, b) => a.name.localeCompare(b.name)).map(queueRow));
    detail.replaceChildren(...[...store.queues.values()].map((q) => h("section", {},
      h("h2", {}, `${q.name} — wait and run times, totals`), statCards(q))));
    if (!store.queues.size) body.append(h("tr", {}, h("td", { colspan: 11, class: "muted" }, "No queue has had a job yet.")));
  };
  $main.replaceChildren(h("h1", {}, "Queues"),
    h("table", { id: "queues" }, h("thead", {}, h("tr", {}, h("th", {}, "Queue"),
      ...COUNTS.map((c) => h("th", { class: "num" }, c)), h("th", { class: "num" }, "Concurrency"),
      h("th", {}, "Last hour / min"), h("th", {}, "Health"), h("th", {}, "Actions"))), body), detail);
  api("/api/queues").then((data) => { for (const q of data.queues) store.queues.set(q.name, q); render(); })
    .catch((err) => toast(err.message));
  render();
  const later = debounce(render, 50);
  return { onQueue: later };
}

function jobRow(j) {
  const state = stateName(j.state);
  const actions = h("div", { class: "actions" });
  if (!TERMINAL.has(state) && may("JobService/CancelJob")) {
    actions.append(h("button", { "data-action": "cancel", class: "danger", onclick: () => act(`cancel ${j.id}`, `/api/jobs/${j.id}/cancel`) }, "Cancel"));
  }
  if ((state === "FAILED" || state === "CANCELLED") && may("JobService/RetryJob")) {
    actions.append(h("button", { "data-action": "retry", onclick: () => act(`retry ${j.id}`, `/api/jobs/${j.id}/retry`) }, "Retry"));
  }
  return h("tr", { dataset: { jobId: j.id } },
    h("td", { class: "mono" }, h("a", { href: `#/job/${encodeURIComponent(j.id)}` }, j.id)),
    h("td", {}, j.queue), h("td", {}, j.kind || "—"), h("td", { class: "state-cell" }, badge(j.state)),
    h("td", { class: "progress-cell" }, progressBar(j.progress), ` ${j.progress || 0}%`),
    h("td", { class: "num" }, `${j.attempt || 0}/${j.maxAttempts || 0}`),
    h("td", {}, when(j.createTime)),
    me.may["QueueService/ListWorkers"] ? h("td", {}, j.owner || "") : null,
    h("td", { class: "muted" }, Object.entries(j.labels || {}).map(([k, v]) => `${k}=${v}`).join(" ")),
    h("td", {}, actions));
}

function jobsPage(params) {
  const admin = may("QueueService/ListWorkers");
  const field = (name, attrs = {}) => h("input", { name, value: params.get(name) || "", ...attrs });
  const stateSel = h("select", { name: "state" }, h("option", { value: "" }, "any state"),
    ...["waiting", "delayed", "active", "completed", "failed", "cancelled"].map((st) =>
      h("option", { value: st, selected: params.get("state") === st }, st)));
  const form = h("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    const next = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (String(v).trim()) next.set(k, String(v).trim());
    location.hash = `#/jobs?${next}`;
  } }, field("queue", { placeholder: "queue" }), stateSel, field("kind", { placeholder: "kind" }),
    field("label", { placeholder: "label key=value" }), admin ? field("owner", { placeholder: "owner (tenant)" }) : null,
    h("button", { type: "submit" }, "Filter"));
  const search = h("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    const id = String(new FormData(search).get("id") || "").trim();
    if (id) location.hash = `#/job/${encodeURIComponent(id)}`;
  } }, h("input", { name: "id", placeholder: "job id", "aria-label": "job id", size: 34 }), h("button", { type: "submit" }, "Open"));
  const body = h("tbody");
  const pager = h("div", { class: "pager" });
  const head = ["Id", "Queue", "Kind", "State", "Progress", "Attempt", "Created", ...(admin ? ["Owner"] : []), "Labels", "Actions"];
  $main.replaceChildren(h("h1", {}, "Jobs"), search, form,
    h("table", { id: "jobs" }, h("thead", {}, h("tr", {}, ...head.map((t) => h("th", {}, t)))), body), pager);
  const rows = new Map();
  const load = async () => {
    const query = new URLSearchParams(params);
    try {
      const data = await api(`/api/jobs?${query}`);
      rows.clear();
      body.replaceChildren(...data.jobs.map((j) => { rows.set(j.id, j); return jobRow(j); }));
      if (!data.jobs.length) body.append(h("tr", {}, h("td", { colspan: head.length, class: "muted" }, "No jobs.")));
      const nav = [];
      if (params.get("pageToken")) {
        const first = new URLSearchParams(params); first.delete("pageToken");
        nav.push(h("a", { href: `#/jobs?${first}` }, "First page"));
      }
      if (data.nextPageToken) {
        const next = new URLSearchParams(params); next.set("pageToken", data.nextPageToken);
        nav.push(h("a", { href: `#/jobs?${next}`, id: "next-page" }, "Next page"));
      }
      pager.replaceChildren(...nav);
    } catch (err) { body.replaceChildren(h("tr", {}, h("td", { colspan: head.length, class: "error" }, err.message))); }
  };
  const reload = debounce(load, 250);
  load();
  return {
    onEvents(events) {
      let stale = false;
      for (const ev of events) {
        const row = rows.get(ev.jobId);
        if (!row) { stale = stale || (!params.get("pageToken") && (!params.get("queue") || params.get("queue") === ev.queue)); continue; }
        const before = stateName(row.state);
        row.state = ev.state || row.state;
        if (ev.type === "JOB_EVENT_TYPE_PROGRESS" || ev.progress) row.progress = ev.progress;
        if (ev.attempt) row.attempt = ev.attempt;
        const tr = body.querySelector(`tr[data-job-id="${CSS.escape(ev.jobId)}"]`);
        if (tr) tr.replaceWith(jobRow(row));
        if (params.get("state") && before !== stateName(row.state)) stale = true;
      }
      if (stale) reload();
    },
  };
}

function jobPage(id) {
  const view = h("div");
  $main.replaceChildren(h("p", {}, h("a", { href: "#/jobs" }, "← Jobs")), view);
  let job = null;
  const render = () => {
    if (!job) return;
    const state = stateName(job.state);
    const actions = h("div", { class: "actions" });
    if (!TERMINAL.has(state) && may("JobService/CancelJob")) {
      actions.append(h("button", { "data-action": "cancel", class: "danger", onclick: () => act("cancel", `/api/jobs/${id}/cancel`) }, "Cancel"));
    }
    if ((state === "FAILED" || state === "CANCELLED") && may("JobService/RetryJob")) {
      actions.append(h("button", { "data-action": "retry", onclick: async () => { if (await act("retry", `/api/jobs/${id}/retry`)) follow(); } }, "Retry"));
    }
    const result = job.result || {};
    const steps = result.steps || [];
    const artifacts = result.artifacts || [];
    const card = (k, v) => h("div", { class: "card" }, h("div", { class: "k" }, k), h("div", { class: "v" }, v));
    put(view,
      h("h1", {}, h("span", { class: "mono" }, job.id), " ", h("span", { id: "job-state" }, badge(job.state))),
      h("div", { class: "cards" },
        card("progress", h("span", { id: "job-progress", "data-progress": job.progress || 0 }, progressBar(job.progress), ` ${job.progress || 0}%`)),
        card("message", h("span", { id: "job-message" }, job.progressMessage || "—")),
        card("queue", job.queue), card("kind", job.kind || "—"), card("attempt", `${job.attempt || 0} of ${job.maxAttempts || 0}`),
        card("priority", String(job.priority || "").replace("PRIORITY_", "")), card("owner", job.owner || "—"),
        card("created", when(job.createTime)), card("started", when(job.startTime)), card("ended", when(job.endTime)),
        job.position ? card("position", String(job.position)) : null),
      actions,
      Object.keys(job.labels || {}).length ? h("p", { class: "muted" }, "labels: ", Object.entries(job.labels).map(([k, v]) => `${k}=${v}`).join(", ")) : null,
      job.error ? h("section", {}, h("h2", {}, "Error"), h("p", { class: "error", id: "job-error" }, job.error.message || JSON.stringify(job.error))) : null,
      h("h2", {}, "Steps"),
      steps.length ? h("table", { id: "steps" }, h("thead", {}, h("tr", {}, ...["#", "Name", "Action", "Outcome", "Duration", "Matched", "Error"].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...steps.map((st) => h("tr", {},
          h("td", { class: "num" }, String(st.index || 0)), h("td", {}, st.name || ""), h("td", {}, st.action || ""),
          h("td", {}, String(st.status || "").replace("STEP_STATUS_", "")), h("td", { class: "num" }, dur(st.duration)),
          h("td", { class: "mono" }, st.matchedSelector || ""), h("td", { class: "error" }, st.error || ""))))) : h("p", { class: "muted" }, "No step results yet."),
      h("h2", {}, "Artifacts"),
      artifacts.length ? h("div", { class: "artifacts", id: "artifacts" }, ...artifacts.map((a) => {
        const url = `/api/jobs/${encodeURIComponent(id)}/artifacts/${encodeURIComponent(a.name)}`;
        const img = String(a.contentType || "").startsWith("image/");
        return h("figure", {}, img ? h("a", { href: url, target: "_blank", rel: "noopener" }, h("img", { src: url, alt: a.name, loading: "lazy" })) : null,
          h("figcaption", {}, h("a", { href: url, target: "_blank", rel: "noopener" }, a.name), ` — ${a.contentType || ""}, ${a.sizeBytes || 0} bytes`));
      })) : h("p", { class: "muted" }, "None."),
      result.values && Object.keys(result.values).length ? h("section", {}, h("h2", {}, "Extracted values"), h("pre", {}, JSON.stringify(result.values, null, 2))) : null,
      result.output !== undefined && result.output !== null ? h("section", {}, h("h2", {}, "Output"), h("pre", {}, JSON.stringify(result.output, null, 2))) : null,
      h("h2", {}, "Attempts"),
      (job.attempts || []).length ? h("table", { id: "attempts" }, h("thead", {}, h("tr", {}, ...["Attempt", "Outcome", "Started", "Ended", "Worker", "Error"].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...job.attempts.map((a) => h("tr", {},
          h("td", { class: "num" }, String(a.attempt || 0)), h("td", {}, badge(a.outcome)), h("td", {}, when(a.startTime)),
          h("td", {}, when(a.endTime)), h("td", { class: "mono" }, a.worker || ""), h("td", { class: "error" }, (a.error && a.error.message) || ""))))) : h("p", { class: "muted" }, "None yet."));
  };
  const follow = () => {
    if (store.jobStream) store.jobStream.close();
    const es = new EventSource(`/api/jobs/${encodeURIComponent(id)}/stream`);
    store.jobStream = es;
    es.addEventListener("open", () => setLive(true));
    es.addEventListener("job", (e) => { job = JSON.parse(e.data); render(); });
    es.addEventListener("end", () => { es.close(); });
    es.addEventListener("failure", (e) => { es.close(); view.replaceChildren(h("p", { class: "error" }, JSON.parse(e.data).message)); });
  };
  api(`/api/jobs/${encodeURIComponent(id)}`).then((data) => { job = data; render(); follow(); })
    .catch((err) => view.replaceChildren(h("h1", {}, "Job"), h("p", { class: "error", id: "job-missing" }, err.message)));
  return {};
}

function workersPage() {
  const body = h("tbody");
  $main.replaceChildren(h("h1", {}, "Workers"));
  if (!may("QueueService/ListWorkers")) {
    $main.append(h("p", { class: "muted" }, `Workers are shown to admins (this key is ${me.role}).`));
    return {};
  }
  const head = ["Id", "Host", "Pid", "Slots", "Kinds", "Running jobs", "Jobs done", "Last heartbeat"];
  $main.append(h("table", { id: "workers" }, h("thead", {}, h("tr", {}, ...head.map((t) => h("th", {}, t)))), body));
  let workers = [];
  const render = () => {
    body.replaceChildren(...workers.map((w) => h("tr", { dataset: { worker: w.id } },
      h("td", { class: "mono" }, w.id), h("td", {}, w.host || ""), h("td", { class: "num" }, String(w.pid || "")),
      h("td", { class: "num" }, String(w.slots || 0)), h("td", {}, (w.kinds || []).join(", ")),
      h("td", { class: "mono" }, ...(w.runningJobIds || []).map((jid) => h("div", {}, h("a", { href: `#/job/${jid}` }, jid)))),
      h("td", { class: "num" }, String(w.jobsCompleted || 0)),
      h("td", { "data-heartbeat": w.lastHeartbeatTime || w.heartbeatTime || "" }, ago(w.lastHeartbeatTime || w.heartbeatTime)))));
    if (!workers.length) body.append(h("tr", {}, h("td", { colspan: head.length, class: "muted" }, "No worker alive.")));
  };
  const set = (list) => { workers = list; render(); };
  api("/api/workers").then((d) => set(d.workers)).catch((err) => toast(err.message));
  const tick = setInterval(() => { for (const td of body.querySelectorAll("td[data-heartbeat]")) td.textContent = ago(td.dataset.heartbeat); }, 1000);
  return { onWorkers: set, leave: () => clearInterval(tick) };
}

function schedulesPage() {
  const body = h("tbody");
  const head = ["Id", "Name", "Cron", "Time zone", "Paused", "Next run", "Last run", "Last job", "Runs"];
  $main.replaceChildren(h("h1", {}, "Schedules"), h("table", { id: "schedules" },
    h("thead", {}, h("tr", {}, ...head.map((t) => h("th", {}, t)))), body));
  let timer = null;
  const load = async () => {
    let data;
    try { data = await api("/api/schedules"); } catch (err) { toast(err.message); return; }
    body.replaceChildren(...data.schedules.map((sc) => h("tr", { dataset: { schedule: sc.id } },
      h("td", { class: "mono" }, sc.id), h("td", {}, sc.name || ""), h("td", { class: "mono" }, sc.cron),
      h("td", {}, sc.timeZone || "UTC"), h("td", {}, sc.paused ? "yes" : "no"),
      h("td", { "data-next": sc.nextRunTime || "" }, sc.paused ? "—" : `${when(sc.nextRunTime)} (${ago(sc.nextRunTime)})`),
      h("td", {}, when(sc.lastRunTime)),
      h("td", { class: "mono" }, sc.lastJobId ? h("a", { href: `#/job/${sc.lastJobId}` }, sc.lastJobId) : "—"),
      h("td", { class: "num" }, String(sc.runCount || 0)))));
    if (!data.schedules.length) body.append(h("tr", {}, h("td", { colspan: head.length, class: "muted" }, "No schedules.")));
    // Re-read once the soonest next run has passed (its job has been made by then).
    const soonest = Math.min(...data.schedules.filter((sc) => !sc.paused && sc.nextRunTime).map((sc) => new Date(sc.nextRunTime).getTime()));
    clearTimeout(timer);
    if (Number.isFinite(soonest)) timer = setTimeout(load, Math.max(1000, soonest - Date.now() + 1500));
  };
  load();
  return { leave: () => clearTimeout(timer) };
}

function loginPage(message) {
  closeStreams();
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  const input = h("input", { type: "password", name: "key", placeholder: "API key", autocomplete: "off", id: "api-key" });
  const err = h("p", { class: "error" }, message || "");
  const form = h("form", { class: "login", onsubmit: async (e) => {
    e.preventDefault();
    try {
      Object.assign(me, await api("/api/login", { method: "POST", body: { key: input.value } }), { authenticated: true });
      start();
    } catch (error) { err.textContent = error.message; }
  } }, h("h1", {}, "Log in"), h("p", { class: "muted" }, "With a Conveyor API key (conveyor keys create …). It is kept in an HttpOnly cookie of this site."),
    input, h("button", { type: "submit" }, "Log in"), err);
  $main.replaceChildren(form);
  input.focus();
}

// ---- routing -------------------------------------------------------------------------
function route() {
  if (store.view && store.view.leave) store.view.leave();
  if (store.jobStream) { store.jobStream.close(); store.jobStream = null; }
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  const parts = (path || "/queues").split("/").filter(Boolean);
  const page = parts[0] || "queues";
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("on", a.dataset.page === page);
  if (page === "job" && parts[1]) store.view = jobPage(decodeURIComponent(parts[1]));
  else if (page === "jobs") store.view = jobsPage(params);
  else if (page === "workers") store.view = workersPage();
  else if (page === "schedules") store.view = schedulesPage();
  else store.view = queuesPage();
}

function start() {
  document.getElementById("nav").hidden = false;
  const logout = document.getElementById("logout");
  logout.hidden = me.auth !== "on";
  document.getElementById("who").textContent = me.auth === "on" ? `${me.tenant} · ${me.role}` : "auth off";
  document.body.dataset.role = me.role;
  openOverview();
  route();
}

document.getElementById("logout").addEventListener("click", async () => {
  await api("/api/logout", { method: "POST" }).catch(() => {});
  me.authenticated = false;
  loginPage();
});
window.addEventListener("hashchange", () => { if (me.authenticated) route(); });

api("/api/me").then((data) => {
  Object.assign(me, data);
  if (data.authenticated === false) loginPage();
  else { me.authenticated = true; start(); }
}).catch((err) => loginPage(err.message));
