-- Uploaded files (`/v1/files`). Released: never edit, add a migration instead.
-- The same table as SQLite's 0003; `content` is stored out of line (TOAST).

CREATE TABLE files (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    content BYTEA NOT NULL
);
CREATE INDEX files_owner_created ON files (owner, created_at, id);
