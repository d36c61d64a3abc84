-- Users, gateway API keys, and the listings the hot path routes to.
CREATE TABLE users (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    email         text NOT NULL CHECK (length(email) BETWEEN 3 AND 320),
    password_hash text NOT NULL,
    role          text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_lower_key ON users (lower(email));

-- Keys are stored only as SHA-256 of the secret; `prefix` is the first characters, shown in lists.
CREATE TABLE api_keys (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    prefix       text NOT NULL,
    key_hash     bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX api_keys_user_created ON api_keys (user_id, created_at);

CREATE TABLE listings (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Shown to buyers instead of the seller or the row id.
    public_id        text NOT NULL UNIQUE,
    seller_id        uuid NOT NULL REFERENCES users (id),
    name             text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    provider         text NOT NULL CHECK (provider IN ('openai', 'anthropic')),
    base_url         text NOT NULL,
    -- The provider key, encrypted by the vault ("<key id>:<nonce+ciphertext>"), never stored in clear.
    key_ciphertext   text NOT NULL,
    key_last4        text NOT NULL,
    -- HMAC of the provider key, so the same key cannot be listed twice.
    key_fingerprint  bytea NOT NULL,
    price_multiplier numeric(10, 4) CHECK (price_multiplier > 0),
    input_micro_per_million  bigint CHECK (input_micro_per_million >= 0),
    output_micro_per_million bigint CHECK (output_micro_per_million >= 0),
    limits           jsonb NOT NULL DEFAULT '{}'::jsonb,
    status           text NOT NULL DEFAULT 'active'
                     CHECK (status IN ('active', 'paused', 'exhausted', 'cooling', 'invalid', 'disabled')),
    status_reason    text,
    attested_at      timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz,
    CHECK ((price_multiplier IS NOT NULL)
           <> (input_micro_per_million IS NOT NULL AND output_micro_per_million IS NOT NULL))
);
CREATE UNIQUE INDEX listings_live_key_fingerprint ON listings (key_fingerprint) WHERE deleted_at IS NULL;
CREATE INDEX listings_seller ON listings (seller_id, created_at);

CREATE TABLE listing_models (
    listing_id     uuid NOT NULL REFERENCES listings (id) ON DELETE CASCADE,
    model          text NOT NULL,
    upstream_model text NOT NULL,
    PRIMARY KEY (listing_id, model)
);
CREATE INDEX listing_models_model ON listing_models (model);
