"""Where the settings are: the settings file every command reads, found the same way wherever
it starts, before the settings themselves are read."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class _Locator(BaseSettings):
    """The two settings that say where the others are, read first from the environment."""

    model_config = SettingsConfigDict(env_prefix="SG_", extra="ignore")

    env_file: Path | None = None
    catalogue: Path = Path("services.yaml")


class SettingsFileMissing(FileNotFoundError):
    """The settings file named by ``--env-file`` or ``SG_ENV_FILE`` does not exist."""


def env_file_for(explicit: Path | None = None) -> Path | None:
    """The settings file every command reads, found the same way wherever it starts:
    ``--env-file``, else ``SG_ENV_FILE``, else ``.env`` beside the catalogue, else ``.env``
    in the working directory (none when there is no such file)."""
    locator = _Locator()
    named = explicit if explicit is not None else locator.env_file
    if named is not None:
        if not named.is_file():
            raise SettingsFileMissing(f"settings file {named} does not exist")
        return named
    for candidate in (locator.catalogue.parent / ".env", Path(".env")):
        if candidate.is_file():
            return candidate
    return None
