// sparseq dashboard: the little behaviour the server-rendered pages need. No library, nothing from another host.
"use strict";

// A running job's page polls its live part (status, progress, phase, step, loss, ETA) once a second and reloads
// the whole page once the job has finished, so that the result, the pictures and the artifacts appear.
function pollLive() {
  const live = document.getElementById("live");
  if (!live || live.dataset.live !== "yes") return;
  const url = live.dataset.url;
  const tick = async () => {
    let next = null;
    try {
      const response = await fetch(url, { headers: { Accept: "text/html" }, cache: "no-store" });
      if (response.redirected || response.status === 401) { window.location.reload(); return; }
      if (response.ok) {
        const holder = document.createElement("div");
        holder.innerHTML = await response.text();
        next = holder.querySelector("#live");
      }
    } catch (error) {
      // the server is restarting or the network dropped: try again at the next tick
    }
    const current = document.getElementById("live");
    if (next && current) {
      current.replaceWith(next);
      if (next.dataset.live !== "yes") { window.location.reload(); return; }
    }
    window.setTimeout(tick, 1000);
  };
  window.setTimeout(tick, 1000);
}

// A list with unfinished jobs refreshes itself every few seconds.
function refreshList() {
  const list = document.querySelector("[data-refresh]");
  if (!list) return;
  window.setTimeout(() => window.location.reload(), 1000 * Number(list.dataset.refresh || 5));
}

// Forms that undo work ask first.
function confirmForms() {
  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  pollLive();
  refreshList();
  confirmForms();
});
