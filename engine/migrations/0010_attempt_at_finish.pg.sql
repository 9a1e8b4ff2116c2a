-- dispatchsim schema v10 for PostgreSQL: an attempt's row is written once, when it finishes (with its
-- outcome), instead of opened by the claim and updated by the finish (as SQLite's 0010_attempt_at_finish.sql).
--
-- The claim already updates the delivery's row to lease it; it now also notes there the attempt it
-- starts: lease_attempt, the id the attempt's row will have (taken from the attempts' identity
-- sequence, in id order as before), and lease_started_at, when it started (its number is the
-- delivery's attempts, its configuration the delivery's). The finish inserts the row with its
-- outcome; a lease that ends without a finish (a worker stopped or died) inserts it as INTERRUPTED
-- from what the delivery row holds. Both columns mean something only while the delivery is leased.
ALTER TABLE deliveries ADD COLUMN lease_attempt bigint, ADD COLUMN lease_started_at double precision;
-- an attempt open when the last worker stopped (it died during it) moves to its delivery's row, where
-- recovery reads it, keeping its id
UPDATE deliveries d SET lease_attempt = o.id, lease_started_at = o.started_at
    FROM attempts o WHERE o.delivery_id = d.id AND o.finished_at IS NULL AND NOT o.replay
    AND d.lease_until IS NOT NULL;
DELETE FROM attempts a USING deliveries d WHERE a.finished_at IS NULL AND NOT a.replay AND d.id = a.delivery_id
    AND d.lease_until IS NOT NULL AND d.lease_attempt = a.id;
-- the attempts in flight, read from their leases (an ordered listing reads attempts UNION ALL attempts_open
-- ORDER BY id: see store_sql.attempts_query), and every attempt, for counts
CREATE VIEW attempts_open AS
    SELECT d.lease_attempt AS id, d.id AS delivery_id, d.attempts AS number, d.lease_started_at AS started_at,
           NULL::double precision AS finished_at, NULL::integer AS status_code, NULL::text AS outcome,
           NULL::text AS error, NULL::double precision AS retry_after, NULL::double precision AS latency,
           NULL::text AS excerpt, NULL::double precision AS next_attempt_at, d.config_id AS config_id, false AS replay
    FROM deliveries d
    WHERE d.lease_until IS NOT NULL AND NOT EXISTS (SELECT 1 FROM attempts a WHERE a.id = d.lease_attempt);
CREATE VIEW attempts_all AS
    SELECT id, delivery_id, number, started_at, finished_at, status_code, outcome, error, retry_after, latency,
           excerpt, next_attempt_at, config_id, replay FROM attempts
    UNION ALL
    SELECT id, delivery_id, number, started_at, finished_at, status_code, outcome, error, retry_after, latency,
           excerpt, next_attempt_at, config_id, replay FROM attempts_open;
