// The console's one script: it fills the server's page shells from the JSON API of this
// same origin, with the sign-in cookie, and sends the page's CSRF token with every write.
// Plain DOM and fetch, no library, nothing to build (docs/architecture.md says why).
"use strict";

const FINAL = new Set(["finished", "errored"]);
// Chromium opens at most 6 connections per origin over HTTP/1.1: this many event streams
// leave the rest for the page's other requests. Further running jobs wait their turn.
const MAX_STREAMS = 3;
const OVERVIEW_EVERY_MS = 3000;
// The newest page is read again this often, so jobs sent from elsewhere (curl, the CLI) appear.
const JOBS_EVERY_MS = 10000;
const QUOTAS_EVERY_MS = 5000;

const csrf = () => document.querySelector('meta[name="csrf-token"]').content;

async function api(method, url, body) {
  const init = { method, headers: { "X-CSRF-Token": csrf() }, credentials: "same-origin" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(url, init);
  const data = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const error = new Error((data && (data.error || data.message)) || `HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  return data;
}

function notice(text) {
  document.getElementById("notice").textContent = text;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

// -- human units ---------------------------------------------------------------------------

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function localTime(epoch) {
  return epoch ? new Date(epoch * 1000).toLocaleString() : "–";
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function amount(value, unit) {
  if (value === null || value === undefined) return "no limit";
  return unit === "bytes" ? bytes(value) : `${value} ${unit}`;
}

// -- live progress ---------------------------------------------------------------------------

// Watches jobs through their event streams, at most MAX_STREAMS at once; `update` gets each
// status ({status, progress, error}) as it comes, the terminal one included.
class Watcher {
  constructor(update) {
    this.update = update;
    this.open = new Map();
    this.waiting = [];
  }

  watch(token) {
    if (this.open.has(token) || this.waiting.includes(token)) return;
    this.waiting.push(token);
    this.next();
  }

  next() {
    while (this.open.size < MAX_STREAMS && this.waiting.length) {
      const token = this.waiting.shift();
      const source = new EventSource(`/tasks/${token}/events`);
      this.open.set(token, source);
      const handle = (event) => {
        const status = JSON.parse(event.data);
        this.update(token, status);
        if (FINAL.has(status.status)) this.close(token);
      };
      for (const name of ["progress", "finished", "errored"]) source.addEventListener(name, handle);
      source.onerror = () => {
        // The browser reconnects by itself (with Last-Event-ID) unless the stream was refused.
        if (source.readyState === EventSource.CLOSED) this.close(token);
      };
    }
  }

  close(token) {
    this.open.get(token)?.close();
    this.open.delete(token);
    this.next();
  }
}

function progressOf(status) {
  return status.progress && status.progress.total ? status.progress.done / status.progress.total : null;
}

// -- the jobs page ----------------------------------------------------------------------------

function jobRow(job, watcher) {
  const row = el("tr", { id: `job-${job.token}`, "data-status": job.status });
  const link = el("a", { href: `/ui/jobs/${job.token}`, text: job.token.slice(0, 12) });
  link.setAttribute("aria-label", `Job ${job.token}`);
  const bar = el("progress", { max: "1", value: "0", "aria-label": `Progress of job ${job.token.slice(0, 12)}` });
  const state = el("span", { class: "status", text: job.status });
  const actions = el("td", { class: "actions" });
  row.append(
    el("td", {}, link),
    el("td", { text: job.kind }),
    el("td", {}, state, " ", bar),
    el("td", { text: localTime(job.requested_at) }),
    el("td", { text: duration(job.queue_wait_s) }),
    el("td", { text: duration(job.exec_s) }),
    el("td", { text: duration(job.lead_s) }),
    actions,
  );
  showStatus(row, job);
  if (FINAL.has(job.status)) {
    actions.append(button("Run again", `Run job ${job.token.slice(0, 12)} again`, () => rerun(job.token)));
  } else {
    actions.append(button("Cancel", `Cancel job ${job.token.slice(0, 12)}`, () => cancel(job.token)));
    watcher.watch(job.token);
  }
  return row;
}

function button(text, label, onclick) {
  const node = el("button", { type: "button", "aria-label": label, text });
  node.addEventListener("click", onclick);
  return node;
}

// A progress bar shows a running job's blocks done; it is full once the job finished.
function showProgress(bar, status) {
  const fraction = progressOf(status);
  bar.hidden = status.status !== "received" || fraction === null;
  if (fraction !== null) bar.value = fraction;
  if (status.status === "finished") bar.value = 1;
}

function showStatus(row, status) {
  const bar = row.querySelector("progress");
  showProgress(bar, status);
  row.dataset.progress = bar.value;
  const state = row.querySelector(".status");
  state.textContent = status.status + (status.error ? `: ${status.error}` : "");
  row.dataset.status = status.status;
}

async function cancel(token) {
  try {
    await api("DELETE", `/tasks/${token}`);
    notice("Cancelled.");
  } catch (error) {
    notice(`Not cancelled: ${error.message}`);
  }
  await refreshJobs();
}

async function rerun(token) {
  try {
    const { token: fresh } = await api("POST", `/tasks/${token}/rerun`);
    notice(`Running again as job ${fresh.slice(0, 12)}.`);
  } catch (error) {
    notice(`Not run again: ${error.message}`);
  }
  await refreshJobs();
}

let jobsWatcher = null;

async function refreshJobs() {
  const query = new URLSearchParams(location.search);
  const asked = new URLSearchParams();
  for (const name of ["status", "kind", "cursor"]) if (query.get(name)) asked.set(name, query.get(name));
  const page = await api("GET", `/tasks?${asked}`);
  const body = document.querySelector("#jobs tbody");
  body.replaceChildren(...page.jobs.map((job) => jobRow(job, jobsWatcher)));
  document.getElementById("jobs-empty").hidden = page.jobs.length > 0;
  const next = document.getElementById("next-page");
  next.hidden = !page.next_cursor;
  if (page.next_cursor) {
    const older = new URLSearchParams(asked);
    older.set("cursor", page.next_cursor);
    next.href = `/ui?${older}`;
  }
  const first = document.getElementById("first-page");
  first.hidden = !query.get("cursor");
  asked.delete("cursor");
  first.href = `/ui?${asked}`;
}

async function ended(token) {
  // The stream's last event carries the status only; the record has the timings.
  const job = await api("GET", `/tasks/${token}`);
  const row = document.getElementById(`job-${token}`);
  if (row) row.replaceWith(jobRow(job, jobsWatcher));
  refreshQuotas();
}

async function refreshQuotas() {
  const account = await api("GET", "/me");
  const rows = account.quotas.map((quota) => {
    const meter = el("meter", { min: "0", max: String(quota.limit || 1), value: String(quota.used) });
    meter.setAttribute("aria-label", `${quota.label}: share of the limit used`);
    return el(
      "tr",
      { "data-quota": quota.name },
      el("th", { scope: "row", text: quota.label }),
      el("td", { text: amount(quota.used, quota.unit) }),
      el("td", { text: amount(quota.limit, quota.unit) }),
      el("td", {}, quota.limit ? meter : ""),
    );
  });
  document.querySelector("#quotas tbody").replaceChildren(...rows);
}

async function isPng(file) {
  const head = new Uint8Array(await file.slice(0, 8).arrayBuffer());
  return [137, 80, 78, 71, 13, 10, 26, 10].every((byte, i) => head[i] === byte);
}

// Sends a body with XMLHttpRequest, the one browser API that reports upload progress
// (`onProgress` gets the bytes sent so far); resolves with the answer once it is `expected`.
function send(method, url, body, headers, expected, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open(method, url);
    for (const [name, value] of Object.entries(headers)) request.setRequestHeader(name, value);
    request.upload.onprogress = (event) => onProgress(event.loaded);
    request.onload = () => {
      if (request.status === expected) return resolve(request);
      let data = null;
      try {
        data = JSON.parse(request.responseText);
      } catch {}
      reject(new Error((data && data.error) || `HTTP ${request.status}`));
    };
    request.onerror = () => reject(new Error("the upload was cut off"));
    request.send(body);
  });
}

// Streams the file to the API as the body of its job's POST.
async function upload(url, file, type, onProgress) {
  const headers = { "Content-Type": type, "X-CSRF-Token": csrf() };
  const answer = await send("POST", url, file, headers, 201, (sent) => onProgress(sent / file.size));
  return JSON.parse(answer.responseText);
}

// Sends a file kind's file straight to S3 where the server offers it (POST /<kind>/uploads):
// a part at a time on its presigned URL, then the complete call queues the job. Null
// where the server offers no direct uploads (its uploads store is a local folder).
async function directUpload(kind, file, keepInput, onProgress) {
  let plan;
  try {
    plan = await api("POST", `/${kind}/uploads`, { size: file.size, keep_input: keepInput });
  } catch (error) {
    if (error.status === 404) return null;
    throw error;
  }
  const parts = [];
  let done = 0;
  for (const part of plan.parts) {
    const start = (part.part_number - 1) * plan.part_size;
    const body = file.slice(start, start + part.size);
    const answer = await send("PUT", part.url, body, {}, 200, (sent) => onProgress((done + sent) / file.size));
    done += part.size;
    parts.push({ part_number: part.part_number, etag: answer.getResponseHeader("ETag") });
  }
  return api("POST", `/${kind}/uploads/${plan.upload_id}/complete`, { parts });
}

// The kind that takes this file, from the server's declarations (the form's data-kinds):
// a PNG goes to the kind that takes image/png, any other file to the one that takes text.
async function kindFor(form, file) {
  const type = (await isPng(file)) ? "image/png" : "text/plain";
  const kind = JSON.parse(form.dataset.kinds).find((k) => k.media_type === type);
  if (!kind) throw new Error(`no job kind here takes ${type}`);
  return kind;
}

// Sends the file as its kind's job: a file kind straight to S3 where offered, else streamed.
async function sendJob(kind, file, keep, progress) {
  if (!kind.in_blocks) return upload(`/${kind.name}`, file, kind.media_type, progress);
  return (
    (await directUpload(kind.name, file, keep, progress)) ||
    (await upload(`/${kind.name}?keep_input=${keep}`, file, kind.media_type, progress))
  );
}

async function submit(event) {
  event.preventDefault();
  const form = event.target;
  const file = form.elements.file.files[0];
  if (!file) return;
  const bar = document.getElementById("upload-progress");
  const state = document.getElementById("upload-state");
  const keep = form.elements.keep_input.checked;
  const progress = (fraction) => (bar.value = fraction);
  bar.hidden = false;
  bar.value = 0;
  state.textContent = `Uploading ${file.name}…`;
  try {
    const { token } = await sendJob(await kindFor(form, file), file, keep, progress);
    state.textContent = `Submitted ${file.name} as job ${token.slice(0, 12)}.`;
    form.reset();
  } catch (error) {
    state.textContent = `Not submitted: ${error.message}`;
  }
  bar.hidden = true;
  await refreshJobs();
  refreshQuotas();
}

function jobsPage() {
  jobsWatcher = new Watcher((token, status) => {
    const row = document.getElementById(`job-${token}`);
    if (row) showStatus(row, status);
    if (FINAL.has(status.status)) ended(token);
  });
  const query = new URLSearchParams(location.search);
  const filters = document.getElementById("filters");
  filters.elements.status.value = query.get("status") || "";
  filters.elements.kind.value = query.get("kind") || "";
  document.getElementById("submit").addEventListener("submit", submit);
  refreshJobs().catch((error) => notice(`Cannot list the jobs: ${error.message}`));
  refreshQuotas().catch((error) => notice(`Cannot read the quotas: ${error.message}`));
  setInterval(() => refreshQuotas().catch(() => {}), QUOTAS_EVERY_MS);
  if (!query.get("cursor")) setInterval(() => refreshJobs().catch(() => {}), JOBS_EVERY_MS);
}

// -- one job ----------------------------------------------------------------------------------

async function jobPage() {
  const section = document.getElementById("job");
  const token = section.dataset.token;
  const render = (job) => {
    document.getElementById("status").textContent = job.status;
    showProgress(document.getElementById("progress"), job);
    if (progressOf(job) !== null) {
      document.getElementById("progress-text").textContent = `${job.progress.done} of ${job.progress.total} blocks`;
    }
    const error = document.getElementById("error");
    error.hidden = !job.error;
    error.textContent = job.error || "";
    document.getElementById("cancel").hidden = FINAL.has(job.status);
    document.getElementById("rerun").hidden = !FINAL.has(job.status);
  };
  const full = async () => {
    const job = await api("GET", `/tasks/${token}`);
    render(job);
    for (const cell of document.querySelectorAll("#timings [data-field]")) {
      const value = job[cell.dataset.field];
      const field = cell.dataset.field;
      cell.textContent = field.endsWith("_at") ? localTime(value) : field.endsWith("_s") ? duration(value) : value ?? "–";
    }
    if (job.status === "finished") showResult(token, section.dataset);
    document.getElementById("report").hidden = !job.report_url;
    return job;
  };
  document.getElementById("cancel").addEventListener("click", async () => {
    try {
      await api("DELETE", `/tasks/${token}`);
    } catch (error) {
      notice(`Not cancelled: ${error.message}`);
    }
    full();
  });
  document.getElementById("rerun").addEventListener("click", async () => {
    try {
      const { token: fresh } = await api("POST", `/tasks/${token}/rerun`);
      location.assign(`/ui/jobs/${fresh}`);
    } catch (error) {
      notice(`Not run again: ${error.message}`);
    }
  });
  const job = await full();
  if (!FINAL.has(job.status)) {
    new Watcher((_, status) => (FINAL.has(status.status) ? full() : render(status))).watch(token);
  }
}

async function showResult(token, { kind, resultType }) {
  const url = `/${kind}/${token}/result`;
  const place = document.getElementById("result");
  const download = el("a", { href: url, download: `${token}-result`, text: "Download the result" });
  if (resultType.startsWith("image/")) {
    place.replaceChildren(el("img", { src: url, alt: "The job's result image" }), el("p", {}, download));
  } else {
    // Shown as the server wrote it: JSON.parse would round a sum past 2**53.
    const text = await (await fetch(url, { credentials: "same-origin" })).text();
    const shown = el("pre", { id: "result-value", text });
    place.replaceChildren(shown, el("p", {}, download));
  }
}

// -- the operator's page --------------------------------------------------------------------

function table(headers, rows, caption) {
  const head = el("tr", {}, ...headers.map((text) => el("th", { scope: "col", text })));
  const body = rows.map((cells) => el("tr", {}, ...cells.map((cell) => el("td", {}, cell))));
  return el("table", {}, el("caption", { class: "visually-hidden", text: caption }), el("thead", {}, head), el("tbody", {}, ...body));
}

function share(fraction, label) {
  const meter = el("meter", { min: "0", max: "1", value: String(fraction) });
  meter.setAttribute("aria-label", label);
  return el("span", { class: "share" }, meter, ` ${Math.round(fraction * 100)}%`);
}

function renderLanes(overview) {
  const sections = overview.lanes.map((lane) => {
    const rows = lane.clients.map((c) => [
      c.client,
      String(c.weight),
      String(c.queued),
      String(c.running),
      duration(c.block_seconds),
      share(c.share, `${c.client}'s share of the ${lane.lane} lane`),
    ]);
    const caption = `Clients of the ${lane.lane} lane over the last ${duration(overview.window_s)}`;
    const headers = ["Client", "Weight", "Queued", "Running", "Block time", "Share"];
    return el(
      "section",
      { class: "card", "data-lane": lane.lane },
      el("h3", { text: `${lane.lane} lane` }),
      rows.length ? table(headers, rows, caption) : el("p", { text: "Idle." }),
    );
  });
  document.getElementById("lanes").replaceChildren(...sections);
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attributes, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// Grouped bars: p50, p90, p99 per client, on one seconds axis.
function leadChart(leads) {
  const figure = document.getElementById("lead-chart");
  const caption = figure.querySelector("figcaption");
  const [width, rowHeight, left] = [560, 44, 120];
  const height = Math.max(1, leads.length) * rowHeight + 30;
  const top = Math.max(1e-3, ...leads.map((lead) => lead.p99_s));
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "lead-title" });
  const x = (seconds) => left + (seconds / top) * (width - left - 100); // room for a label
  const percentiles = [["p50_s", "p50", "bar-p50"], ["p90_s", "p90", "bar-p90"], ["p99_s", "p99", "bar-p99"]];
  leads.forEach((lead, i) => {
    const y = i * rowHeight + 10;
    chart.append(svg("text", { x: 0, y: y + 20, class: "label" }, `${lead.client} (${lead.jobs})`));
    percentiles.forEach(([field, name, cls], j) => {
      const barY = y + j * 11;
      chart.append(svg("rect", { x: left, y: barY, width: Math.max(1, x(lead[field]) - left), height: 9, class: cls }));
      chart.append(svg("text", { x: x(lead[field]) + 4, y: barY + 8, class: "value" }, `${name} ${duration(lead[field])}`));
    });
  });
  const rows = leads.map((lead) => [lead.client, String(lead.jobs), duration(lead.p50_s), duration(lead.p90_s), duration(lead.p99_s)]);
  const data = table(["Client", "Jobs", "p50", "p90", "p99"], rows, "Lead-time percentiles per client");
  data.classList.add("visually-hidden");
  figure.replaceChildren(leads.length ? chart : el("p", { text: "No job ended in the last hour." }), caption, data);
}

function renderOverview(overview) {
  renderLanes(overview);
  const dispatchers = overview.dispatchers.map((d) => el(
    "tr",
    {},
    el("td", {}, el("code", { text: d.id })),
    el("td", { text: d.alive ? "yes" : "no" }),
    el("td", { text: `${duration(d.heartbeat_age_s)} ago` }),
    el("td", { text: String(d.jobs_held) }),
  ));
  document.querySelector("#dispatchers tbody").replaceChildren(...dispatchers);
  const failures = overview.failures.map((f) => el(
    "tr",
    {},
    el("td", { text: localTime(f.ended_at) }),
    el("td", { text: f.client }),
    el("td", { text: f.kind }),
    el("td", {}, el("code", { text: f.token.slice(0, 12) })),
    el("td", { text: f.error }),
  ));
  const none = el("tr", {}, el("td", { colspan: "5", text: "None in the last 7 days." }));
  document.querySelector("#failures tbody").replaceChildren(...(failures.length ? failures : [none]));
  leadChart(overview.lead_times);
}

function operatorPage() {
  const refresh = () => api("GET", "/overview").then(renderOverview, (error) => notice(`Cannot read the overview: ${error.message}`));
  refresh();
  setInterval(refresh, OVERVIEW_EVERY_MS);
}

// -- sign in and out --------------------------------------------------------------------------

function signInPage() {
  const form = document.getElementById("sign-in");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const field = form.dataset.mode === "keys" ? "key" : "client";
    try {
      await api("POST", "/ui/session", { [field]: form.elements[field].value });
      location.assign("/ui");
    } catch (error) {
      notice(`Not signed in: ${error.message}`);
    }
  });
}

function signOut() {
  const button = document.getElementById("sign-out");
  button?.addEventListener("click", async () => {
    await api("DELETE", "/ui/session").catch(() => {});
    location.assign("/ui");
  });
}

const PAGES = { jobs: jobsPage, job: jobPage, operator: operatorPage, signin: signInPage };

document.addEventListener("DOMContentLoaded", () => {
  signOut();
  PAGES[document.body.dataset.page]?.();
});
