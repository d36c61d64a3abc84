-- The money ledger: double entry, integer micro-USD (1 USD = 1_000_000), Postgres is the truth.
-- An account's balance is the sum of its entries; all balances sum to zero. `aichat-gateway audit`
-- checks both, and the other invariants, against these tables.

-- One row per (kind, owner). Buyers and sellers own their account; the four system accounts
-- (platform revenue, Stripe clearing, promotions, payouts) have no owner, and NULLS NOT DISTINCT
-- makes each of them unique too, so get-or-create can rely on ON CONFLICT for every kind.
-- The FK has no ON DELETE: a user who ever held money cannot vanish from under the ledger.
CREATE TABLE ledger_accounts (
    id            bigserial PRIMARY KEY,
    kind          text NOT NULL
                  CHECK (kind IN ('buyer', 'seller', 'platform', 'stripe_clearing', 'promotions', 'payouts')),
    owner_id      uuid REFERENCES users (id),
    -- Denormalised sum of the entries, kept by billing/ledger.py under a row lock, so reading a
    -- balance never scans the entries.
    balance_micro bigint NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT ledger_accounts_kind_owner_key UNIQUE NULLS NOT DISTINCT (kind, owner_id),
    CONSTRAINT ledger_accounts_owner_by_kind CHECK ((kind IN ('buyer', 'seller')) = (owner_id IS NOT NULL))
);

-- One row per movement of money. The idempotency key is what makes every writer (settlement worker,
-- Stripe webhooks, payouts) safe to retry: a second post with the same key changes nothing.
CREATE TABLE transfers (
    id              bigserial PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE,
    kind            text NOT NULL
                    CHECK (kind IN ('topup', 'usage', 'credit', 'refund', 'dispute', 'dispute_won',
                                    'payout', 'payout_failed', 'adjustment')),
    memo            jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now()
);

-- The legs of each transfer; they sum to zero per transfer. balance_after_micro is the account's
-- running balance in id order, so a statement of account needs no window function, and the audit
-- can tell exactly where a stored balance went wrong.
CREATE TABLE ledger_entries (
    id                  bigserial PRIMARY KEY,
    transfer_id         bigint NOT NULL REFERENCES transfers (id),
    account_id          bigint NOT NULL REFERENCES ledger_accounts (id),
    amount_micro        bigint NOT NULL CHECK (amount_micro <> 0),
    balance_after_micro bigint NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now()
);
-- Statements of account (newest first, keyset-paginated by id).
CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);
-- A transfer's legs: the audit and the usage-record check join entries by transfer.
CREATE INDEX ledger_entries_transfer ON ledger_entries (transfer_id);

-- One row per settled /v1 request, written by the settlement worker (idempotent on request_id).
-- key_id, listing_id and seller_id carry no FK on purpose: a usage row is a historical record and
-- must survive the deletion of the key or listing it names.
CREATE TABLE usage_records (
    request_id        text PRIMARY KEY,
    buyer_id          uuid NOT NULL,
    key_id            uuid,
    listing_id        uuid,
    seller_id         uuid,
    model             text NOT NULL DEFAULT '',
    prompt_tokens     integer NOT NULL DEFAULT 0 CHECK (prompt_tokens >= 0),
    completion_tokens integer NOT NULL DEFAULT 0 CHECK (completion_tokens >= 0),
    cost_micro        bigint NOT NULL DEFAULT 0 CHECK (cost_micro >= 0),
    held_micro        bigint NOT NULL DEFAULT 0 CHECK (held_micro >= 0),
    fee_micro         bigint NOT NULL DEFAULT 0 CHECK (fee_micro >= 0),
    outcome           text NOT NULL DEFAULT '',
    status            integer NOT NULL DEFAULT 0,
    stream            boolean NOT NULL DEFAULT false,
    -- When the request was made (from the usage event), not when it was settled.
    created_at        timestamptz NOT NULL,
    settled_at        timestamptz NOT NULL DEFAULT now(),
    -- The usage transfer ('usage:' || request_id); NULL for a request that cost nothing.
    transfer_id       bigint REFERENCES transfers (id),
    -- A hold is the worst case, so a request never costs more than was held; with no hold
    -- (held 0) it must cost nothing.
    CONSTRAINT usage_records_cost_within_hold CHECK (cost_micro <= held_micro OR held_micro = 0 AND cost_micro = 0),
    CONSTRAINT usage_records_fee_within_cost CHECK (fee_micro <= cost_micro)
);
-- The buyer's usage page: newest first, keyset-paginated by (created_at, request_id).
CREATE INDEX usage_records_buyer_created ON usage_records (buyer_id, created_at DESC, request_id);
CREATE INDEX usage_records_key_created ON usage_records (key_id, created_at);
CREATE INDEX usage_records_seller_created ON usage_records (seller_id, created_at);
CREATE INDEX usage_records_listing_created ON usage_records (listing_id, created_at);
