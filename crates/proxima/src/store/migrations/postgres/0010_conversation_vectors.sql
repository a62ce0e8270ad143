-- Recall by meaning. Released: never edit, add a migration instead.

-- The sentence vector of a conversation item's text, by `[context] embedding_model`: int8
-- components and the value of one step (`v[i] ≈ vector[i] * scale`). Written after the item,
-- off the request path; an item without one is found by its words only.
CREATE TABLE conversation_vectors (
    conversation_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    vector BYTEA NOT NULL,
    scale REAL NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
