-- Residency and PII policy on keys and teams. Released: never edit, add a migration instead.

-- JSON arrays of region names (absent: any region) and JSON objects overriding [pii]
-- (`{"mode": "mask", "entities": [...]}`; absent: the team's, else the config's).
ALTER TABLE keys ADD COLUMN regions TEXT;
ALTER TABLE keys ADD COLUMN pii TEXT;
ALTER TABLE teams ADD COLUMN regions TEXT;
ALTER TABLE teams ADD COLUMN pii TEXT;
