// Calls to the gateway's own /api from page modules: the session cookie plus the CSRF header the
// API checks (the CSRF cookie's value, readable on purpose). No side effects, so importing it from
// any module, under any URL, is safe (app.js, the page-wide behaviour, is loaded once by the layout).

/** A cookie's value, or "". */
export function cookie(name) {
  const found = document.cookie.split("; ").find((part) => part.startsWith(name + "="));
  return found ? decodeURIComponent(found.slice(name.length + 1)) : "";
}

export function csrfToken() {
  return cookie("aichat_csrf");
}

/** fetch() of our own API with the session and CSRF header; a 401 sends the browser to log in and back. */
export async function api(path, options = {}) {
  const headers = { "content-type": "application/json", "x-csrf-token": csrfToken(), ...(options.headers || {}) };
  const response = await fetch(path, { credentials: "same-origin", ...options, headers });
  if (response.status === 401) {
    window.location.assign("/login?next=" + encodeURIComponent(window.location.pathname + window.location.search));
  }
  return response;
}
