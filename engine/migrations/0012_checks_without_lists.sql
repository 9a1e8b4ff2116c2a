-- dispatchsim schema v12 for SQLite: the CHECK constraints on a delivery's status and an endpoint's
-- circuit are written as comparisons joined by OR instead of IN lists; they accept exactly the same
-- values.
--
-- SQLite evaluates an IN list of more than two constants by building a temporary B-tree of them, and
-- a CHECK constraint is evaluated at every INSERT and at every UPDATE that sets its column: every
-- finished attempt (its delivery's status), every delivery created, every failure streak counted
-- (an upsert of endpoint_health) opened a temporary database, wrote two fresh 4 KiB pages and four
-- index entries, and closed it again: about 32,000 instructions per statement, as much as the
-- rest of a finish's UPDATE. A CHECK cannot be altered in SQLite, so both tables are rebuilt the
-- SQLite way (new table, copy with the same ids, drop, rename) with foreign keys off for the
-- migration and checked before it commits; the views over deliveries are dropped and made again
-- around it (a rename checks every view, and theirs would name a table that is gone).
DROP VIEW attempts_all;
DROP VIEW attempts_open;
CREATE TABLE deliveries_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id      TEXT NOT NULL UNIQUE,
    activity_id     TEXT REFERENCES activities(id),
    batch_id        INTEGER REFERENCES event_batches(id),
    config_id       TEXT NOT NULL REFERENCES configurations(id),
    config_version  INTEGER NOT NULL,
    queue           TEXT NOT NULL,
    status          TEXT NOT NULL
                    CHECK (status = 'READY' OR status = 'RETRYING' OR status = 'DISPATCHED' OR status = 'FAILED'),
    holds           INTEGER NOT NULL DEFAULT 0,
    eligible        INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    budget_attempts INTEGER NOT NULL DEFAULT 0,
    budget_started_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    lease_until     REAL,
    lease_token     TEXT,
    failed_reason   TEXT,
    last_error      TEXT,
    dispatched_at   REAL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL,
    lease_attempt   INTEGER,
    lease_started_at REAL,
    CHECK ((activity_id IS NULL) <> (batch_id IS NULL))
);
INSERT INTO deliveries_new (id, webhook_id, activity_id, batch_id, config_id, config_version, queue, status, holds,
                            eligible, attempts, budget_attempts, budget_started_at, next_attempt_at, lease_until,
                            lease_token, failed_reason, last_error, dispatched_at, created_at, updated_at,
                            lease_attempt, lease_started_at)
    SELECT id, webhook_id, activity_id, batch_id, config_id, config_version, queue, status, holds, eligible,
           attempts, budget_attempts, budget_started_at, next_attempt_at, lease_until, lease_token, failed_reason,
           last_error, dispatched_at, created_at, updated_at, lease_attempt, lease_started_at
    FROM deliveries ORDER BY id;
-- the ids given out so far stay given out (AUTOINCREMENT: none is used again, even past the last row):
-- the old table's sequence becomes the new one's (the rename below renames it along)
DELETE FROM sqlite_sequence WHERE name = 'deliveries_new';
UPDATE sqlite_sequence SET name = 'deliveries_new' WHERE name = 'deliveries';
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries(next_attempt_at, id)
    WHERE eligible = 1 AND lease_until IS NULL AND status IN ('READY', 'RETRYING');
CREATE INDEX deliveries_queue_holds ON deliveries(queue, id) WHERE holds = 1;
CREATE INDEX deliveries_queue_eligible ON deliveries(queue) WHERE eligible = 1 AND holds = 1;
CREATE INDEX deliveries_leases ON deliveries(lease_until) WHERE lease_until IS NOT NULL;
CREATE INDEX deliveries_activity ON deliveries(activity_id);
CREATE UNIQUE INDEX deliveries_batch ON deliveries(batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX deliveries_status ON deliveries(status, config_id);
CREATE INDEX deliveries_console ON deliveries(config_id, status, created_at);
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
CREATE TABLE endpoint_health_new (
    config_id            TEXT PRIMARY KEY REFERENCES configurations(id),
    circuit              TEXT NOT NULL DEFAULT 'closed'
                         CHECK (circuit = 'closed' OR circuit = 'open' OR circuit = 'half_open'),
    circuit_until        REAL,      -- open: end of the cool-down
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    failing_since        REAL,      -- first failure since the last success
    updated_at           REAL NOT NULL
);
INSERT INTO endpoint_health_new (config_id, circuit, circuit_until, consecutive_failures, failing_since, updated_at)
    SELECT config_id, circuit, circuit_until, consecutive_failures, failing_since, updated_at FROM endpoint_health;
DROP TABLE endpoint_health;
ALTER TABLE endpoint_health_new RENAME TO endpoint_health;
