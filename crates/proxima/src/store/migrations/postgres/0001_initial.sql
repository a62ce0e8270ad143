-- Keys, teams and the usage ledger. Released: never edit, add a migration instead.

CREATE TABLE teams (
    name TEXT PRIMARY KEY,
    models TEXT,
    rpm BIGINT,
    tpm BIGINT,
    budget_nanos BIGINT,
    budget_period TEXT,
    metadata TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE INDEX teams_updated ON teams (updated_at);

CREATE TABLE keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    team TEXT,
    models TEXT,
    rpm BIGINT,
    tpm BIGINT,
    budget_nanos BIGINT,
    budget_period TEXT,
    expires_at BIGINT,
    metadata TEXT NOT NULL,
    admin BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX keys_updated ON keys (updated_at);

-- No other index: ids begin with the time, so the time ranges that reports, the log and
-- budget seeds read are primary-key ranges, and each of the thousands of rows a second
-- updates one tree.
CREATE TABLE usage_ledger (
    id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    key_id TEXT,
    key_name TEXT,
    team TEXT,
    end_user TEXT,
    model TEXT NOT NULL,
    provider TEXT,
    upstream_model TEXT,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cost_nanos BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    ttft_ms BIGINT,
    status BIGINT NOT NULL,
    error_code TEXT,
    cache TEXT,
    attempts BIGINT NOT NULL,
    stream BIGINT NOT NULL,
    metadata TEXT
);
