-- Payout controls (issue 12): a payout above GATEWAY_PAYOUT_APPROVAL_USD waits for an admin's
-- approval before Stripe is asked to send it, and what the seller asked for is kept, so a reused
-- Idempotency-Key with another body is refused (409) instead of answered with the first payout.

ALTER TABLE payouts
    -- Decided when the payout is requested, from its amount and the setting in force then.
    ADD COLUMN approval_required boolean NOT NULL DEFAULT false,
    -- The admin who approved it, and when: both or neither, and only on a payout that needed it.
    ADD COLUMN approved_by uuid REFERENCES users (id),
    ADD COLUMN approved_at timestamptz,
    -- What the request asked for: the amount in micro-USD, or 0 for "everything available" (an
    -- explicit amount is never 0). NULL on payouts requested before this migration: their replays
    -- are answered as before, whatever the body.
    ADD COLUMN requested_micro bigint CHECK (requested_micro >= 0),
    ADD CONSTRAINT payouts_approved_together CHECK ((approved_by IS NULL) = (approved_at IS NULL)),
    ADD CONSTRAINT payouts_approved_only_if_required CHECK (approved_at IS NULL OR approval_required);
