-- Vector stores: files chunked, embedded and indexed for retrieval. Released: never edit, add
-- a migration instead.

-- `owner` is the tenant (`team:NAME`, or `key:ID`), as for conversations. `embedding_model`
-- is the public model its chunks were embedded with (queries must use the same one), NULL when
-- none was configured: the store is then searched by its words only. `version` moves with
-- every change to the store's files: replicas reload their in-memory index when it does.
CREATE TABLE vector_stores (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT,
    metadata TEXT NOT NULL,
    expires_after TEXT,
    embedding_model TEXT,
    created_at BIGINT NOT NULL,
    last_active_at BIGINT NOT NULL,
    version BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX vector_stores_owner ON vector_stores (owner, created_at);

-- A file in a store. `status`: in_progress, completed, failed (`last_error` says why, as
-- JSON {code, message}) or cancelled. `chunking` is the static strategy used, as JSON.
-- `generation` is the store's version when the file's chunks were written: a replica's index
-- keeps a file's chunks while it is unchanged.
CREATE TABLE vector_store_files (
    store_id TEXT NOT NULL,
    file_id TEXT NOT NULL,
    filename TEXT NOT NULL,
    attributes TEXT NOT NULL,
    chunking TEXT NOT NULL,
    status TEXT NOT NULL,
    last_error TEXT,
    usage_bytes BIGINT NOT NULL,
    batch_id TEXT,
    created_at BIGINT NOT NULL,
    generation BIGINT NOT NULL,
    PRIMARY KEY (store_id, file_id)
);
CREATE INDEX vector_store_files_created ON vector_store_files (store_id, created_at);

-- A file's chunks in order, with their embedding (little-endian f32), NULL without a model.
CREATE TABLE vector_store_chunks (
    store_id TEXT NOT NULL,
    file_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    text TEXT NOT NULL,
    embedding BYTEA,
    PRIMARY KEY (store_id, file_id, seq)
);
