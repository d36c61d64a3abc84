-- Usage beyond the hold. A provider may bill more than the worst case the gateway held (an allowance
-- too low, a provider counting differently). The buyer pays at most the hold; the seller is still
-- paid for all of it, and the difference is the platform's own loss, booked on its own account
-- ('platform_exposure', no owner, balance <= 0) so it is never silently dropped:
--     buyer -C, platform_exposure -X, seller +S, platform +F   with S + F = C + X.
ALTER TABLE ledger_accounts DROP CONSTRAINT ledger_accounts_kind_check;
ALTER TABLE ledger_accounts ADD CONSTRAINT ledger_accounts_kind_check
    CHECK (kind IN ('buyer', 'seller', 'platform', 'stripe_clearing', 'promotions', 'payouts', 'platform_exposure'));

-- What the request cost beyond its hold (X above); the fee is taken on C + X.
ALTER TABLE usage_records
    ADD COLUMN beyond_hold_micro bigint NOT NULL DEFAULT 0 CONSTRAINT usage_records_beyond_hold_micro_check
        CHECK (beyond_hold_micro >= 0);
ALTER TABLE usage_records DROP CONSTRAINT usage_records_fee_within_cost;
ALTER TABLE usage_records ADD CONSTRAINT usage_records_fee_within_cost
    CHECK (fee_micro <= cost_micro + beyond_hold_micro);
-- Only a request that was held can have cost more than its hold.
ALTER TABLE usage_records ADD CONSTRAINT usage_records_beyond_only_when_held
    CHECK (beyond_hold_micro = 0 OR held_micro > 0);
