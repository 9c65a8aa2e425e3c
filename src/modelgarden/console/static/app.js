// The console's shell: one page per hash (#models, #playground, #charts). Each page module
// has show() and hide(); a hidden page stops its timers, so a console left open in a
// background tab asks the gateway for nothing it does not display.

import { json } from "./api.js";
import * as charts from "./charts.js";
import * as models from "./models.js";
import * as playground from "./playground.js";

const pages = { models, playground, charts };
let current = null;

function route() {
  const name = location.hash.slice(1) in pages ? location.hash.slice(1) : "models";
  if (current === name) return;
  if (current) {
    pages[current].hide();
    document.getElementById(`page-${current}`).hidden = true;
  }
  current = name;
  document.getElementById(`page-${name}`).hidden = false;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.page === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  pages[name].show();
}

document.addEventListener("visibilitychange", () => {
  if (!current) return;
  if (document.hidden) pages[current].hide();
  else pages[current].show();
});

window.addEventListener("hashchange", route);
route();
json("/api/version")
  .then((v) => (document.getElementById("version").textContent = `Ollama API ${v.version}`))
  .catch(() => {});
