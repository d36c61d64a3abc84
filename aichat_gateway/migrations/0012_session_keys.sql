-- Session keys (issue 14, point 2): the gateway key a browser's session uses for its own /v1 calls.
-- A key with `expires_at` is a session key, the only kind of key that expires: it lives exactly as
-- long as its session (same expiry; it stops when the session row is revoked, and once the row is
-- pruned `session_id` becomes NULL, which also stops it). At most one key per session.
-- Usage rows name keys without a foreign key, so a session key's row stays for history.
ALTER TABLE api_keys
    ADD COLUMN session_id uuid REFERENCES sessions (id) ON DELETE SET NULL,
    ADD COLUMN expires_at timestamptz,
    ADD CONSTRAINT api_keys_session_key_expires CHECK (session_id IS NULL OR expires_at IS NOT NULL);
CREATE UNIQUE INDEX api_keys_one_per_session ON api_keys (session_id);
