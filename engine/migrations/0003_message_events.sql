-- Serve mode (issue 7): Reteno message events delivered in batches, and API keys.
-- Times are REAL seconds since the Unix epoch on the engine's clock.

-- One webhook per account (an account is a tenant); settings hold auth and secrets (JSON).
CREATE TABLE event_accounts (
    id          TEXT PRIMARY KEY REFERENCES tenants(id),
    webhook_url TEXT NOT NULL,
    settings    TEXT NOT NULL,  -- JSON: auth, signing_secret, batch_size, max_wait, retry, timeouts
    active      INTEGER NOT NULL DEFAULT 1,
    created_at  REAL NOT NULL,
    updated_at  REAL NOT NULL
);

-- Open and finished batches; at most one open batch per account is sent at a time, in id order.
CREATE TABLE event_batches (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id      TEXT NOT NULL REFERENCES event_accounts(id),
    status          TEXT NOT NULL CHECK (status IN ('READY','RETRYING','DISPATCHED','FAILED')),
    size            INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_until     REAL,
    last_error      TEXT,
    dispatched_at   REAL,
    created_at      REAL NOT NULL,
    updated_at      REAL NOT NULL
);
CREATE INDEX event_batches_open ON event_batches(account_id, id) WHERE status IN ('READY', 'RETRYING');

-- Events in arrival order; batch_id is set when the event is put into a batch.
CREATE TABLE message_events (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id  TEXT NOT NULL REFERENCES event_accounts(id),
    payload     TEXT NOT NULL,  -- JSON object, the seed's parameter names
    batch_id    INTEGER REFERENCES event_batches(id),
    created_at  REAL NOT NULL
);
CREATE INDEX message_events_unbatched ON message_events(account_id, seq) WHERE batch_id IS NULL;
CREATE INDEX message_events_batch ON message_events(batch_id, seq);

CREATE TABLE event_attempts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    batch_id        INTEGER NOT NULL REFERENCES event_batches(id),
    number          INTEGER NOT NULL,
    started_at      REAL NOT NULL,
    finished_at     REAL,
    status_code     INTEGER,
    outcome         TEXT,
    error           TEXT,
    latency         REAL,
    excerpt         TEXT,
    next_attempt_at REAL
);
CREATE INDEX event_attempts_batch ON event_attempts(batch_id, number);

-- API keys of serve mode: only a SHA-256 of the key is stored. tenant_id NULL = admin key.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    tenant_id   TEXT REFERENCES tenants(id),
    name        TEXT,
    created_at  REAL NOT NULL,
    revoked_at  REAL
);
