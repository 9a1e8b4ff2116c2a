-- Idempotency keys of serve mode: the first answer to a POST sent with an Idempotency-Key, kept for
-- the retention window so a client retrying after a timeout gets that answer again and creates
-- nothing. Scoped per tenant ('' is the admin). status is NULL while the first request runs.
CREATE TABLE idempotency_keys (
    scope        TEXT NOT NULL,
    key          TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    status       INTEGER,
    body         TEXT,
    location     TEXT,
    created_at   REAL NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys(created_at);
