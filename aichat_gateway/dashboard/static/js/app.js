// The console's shared behaviour, loaded on every page (a module: no inline script anywhere).
// - htmx requests carry the CSRF header the API checks (the cookie's value, readable on purpose);
// - a request answered 401 (the session ended) sends the browser to log in and come back;
// - buttons with data-copy copy the text of the element it names, and say so for screen readers.

function cookie(name) {
  const found = document.cookie.split("; ").find((part) => part.startsWith(name + "="));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

document.addEventListener("htmx:configRequest", (event) => {
  event.detail.headers["x-csrf-token"] = cookie("aichat_csrf");
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

/** Fetch JSON from our own API with the session cookie and CSRF header (for page modules). */
export async function api(path, options = {}) {
  const headers = { "content-type": "application/json", "x-csrf-token": cookie("aichat_csrf"), ...(options.headers || {}) };
  const response = await fetch(path, { credentials: "same-origin", ...options, headers });
  if (response.status === 401) {
    window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname));
  }
  return response;
}
