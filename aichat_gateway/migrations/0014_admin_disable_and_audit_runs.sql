-- The admin console (issue 14, point 6).
-- A disabled account cannot log in; its sessions are ended and its keys refused when it is disabled
-- (the key cache's query reads this column on a miss, so the hot path's hit stays a dict look-up).
ALTER TABLE users ADD COLUMN disabled_at timestamptz;

-- The ledger audit's runs (the dashboard's "Run audit", `aichat-gateway audit`): the last one is shown.
CREATE TABLE audit_runs (
    id bigserial PRIMARY KEY,
    ran_at timestamptz NOT NULL DEFAULT now(),
    ok boolean NOT NULL,
    findings jsonb NOT NULL DEFAULT '[]'::jsonb,
    accounts integer NOT NULL,
    transfers integer NOT NULL,
    ran_by uuid REFERENCES users (id) ON DELETE SET NULL
);
