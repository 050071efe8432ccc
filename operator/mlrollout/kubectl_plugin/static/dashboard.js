// kubectl mlrollout dashboard: live updates (server-sent events) and commands (with a confirmation).
// No framework and no build step: the server renders every fragment; this only puts them in place.
"use strict";
(() => {
  const token = document.querySelector('meta[name="mlrollout-token"]').content;
  const live = document.getElementById("live");
  const main = document.getElementById("main");
  const result = document.getElementById("command-result");
  const stream = document.body.dataset.stream;

  const say = (text, css) => { live.textContent = text; live.className = css; };

  if (stream) {
    const events = new EventSource(stream);
    events.onopen = () => say("live", "ok");
    events.onerror = () => say("reconnecting...", "warn");
    events.addEventListener("body", (e) => {
      const input = document.getElementById("to-revision");
      const kept = input ? input.value : "";
      main.innerHTML = JSON.parse(e.data).html;
      const again = document.getElementById("to-revision");
      if (again) again.value = kept;
    });
    events.addEventListener("row", (e) => {
      const d = JSON.parse(e.data);
      const old = document.getElementById(d.id);
      if (d.deleted) { if (old) old.remove(); return; }
      const holder = document.createElement("tbody");
      holder.innerHTML = d.html;
      const fresh = holder.firstElementChild;
      if (old) old.replaceWith(fresh); else document.getElementById("rows").appendChild(fresh);
    });
    events.addEventListener("rows", (e) => {
      document.getElementById("rows").innerHTML = JSON.parse(e.data).html;
    });
    events.addEventListener("refused", (e) => {
      main.innerHTML = JSON.parse(e.data).html;
      events.close();
      say("refused", "error");
    });
    events.addEventListener("reload", () => window.location.reload());
  }

  const dialog = document.getElementById("confirm");
  const confirmed = (text) => new Promise((resolve) => {
    document.getElementById("confirm-text").textContent = text;
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });

  document.addEventListener("click", async (ev) => {
    const button = ev.target.closest("button.command");
    if (!button) return;
    const box = button.closest(".commands");
    const verb = button.dataset.verb;
    const input = document.getElementById("to-revision");
    const to = verb === "undo" && input && input.value ? Number(input.value) : null;
    const what = `${button.textContent} ${box.dataset.namespace}/${box.dataset.name}` +
      (to ? ` to revision ${to}` : "") + "?";
    if (!(await confirmed(what))) return;
    const response = await fetch("/command", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Mlrollout-Token": token },
      body: JSON.stringify({ namespace: box.dataset.namespace, name: box.dataset.name, verb, toRevision: to }),
    });
    const answer = await response.json();
    result.textContent = answer.message;
    result.className = response.ok ? "ok" : "error";
  });
})();
