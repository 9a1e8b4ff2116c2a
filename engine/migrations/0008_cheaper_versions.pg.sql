-- dispatchsim schema v8 for PostgreSQL: fewer costly index entries per row version of a delivery.
--
-- Each delivery's row is updated twice on its way (the claim sets lease_until, the finish sets
-- status): neither update can be a HOT one, so each writes a new version of the row and an entry
-- for it in every index of the table, including those whose key did not change. Two of them were
-- the dearest: the unique B-tree of webhook_id (a random text key, so each entry lands on another
-- page, and a unique index checks the heap for the row's older versions at every insert) and the
-- B-tree of activity_id (a text key too). Both are looked up by equality only (a delivery by its
-- public id; the deliveries of an activity), which a hash index serves, at the cost of a 4-byte
-- hash comparison and no uniqueness check. webhook_id stays unique by construction: it is a digest
-- of (activity id, configuration id) or of the batch number (unique through deliveries_batch), and
-- a delivery is created once, in the transaction that creates its activity or batch.
-- A hash index looks cheaper to the planner than it is when a filter is rare: asked for the
-- activities with a FAILED delivery, it probed the deliveries of every activity in turn (0.5 s at
-- 1,000,000 deliveries, 1,000 of them FAILED) instead of reading the FAILED ones first (4 ms).
-- deliveries_failed_activity (FAILED deliveries only, so no entry for the others' updates) keeps
-- that read first.
-- SQLite's 0008 changes nothing: there a row updated in place rewrites only the index entries whose
-- columns changed.
ALTER TABLE deliveries DROP CONSTRAINT IF EXISTS deliveries_webhook_id_key;
CREATE INDEX deliveries_webhook ON deliveries USING hash (webhook_id);
DROP INDEX IF EXISTS deliveries_activity;
CREATE INDEX deliveries_activity ON deliveries USING hash (activity_id);
CREATE INDEX deliveries_failed_activity ON deliveries (activity_id) WHERE status = 'FAILED';
