"""API keys of serve mode: an admin key manages tenants and providers; a tenant key sees its tenant only.

Only a SHA-256 of a key is stored (keys are long random tokens, so a plain hash is enough);
the key itself is shown once, when it is created.
"""
from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from dispatchsim.engine import ApiKey, ConfigError, NotFound, StoreContract

KEY_PREFIX = "dsk_"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: ``tenant_id`` None means the admin."""

    key_id: str
    tenant_id: str | None

    @property
    def admin(self) -> bool:
        return self.tenant_id is None


def check_key_name(name: str | None) -> str | None:
    """A key's label is printed by ``keys list``, the console and logs: a control or other invisible
    character in it (a newline, an escape sequence that recolours or rewrites a terminal, a bidi
    override) could forge what those show, so it is refused when the key is made, for every reader
    at once, rather than escaped by each of them."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise ConfigError(f"key name: a string, got {type(name).__name__}")
    bad = next((c for c in name if not c.isprintable()), None)
    if bad is not None:
        raise ConfigError(f"key name: U+{ord(bad):04X} at position {name.index(bad) + 1} is a control or invisible "
                          "character; a name is a printable label")
    return name


def hash_key(key: str) -> str:
    # a header that is not UTF-8 reaches here with lone surrogates (aiohttp's decoding): a key no one holds
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


async def create_key(store: StoreContract, *, tenant_id: str | None, name: str | None = None, now: float,
               key: str | None = None) -> tuple[str, str]:
    """Store a new key (hashed); returns (key id, the key). ``tenant_id`` None makes an admin key."""
    if tenant_id is not None and await store.tenant(tenant_id) is None:
        raise NotFound(f"tenant {tenant_id!r} not found; create it first")
    check_key_name(name)
    if key is not None and len(key) < 16:
        raise ConfigError("api key: at least 16 characters")
    key = key or KEY_PREFIX + secrets.token_urlsafe(24)
    key_id = "key_" + hash_key(key)[:12]
    await store.add_api_key(key_id, hash_key(key), tenant_id=tenant_id, name=name, now=now)
    return key_id, key


def new_key() -> tuple[str, str]:
    """A fresh random key and its id."""
    key = KEY_PREFIX + secrets.token_urlsafe(24)
    return "key_" + hash_key(key)[:12], key


async def revoke_key(store: StoreContract, key_id: str, *, now: float) -> None:
    """Revoke a key: it stops working at once (every request looks its key up in the database)."""
    if not await store.revoke_api_key(key_id, now):
        raise NotFound(f"no active key {key_id!r} (see dispatchsim keys list)")


async def rotate_key(store: StoreContract, key_id: str, *, now: float) -> tuple[str, str]:
    """Replace a key by a new one with the same owner and label; the old one stops working.
    Returns (new key id, the new key): shown once, only its hash is stored."""
    new_id, key = new_key()
    if not await store.replace_api_key(key_id, new_id, hash_key(key), now):
        raise NotFound(f"no active key {key_id!r} (see dispatchsim keys list)")
    return new_id, key


async def list_keys(store: StoreContract) -> list[ApiKey]:
    return await store.api_keys()


class KeyRing:
    """Looks keys up in the database, plus keys given in a config file (kept hashed, in memory)."""

    def __init__(self, store: StoreContract, extra: dict[str, str | None] | None = None) -> None:
        self.store = store
        self._extra = {hash_key(k): Principal(key_id="cfg_" + hash_key(k)[:12], tenant_id=t)
                       for k, t in (extra or {}).items()}

    async def lookup(self, key: str | None) -> Principal | None:
        if not key:
            return None
        return await self.by_digest(hash_key(key))

    async def by_digest(self, digest: str) -> Principal | None:
        """The key with this SHA-256, if it is valid now (a revoked or rotated key is not)."""
        hit = self._extra.get(digest)
        if hit is not None:
            return hit
        row = await self.store.api_key_by_hash(digest)
        return Principal(key_id=row[0], tenant_id=row[1]) if row else None
