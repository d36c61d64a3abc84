// The browser's own gateway key, for pages that call /v1 directly (chat, compare, playground).
// It is the key of this login session (POST /api/auth/session-key): the same on every call in the
// session, expiring with it and refused by the gateway once the session ends (logout). Kept only in
// this page's memory, never in storage.
import { api } from "./api.js";

let pending = null;

/** `{ key, expires_at }` of this session's key, fetched once per page (again once it has expired). */
export function sessionKey() {
  if (pending === null) {
    pending = api("/api/auth/session-key", { method: "POST" }).then(async (response) => {
      if (!response.ok) {
        pending = null;
        throw new Error("no session key (" + response.status + ")");
      }
      const found = await response.json();
      const expiresIn = Date.parse(found.expires_at) - Date.now();
      setTimeout(() => { pending = null; }, Math.max(0, expiresIn));
      return found;
    });
  }
  return pending;
}

/** Headers for a /v1 call with this session's key. */
export async function v1Headers() {
  const { key } = await sessionKey();
  return { "content-type": "application/json", authorization: "Bearer " + key };
}
