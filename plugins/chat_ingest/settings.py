"""The typed model of ``sources.yaml``: every key, its type and its bounds, checked once, when the file is
read (:func:`chat_ingest.config.load_config`), so a typo or a value out of range fails the DAG file's parse
naming the key and what it allows, instead of being ignored or failing a task later."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, StrictInt, ValidationError, field_validator, model_validator

#: The settings a file may leave out, and what they are then (include/config/sources.yaml says what each
#: means): the one place they are defined, for the model and for whoever reads a setting.
DEFAULT_RETRIES = {"attempts": 3, "first_delay_seconds": 60, "max_delay_minutes": 30}
DEFAULT_SETTLE_MINUTES = 60
DEFAULT_RECHECK_DAYS = 1
DEFAULT_MAX_LOAD_TASKS_PER_TABLE = 16
DEFAULT_MOSTLY = 1.0
DEFAULT_MAX_QUARANTINED = 0.05

#: A UTC time of day, ``HH:MM``.
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")


class _Section(BaseModel):
    """A mapping whose keys are its fields and nothing else."""

    model_config = ConfigDict(extra="forbid")


def _whole(value: Any, unit: str, most: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise ValueError(f"expected whole {unit} from 0 to {most}, got {value!r}")
    return value


def _share(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"expected a share from 0 to 1, got {value!r}")
    return float(value)


class Botslovers(_Section):
    companies: list[str] = []
    #: chat_agent_log rows change after creation: each run re-reads this many hours before its window.
    agent_log_lookback_hours: StrictInt = 48


class Bots(_Section):
    bots: list[str] = []


class Unless(_Section):
    bucket: str
    account: str
    websites: list[str] = []


class Retries(_Section):
    """Every task's retries: attempts after the first, the first wait, the cap of the doubling waits."""

    attempts: Any = DEFAULT_RETRIES["attempts"]
    first_delay_seconds: Any = DEFAULT_RETRIES["first_delay_seconds"]
    max_delay_minutes: Any = DEFAULT_RETRIES["max_delay_minutes"]

    @field_validator("attempts")
    @classmethod
    def _attempts(cls, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"expected a whole number >= 0, got {value!r}")
        return value

    @field_validator("first_delay_seconds", "max_delay_minutes")
    @classmethod
    def _delay(cls, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"expected a number >= 0, got {value!r}")
        return value

    @model_validator(mode="after")
    def _capped(self) -> Retries:
        # Airflow reads a zero max_retry_delay as "no cap" (waits then double up to a day), and caps the
        # first wait too: a cap below the first delay would silently shorten it.
        if self.max_delay_minutes * 60 < max(self.first_delay_seconds, 1):
            raise ValueError(f"retries.max_delay_minutes: the cap of the waits must be above 0 and at least "
                             f"first_delay_seconds ({self.first_delay_seconds} s), got {self.max_delay_minutes!r}")
        return self


class Validation(_Section):
    default_mostly: float = DEFAULT_MOSTLY
    #: Per ``source[.table[.column[.expectation]]]``.
    mostly: dict[str, float] = {}
    default_max_quarantined: float = DEFAULT_MAX_QUARANTINED
    #: Per ``source[.table]``.
    max_quarantined: dict[str, float] = {}

    @field_validator("default_mostly", "default_max_quarantined", mode="before")
    @classmethod
    def _one_share(cls, value: Any) -> float:
        return _share(value)

    @field_validator("mostly", "max_quarantined", mode="before")
    @classmethod
    def _shares(cls, value: Any) -> dict[str, float]:
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping of names to shares from 0 to 1, got {value!r}")
        return {key: _share(share) for key, share in value.items()}


class Reporting(_Section):
    excluded_intents: list[str] = []


class Alerts(_Section):
    http_conn_id: str | None = None
    smtp_conn_id: str | None = None
    email_to: list[str] = []
    email_from: str | None = None
    #: UTC ``HH:MM`` on the day after a run's day; None: no deadline alert.
    landed_by: str | None = None

    @field_validator("landed_by")
    @classmethod
    def _clock(cls, value: str | None) -> str | None:
        if value is not None and not _CLOCK.fullmatch(value):
            raise ValueError(f"must be a UTC time HH:MM, got {value!r}")
        return value

    @model_validator(mode="after")
    def _mail_complete(self) -> Alerts:
        if self.smtp_conn_id and not (self.email_to and self.email_from):
            raise ValueError("alerts.smtp_conn_id needs alerts.email_to (a list of addresses) and alerts.email_from")
        return self


class Settings(_Section):
    """``sources.yaml``: each source's tenants, and the settings of every run (include/config/sources.yaml
    says what each means)."""

    botslovers: Botslovers | None = None
    a8: Bots | None = None
    ultimate: Bots | None = None
    unless: Unless | None = None
    settle_minutes: Any = DEFAULT_SETTLE_MINUTES
    recheck_days: Any = DEFAULT_RECHECK_DAYS
    max_load_tasks_per_table: StrictInt = DEFAULT_MAX_LOAD_TASKS_PER_TABLE
    retries: Retries = Retries()
    validation: Validation = Validation()
    #: source -> column -> vendor value -> meaning (chat_ingest.vocabulary).
    vocabulary: dict[str, dict[str, dict[str, str]]] = {}
    reporting: Reporting = Reporting()
    alerts: Alerts = Alerts()

    @field_validator("settle_minutes")
    @classmethod
    def _settle(cls, value: Any) -> int:
        return _whole(value, "minutes", 24 * 60 - 1)

    @field_validator("recheck_days")
    @classmethod
    def _recheck(cls, value: Any) -> int:
        return _whole(value, "days", 7)

    @field_validator("retries", mode="before")
    @classmethod
    def _retries_mapping(cls, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError(f"expected a mapping of {sorted(Retries.model_fields)}, got {value!r}")
        return value

    @field_validator("validation", "reporting", "alerts", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        return {} if value is None else value

    @model_validator(mode="after")
    def _deadline_after_the_runs_start(self) -> Settings:
        if self.alerts.landed_by:
            hours, minutes = map(int, self.alerts.landed_by.split(":"))
            if hours * 60 + minutes < self.settle_minutes:
                raise ValueError(f"alerts.landed_by {self.alerts.landed_by} is before the scheduled runs start "
                                 f"({self.settle_minutes} min after midnight UTC, settle_minutes): every day "
                                 "would raise the alert")
        return self


def check(data: dict, where: str) -> None:
    """Refuse ``data`` (``where``'s parsed text) unless it is a valid configuration, naming every key that
    is wrong and what it allows, in one error."""
    try:
        Settings.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"{where}: " + "; ".join(_problems(exc))) from None


def _problems(exc: ValidationError) -> list[str]:
    """Each error as ``key.path: what is wrong``; unknown keys of one mapping together, with the known ones."""
    unknown: dict[tuple, list[str]] = {}
    problems = []
    for error in exc.errors():
        loc = tuple(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            unknown.setdefault(loc[:-1], []).append(loc[-1])
            continue
        message = error["msg"].removeprefix("Value error, ")
        key = ".".join(loc)
        problems.append(message if not key or message.startswith(f"{key}:") else f"{key}: {message}")
    for parent, keys in unknown.items():
        model = Settings
        for part in parent:
            model = _section(model, part)
        known = sorted(model.model_fields) if model is not None else []
        problems.append(f"{'.'.join(parent) or 'top level'}: unknown keys {sorted(keys)} (known: {known})")
    return problems


def _section(model: type[BaseModel] | None, field: str) -> type[BaseModel] | None:
    """The model of ``field`` of ``model``, if it is a section."""
    if model is None or field not in model.model_fields:
        return None
    annotation = model.model_fields[field].annotation
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None

