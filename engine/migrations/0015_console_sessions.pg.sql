-- dispatchsim schema v15 for PostgreSQL: console sessions live in the database, not in one serve process.
--
-- Behind a load balancer each request may reach another worker: a session one worker kept in memory
-- signed the user out at the next page another worker served. A row per session: the SHA-256 of the
-- cookie's random token (never the token), who signed in with which key (its id and its digest, so a
-- revoked or rotated key ends the session), the tenant, the session's CSRF token and when it ends.
-- A lookup ignores an ended session; a recurring job deletes them (expires_at's index).
CREATE TABLE IF NOT EXISTS console_sessions (
    token_digest text PRIMARY KEY,
    key_id       text NOT NULL,
    key_digest   text NOT NULL,
    who          text NOT NULL,
    tenant_id    text NOT NULL REFERENCES tenants(id),
    csrf         text NOT NULL,
    created_at   double precision NOT NULL,
    expires_at   double precision NOT NULL
);
CREATE INDEX IF NOT EXISTS console_sessions_expiry ON console_sessions (expires_at);
