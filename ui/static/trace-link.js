// One trace of a search answer as a link to its waterfall (the search list and the graph's examples).

import { el, formatNs, formatTime, nanosToMs } from "./dom.js";

export function traceLink(trace) {
  return el("li", {}, el("a", { href: `#/trace/${trace.traceId}`, class: "trace-link" }, [
    el("span", { class: "duration", text: formatNs(Number(trace.durationNano)) }),
    ` ${trace.rootService} `,
    el("strong", { text: trace.rootName }),
    ` · ${trace.spanCount} spans${trace.errorCount ? ` · ${trace.errorCount} errors` : ""} · ${formatTime(nanosToMs(trace.startTimeUnixNano)).slice(11)}`,
  ]));
}
