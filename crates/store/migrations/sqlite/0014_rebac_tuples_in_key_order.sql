-- Relationship tuples are kept in key order (WITHOUT ROWID), so loading a store reads its
-- tuples in one pass over the table instead of looking each one up through the key's index;
-- tuples that expire are indexed, so the purge reads only those.
CREATE TABLE rebac_tuples_in_key_order (
    store           TEXT    NOT NULL,
    object          TEXT    NOT NULL,
    relation        TEXT    NOT NULL,
    subject         TEXT    NOT NULL,
    expires_at_ms   INTEGER NULL,
    PRIMARY KEY (store, object, relation, subject)
) STRICT, WITHOUT ROWID;

INSERT INTO rebac_tuples_in_key_order (store, object, relation, subject, expires_at_ms)
    SELECT store, object, relation, subject, expires_at_ms FROM rebac_tuples;

DROP TABLE rebac_tuples;

ALTER TABLE rebac_tuples_in_key_order RENAME TO rebac_tuples;

CREATE INDEX rebac_tuples_expiring ON rebac_tuples (expires_at_ms)
    WHERE expires_at_ms IS NOT NULL;
