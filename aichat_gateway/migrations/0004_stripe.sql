-- Stripe top-ups: the buyer's Stripe customer, one row per top-up (one PaymentIntent each), every
-- webhook event received, and the disputes seen. Amounts are integer micro-USD like the ledger's;
-- Stripe's cents are converted at the edge (1 cent = 10_000 micro-USD).

-- Created once per account, on its first top-up.
CREATE TABLE stripe_customers (
    user_id     uuid PRIMARY KEY REFERENCES users (id),
    customer_id text NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- status: 'creating' until Stripe has answered with a PaymentIntent, then 'pending' until a webhook
-- says how it ended. 'failed' is not final: a buyer may retry a declined PaymentIntent with another
-- card, and a later payment_intent.succeeded still credits it.
CREATE TABLE topups (
    id                   uuid PRIMARY KEY,
    user_id              uuid NOT NULL REFERENCES users (id),
    -- What the buyer asked for; what is credited is what Stripe received (credited_micro).
    amount_micro         bigint NOT NULL CHECK (amount_micro > 0),
    payment_intent_id    text UNIQUE,
    status               text NOT NULL DEFAULT 'creating'
                         CHECK (status IN ('creating', 'pending', 'succeeded', 'failed')),
    credited_micro       bigint NOT NULL DEFAULT 0 CHECK (credited_micro >= 0),
    -- Cumulative refunds debited so far (Stripe's amount_refunded), so each refund event debits
    -- only what is new, whatever order the events come in.
    refunded_micro       bigint NOT NULL DEFAULT 0 CHECK (refunded_micro >= 0),
    credited_transfer_id bigint REFERENCES transfers (id),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT topups_credited_once CHECK ((status = 'succeeded') = (credited_transfer_id IS NOT NULL))
);
CREATE INDEX topups_user_created ON topups (user_id, created_at DESC);

-- One row per Stripe event id, written in the same transaction as the event's ledger effect (if
-- any): a replayed event finds its row and does nothing. outcome says what the event did.
CREATE TABLE stripe_events (
    event_id    text PRIMARY KEY,
    type        text NOT NULL,
    outcome     text NOT NULL,
    topup_id    uuid REFERENCES topups (id),
    received_at timestamptz NOT NULL DEFAULT now()
);

-- Disputes, so their events can come in any order: a dispute closed as won before its "created"
-- event arrives is recorded as won without moving money, and the late "created" then does nothing.
CREATE TABLE stripe_disputes (
    dispute_id   text PRIMARY KEY,
    topup_id     uuid NOT NULL REFERENCES topups (id),
    amount_micro bigint NOT NULL CHECK (amount_micro > 0),
    status       text NOT NULL CHECK (status IN ('open', 'won', 'lost')),
    -- Whether the buyer is currently debited for it.
    debited      boolean NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
