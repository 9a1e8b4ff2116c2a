"""dispatchsim engine: the sender side of Reten dispatch / Reteno webhooks, on SQLite."""
from __future__ import annotations

from .clock import Clock, RealClock, VirtualClock, iso, new_virtual_loop, parse_iso, run_virtual
from .config import (AUTH_FIELDS, AUTH_TYPES, CONFIG_FIELDS, HEADER_NAME_PATTERN, Auth, ConfigKind,
                     check_signing_secret, compile_mapping_spec)
from .core import (ID_PATTERN, ActivityPage, Engine, ResultSubmission, RunSummary, check_id, config_name, queue_name, scope_suffix,
                   scoped_config_id)
from .errors import (ActivationRefused, ActivityError, ActivityExists, AlreadyExists, ClockError, ConfigDeleted, ConfigError, ConfigInUse,
                     DatabaseInUse, DispatchsimError, InvalidArgument, InvalidTransition, NotFound, PayloadUnmappable, ResultConflict, StorageUnavailable,
                     StoreError)
from .events import EVENT_ONLY_WITH, EVENT_PARAMS, EVENT_REQUIRED_WITH, EVENT_STATUSES, MessageEvents, validate_event
from .health import AutoDisable, CircuitBreaker, auto_disable_from, circuit_breaker_from
from .policy import (MAX_AGE, MAX_ATTEMPTS, MAX_BATCH_SIZE, MAX_CONCURRENCY, MAX_DELAY, MAX_FACTOR, MAX_SCHEDULE,
                     MAX_TIMEOUT, PRESETS, BatchPolicy, OrderingPolicy, RetryPolicy, Timeouts, delay,
                     ordering_policy_from, retry_policy_from, timeouts_from)
from .printable import printable
from .redact import REDACTED
from .sender import VERSION, Outcome, OutcomeKind
from .states import ACTIVE, LIFECYCLE, TERMINAL, TRANSITIONS, Circuit, Status
from .store import Store, latest_schema_version
from .store_console import CONSOLE_ORDER, DeliveryCursor, DeliveryFilter, QueueRow
from .store_file import OwnerLock, storage_error
from .store_contract import EventsStoreContract, IdempotencyStoreContract, StoreContract
from .store_idempotency import IdempotencyStore, StoredAnswer
from .store_open import check_store, display_url, is_url, join_cluster, open_store, owner_lock
from .store_queries import LATENCY_BUCKETS, ActivityFilter, Metrics, WalCheckpointer
from .store_rows import (Activity, ApiKey, Attempt, Configuration, ConsoleSession, Delivery, EndpointHealth,
                         EventBatch, Notification, Provider, Tenant)

__all__ = [
    "AUTH_FIELDS", "AUTH_TYPES", "HEADER_NAME_PATTERN", "Auth", "check_signing_secret", "compile_mapping_spec",
    "ID_PATTERN", "check_id", "printable",
    "EVENT_ONLY_WITH", "EVENT_PARAMS", "EVENT_REQUIRED_WITH", "EVENT_STATUSES", "validate_event",
    "AutoDisable", "CircuitBreaker", "auto_disable_from", "circuit_breaker_from",
    "MAX_AGE", "MAX_ATTEMPTS", "MAX_BATCH_SIZE", "MAX_CONCURRENCY", "MAX_DELAY", "MAX_FACTOR", "MAX_SCHEDULE",
    "MAX_TIMEOUT", "BatchPolicy", "ordering_policy_from", "retry_policy_from", "timeouts_from",
    "ActivityExists", "AlreadyExists", "IdempotencyStore", "IdempotencyStoreContract", "StoredAnswer", "check_store",
    "display_url", "is_url", "join_cluster", "open_store", "owner_lock",
    "ACTIVE", "Activity", "ApiKey", "Attempt", "CONSOLE_ORDER", "Circuit", "Configuration", "ConsoleSession", "Delivery",
    "DeliveryCursor", "DeliveryFilter", "EndpointHealth", "EventBatch", "LIFECYCLE", "Notification", "Provider", "QueueRow", "Tenant",
    "ActivationRefused", "ClockError", "DatabaseInUse", "OwnerLock", "StorageUnavailable", "StoreError",
    "config_name", "queue_name", "scope_suffix", "latest_schema_version", "scoped_config_id", "storage_error", "ActivityError", "ActivityFilter", "ActivityPage", "CONFIG_FIELDS", "ConfigKind", "Clock",
    "ConfigDeleted", "ConfigError", "ConfigInUse", "DispatchsimError", "Engine", "InvalidArgument", "InvalidTransition", "LATENCY_BUCKETS", "MessageEvents", "Metrics", "NotFound",
    "OrderingPolicy", "Outcome", "OutcomeKind", "PRESETS", "PayloadUnmappable", "REDACTED", "RealClock",
    "ResultConflict", "StoreContract", "EventsStoreContract", "ResultSubmission", "RetryPolicy", "RunSummary", "Status", "Store", "TERMINAL", "TRANSITIONS",
    "Timeouts", "VERSION", "VirtualClock", "WalCheckpointer", "delay", "iso", "new_virtual_loop", "parse_iso", "run_virtual",
]
