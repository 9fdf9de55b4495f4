"""API keys: `Authorization: Bearer <key>` on every route but the open ones, when keys are configured.

Open without a key: `/healthz` (liveness probes), the web page's static code (`/`, `/static/*`: no
data in it; the page asks for a key and sends it on its API calls) and the OpenAPI description
(`/docs`, `/openapi.json`: the schema, no data).

Two kinds of keys, one check:

* plain keys (`server.api_keys`, `CITEQA_API_KEYS`): full access, as before;
* scoped keys (`[[server.keys]]` and/or the file `server.keys_file`): a `name`, the `kbs` it may use
  (a list or "*") and `read_only`; each given as `key` or as its `sha256` (the file then holds no secret).

`require_api_key` turns the presented key into a `Principal` (attached to `request.state.principal`);
routes and MCP tools ask it `check_kb(kb, write=...)`. A knowledge base outside the key's scope is a 403
whether or not it exists: the check comes before the existence check, so the answer reveals nothing.
Things named by id alone (jobs, a page without `?kb=`) in another KB look like unknown ids (404).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError

from rag.errors import ConfigError, Forbidden, InvalidRequest, Unauthorized
from rag.settings import ApiKeySettings, ServerSettings

_bearer = HTTPBearer(auto_error=False, description="An API key (needed only when keys are configured).")


@dataclass(frozen=True)
class Principal:
    """What the caller's key may do: `kbs` None means every knowledge base."""

    name: str
    kbs: frozenset[str] | None = None
    read_only: bool = False

    def allows(self, kb: str) -> bool:
        return self.kbs is None or kb in self.kbs

    def visible(self, kbs: Iterable[str]) -> list[str]:
        """The knowledge bases of `kbs` this key may see, in their order."""
        return [kb for kb in kbs if self.allows(kb)]

    def check_kb(self, kb: str, *, write: bool = False) -> None:
        """Forbidden unless the key may use `kb` (and change it, when `write`)."""
        if not self.allows(kb):
            raise Forbidden(f"API key {self.name!r} may not use knowledge base {kb!r}")
        if write:
            self.check_write()

    def check_write(self) -> None:
        if self.read_only:
            raise Forbidden(f"API key {self.name!r} is read-only: it may search, ask and read, not change anything")


FULL_ACCESS = Principal("full access")  # no keys configured, a plain key, or stdio MCP (the local user)


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class KeyRing:
    """Every configured key as (sha256 digest, principal). Built once per app: bad entries fail at startup."""

    def __init__(self, entries: list[tuple[bytes, Principal]]) -> None:
        self.entries = entries

    @property
    def enabled(self) -> bool:
        return bool(self.entries)

    @classmethod
    def from_settings(cls, server: ServerSettings) -> KeyRing:
        entries: list[tuple[bytes, Principal]] = []
        seen: dict[bytes, str] = {}  # digest -> where it was configured, to name both places of a duplicate

        def add(digest: bytes, principal: Principal, where: str) -> None:
            if digest in seen:
                raise ConfigError(f"the same API key is configured twice: {seen[digest]} and {where}")
            seen[digest] = where
            entries.append((digest, principal))

        for i, key in enumerate(server.api_keys):
            add(_digest(key), FULL_ACCESS, f"server.api_keys #{i + 1}")
        scoped = [(entry, "server.keys") for entry in server.keys]
        if server.keys_file is not None:
            scoped += [(entry, str(server.keys_file)) for entry in load_keys_file(server.keys_file)]
        names: set[str] = set()
        for entry, origin in scoped:
            if entry.name in names:
                raise ConfigError(f"{origin}: two API keys are named {entry.name!r}; names must be unique")
            names.add(entry.name)
            add(_entry_digest(entry, origin), _principal(entry, origin), f"{origin} {entry.name!r}")
        return cls(entries)

    def lookup(self, given: str) -> Principal | None:
        """The principal of `given`, comparing its digest with every entry in constant time (no early exit)."""
        digest = _digest(given)
        found: Principal | None = None
        for expected, principal in self.entries:
            if hmac.compare_digest(digest, expected):
                found = principal
        return found


def _entry_digest(entry: ApiKeySettings, origin: str) -> bytes:
    if (entry.key is None) == (entry.sha256 is None):
        raise ConfigError(f"{origin}: API key {entry.name!r}: give exactly one of 'key' and 'sha256'")
    return _digest(entry.key) if entry.key is not None else bytes.fromhex(entry.sha256 or "")


def _principal(entry: ApiKeySettings, origin: str) -> Principal:
    from rag.kb import validate_kb_name

    if entry.kbs == "*":
        return Principal(entry.name, None, entry.read_only)
    try:
        kbs = frozenset(validate_kb_name(kb) for kb in entry.kbs)
    except InvalidRequest as exc:
        raise ConfigError(f"{origin}: API key {entry.name!r}: {exc}") from exc
    return Principal(entry.name, kbs, entry.read_only)


def load_keys_file(path: Path) -> list[ApiKeySettings]:
    """The entries of a keys file: TOML `[[keys]]` tables, or JSON `{"keys": [...]}` (or a bare list)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"server.keys_file {path}: cannot read it ({exc.strerror or exc})") from exc
    data: Any
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"server.keys_file {path}: name a .toml or .json file")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"server.keys_file {path}: not valid {path.suffix[1:].upper()}: {exc}") from exc
    items = data if isinstance(data, list) else data.get("keys") if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise ConfigError(f"server.keys_file {path}: expected a list of keys under 'keys'")
    entries: list[ApiKeySettings] = []
    for i, item in enumerate(items):
        try:
            entries.append(ApiKeySettings.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first.get("loc", ())) or "entry"
            raise ConfigError(f"server.keys_file {path}: key #{i + 1}: {where}: {first.get('msg')}") from exc
    return entries


def keyring(app: FastAPI) -> KeyRing:
    """The app's keys (create_app builds them at startup; built here for an app made some other way)."""
    ring: KeyRing | None = getattr(app.state, "citeqa_keys", None)
    if ring is None:
        ring = app.state.citeqa_keys = KeyRing.from_settings(app.state.citeqa.settings.server)
    return ring


async def require_api_key(request: Request) -> Principal:
    """FastAPI dependency: the caller's Principal; Unauthorized (401) unless a configured key is presented."""
    ring = keyring(request.app)
    principal = FULL_ACCESS
    if ring.enabled:
        credentials: HTTPAuthorizationCredentials | None = await _bearer(request)
        if credentials is None:
            raise Unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        found = ring.lookup(credentials.credentials)
        if found is None:
            raise Unauthorized("invalid API key")
        principal = found
    request.state.principal = principal
    return principal
