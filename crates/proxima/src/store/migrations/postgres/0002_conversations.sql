-- The conversation store and stored responses. Released: never edit, add a migration instead.
-- The same tables as SQLite's 0002.

CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at BIGINT NOT NULL,
    next_seq BIGINT NOT NULL DEFAULT 0,
    -- The instructions (system and developer messages, canonical JSON) turns are sent with
    -- until a turn brings new ones.
    system TEXT
);
CREATE INDEX conversations_used ON conversations (used_at);

CREATE TABLE conversation_items (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    seq BIGINT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    role TEXT,
    message TEXT NOT NULL,
    tokens BIGINT NOT NULL,
    covers BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
);
CREATE UNIQUE INDEX conversation_items_id ON conversation_items (id);
CREATE INDEX conversation_items_summaries ON conversation_items (conversation_id, kind, seq);

CREATE TABLE conversation_terms (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    term TEXT NOT NULL,
    seq BIGINT NOT NULL,
    tf BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, term, seq)
);

-- How many of a conversation's items hold each word: a search reads postings only of the
-- words rare enough to tell turns apart, and learns which those are from this table first.
CREATE TABLE conversation_term_counts (
    conversation_id TEXT NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    term TEXT NOT NULL,
    df BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, term)
);

CREATE TABLE responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    previous_id TEXT,
    conversation_id TEXT,
    turn TEXT NOT NULL,
    input_items TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX responses_created ON responses (created_at);
