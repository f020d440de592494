-- The ledger is read by sequence number only (ranges of seq, the primary key): no query
-- looks entries up by actor, action or time. Their three indexes cost every append — every
-- audited request — about a third of its database work, for nothing. Keep logically
-- identical to the SQLite migration.
DROP INDEX IF EXISTS ledger_entries_actor_idx;
DROP INDEX IF EXISTS ledger_entries_action_idx;
DROP INDEX IF EXISTS ledger_entries_time_idx;
