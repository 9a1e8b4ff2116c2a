-- dispatchsim schema v13 for PostgreSQL: autovacuum takes deliveries after at most 10,000 dead row
-- versions (about 5,000 deliveries: a claim and a finish each leave one) however large the table is,
-- and each of those vacuums cleans the table's indexes.
--
-- A claimed delivery's new row version leaves deliveries_due, but the entry of its old version stays at
-- the front of that index until VACUUM removes it: it is marked dead at the first read that meets it,
-- yet nothing is ever inserted at the front, so no insertion clears it. Every due read then walks one
-- more leaf page per about 275 deliveries claimed since the last vacuum (deliveries_leases keeps the
-- ended leases the same way). With the defaults autovacuum waits until a fifth of the table is dead
-- rows: in a table holding 300,000 finished deliveries, 30,000 more went through and the due read grew
-- from 4 to 113 buffers (0.04 to 0.36 ms) without one vacuum.
--
-- autovacuum_vacuum_max_threshold caps the default threshold (50 + 20 % of the rows), so a small table
-- is vacuumed as before, never later. vacuum_index_cleanup = on: by default a vacuum that finds dead
-- rows on fewer than 2 % of the table's pages skips its indexes, which in a large table is every vacuum
-- this cap starts, and the dead entries would stay. The server's autovacuum_naptime (1 minute by
-- default) still bounds how often it runs; docs/postgres.md says what an operator can tune.
--
-- autovacuum_vacuum_max_threshold is new in PostgreSQL 18: an older server refused the whole migration
-- ("unrecognized parameter"). There the same bound of 10,000 dead row versions is the threshold alone
-- (scale factor 0), which for a table under about 50,000 rows means a vacuum later than the default's.
DO $$ BEGIN IF current_setting('server_version_num')::int >= 180000 THEN
  EXECUTE 'ALTER TABLE deliveries SET (autovacuum_vacuum_max_threshold = 10000, vacuum_index_cleanup = on)'; ELSE
  EXECUTE 'ALTER TABLE deliveries SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000, vacuum_index_cleanup = on)'; END IF; END $$;
