// Scaling hints: per service, the replicas the collector's control plane would run and why,
// refreshed every few seconds from /api/v1/hints.

import { api } from "./api.js";
import { el, formatMs, formatRate, formatTime } from "./dom.js";

const POLL_MS = 5000;

export function hintsPage(root) {
  const status = el("span", { class: "status muted", text: "loading…" });
  const table = el("div", { id: "hints" });
  root.append(el("div", { class: "toolbar" }, [el("h1", { text: "Scaling hints" }), status]), table);

  async function refresh() {
    try {
      const hints = await api.hints();
      status.textContent = `updated ${formatTime(Date.now()).slice(11, 19)}`;
      status.classList.remove("error");
      table.replaceChildren(hints.length ? hintTable(hints) : el("p", { class: "empty", text: "No service has had requests recently." }));
    } catch (error) {
      status.textContent = error.message;
      status.classList.add("error");
    }
  }
  refresh();
  const timer = setInterval(refresh, POLL_MS);
  return () => clearInterval(timer);
}

function hintTable(hints) {
  const heads = ["service", "replicas now", "desired", "reason", "rate", "concurrency", "mean latency", "p95 latency", "target"];
  return el("table", { class: "hints" }, [
    el("thead", {}, el("tr", {}, heads.map((head) => el("th", { text: head })))),
    el("tbody", {}, hints.map((hint) => {
      const change = hint.desiredReplicas > hint.currentReplicas ? "up" : hint.desiredReplicas < hint.currentReplicas ? "down" : "same";
      return el("tr", { class: `scale-${change}${hint.overCapacity ? " bad" : ""}`, dataset: { service: hint.service } }, [
        el("td", {}, el("a", { href: `#/graph?node=${encodeURIComponent(hint.service)}`, text: hint.service })),
        el("td", { text: String(hint.currentReplicas) }),
        el("td", { class: "desired", text: `${hint.desiredReplicas}${change === "up" ? " ↑" : change === "down" ? " ↓" : ""}` }),
        el("td", { class: "reason", text: hint.reason }),
        el("td", { text: formatRate(hint.rps) }),
        el("td", { text: hint.concurrency.toFixed(2) }),
        el("td", { text: formatMs(hint.meanLatencyMs) }),
        el("td", { text: formatMs(hint.p95LatencyMs) }),
        el("td", { text: formatMs(hint.latencyTargetMs) }),
      ]);
    })),
  ]);
}
