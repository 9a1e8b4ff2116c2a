"""dispatchsim engine: the sender side of Reten dispatch / Reteno webhooks, on SQLite."""
from __future__ import annotations

from .clock import Clock, RealClock, VirtualClock, iso, new_virtual_loop, parse_iso, run_virtual
from .config import CONFIG_FIELDS, ConfigKind
from .core import ActivityPage, Engine, ResultSubmission, RunSummary, config_name, scoped_config_id
from .errors import (ActivationRefused, ActivityError, ActivityExists, ConfigError, DatabaseInUse, DispatchsimError,
                     InvalidTransition, NotFound, PayloadUnmappable, ResultConflict, StorageUnavailable, StoreError)
from .events import MessageEvents
from .policy import PRESETS, OrderingPolicy, RetryPolicy, Timeouts, delay
from .redact import REDACTED
from .sender import VERSION, Outcome, OutcomeKind
from .states import ACTIVE, LIFECYCLE, TERMINAL, TRANSITIONS, Circuit, Status
from .store import Store, latest_schema_version
from .store_console import CONSOLE_ORDER, DeliveryCursor, DeliveryFilter, QueueRow
from .store_file import OwnerLock, storage_error
from .store_contract import EventsStoreContract, IdempotencyStoreContract, StoreContract
from .store_idempotency import IdempotencyStore, StoredAnswer
from .store_open import check_store, open_store, owner_lock
from .store_queries import LATENCY_BUCKETS, ActivityFilter, Metrics, WalCheckpointer
from .store_rows import (Activity, ApiKey, Attempt, Configuration, Delivery, EndpointHealth, Notification, Provider,
                         Tenant)

__all__ = [
    "ActivityExists", "IdempotencyStore", "IdempotencyStoreContract", "StoredAnswer", "check_store", "open_store",
    "owner_lock",
    "ACTIVE", "Activity", "ApiKey", "Attempt", "CONSOLE_ORDER", "Circuit", "Configuration", "Delivery",
    "DeliveryCursor", "DeliveryFilter", "EndpointHealth", "LIFECYCLE", "Notification", "Provider", "QueueRow", "Tenant",
    "ActivationRefused", "DatabaseInUse", "OwnerLock", "StorageUnavailable", "StoreError",
    "config_name", "latest_schema_version", "scoped_config_id", "storage_error", "ActivityError", "ActivityFilter", "ActivityPage", "CONFIG_FIELDS", "ConfigKind", "Clock",
    "ConfigError", "DispatchsimError", "Engine", "InvalidTransition", "LATENCY_BUCKETS", "MessageEvents", "Metrics", "NotFound",
    "OrderingPolicy", "Outcome", "OutcomeKind", "PRESETS", "PayloadUnmappable", "REDACTED", "RealClock",
    "ResultConflict", "StoreContract", "EventsStoreContract", "ResultSubmission", "RetryPolicy", "RunSummary", "Status", "Store", "TERMINAL", "TRANSITIONS",
    "Timeouts", "VERSION", "VirtualClock", "WalCheckpointer", "delay", "iso", "new_virtual_loop", "parse_iso", "run_virtual",
]
