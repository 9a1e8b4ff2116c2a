-- dispatchsim schema v9 for PostgreSQL: its index of eligible rows stays as it is (v9 narrows SQLite's
-- to the heads of ordered queues: 0009_ordered_heads.sql); the promotion names holds as well.
-- A promotion before v9 could strip an unordered row of its eligibility (a configuration switched
-- between ordering modes: one queue holds both kinds), leaving it READY or RETRYING with nothing to
-- claim it: those rows get it back.
UPDATE deliveries SET eligible = TRUE WHERE NOT holds AND NOT eligible AND status IN ('READY', 'RETRYING');
