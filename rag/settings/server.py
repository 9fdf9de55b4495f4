"""The HTTP service's settings: bind address, API keys (plain and scoped), limits, jobs."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from rag.settings.sections import Section


class ApiKeySettings(Section):
    """One scoped API key (`[[server.keys]]`, or an entry of server.keys_file). Checked in server/auth.py."""

    name: str = Field(min_length=1, max_length=100, description="Who holds the key (named in errors and logs).")
    key: str | None = Field(None, min_length=1, description="The key itself (give this or sha256, not both).")
    sha256: str | None = Field(
        None, pattern=r"^[0-9a-fA-F]{64}$", description="Hex SHA-256 of the key: the file then holds no secret."
    )
    kbs: list[str] | Literal["*"] = Field(description="Knowledge bases the key may use, or '*' for all.")
    read_only: bool = Field(False, description="Search, ask, chat and read only: no upload, delete or KB changes.")


class ServerSettings(Section):
    host: str = Field("127.0.0.1", description="Interface to bind; loopback unless told otherwise.")
    port: int = Field(8000, ge=1, le=65535, description="TCP port.")
    api_keys: list[str] = Field(
        default_factory=list, description="Accepted API keys; when set, every route but health needs one."
    )
    keys: list[ApiKeySettings] = Field(
        default_factory=list, description="Scoped API keys (some knowledge bases, read-only); see README 'API keys'."
    )
    keys_file: Path | None = Field(
        None, description="A TOML or JSON file of scoped API keys (same entries as server.keys), read at startup."
    )
    cors_origins: list[str] = Field(default_factory=list, description="Origins allowed by CORS (none by default).")
    max_upload_mb: int = Field(100, ge=1, description="Largest accepted upload, per file.")
    max_upload_files: int = Field(50, ge=1, description="Most files in one upload request.")
    request_timeout_s: float = Field(300.0, gt=0, description="Time limit for one request.")
    jobs_keep_days: float = Field(
        7.0, gt=0, description="Finished ingestion jobs are forgotten this many days after they ended."
    )
