-- Each word's postings kept as one text beside its count. Released: never edit, add a
-- migration instead.

-- Recall reads the postings of a new message's words (a dozen or so) on every turn. Read a
-- posting a row, most of that read went into turning the rows into text. The postings of a
-- word in at most 128 items (`POSTINGS_PER_TERM`; more common words are left out of searches)
-- are now kept as the text a search reads: position * 1024 + count (capped at 1023), joined
-- by commas, appended as items are stored. A word in more items has none (NULL).
-- `conversation_terms` stays: deleting an item finds its words there, and rebuilds them.
ALTER TABLE conversation_term_counts ADD COLUMN postings TEXT;
UPDATE conversation_term_counts SET postings = COALESCE((
    SELECT string_agg(CAST(t.seq * 1024 + CASE WHEN t.tf < 1024 THEN t.tf ELSE 1023 END AS TEXT),
                      ',' ORDER BY t.seq)
    FROM conversation_terms t
    WHERE t.conversation_id = conversation_term_counts.conversation_id
      AND t.term = conversation_term_counts.term), '')
WHERE df <= 128;
