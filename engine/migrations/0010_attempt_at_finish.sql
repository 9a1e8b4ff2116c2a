-- dispatchsim schema v10 for SQLite: an attempt's row is written once, when it finishes (with its
-- outcome), instead of opened by the claim and updated by the finish.
--
-- The claim already updates the delivery's row to lease it; it now also notes there the attempt it
-- starts: lease_attempt, the id the attempt's row will have (reserved in claim order from the
-- attempts' AUTOINCREMENT sequence, so ids are what they were), and lease_started_at, when it
-- started (its number is the delivery's attempts, its configuration the delivery's). The finish
-- inserts the row with its outcome; a lease that ends without a finish (the engine stopped or died)
-- inserts it as INTERRUPTED from what the delivery row holds. Both columns mean something only while
-- the delivery is leased (lease_until IS NOT NULL).
ALTER TABLE deliveries ADD COLUMN lease_attempt INTEGER;
ALTER TABLE deliveries ADD COLUMN lease_started_at REAL;
-- the sequence the claims reserve from exists from the start (AUTOINCREMENT makes it at the first row)
INSERT INTO sqlite_sequence (name, seq) SELECT 'attempts', COALESCE((SELECT MAX(id) FROM attempts), 0)
    WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'attempts');
-- an attempt open when the database was last closed (the engine died during it) moves to its
-- delivery's row, where recovery reads it, keeping its id
UPDATE deliveries SET lease_attempt = o.id, lease_started_at = o.started_at
    FROM (SELECT id, delivery_id, started_at FROM attempts WHERE finished_at IS NULL AND replay = 0) AS o
    WHERE deliveries.id = o.delivery_id AND deliveries.lease_until IS NOT NULL;
DELETE FROM attempts WHERE finished_at IS NULL AND replay = 0
    AND delivery_id IN (SELECT id FROM deliveries WHERE lease_until IS NOT NULL AND lease_attempt = attempts.id);
-- the attempts in flight, read from their leases (an ordered listing reads attempts UNION ALL attempts_open
-- ORDER BY id: see store_sql.attempts_query), and every attempt, for counts
CREATE VIEW attempts_open AS
    SELECT d.lease_attempt AS id, d.id AS delivery_id, d.attempts AS number, d.lease_started_at AS started_at,
           NULL AS finished_at, NULL AS status_code, NULL AS outcome, NULL AS error, NULL AS retry_after,
           NULL AS latency, NULL AS excerpt, NULL AS next_attempt_at, d.config_id AS config_id, 0 AS replay
    FROM deliveries d
    WHERE d.lease_until IS NOT NULL AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.id = d.lease_attempt);
CREATE VIEW attempts_all AS
    SELECT id, delivery_id, number, started_at, finished_at, status_code, outcome, error, retry_after, latency,
           excerpt, next_attempt_at, config_id, replay FROM attempts
    UNION ALL
    SELECT id, delivery_id, number, started_at, finished_at, status_code, outcome, error, retry_after, latency,
           excerpt, next_attempt_at, config_id, replay FROM attempts_open;
