-- dispatchsim schema v11 for PostgreSQL: deliveries_queue_eligible holds the heads of ordered queues only,
-- as SQLite's has since v9 (0009_ordered_heads.sql).
--
-- The index serves the promotion of an ordered queue's next head, which asks for the queue's current
-- heads (queue = %s AND eligible AND holds). Every pending delivery of an unordered configuration is
-- eligible too, so each had an entry here that nothing read; on PostgreSQL an UPDATE that changes an
-- indexed column writes an entry into every index whose predicate the new row version meets, so each
-- unordered delivery wrote one at its creation and one more at its claim (a claim of 25 read about 50
-- buffers fewer without them: 2 per delivery, 3 us of the claim's database CPU per delivery). The
-- promotion names holds already; the head's read (queue = %s AND holds) uses deliveries_queue_holds.
DROP INDEX IF EXISTS deliveries_queue_eligible;
CREATE INDEX deliveries_queue_eligible ON deliveries(queue) WHERE eligible AND holds;
