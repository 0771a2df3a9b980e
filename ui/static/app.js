// The single page: hash routes to the three views. Each view builds into a fresh <main>; a view
// that polls returns a function that stops it when the route changes.
//   #/graph?range=5m&node=x | &from=a&to=b     the live service graph
//   #/search?service=...&tag=k=v...             trace search
//   #/trace/<traceId>                           one trace's waterfall
//   #/hints                                     the control plane's scaling hints

import { el } from "./dom.js";
import { graphPage } from "./graph-page.js";
import { hintsPage } from "./hints-page.js";
import { searchPage } from "./search-page.js";
import { tracePage } from "./trace-page.js";

let stopCurrent = null;

function route() {
  const hash = location.hash.replace(/^#/, "") || "/graph";
  const [path, query = ""] = hash.split("?");
  const params = new URLSearchParams(query);
  stopCurrent?.();
  stopCurrent = null;
  const main = el("main", { id: "view" });
  document.getElementById("view").replaceWith(main);
  const section = path.split("/")[1];
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.section === section);
  if (section === "trace" && path.split("/")[2]) {
    tracePage(main, decodeURIComponent(path.split("/")[2]));
    document.title = "Trace · Tracemesh";
  } else if (section === "search") {
    searchPage(main, params);
    document.title = "Trace search · Tracemesh";
  } else if (section === "hints") {
    stopCurrent = hintsPage(main);
    document.title = "Scaling hints · Tracemesh";
  } else {
    stopCurrent = graphPage(main, params);
    document.title = "Service graph · Tracemesh";
  }
}

window.addEventListener("hashchange", route);
route();
