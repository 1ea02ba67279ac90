// Live progress without a page build: poll the API for each run (and request) on the page.
"use strict";
(function () {
  const busy = (s) => s === "queued" || s === "running";
  // an ended run's bar: full when it did its work, empty when it failed or was stopped
  const ended = (s) => (s === "succeeded" || s === "warning" ? 1 : 0);
  async function get(url) {
    const r = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}});
    if (!r.ok) throw new Error(url + ": " + r.status);
    return r.json();
  }
  function showRun(run) {
    document.querySelectorAll('[data-run="' + run.id + '"]').forEach((bar) => {
      const p = run.progress;
      if (p && p.total) { bar.max = p.total; bar.value = p.done; }
      else if (!busy(run.state)) { bar.max = 1; bar.value = ended(run.state); }
    });
    document.querySelectorAll('[data-run-phase="' + run.id + '"]').forEach((el) => {
      el.textContent = (run.progress ? run.progress.phase + " " : "") + (busy(run.state) ? "" : "(" + run.state + ")");
    });
    document.querySelectorAll('[data-run-state="' + run.id + '"]').forEach((el) => {
      el.textContent = run.state; el.className = "badge " + run.state;
    });
  }
  async function pollRuns() {
    const ids = new Set([...document.querySelectorAll("[data-run]")].map((e) => e.dataset.run));
    let again = false;
    for (const id of ids) {
      try { const run = await get("/api/v1/runs/" + id); showRun(run); again ||= busy(run.state); }
      catch (e) { again = true; }
    }
    if (again) setTimeout(pollRuns, 1000);
  }
  async function pollRequest(box) {
    try {
      const q = await get("/api/v1/requests/" + box.dataset.request);
      document.getElementById("taken").textContent = q.taken_by
        ? "taken by the service on " + q.taken_by : "waiting for the service";
      box.replaceChildren(...q.runs.map((r) => {
        const p = document.createElement("p");
        const a = document.createElement("a"); a.href = "/runs/" + r.id; a.textContent = r.id;
        const s = document.createElement("span"); s.className = "badge " + r.state; s.textContent = r.state;
        const bar = document.createElement("progress");
        if (r.progress && r.progress.total) { bar.max = r.progress.total; bar.value = r.progress.done; }
        else if (!busy(r.state)) { bar.max = 1; bar.value = ended(r.state); }
        const err = r.result && r.result.error ? " · " + r.result.error : "";
        p.append("run ", a, " " + (r.vm || "") + ": ", s, " ", bar, " " + (r.progress ? r.progress.phase : "") + err);
        return p;
      }));
      box.dataset.done = q.done ? "yes" : "no";
      document.getElementById("request-state").textContent = q.done ? "done" : "in progress";
      if (!q.done) setTimeout(() => pollRequest(box), 1000);
    } catch (e) { setTimeout(() => pollRequest(box), 2000); }
  }
  document.addEventListener("DOMContentLoaded", () => {
    // a console tail is read from its end (the login prompt, the last error)
    document.querySelectorAll("pre.console").forEach((pre) => { pre.scrollTop = pre.scrollHeight; });
    if (document.querySelector("[data-run]")) pollRuns();
    const box = document.getElementById("request-runs");
    if (box && box.dataset.done !== "yes") pollRequest(box);
  });
})();
