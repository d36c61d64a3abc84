-- Per-key settings, all optional (NULL = none):
--   routing: default router preferences for every request made with the key, the same object as a
--     request's `provider` field (validated by the application; stored normalised, never '{}').
--   daily/monthly spend caps in integer micro-USD, per UTC day and UTC month; enforced by the hold.
ALTER TABLE api_keys
    ADD COLUMN routing jsonb CONSTRAINT api_keys_routing_is_object
        CHECK (routing IS NULL OR jsonb_typeof(routing) = 'object'),
    ADD COLUMN daily_spend_cap_micro bigint CONSTRAINT api_keys_daily_spend_cap_positive
        CHECK (daily_spend_cap_micro > 0),
    ADD COLUMN monthly_spend_cap_micro bigint CONSTRAINT api_keys_monthly_spend_cap_positive
        CHECK (monthly_spend_cap_micro > 0);
