-- Endpoint health: circuit breaker and auto-disable state, operator notifications, replays.
ALTER TABLE attempts ADD COLUMN config_id TEXT;
ALTER TABLE attempts ADD COLUMN replay INTEGER NOT NULL DEFAULT 0;
CREATE INDEX attempts_config ON attempts(config_id, id);
ALTER TABLE configurations ADD COLUMN inactive_since REAL;

CREATE TABLE endpoint_health (
    config_id            TEXT PRIMARY KEY REFERENCES configurations(id),
    circuit              TEXT NOT NULL DEFAULT 'closed' CHECK (circuit IN ('closed', 'open', 'half_open')),
    circuit_until        REAL,      -- open: end of the cool-down
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    failing_since        REAL,      -- first failure since the last success
    updated_at           REAL NOT NULL
);

CREATE TABLE notifications (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    at          REAL NOT NULL,
    kind        TEXT NOT NULL,      -- config.auto_disabled | circuit.opened | circuit.closed
    config_id   TEXT,
    message     TEXT NOT NULL,
    delivery    TEXT                -- operator webhook: "HTTP 200", "connect_error: …", or NULL when none is set
);
