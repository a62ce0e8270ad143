-- The audit log of admin actions, and the usage ledger's daily rollups that outlive its raw
-- rows under `[storage] log_retention`. Released: never edit, add a migration instead.

-- One row per admin action, written before the change is made (`outcome` 'pending') and
-- completed after it ('ok' or 'error' with the status and code the caller got). Ids begin
-- with the time, like the ledger's, so newest-first pages are primary-key ranges.
CREATE TABLE audit_log (
    id TEXT PRIMARY KEY,
    at BIGINT NOT NULL,
    actor_id TEXT NOT NULL,
    actor_name TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT,
    detail TEXT NOT NULL,
    request_id TEXT,
    outcome TEXT NOT NULL,
    status BIGINT,
    error_code TEXT
);

-- The ledger summed per UTC day (days since the epoch) and key, team, model and upstream.
-- A raw row is deleted in the same transaction that adds it here, so every request is counted
-- once: raw or rolled up. '' stands for a column the raw rows left empty (NULL cannot be part
-- of a primary key). `latency_ms` is a sum: divided by `requests` it is the mean.
CREATE TABLE usage_daily (
    day BIGINT NOT NULL,
    key_id TEXT NOT NULL,
    key_name TEXT NOT NULL,
    team TEXT NOT NULL,
    model TEXT NOT NULL,
    provider TEXT NOT NULL,
    upstream_model TEXT NOT NULL,
    requests BIGINT NOT NULL,
    errors BIGINT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_tokens BIGINT NOT NULL,
    cost_nanos BIGINT NOT NULL,
    saved_nanos BIGINT NOT NULL,
    cache_hits BIGINT NOT NULL,
    latency_ms BIGINT NOT NULL,
    PRIMARY KEY (day, key_id, key_name, team, model, provider, upstream_model)
);

-- Where the last purge stopped: ledger rows before `purged_before` (epoch ms, a UTC midnight)
-- are only in `usage_daily`. One row.
CREATE TABLE usage_purge (
    id BIGINT PRIMARY KEY,
    purged_before BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
