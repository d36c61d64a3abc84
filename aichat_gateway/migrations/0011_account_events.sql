-- The audit trail: what happened to an account, who did it and when (issue 14, point 7).
-- `subject_id` is the account the event belongs to (its owner sees it; admins see all); `actor_id`
-- who acted (the owner, an admin, or NULL for the system and anonymous callers). A login failure
-- for an address with no account has no subject: only admins see it.
CREATE TABLE account_events (
    id bigserial PRIMARY KEY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    subject_id uuid REFERENCES users (id) ON DELETE CASCADE,
    actor_id uuid REFERENCES users (id) ON DELETE SET NULL,
    action text NOT NULL CONSTRAINT account_events_action_check CHECK (action ~ '^[a-z_]+\.[a-z_]+$'),
    target_type text,
    target_id text,
    ip inet,
    detail jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE INDEX account_events_subject_idx ON account_events (subject_id, id DESC);
CREATE INDEX account_events_action_idx ON account_events (action, id DESC);
