-- Uploaded files (`/v1/files`). Released: never edit, add a migration instead.

-- `owner` is the tenant, as in the conversation store: `team:NAME`, or `key:ID` for a key
-- without a team; every read filters on it. `created_at` is epoch ms; lists run in
-- (created_at, id) order, which the index serves per owner. `content` is last and the table
-- keeps its rowid, so that reading a row's other columns never reads the blob's pages.
CREATE TABLE files (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    content BLOB NOT NULL
);
CREATE INDEX files_owner_created ON files (owner, created_at, id);
