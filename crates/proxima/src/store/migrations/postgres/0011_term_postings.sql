-- Recall's postings read from the index alone. Released: never edit, add a migration instead.

-- A search reads a word's postings (position and count) of one conversation. With the count
-- outside the primary key, PostgreSQL fetched every posting's row from the table as well: one
-- random page read per posting. Carried in the key's index, the count is read with the
-- position, by an index-only scan (once autovacuum has marked the pages all-visible, which it
-- does after inserts on its own).
ALTER TABLE conversation_terms DROP CONSTRAINT conversation_terms_pkey;
ALTER TABLE conversation_terms ADD CONSTRAINT conversation_terms_pkey
    PRIMARY KEY (conversation_id, term, seq) INCLUDE (tf);
