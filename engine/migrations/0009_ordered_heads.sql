-- dispatchsim schema v9 for SQLite: the index of eligible rows keeps the heads of ordered queues only.
--
-- deliveries_queue_eligible serves what asks for a queue's head: the group commit that claims an
-- ordered queue's next head (Store.queue_head) and the promotion of the next head when one ends
-- (Store._promote). Both ask about ordered queues only, whose rows hold their queue (holds = 1),
-- but every pending delivery of an unordered configuration is eligible too (holds = 0), so each had
-- an entry here that nothing read: written when it was created, deleted when it finished (about a
-- fifteenth of the store's work per delivery in a run of unordered deliveries). Those queries now
-- name holds = 1 as well (as the planner needs to use this index), so a queue's unordered rows (a
-- configuration switched between ordering modes) are never taken for its ordered heads: a promotion
-- leaves them eligible and is not held back by one of them in flight.
DROP INDEX deliveries_queue_eligible;
CREATE INDEX deliveries_queue_eligible ON deliveries(queue) WHERE eligible = 1 AND holds = 1;
-- A promotion before v9 could strip such an unordered row of its eligibility (a configuration switched
-- between ordering modes: one queue holds both kinds), leaving it READY or RETRYING with nothing to
-- claim it: those rows get it back.
UPDATE deliveries SET eligible = 1 WHERE holds = 0 AND eligible = 0 AND status IN ('READY', 'RETRYING');
