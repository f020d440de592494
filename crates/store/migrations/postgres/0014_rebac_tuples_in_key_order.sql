-- Tuples that expire are indexed, so the purge reads only those. (PostgreSQL streams a
-- store's tuples in one pass already; SQLite's migration of the same number also puts the
-- table in key order.)
CREATE INDEX rebac_tuples_expiring ON rebac_tuples (expires_at_ms)
    WHERE expires_at_ms IS NOT NULL;
