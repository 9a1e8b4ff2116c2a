-- dispatchsim schema v1. Times are REAL seconds since the Unix epoch on the engine's clock.
CREATE TABLE tenants (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  REAL NOT NULL
);

CREATE TABLE providers (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  REAL NOT NULL
);

-- The editable configuration; every edit writes a new immutable row in config_versions.
CREATE TABLE configurations (
    id            TEXT PRIMARY KEY,
    tenant_id     TEXT NOT NULL REFERENCES tenants(id),
    provider_id   TEXT NOT NULL REFERENCES providers(id),
    channel       TEXT NOT NULL,
    version       INTEGER NOT NULL,
    active        INTEGER NOT NULL DEFAULT 0,
    deleted       INTEGER NOT NULL DEFAULT 0,
    inactive_reason TEXT,
    created_at    REAL NOT NULL,
    updated_at    REAL NOT NULL
);
CREATE INDEX configurations_fanout ON configurations(tenant_id, channel, active, deleted);

-- Snapshot a delivery keeps: endpoint, auth (with secrets), mapping, policies, timeouts.
CREATE TABLE config_versions (
    config_id   TEXT NOT NULL REFERENCES configurations(id),
    version     INTEGER NOT NULL,
    snapshot    TEXT NOT NULL,  -- JSON
    created_at  REAL NOT NULL,
    PRIMARY KEY (config_id, version)
);

CREATE TABLE activities (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    id          TEXT NOT NULL UNIQUE,
    tenant_id   TEXT NOT NULL REFERENCES tenants(id),
    type        TEXT NOT NULL,
    channel     TEXT NOT NULL,
    payload     TEXT NOT NULL,  -- JSON, seed shape without the derived fields
    result      TEXT,           -- JSON activityResult, from the results endpoint
    created_at  REAL NOT NULL
);
CREATE INDEX activities_tenant ON activities(tenant_id, seq);

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,  -- creation order = queue order
    webhook_id      TEXT NOT NULL UNIQUE,
    activity_id     TEXT NOT NULL REFERENCES activities(id),
    config_id       TEXT NOT NULL REFERENCES configurations(id),
    config_version  INTEGER NOT NULL,
    queue           TEXT NOT NULL,
    status          TEXT NOT NULL CHECK (status IN ('READY','RETRYING','DISPATCHED','FAILED')),
    -- 1 while this delivery keeps later ones of its queue waiting (ordered queues only)
    holds           INTEGER NOT NULL DEFAULT 0,
    -- 1 when it may be claimed: the head of an ordered queue, or any unordered delivery
    eligible        INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,  -- all tries ever
    budget_attempts INTEGER NOT NULL DEFAULT 0,  -- tries since creation / last force retry
    budget_started_at REAL NOT NULL,
    next_attempt_at REAL NOT NULL,
    lease_until     REAL,
    lease_token     TEXT,
    failed_reason   TEXT,
    last_error      TEXT,
    dispatched_at   REAL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
-- "what is due next": only claimable rows are in this index, so its size is the number of queue heads.
CREATE INDEX deliveries_due ON deliveries(next_attempt_at, id)
    WHERE eligible = 1 AND lease_until IS NULL AND status IN ('READY', 'RETRYING');
-- "head of each ordered queue": the first holder by id.
CREATE INDEX deliveries_queue_holds ON deliveries(queue, id) WHERE holds = 1;
CREATE INDEX deliveries_queue_eligible ON deliveries(queue) WHERE eligible = 1;
CREATE INDEX deliveries_leases ON deliveries(lease_until) WHERE lease_until IS NOT NULL;
CREATE INDEX deliveries_activity ON deliveries(activity_id);
CREATE INDEX deliveries_status ON deliveries(status, config_id);

CREATE TABLE attempts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id   INTEGER NOT NULL REFERENCES deliveries(id),
    number        INTEGER NOT NULL,
    started_at    REAL NOT NULL,
    finished_at   REAL,
    status_code   INTEGER,
    outcome       TEXT,   -- SUCCESS | HTTP_ERROR | TIMEOUT | CONNECT_ERROR | PROTOCOL_ERROR | MAPPING_ERROR | INTERRUPTED
    error         TEXT,
    retry_after   REAL,
    latency       REAL,
    excerpt       TEXT,
    next_attempt_at REAL
);
CREATE INDEX attempts_delivery ON attempts(delivery_id, number);
