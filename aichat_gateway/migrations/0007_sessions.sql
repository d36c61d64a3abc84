-- Server-side sessions: one row per session JWT, keyed by its `jti` (token_id), so a session can be
-- ended before its token expires (logout, a password change, create-admin, an admin). The token
-- itself is never stored; `id` is the public handle shown in a user's session list.
-- Rows are pruned some time after they expire (the token is dead by then anyway).
CREATE TABLE sessions (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_id    text NOT NULL UNIQUE CHECK (length(token_id) BETWEEN 1 AND 128),
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL,
    revoked_at  timestamptz,
    user_agent  text CHECK (length(user_agent) <= 256),
    ip          text CHECK (length(ip) <= 64),
    CHECK (expires_at > created_at)
);
CREATE INDEX sessions_user_live ON sessions (user_id, created_at) WHERE revoked_at IS NULL;
CREATE INDEX sessions_expires_at ON sessions (expires_at);
