-- Prompt templates served as APIs (`/admin/prompts`, `POST /v1/prompts/{name}/run`).
-- Released: never edit, add a migration instead.

-- One row per version of a prompt; a version never changes once written. `template` is JSON:
-- a string, or a list of {"role", "content"} messages, with `{{variables}}`. `parameters` is
-- a JSON object of chat parameters (temperature, max_tokens, ...). Prompts are the gateway's,
-- like its models: made by admins, run by any key that may use `model`. Deleting a prompt sets
-- `deleted_at` on its versions and keeps them, so that version numbers are never reused (the
-- ledger names the version a call ran) and replicas can tell that something was deleted.
CREATE TABLE prompts (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    template TEXT NOT NULL,
    model TEXT NOT NULL,
    parameters TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT,
    PRIMARY KEY (name, version)
);
