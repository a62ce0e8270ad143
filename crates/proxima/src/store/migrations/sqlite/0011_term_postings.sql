-- Recall's postings read from the index alone. Released: never edit, add a migration instead.

-- PostgreSQL's version of this migration puts each posting's count in the primary key's
-- index. SQLite needs nothing: `conversation_terms` is a WITHOUT ROWID table, stored in its
-- primary key's B-tree, so the count is read with the position already.
SELECT 1;
