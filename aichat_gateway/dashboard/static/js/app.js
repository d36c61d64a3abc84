// The console's page-wide behaviour, loaded once by the layout (a module: no inline script anywhere).
// Page modules import api.js, never this file: a module imported under another URL (this one is
// loaded as app.js?v=<hash>) would run again and register every listener twice.
// - htmx requests carry the CSRF header the API checks (the cookie's value, readable on purpose);
// - a request answered 401 (the session ended) sends the browser to log in and come back;
// - buttons with data-copy copy the text of the element it names, and say so for screen readers.

import { csrfToken } from "./api.js";

document.addEventListener("htmx:configRequest", (event) => {
  event.detail.headers["x-csrf-token"] = csrfToken();
});

document.addEventListener("htmx:responseError", (event) => {
  if (event.detail.xhr.status === 401) {
    const here = window.location.pathname + window.location.search;
    window.location.assign("/login?next=" + encodeURIComponent(here));
  }
});

document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.getElementById(button.dataset.copy);
  if (!source) return;
  const label = button.textContent;
  try {
    await navigator.clipboard.writeText(source.textContent.trim());
    button.textContent = "Copied";
  } catch {
    button.textContent = "Select and copy";
    window.getSelection().selectAllChildren(source);
  }
  const status = document.getElementById("copy-status");
  if (status) status.textContent = button.textContent;
  setTimeout(() => { button.textContent = label; }, 2000);
});
