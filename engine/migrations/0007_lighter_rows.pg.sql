-- dispatchsim schema v7 for PostgreSQL: deliveries_status holds FAILED deliveries only.
--
-- An UPDATE of a deliveries row that changes an indexed column (the claim sets lease_until, the
-- finish sets status) writes a new version of the row and a new entry into every index whose
-- predicate it meets: each delivery paid two entries in deliveries_status (READY when claimed,
-- DISPATCHED when finished) that no query needs. The lists that look deliveries up by status alone
-- ask for FAILED ones (failed_ids, blocked_heads, recent_failures); the few that ask for READY or
-- RETRYING ones (the status report, /metrics) read deliveries_console (config_id, status, created_at),
-- which PostgreSQL 18 skip-scans by configuration, or the whole table they aggregate anyway.
-- SQLite keeps its full index (its 0007 changes nothing): there a row updated in place rewrites only
-- the index entries whose columns changed.
DROP INDEX IF EXISTS deliveries_status;
CREATE INDEX deliveries_status ON deliveries(status, config_id) WHERE status = 'FAILED';
