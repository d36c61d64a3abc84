-- Seller payouts: where a seller wants to be paid (a Stripe Connect account), and one row per payout.
-- Money leaves the seller's earnings account when a payout is requested (transfer 'payout:<id>'),
-- so what is pending can never be requested twice; a failed or cancelled payout puts it back
-- ('payout-reversal:<id>'). Amounts are integer micro-USD, always whole cents (Stripe's unit).

CREATE TABLE seller_payout_accounts (
    user_id           uuid PRIMARY KEY REFERENCES users (id),
    stripe_account_id text NOT NULL CHECK (stripe_account_id ~ '^acct_[A-Za-z0-9]{6,64}$'),
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- status: 'pending' from the request until it is paid (by Stripe, or marked paid by an admin after
-- a bank transfer), failed (Stripe refused it) or cancelled (by an admin). Only 'pending' changes.
CREATE TABLE payouts (
    id                    uuid PRIMARY KEY,
    seller_id             uuid NOT NULL REFERENCES users (id),
    amount_micro          bigint NOT NULL CHECK (amount_micro > 0 AND amount_micro % 10000 = 0),
    status                text NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'paid', 'failed', 'cancelled')),
    -- 'stripe' when the seller had a connected account at request time (its id is kept in
    -- destination, so changing the account later never redirects money already requested);
    -- an admin's mark-paid (a bank transfer) makes it 'manual'.
    method                text NOT NULL CHECK (method IN ('stripe', 'manual')),
    destination           text,
    -- Set by an automatic request (the weekly run: 'payout-run:<seller>:<yyyy-Www>'): one payout per key.
    request_key           text UNIQUE,
    transfer_id           bigint NOT NULL REFERENCES transfers (id),
    reversal_transfer_id  bigint REFERENCES transfers (id),
    stripe_transfer_id    text UNIQUE,
    -- An admin's mark-paid: the bank transfer's reference, and who decided (mark-paid or cancel).
    reference             text,
    decided_by            uuid REFERENCES users (id),
    failure_reason        text,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    paid_at               timestamptz,
    CONSTRAINT payouts_stripe_has_destination CHECK (method <> 'stripe' OR destination IS NOT NULL),
    CONSTRAINT payouts_stripe_transfer_when_paid CHECK (stripe_transfer_id IS NULL OR status = 'paid' AND method = 'stripe'),
    CONSTRAINT payouts_reversed_when_undone CHECK ((status IN ('failed', 'cancelled')) = (reversal_transfer_id IS NOT NULL)),
    CONSTRAINT payouts_paid_at CHECK ((status = 'paid') = (paid_at IS NOT NULL))
);
-- The seller's list: newest first, keyset-paginated by (created_at, id).
CREATE INDEX payouts_seller_created ON payouts (seller_id, created_at DESC, id DESC);
-- What the scheduled run still has to send.
CREATE INDEX payouts_pending ON payouts (created_at) WHERE status = 'pending';
