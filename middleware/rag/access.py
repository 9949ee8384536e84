"""Who may change and who may read vector stores.

Writes (uploading files, creating, filling and deleting stores) need an admin key; with no keys
configured, only a client on this machine may write, as for the cache purge. Reads (search, listing,
injection) follow ``[rag] readers``: a key named there reads only the stores listed (ids or names, "*" for
all); a key not named there, an admin key, or any client when no keys are configured reads everything.
"""

from __future__ import annotations

from collections.abc import Mapping

LOOPBACK = ("127.0.0.1", "::1", "localhost")


class Access:
    def __init__(self, keys: Mapping[str, bool], readers: Mapping[str, tuple[str, ...]]) -> None:
        self.keys = keys  # API key name -> whether it is an admin key
        self.readers = readers

    def may_write(self, key: str | None, client: str) -> bool:
        if self.keys:
            return self.keys.get(key or "", False)
        return client in LOOPBACK

    def may_read(self, key: str | None, store_id: str, store_name: str) -> bool:
        if not self.keys or key is None:
            return True
        if self.keys.get(key, False):
            return True
        allowed = self.readers.get(key)
        return allowed is None or "*" in allowed or store_id in allowed or store_name in allowed
