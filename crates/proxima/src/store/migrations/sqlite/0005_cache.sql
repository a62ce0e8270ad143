-- The response cache: what a hit saved. Released: never edit, add a migration instead.

-- A cache hit's row has cost 0 and here what the stored answer cost when it was made; 0 for
-- every other row. (`cache` itself, the verdict, has been a column since the first version.)
ALTER TABLE usage_ledger ADD COLUMN saved_nanos BIGINT NOT NULL DEFAULT 0;
