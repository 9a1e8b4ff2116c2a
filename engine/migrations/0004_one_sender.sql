-- One sender: a batch of Reteno message events is a delivery like any other.
-- The account's webhook becomes a configuration of kind 'message_events' (id '<account>@events',
-- no provider or channel), so the one dispatcher claims, retries, orders, scrubs and health-tracks
-- its batches. Open and finished batches become deliveries of that configuration (batch_id set,
-- activity_id NULL) with their attempts; leases left by a dead sender are carried over and
-- released like any delivery lease. Tables are rebuilt the SQLite way (new table, copy, drop,
-- rename) with foreign keys off for the migration and checked before it commits.

CREATE TABLE configurations_new (
    id            TEXT PRIMARY KEY,
    kind          TEXT NOT NULL DEFAULT 'activities' CHECK (kind IN ('activities', 'message_events')),
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    provider_id   TEXT REFERENCES providers(id),
    channel       TEXT,
    version       INTEGER NOT NULL,
    active        INTEGER NOT NULL DEFAULT 0,
    deleted       INTEGER NOT NULL DEFAULT 0,
    inactive_reason TEXT,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL,
    inactive_since REAL,
    CHECK (kind <> 'activities' OR (provider_id IS NOT NULL AND channel IS NOT NULL))
);
INSERT INTO configurations_new (id, kind, tenant_id, provider_id, channel, version, active, deleted,
                                inactive_reason, created_at, updated_at, inactive_since)
    SELECT id, 'activities', tenant_id, provider_id, channel, version, active, deleted, inactive_reason,
           created_at, updated_at, inactive_since FROM configurations;
INSERT INTO configurations_new (id, kind, tenant_id, version, active, deleted, inactive_reason, created_at,
                                updated_at, inactive_since)
    SELECT id || '@events', 'message_events', id, 1, active, 0, CASE WHEN active = 0 THEN 'manual' END,
           created_at, updated_at, CASE WHEN active = 0 THEN updated_at END FROM event_accounts;
DROP TABLE configurations;
ALTER TABLE configurations_new RENAME TO configurations;
CREATE INDEX configurations_fanout ON configurations(tenant_id, channel, active, deleted);
CREATE INDEX configurations_kind ON configurations(kind, active);

-- The webhook settings become the snapshot every batch delivery keeps (version 1).
INSERT INTO config_versions (config_id, version, snapshot, created_at)
    SELECT id || '@events', 1, json_object(
        'endpoint_url', json_extract(settings, '$.url'),
        'auth', json(json_extract(settings, '$.auth')),
        'signing_secret', json_extract(settings, '$.signing_secret'),
        'mapping', NULL, 'mapping_digest', NULL,
        'retry', json(json_extract(settings, '$.retry')),
        'ordering', json('{"mode":"ordered","on_exhausted":"skip","partition_key":null,"concurrency":10}'),
        'timeouts', json(json_extract(settings, '$.timeouts')),
        'circuit_breaker', NULL, 'auto_disable', NULL,
        'batching', json_object('size', json_extract(settings, '$.batch_size'),
                                'max_wait', json_extract(settings, '$.max_wait'))),
        updated_at FROM event_accounts;

-- A batch keeps what it contains; how it is sent lives on its delivery.
CREATE TABLE event_batches_new (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id  TEXT NOT NULL REFERENCES tenants(id),
    size        INTEGER NOT NULL,
    created_at  REAL NOT NULL
);
INSERT INTO event_batches_new (id, account_id, size, created_at)
    SELECT id, account_id, size, created_at FROM event_batches ORDER BY id;

CREATE TABLE deliveries_new (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    webhook_id      TEXT NOT NULL UNIQUE,
    activity_id     TEXT REFERENCES activities(id),
    batch_id        INTEGER REFERENCES event_batches(id),
    config_id       TEXT NOT NULL REFERENCES configurations(id),
    config_version  INTEGER NOT NULL,
    queue           TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('READY','RETRYING','DISPATCHED','FAILED')),
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
    CHECK ((activity_id IS NULL) <> (batch_id IS NULL))
);
INSERT INTO deliveries_new (id, webhook_id, activity_id, config_id, config_version, queue, status, holds, eligible,
                            attempts, budget_attempts, budget_started_at, next_attempt_at, lease_until, lease_token,
                            failed_reason, last_error, dispatched_at, created_at, updated_at)
    SELECT id, webhook_id, activity_id, config_id, config_version, queue, status, holds, eligible, attempts,
           budget_attempts, budget_started_at, next_attempt_at, lease_until, lease_token, failed_reason,
           last_error, dispatched_at, created_at, updated_at FROM deliveries ORDER BY id;
-- Open batches hold their account's queue; the first open one is its head (as the old sender did).
INSERT INTO deliveries_new (webhook_id, batch_id, config_id, config_version, queue, status, holds, eligible,
                            attempts, budget_attempts, budget_started_at, next_attempt_at, lease_until, lease_token,
                            failed_reason, last_error, dispatched_at, created_at, updated_at)
    SELECT 'evb_' || b.account_id || '_' || b.id, b.id, b.account_id || '@events', 1, b.account_id || '@events',
           b.status, CASE WHEN b.status IN ('READY', 'RETRYING') THEN 1 ELSE 0 END,
           CASE WHEN b.id = (SELECT MIN(o.id) FROM event_batches o WHERE o.account_id = b.account_id
                             AND o.status IN ('READY', 'RETRYING')) THEN 1 ELSE 0 END,
           b.attempts, b.attempts, b.created_at, b.next_attempt_at, b.lease_until,
           CASE WHEN b.lease_until IS NOT NULL THEN 'migrated' END,
           CASE WHEN b.status = 'FAILED' THEN 'exhausted' END, b.last_error, b.dispatched_at, b.created_at,
           b.updated_at
    FROM event_batches b ORDER BY b.id;
INSERT INTO attempts (delivery_id, number, started_at, finished_at, status_code, outcome, error, latency, excerpt,
                      next_attempt_at, config_id, replay)
    SELECT d.id, a.number, a.started_at, a.finished_at, a.status_code, a.outcome, a.error, a.latency, a.excerpt,
           a.next_attempt_at, d.config_id, 0
    FROM event_attempts a JOIN deliveries_new d ON d.batch_id = a.batch_id ORDER BY a.id;
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries(next_attempt_at, id)
    WHERE eligible = 1 AND lease_until IS NULL AND status IN ('READY', 'RETRYING');
CREATE INDEX deliveries_queue_holds ON deliveries(queue, id) WHERE holds = 1;
CREATE INDEX deliveries_queue_eligible ON deliveries(queue) WHERE eligible = 1;
CREATE INDEX deliveries_leases ON deliveries(lease_until) WHERE lease_until IS NOT NULL;
CREATE INDEX deliveries_activity ON deliveries(activity_id);
CREATE UNIQUE INDEX deliveries_batch ON deliveries(batch_id) WHERE batch_id IS NOT NULL;
CREATE INDEX deliveries_status ON deliveries(status, config_id);

-- Events in arrival order; batch_id is set when the event is put into a batch.
CREATE TABLE message_events_new (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id  TEXT NOT NULL REFERENCES tenants(id),
    payload     TEXT NOT NULL,
    batch_id    INTEGER REFERENCES event_batches(id),
    created_at  REAL NOT NULL
);
INSERT INTO message_events_new (seq, account_id, payload, batch_id, created_at)
    SELECT seq, account_id, payload, batch_id, created_at FROM message_events ORDER BY seq;
DROP TABLE message_events;
ALTER TABLE message_events_new RENAME TO message_events;
CREATE INDEX message_events_unbatched ON message_events(account_id, seq) WHERE batch_id IS NULL;
CREATE INDEX message_events_batch ON message_events(batch_id, seq);

DROP TABLE event_attempts;
DROP TABLE event_batches;
ALTER TABLE event_batches_new RENAME TO event_batches;
CREATE INDEX event_batches_account ON event_batches(account_id, id);
DROP TABLE event_accounts;
