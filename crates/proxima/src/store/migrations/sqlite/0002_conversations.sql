-- The conversation store and stored responses. Released: never edit, add a migration instead.

-- `owner` is the tenant: `team:NAME`, or `key:ID` for a key without a team. Every read
-- filters on it, so another tenant's id is as unknown as a made-up one.
CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    metadata TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- Last turn or change, epoch ms: `[context] retention` deletes the ones unused too long.
    used_at BIGINT NOT NULL,
    -- The next item's position; taking it is the only write a turn makes to this row.
    next_seq BIGINT NOT NULL DEFAULT 0,
    -- The instructions (system and developer messages, canonical JSON) turns are sent with
    -- until a turn brings new ones.
    system TEXT
) WITHOUT ROWID;
CREATE INDEX conversations_used ON conversations (used_at);

-- Items in order. `message` is the canonical message (JSON), whatever surface stored it;
-- `tokens` its size, so that the window is chosen without tokenizing history again.
-- `kind` is the item type the Conversations API shows (message, function_call,
-- function_call_output, reasoning, summary). A summary covers the items up to `covers` and is folded
-- from the previous summary and the items after it.
CREATE TABLE conversation_items (
    conversation_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    id TEXT NOT NULL,
    kind TEXT NOT NULL,
    role TEXT,
    message TEXT NOT NULL,
    tokens BIGINT NOT NULL,
    covers BIGINT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, seq)
) WITHOUT ROWID;
CREATE UNIQUE INDEX conversation_items_id ON conversation_items (id);
CREATE INDEX conversation_items_summaries ON conversation_items (conversation_id, kind, seq);

-- Recall's index: each item's words (normalised, see context::recall::terms) with their
-- counts, by conversation and word, so that a search reads only that conversation's postings
-- of the new message's words, and at most a fixed number of each: its cost follows the
-- question, not the length of the history or the size of the database.
CREATE TABLE conversation_terms (
    conversation_id TEXT NOT NULL,
    term TEXT NOT NULL,
    seq BIGINT NOT NULL,
    tf BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, term, seq)
) WITHOUT ROWID;

-- How many of a conversation's items hold each word: a search reads postings only of the
-- words rare enough to tell turns apart, and learns which those are from this table first.
CREATE TABLE conversation_term_counts (
    conversation_id TEXT NOT NULL,
    term TEXT NOT NULL,
    df BIGINT NOT NULL,
    PRIMARY KEY (conversation_id, term)
) WITHOUT ROWID;

-- Stored Responses-API responses. `turn` holds this response's own new input and its output
-- as canonical messages (JSON): `previous_response_id` chains replay them in order.
-- `input_items` is the input as the client sent it, for GET .../input_items; `body` is the
-- response object as it was answered.
CREATE TABLE responses (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    previous_id TEXT,
    conversation_id TEXT,
    turn TEXT NOT NULL,
    input_items TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
) WITHOUT ROWID;
CREATE INDEX responses_created ON responses (created_at);
