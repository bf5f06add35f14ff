"""Configuration: one TOML file, overridden by environment variables, parsed strictly.

Anything unreadable, unknown or out of range is a ConfigError with a one-line reason: the server
refuses to start rather than guess (fail closed).

No `from __future__ import annotations`: pydantic evaluates string annotations again for every field of every
model; written as Python evaluates them, the models build with less CPU before a server's first answer.
"""

import os
import tomllib
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ledger.database_url import normalize_database_url
from policies import secrets
from policies.limits import ApprovalMode, BreakerAction, RiskLevel
from policies.secrets import register as register_secret

DEFAULT_CONFIG_FILE = "tradewarden.toml"


class ConfigError(Exception):
    """The configuration cannot be used; the message is one line, safe to print."""


class Strict(BaseModel):
    # allow_inf_nan=False: `inf` and `nan` are never a timeout, a TTL or a limit.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# Upper bounds of durations: a value past them is a typo or an attack on the config, never a policy.
MAX_TIMEOUT_SECONDS = 120
MAX_PROPOSAL_TTL_SECONDS = 7 * 24 * 3600
MAX_INTERVAL_SECONDS = 3600
MAX_WINDOW_SECONDS = 31 * 24 * 3600




class AgentConfig(Strict):
    id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    max_trade_size: Decimal = Field(default=Decimal(5000), ge=0)
    max_position_size: Decimal = Field(default=Decimal(20000), ge=0)
    max_daily_trades: int = Field(default=20, ge=0, le=2**31 - 1)  # an INTEGER column (PostgreSQL: int32)
    allowed_symbols: list[str] = Field(default_factory=lambda: ["*"])
    allowed_strategies: list[str] = Field(default_factory=lambda: ["*"])
    risk_level: RiskLevel = "moderate"
    approval: ApprovalMode | None = None  # None: auto in paper, operator in live
    auto_approve_max_notional: Decimal | None = Field(default=None, ge=0)  # None: 1000 paper, 0 live
    capital: Decimal = Field(default=Decimal(100000), ge=0)
    enabled: bool = True
    # Optional overrides of the risk level's defaults (policies/limits.py).
    max_order_qty: Decimal | None = Field(default=None, ge=0)
    max_gross_exposure: Decimal | None = Field(default=None, ge=0)
    max_orders_per_window: int | None = Field(default=None, ge=0)
    order_rate_window_seconds: int | None = Field(default=None, gt=0, le=MAX_WINDOW_SECONDS)
    rolling_notional_max: Decimal | None = Field(default=None, ge=0)
    rolling_notional_window_seconds: int | None = Field(default=None, gt=0, le=MAX_WINDOW_SECONDS)
    duplicate_window_seconds: int | None = Field(default=None, ge=0, le=MAX_WINDOW_SECONDS)
    daily_loss_limit: Decimal | None = Field(default=None, ge=0)
    max_drawdown_pct: Decimal | None = Field(default=None, ge=0, le=100)
    price_collar_pct: Decimal | None = Field(default=None, ge=0)
    max_quote_age_seconds: int | None = Field(default=None, gt=0, le=MAX_WINDOW_SECONDS)
    allow_short: bool | None = None
    max_denials_per_window: int | None = Field(default=None, ge=0)
    denials_window_seconds: int | None = Field(default=None, gt=0, le=MAX_WINDOW_SECONDS)
    breaker_action: BreakerAction | None = None
    # Protective stops (policies/limits.py has the risk levels' defaults: conservative requires a stop).
    require_stop_loss: bool | None = None
    max_risk_per_trade: str | None = Field(default=None, pattern=r"^\s*\d{1,12}(\.\d{1,9})?\s*%?\s*$")  # "500" | "1%"

    @field_validator("max_risk_per_trade", mode="before")
    @classmethod
    def _risk_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float | Decimal) and not isinstance(value, bool) else value

    def limit_overrides(self) -> dict[str, Any]:
        from policies.limits import OPTIONAL_LIMITS

        return {name: getattr(self, name) for name in OPTIONAL_LIMITS if getattr(self, name) is not None}

    @field_validator("allowed_symbols")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [s.strip().upper() for s in value]


class ServerConfig(Strict):
    database_url: str = "sqlite+aiosqlite:///tradewarden.db"
    broker: Literal["simulated", "alpaca"] = "simulated"
    alpaca_trading_url: str | None = None
    alpaca_data_url: str | None = None
    trading_mode: Literal["paper", "live"] = "paper"
    enable_agent_trading: bool = True
    max_agents_per_account: int = Field(default=5, ge=1)
    agent_risk_multiplier: Decimal = Field(default=Decimal(1), gt=0, le=100)
    server_name: str = "tradewarden"
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    proposal_ttl_seconds: int = Field(default=300, gt=0, le=MAX_PROPOSAL_TTL_SECONDS)
    limit_proposal_ttl_seconds: int = Field(default=3600, gt=0, le=MAX_PROPOSAL_TTL_SECONDS)
    broker_timeout_seconds: float = Field(default=10.0, gt=0, le=MAX_TIMEOUT_SECONDS)
    reconcile_interval_seconds: float = Field(default=30.0, gt=0, le=MAX_INTERVAL_SECONDS)
    # Reconciliation is stale after this many intervals without a successful pass (an alert); with
    # reconcile_stale_action = "reduce_only" everyone is reduce-only until it is healthy again (a dead-man switch).
    reconcile_stale_intervals: int = Field(default=3, ge=1, le=1000)
    reconcile_stale_action: Literal["alert", "reduce_only"] = "alert"
    # how long an unacknowledged order is looked for
    order_in_doubt_seconds: int = Field(default=86400, gt=0, le=MAX_WINDOW_SECONDS)
    state_poll_seconds: float = Field(default=0.5, gt=0, le=60)
    requests_per_minute: int = Field(default=600, ge=1)  # per agent, over HTTP
    request_state_keys: list[str] = Field(default_factory=list)  # shared by replicas behind one URL
    # The URL agents use (behind a load balancer / TLS proxy), e.g. "https://trade.example.com/mcp": it is the
    # bearer tokens' resource, the protected-resource metadata, and an allowed Host. Default: http://HOST:PORT/mcp
    public_url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+(/\S*)?$")
    log_json: bool = False
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    simulated_seed: int = 42
    simulated_cash: Decimal = Field(default=Decimal(1000000), ge=0)
    enforce_market_hours: bool = True


class AuditConfig(Strict):
    """[audit]: anchoring the audit chain outside the database (policies/anchoring.py). Relative paths are
    relative to the config file's folder (resolved by load_config), never to the working directory."""

    signing_key_file: Path  # Ed25519 private key made by `tradewarden audit keygen`; never in the database
    checkpoint_dir: Path  # append-only signed checkpoints of the chain head
    checkpoint_interval_seconds: float = Field(default=1.0, gt=0, le=3600)
class WebhookConfig(Strict):
    """[[webhooks]]: events pushed to another system, signed with a secret read from the environment."""

    url: str = Field(max_length=2000)
    events: list[str] = Field(default_factory=lambda: ["*"], min_length=1)
    secret_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    format: Literal["json", "slack"] = "json"
    name: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    max_backoff_seconds: float = Field(default=300.0, gt=0, le=3600)  # retries back off up to this

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        import re

        if not re.fullmatch(r"https?://[^/\s?#]+([/?#]\S*)?", value):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("events")
    @classmethod
    def _known_events(cls, value: list[str]) -> list[str]:
        from policies.events import EVENT_TYPES

        unknown = [t for t in value if t != "*" and t not in EVENT_TYPES]
        if unknown:
            raise ValueError(f"unknown event type {unknown[0]!r} (known: {', '.join(EVENT_TYPES)} or \"*\")")
        return value

    @property
    def shown(self) -> str:
        """How output and records name the endpoint: its name, else its origin only (a webhook URL's path is often
        its credential, e.g. Slack's)."""
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        return self.name or f"{parts.scheme}://{parts.netloc}/…"

    @property
    def key(self) -> str:
        """How the delivery state names this endpoint: its name, else a digest of its URL."""
        import hashlib

        return self.name or "url-" + hashlib.sha256(self.url.encode()).hexdigest()[:32]


class Config(Strict):
    server: ServerConfig = ServerConfig()
    agents: list[AgentConfig] = Field(default_factory=list)
    audit: AuditConfig | None = None  # None: the chain is not anchored (docs/ARCHITECTURE.md "Audit")
    webhooks: list[WebhookConfig] = Field(default_factory=list)
    source: str = "built-in defaults"

    @model_validator(mode="after")
    def _unique_agents(self) -> "Config":
        ids = [a.id for a in self.agents]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"agent id listed twice: {', '.join(duplicates)}")
        if len(ids) > self.server.max_agents_per_account:
            raise ValueError(f"{len(ids)} agents configured but max_agents_per_account is "
                             f"{self.server.max_agents_per_account}")
        keys = [w.key for w in self.webhooks]
        if len(set(keys)) != len(keys):
            raise ValueError("two [[webhooks]] have the same name or url")
        return self

    def agent(self, agent_id: str) -> AgentConfig | None:
        return next((a for a in self.agents if a.id == agent_id), None)

    @property
    def is_live(self) -> bool:
        return self.server.trading_mode == "live"


# Environment variables that override [server] keys: TRADEWARDEN_<KEY> for every key, plus the seed's names.
SEED_ENV_NAMES = {
    "ENABLE_AGENT_TRADING": "enable_agent_trading",
    "AGENT_TRADING_MODE": "trading_mode",
    "MAX_AGENTS_PER_ACCOUNT": "max_agents_per_account",
    "AGENT_RISK_MULTIPLIER": "agent_risk_multiplier",
}
_LIST_KEYS = {"request_state_keys"}


def _env_overrides(env: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, str]]:
    """The [server] keys set by the environment, and which variable set each (named in errors). Values are
    taken as written: `" LIVE "` is not `live` (SPEC invariant 6)."""
    overrides: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for name, key in SEED_ENV_NAMES.items():
        if name in env:
            overrides[key], origins[key] = env[name], name
    for key in ServerConfig.model_fields:
        name = f"TRADEWARDEN_{key.upper()}"
        if name in env:
            if key in origins and env[origins[key]] != env[name]:
                raise ConfigError(f"{origins[key]} and {name} disagree ({key}): set only one")
            overrides[key] = env[name].split(",") if key in _LIST_KEYS else env[name]
            origins[key] = name
    return overrides, origins


def _one_line(error: ValidationError, origins: Mapping[str, str] | None = None) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    if origins and len(first["loc"]) == 1 and str(first["loc"][0]) in origins:
        where = f"{where} (from {origins[str(first['loc'][0])]})"
    more = f" (and {error.error_count() - 1} more)" if error.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def relative_to_config(value: Path, config_path: Path | None) -> Path:
    """A path from the config file: relative ones are relative to the file's folder, never to the cwd."""
    if value.is_absolute() or config_path is None:
        return value
    return config_path.resolve().parent / value


def _audit_section(section: Any, config_path: Path | None) -> AuditConfig | None:
    if section is None:
        return None
    try:
        audit = AuditConfig.model_validate(section)
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: audit.{_one_line(exc)}") from None
    return audit.model_copy(update={
        "signing_key_file": relative_to_config(audit.signing_key_file, config_path),
        "checkpoint_dir": relative_to_config(audit.checkpoint_dir, config_path)})


def resolve_config_path(explicit: str | None, env: Mapping[str, str]) -> Path | None:
    if explicit:
        return Path(explicit)
    if env.get("TRADEWARDEN_CONFIG"):
        return Path(env["TRADEWARDEN_CONFIG"])
    default = Path(DEFAULT_CONFIG_FILE)
    return default if default.exists() else None


def load_config(path: str | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Read the file (if any), apply environment overrides, validate everything, check the live switch."""
    env = os.environ if env is None else env
    config_path = resolve_config_path(path, env)
    raw: dict[str, Any] = {}
    if config_path is not None:
        try:
            raw = tomllib.loads(config_path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {config_path}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file unreadable: {config_path}: {exc}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file is not valid TOML: {config_path}: {exc}") from None
    unknown = sorted(set(raw) - {"server", "agents", "audit", "webhooks"})
    if unknown:
        raise ConfigError(f"unknown section in config: {', '.join(unknown)}")
    overrides, origins = _env_overrides(env)
    server = {**raw.get("server", {}), **overrides}
    try:
        server_config = ServerConfig(**server)
        # A relative SQLite path is the config file's neighbour, whatever the working directory.
        base_dir = config_path.parent if config_path is not None else None
        server_config = server_config.model_copy(update={
            "database_url": normalize_database_url(server_config.database_url, base_dir)})
        config = Config(server=server_config, agents=raw.get("agents", []),
                        audit=_audit_section(raw.get("audit"), config_path),
                        webhooks=raw.get("webhooks", []),
                        source=str(config_path) if config_path else "built-in defaults")
    except ValidationError as exc:
        raise ConfigError(f"invalid configuration: {_one_line(exc, origins)}") from None
    except ValueError as exc:
        raise ConfigError(f"invalid configuration: {exc}") from None
    if config.is_live and env.get("TRADEWARDEN_ALLOW_LIVE") != "1":
        raise ConfigError("trading_mode is live but TRADEWARDEN_ALLOW_LIVE=1 is not set: refusing to start")
    check_mode_and_broker(config.server)
    return config


# Alpaca's trading endpoints (alpaca-py's defaults). Market data has one endpoint for both modes.
ALPACA_PAPER_URL = "https://paper-api.alpaca.markets"
ALPACA_LIVE_URL = "https://api.alpaca.markets"


def alpaca_trading_url(server: ServerConfig) -> str:
    """The trading endpoint the Alpaca broker uses: the override, else the mode's own."""
    if server.alpaca_trading_url:
        return server.alpaca_trading_url.rstrip("/")
    return ALPACA_LIVE_URL if server.trading_mode == "live" else ALPACA_PAPER_URL


def is_custom_trading_url(server: ServerConfig) -> bool:
    """An Alpaca-compatible endpoint that is not Alpaca's own (a test server, a proxy): paper only."""
    return server.broker == "alpaca" and _url_host(alpaca_trading_url(server)) not in (
        _url_host(ALPACA_PAPER_URL), _url_host(ALPACA_LIVE_URL))


def _url_host(url: str) -> str:
    return (urlsplit(url).hostname or "").rstrip(".").lower()


def check_mode_and_broker(server: ServerConfig) -> None:
    """The broker's endpoint matches the mode (SPEC invariant 6), so paper can never reach real money and live
    never trades on a simulation. Any Alpaca host but the paper one counts as live (fail closed). ConfigError
    with a one-line reason naming the key."""
    for key in ("alpaca_trading_url", "alpaca_data_url"):
        value = getattr(server, key)
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname or any(c.isspace() for c in value):
                raise ConfigError(f"invalid configuration: {key} must be an http(s) URL")
    live = server.trading_mode == "live"
    if server.broker == "simulated":
        if live:
            raise ConfigError("invalid configuration: trading_mode is live but broker is simulated: live trading "
                              "needs a real broker (broker = \"alpaca\")")
        return
    url = alpaca_trading_url(server)
    host = _url_host(url)
    paper_host, live_host = _url_host(ALPACA_PAPER_URL), _url_host(ALPACA_LIVE_URL)
    alpaca_host = host == "alpaca.markets" or host.endswith(".alpaca.markets")
    if live:
        if url != ALPACA_LIVE_URL:
            what = "a paper endpoint" if host == paper_host else "not Alpaca's live endpoint"
            raise ConfigError(f"invalid configuration: trading_mode is live but alpaca_trading_url is {what}: "
                              f"live trading uses {ALPACA_LIVE_URL} only")
    elif alpaca_host and host != paper_host:
        which = "the live endpoint" if host == live_host else "an Alpaca endpoint other than paper's"
        raise ConfigError(f"invalid configuration: trading_mode is paper but alpaca_trading_url is {which} "
                          f"(real money): paper trading uses {ALPACA_PAPER_URL}")
    elif host == paper_host and urlsplit(url).scheme != "https":
        raise ConfigError(f"invalid configuration: alpaca_trading_url must be {ALPACA_PAPER_URL} (https)")


def check_broker_credentials(config: Config, env: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The Alpaca keys when the broker is Alpaca (None for the simulated broker), registered with the
    scrubbers (policies/secrets.py) so no rendering of them is ever shown. ConfigError, with a one-line reason
    that names the variable and never shows a key, when one is missing or has whitespace, a line break, a
    control or a non-ASCII character inside (a paste slip: HTTP libraries quote such a value in their
    errors). Surrounding whitespace (a trailing newline from a file) is dropped."""
    if config.server.broker != "alpaca":
        return None
    env = os.environ if env is None else env
    missing = [name for name in ("ALPACA_API_KEY", "ALPACA_SECRET_KEY") if not env.get(name, "").strip()]
    if missing:
        raise ConfigError(f"broker is alpaca but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} "
                          "not set in the environment: refusing to start")
    keys = env["ALPACA_API_KEY"], env["ALPACA_SECRET_KEY"]
    secrets.register(*keys, *(key.strip() for key in keys))
    for name, key in zip(("ALPACA_API_KEY", "ALPACA_SECRET_KEY"), keys, strict=True):
        problem = secrets.unsafe_character(key.strip())
        if problem is not None:
            raise ConfigError(f"{name} has {problem} inside (a paste slip?): refusing to start; "
                              "set it again (the value is not shown)")
    return keys[0].strip(), keys[1].strip()


def webhook_secrets(config: Config, env: Mapping[str, str] | None = None) -> dict[str, bytes]:
    """Each webhook's signing secret by its key, from the environment. ConfigError, one line naming the variable
    (never its value), when one is missing or empty."""
    env = os.environ if env is None else env
    secrets: dict[str, bytes] = {}
    for hook in config.webhooks:
        value = env.get(hook.secret_env, "")
        if not value.strip():
            raise ConfigError(f"webhook {hook.shown}: secret_env {hook.secret_env} is not set in the "
                              "environment: refusing to start")
        register_secret(value)  # masked by every scrubber, like the broker's keys
        secrets[hook.key] = value.encode()
    return secrets
