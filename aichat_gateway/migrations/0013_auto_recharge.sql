-- Auto-recharge (issue 14, point 3): top the buyer up by `amount_micro` from their default saved
-- card when the available balance falls below `threshold_micro`. Off by default; a failed charge
-- turns it off and says why (`disabled_reason`, shown on the billing page until changed).
CREATE TABLE auto_recharge (
    user_id         uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    enabled         boolean NOT NULL DEFAULT false,
    threshold_micro bigint NOT NULL CHECK (threshold_micro > 0),
    amount_micro    bigint NOT NULL CHECK (amount_micro > 0),
    disabled_reason text,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auto_recharge_enabled ON auto_recharge (user_id) WHERE enabled;

-- A top-up the auto-recharge made (its failure turns auto-recharge off).
ALTER TABLE topups ADD COLUMN auto boolean NOT NULL DEFAULT false;
