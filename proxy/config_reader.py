"""Typed reading of one TOML table, recording every problem under its dotted key."""

from __future__ import annotations

from typing import Any


class Reader:
    """Reads typed values out of one table, recording every problem under its dotted key."""

    def __init__(self, table: Any, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        self.table: dict[str, Any] = table if isinstance(table, dict) else {}
        self.seen: set[str] = set()
        if not isinstance(table, dict):
            problems.append(f"{path}: must be a table")

    def _key(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def raw(self, key: str, default: Any) -> Any:
        """The value as TOML gave it, for the few keys that accept more than one type."""
        self.seen.add(key)
        return self.table.get(key, default)

    def text(self, key: str, default: str, choices: tuple[str, ...] = ()) -> str:
        value = self.raw(key, default)
        if not isinstance(value, str):
            self.problems.append(f"{self._key(key)}: must be a string")
            return default
        if choices and value not in choices:
            self.problems.append(f"{self._key(key)}: must be one of {', '.join(choices)} (got {value!r})")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.raw(key, default)
        if not isinstance(value, bool):
            self.problems.append(f"{self._key(key)}: must be true or false (got {value!r})")
            return default
        return value

    def integer(self, key: str, default: int, lo: int = 0, hi: int | None = None) -> int:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or value < lo or (hi and value > hi):
            bound = f"between {lo} and {hi}" if hi else f"at least {lo}"
            self.problems.append(f"{self._key(key)}: must be an integer {bound} (got {value!r})")
            return default
        return value

    def number(self, key: str, default: float, lo: float = 0.0) -> float:
        value = self.raw(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= lo:
            self.problems.append(f"{self._key(key)}: must be a number above {lo:g} (got {value!r})")
            return default
        return float(value)

    def strings(self, key: str) -> tuple[str, ...]:
        value = self.raw(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problems.append(f"{self._key(key)}: must be a list of strings")
            return ()
        return tuple(value)

    def table_of(self, key: str) -> dict[str, Any]:
        value = self.raw(key, {})
        if not isinstance(value, dict):
            self.problems.append(f"{self._key(key)}: must be a table")
            return {}
        return value

    def done(self) -> None:
        for key in sorted(set(self.table) - self.seen):
            self.problems.append(f"{self._key(key)}: unknown key")
