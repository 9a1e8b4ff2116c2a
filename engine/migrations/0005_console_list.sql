-- The console's delivery list: per configuration and status, newest first by creation time, with a
-- creation-time window; one index walk per (configuration, status) whatever the table's size.
CREATE INDEX deliveries_console ON deliveries(config_id, status, created_at);
