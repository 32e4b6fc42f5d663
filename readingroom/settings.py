"""Typed settings, loaded once from YAML, overridden by READINGROOM_* environment variables.

``load_settings()`` is pure (it takes the environment as an argument) so that tests can build
settings without touching the process; ``get_settings()`` caches the process-wide instance for
the CLI and the app. Components receive a ``Settings`` object: they never read the environment.
"""

from __future__ import annotations

import ipaddress
import logging
import os
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from readingroom.errors import ConfigError

log = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "configs" / "default.yaml"
ENV_PREFIX = "READINGROOM_"
# READINGROOM_* variables that are not settings: the settings file, and the first admin's password
# (read once by app.initial_logins, never kept in the settings).
NOT_SETTINGS = (ENV_PREFIX + "CONFIG", ENV_PREFIX + "ADMIN_PASSWORD")
CONFIG_DIR = PROJECT_ROOT / "configs"


# Dictation (dictation/): the defaults the dictation benchmark chose; the ``dictation:`` block of
# configs/default.yaml overrides them.
@dataclass(frozen=True)
class DictationSettings:
    # Model: "tiny.en", "base", or the path of any CTranslate2 Whisper directory.
    model: str = "tiny.en"
    device: str = "cpu"
    compute_type: str = "int8"
    cpu_threads: int = 2
    beam_size: int = 1
    language: str = "en"
    # Two-pass: partials with ``model`` (fast), the final text of each utterance with
    # ``final_model`` at ``final_beam_size`` ("" = ``model``). In streaming the final decode runs
    # on a worker thread so partials of the next utterance are not held up.
    final_model: str = "base"
    final_beam_size: int = 5
    final_in_background: bool = True
    # Linux nice value of the final model's threads: the final pass yields the CPU to partials.
    final_nice: int = 10
    # While more than this many utterances wait for their final text (the CPU cannot keep up
    # with continuous dictation), the waiting ones are decoded by the live model instead: the
    # text stays within seconds of the speech. 0 turns this off.
    final_backlog: int = 2
    # Where the final text of an utterance is decoded: "local" (this process, on the worker
    # thread above) or "queue" (a ``dictation_final`` job on the ``asr`` queue, decoded by
    # ``readingroom worker --queues asr``; the web node keeps the VAD and the partials). With
    # "queue", an utterance that no worker has answered within queue_timeout_s is decoded here,
    # with a warning: nothing dictated is lost. The web node looks for the answer every
    # queue_poll_ms.
    final_decode: str = "local"
    queue_timeout_s: float = 10.0
    queue_poll_ms: int = 20
    # Commands: an utterance of at most this many seconds is first decoded with a prompt of
    # command phrases; it is kept only if the whole text is a command, else decoded as text.
    command_max_s: float = 3.0
    use_command_prompt: bool = True
    # ...and confirmed by a decode without the prompt (see dictation.stream.confirm_command).
    command_confirm: bool = True
    command_confirm_similarity: float = 0.6
    command_confirm_extra_words: int = 3
    # Biasing: hotwords/prompt from the lexicon and the active template.
    use_prompt: bool = True
    use_hotwords: bool = False
    prompt_max_terms: int = 20
    # Hallucination filter: drop a segment above/below these.
    max_no_speech_prob: float = 0.6
    min_avg_logprob: float = -1.0
    # A final text that is a repetition loop ("lylyly…", compression ratio > 2.4) is decoded
    # again without the prompt, then by the live model.
    degenerate_fallback: bool = True
    # Streaming / endpointing (Silero VAD).
    vad_threshold: float = 0.5
    min_silence_duration_ms: int = 600
    min_speech_duration_ms: int = 200
    speech_pad_ms: int = 200
    partial_interval_ms: int = 800
    max_utterance_s: float = 25.0
    # Post-correction: accept a lexicon term only if it is this close (0..1) and this much
    # closer than the runner-up.
    correction_min_similarity: float = 0.82
    correction_margin: float = 0.05
    # Files.
    lexicon_path: Path = CONFIG_DIR / "lexicon.txt"
    commands_path: Path = CONFIG_DIR / "commands.yaml"
    templates_dir: Path = CONFIG_DIR / "templates"
    template: str = "free"

    @classmethod
    def from_mapping(cls, data: "Mapping[str, Any] | DictationSettings | None") -> "DictationSettings":
        """Build from the ``dictation:`` YAML block; unknown keys are an error naming them."""
        if isinstance(data, DictationSettings):
            return data
        data = dict(data or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"Unknown dictation setting(s) {unknown}; valid keys are {sorted(known)}."
            )
        for key, value in list(data.items()):
            if key.endswith("_path") or key.endswith("_dir"):
                data[key] = Path(value)
        settings = cls(**data)
        if settings.cpu_threads < 1:
            raise ConfigError("dictation.cpu_threads must be >= 1 (2 is the tested value).")
        if settings.beam_size < 1 or settings.final_beam_size < 1:
            raise ConfigError("dictation.beam_size and dictation.final_beam_size must be >= 1.")
        if not 0 <= settings.command_confirm_similarity <= 1:
            raise ConfigError("dictation.command_confirm_similarity must be between 0 and 1 (0.6 is the tested value).")
        if settings.final_decode not in ("local", "queue"):
            raise ConfigError(f"dictation.final_decode is {settings.final_decode!r}; valid values are local or "
                              "queue (queue needs `readingroom worker --queues asr`, docs/dictation.md).")
        if settings.queue_timeout_s <= 0 or settings.queue_poll_ms < 1:
            raise ConfigError("dictation.queue_timeout_s must be > 0 (10 is the tested value) and "
                              "dictation.queue_poll_ms >= 1 (20 is the tested value).")
        return settings

    def with_(self, **changes: Any) -> "DictationSettings":
        return replace(self, **changes)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def check_listener_tls(section: Any, name: str) -> Any:
    """The TLS files of a listener section (dicom, hl7): certificate and key together; a CA file
    (client certificates required) only with them."""
    if bool(section.tls_certfile) != bool(section.tls_keyfile):
        raise ValueError(f"set both {name}.tls_certfile and {name}.tls_keyfile (PEM files), or neither")
    if section.tls_ca_file and not section.tls_certfile:
        raise ValueError(f"{name}.tls_ca_file requires client certificates over TLS: set {name}.tls_certfile "
                         f"and {name}.tls_keyfile too, or leave {name}.tls_ca_file empty")
    return section


def check_peer_tls(peer: Any, name: str) -> Any:
    """The TLS settings of a site destination: a client certificate and its key together, and only
    with TLS on."""
    if bool(peer.tls_certfile) != bool(peer.tls_keyfile):
        raise ValueError(f"set both {name}.tls_certfile and {name}.tls_keyfile (PEM files), or neither")
    if peer.tls_certfile and not peer.uses_tls:
        raise ValueError(f"{name}.tls_certfile is set but TLS is off: add tls: true (or a tls_ca_file)")
    return peer


class DatabaseSettings(_Section):
    url: str = ""
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    busy_timeout_s: float = Field(30, gt=0)


class DicomSettings(_Section):
    ae_title: str = "READINGROOM"
    host: str = "127.0.0.1"
    port: int = Field(11112, ge=1, le=65535)
    max_associations: int = Field(16, ge=1, le=1000)
    max_pdu_bytes: int = Field(1048576, ge=0)
    network_timeout_s: float = Field(60, gt=0)
    association_timeout_s: float = Field(5, gt=0)
    max_associations_per_address: int = Field(4, ge=1, le=1000)
    verify_pixel_data: bool = True
    # Listener processes on the one port (SO_REUSEPORT, triage/listener_group.py); the limits
    # above are per process.
    processes: int = Field(1, ge=1, le=64)
    # DICOM TLS (PS3.15 B.1): our PEM certificate (chain) and key; with tls_ca_file, client
    # certificates are required and verified against it. Off loopback, TLS is required unless
    # allow_insecure_remote is true (readingroom.tls.listen_problem).
    tls_certfile: str = ""
    tls_keyfile: str = ""
    tls_ca_file: str = ""
    allow_insecure_remote: bool = False

    @field_validator("ae_title")
    @classmethod
    def _check_ae_title(cls, value: str) -> str:
        return validate_ae_title(value)

    @property
    def tls(self) -> bool:
        return bool(self.tls_certfile)

    @model_validator(mode="after")
    def _tls_files(self) -> "DicomSettings":
        return check_listener_tls(self, "dicom")


class IntakeSettings(_Section):
    quiet_period_s: float = Field(5, ge=0)
    rescan_interval_s: float = Field(2, gt=0)


# Job kind -> Celery queue (jobs.queues). The kinds are the feature packages' job names.
DEFAULT_JOB_QUEUES = {"triage_study": "triage", "order_hl7_out": "delivery", "report_delivery": "delivery",
                      "dictation_final": "asr"}


class JobSettings(_Section):
    workers: int = Field(2, ge=0, le=64)
    poll_interval_s: float = Field(0.5, gt=0)
    max_attempts: int = Field(5, ge=1)
    backoff_base_s: float = Field(2, ge=0)
    backoff_max_s: float = Field(300, ge=0)
    lease_s: float = Field(120, gt=0)
    # The engine that carries jobs to the workers: "database" (the embedded default, workers poll
    # the jobs table) or "celery" (Celery on Redis; the jobs table stays the record, docs/jobs.md).
    engine: Literal["database", "celery"] = "database"
    broker_url: str = "redis://127.0.0.1:6379/0"
    # Celery queue of each job kind: one queue per kind of work (triage, asr, delivery).
    queues: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_JOB_QUEUES))
    # Seconds Redis waits for a worker's acknowledgement before it delivers a message again
    # (the worker died): longer than any job, and than the longest retry backoff.
    visibility_timeout_s: float = Field(3600, gt=0)
    # Every this many seconds a Celery worker publishes the due jobs the broker does not hold
    # (queued by a process without the broker, or lost with it); 0 turns it off.
    sweep_interval_s: float = Field(30, ge=0)

    @field_validator("broker_url")
    @classmethod
    def _redis_url(cls, value: str) -> str:
        if not value.startswith(("redis://", "rediss://", "redis+socket://")):
            raise ValueError("the broker is Redis: use redis://HOST:PORT/DB (rediss:// with TLS), "
                             "e.g. redis://127.0.0.1:6379/0")
        return value

    @field_validator("queues")
    @classmethod
    def _queue_names(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [f"{kind}: {queue!r}" for kind, queue in value.items()
               if not queue or not queue.replace("_", "").replace("-", "").isalnum()]
        if bad:
            raise ValueError(f"a queue name is letters, digits, '-' and '_' ({', '.join(bad)}); "
                             "e.g. triage, asr, delivery")
        return value


class WebSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(7860, ge=1, le=65535)
    session_ttl_min: float = Field(720, gt=0)
    session_idle_min: float = Field(30, gt=0)
    viewer_cache_mb: int = Field(1024, ge=64)
    tls_certfile: str = ""         # PEM certificate (chain) and key: the page is served over HTTPS
    tls_keyfile: str = ""
    allow_insecure_remote: bool = False   # plain HTTP off loopback (only behind a TLS proxy)

    @property
    def tls(self) -> bool:
        return bool(self.tls_certfile)

    @model_validator(mode="after")
    def _tls_pair(self) -> "WebSettings":
        if bool(self.tls_certfile) != bool(self.tls_keyfile):
            raise ValueError("set both web.tls_certfile and web.tls_keyfile (PEM files), or neither")
        return self


class DemoSettings(_Section):
    seed: bool = True
    username: str = "demo"
    password: str = "demo"
    admin_username: str = "admin"
    admin_password: str = "admin"


class WorklistSettings(_Section):
    claim_ttl_min: float = Field(30, gt=0)


class NotificationSettings(_Section):
    webhook_url: str = ""
    webhook_timeout_s: float = Field(5, gt=0)


class HL7Settings(_Section):
    """The HL7 v2 order listener (MLLP): ORM^O01 and OMI^O23 from the sites' RIS."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(2575, ge=0, le=65535)   # 0: any free port (tests)
    application: str = Field("READINGROOM", min_length=1)   # our MSH-3 in every message we send
    facility: str = Field("READINGROOM", min_length=1)      # our MSH-4 (and the SR's institution)
    idle_timeout_s: float = Field(30, gt=0)
    max_connections: int = Field(32, ge=1, le=10000)
    max_message_bytes: int = Field(16 * 1024 * 1024, ge=1024)
    # MLLP over TLS: as dicom.tls_* (the handshake must end within idle_timeout_s).
    tls_certfile: str = ""
    tls_keyfile: str = ""
    tls_ca_file: str = ""
    allow_insecure_remote: bool = False

    @property
    def tls(self) -> bool:
        return bool(self.tls_certfile)

    @model_validator(mode="after")
    def _tls_files(self) -> "HL7Settings":
        return check_listener_tls(self, "hl7")


class ReportSettings(_Section):
    """Sign-off and delivery of reports (reporting/lifecycle.py, reporting/delivery)."""

    # Tries per destination before a delivery goes to the dead-letter state (admin retries it).
    delivery_max_attempts: int = Field(12, ge=1)
    # Edits of one report by one user within this many seconds make one audit entry.
    edit_audit_interval_s: float = Field(60, ge=0)


class HL7Peer(_Section):
    """An HL7 v2 system reached over MLLP (the site's RIS)."""

    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    facility: str = ""          # MSH-6 receiving facility
    application: str = ""       # MSH-5 receiving application
    timeout_s: float = Field(10, gt=0)
    # MLLP over TLS: tls: true, or a tls_ca_file (as DicomPeer below).
    tls: bool = False
    tls_ca_file: str = ""
    tls_certfile: str = ""
    tls_keyfile: str = ""

    @property
    def uses_tls(self) -> bool:
        return self.tls or bool(self.tls_ca_file)

    @model_validator(mode="after")
    def _tls_files(self) -> "HL7Peer":
        return check_peer_tls(self, "destinations.hl7")


class DicomPeer(_Section):
    """A DICOM node reached by C-STORE (the site's PACS)."""

    ae_title: str
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    # DICOM TLS: tls: true, or a tls_ca_file. The PACS's certificate is verified against
    # tls_ca_file (else the system's trusted CAs) and must name ``host``; tls_certfile and
    # tls_keyfile are our client certificate, for a PACS that requires one.
    tls: bool = False
    tls_ca_file: str = ""
    tls_certfile: str = ""
    tls_keyfile: str = ""

    @field_validator("ae_title")
    @classmethod
    def _check_ae_title(cls, value: str) -> str:
        return validate_ae_title(value)

    @property
    def uses_tls(self) -> bool:
        return self.tls or bool(self.tls_ca_file)

    @model_validator(mode="after")
    def _tls_files(self) -> "DicomPeer":
        return check_peer_tls(self, "destinations.dicom")


class SiteDestinations(_Section):
    """Where a site's messages go: rejections of orders and signed reports. Empty: not sent."""

    hl7: HL7Peer | None = None
    fhir_url: str = ""          # POST DiagnosticReports here...
    fhir_folder: str = ""       # ...or write them as JSON files here (relative to home)
    dicom: DicomPeer | None = None
    pdf_folder: str = ""        # write PDF reports here (relative to home)


class SiteHL7(_Section):
    """What the order listener accepts from a site's RIS (not where we send: ``destinations.hl7``)."""

    # Source addresses (IPs or networks, "10.0.0.0/24") a message claiming this site (by MSH-4)
    # must come from; any other is refused with AR and logged. Empty: any address.
    allowed_addresses: list[str] = Field(default_factory=list)

    @field_validator("allowed_addresses")
    @classmethod
    def _check_addresses(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                ipaddress.ip_network(value.strip(), strict=False)
            except ValueError:
                raise ValueError(f"hl7.allowed_addresses: {value!r} is not an IP address or network; "
                                 "write e.g. 10.0.0.5, 10.0.0.0/24 or ::1") from None
        return [v.strip() for v in values]


class Site(_Section):
    """A hospital that sends studies to the reading service."""

    name: str = Field(min_length=1)
    ae_titles: list[str] = Field(default_factory=list)
    destinations: SiteDestinations = SiteDestinations()
    hl7: SiteHL7 = SiteHL7()
    quiet_period_s: float | None = Field(None, ge=0)
    sla_min: dict[str, float] = Field(default_factory=dict)
    max_wait_min: float | None = Field(None, gt=0)

    @field_validator("ae_titles")
    @classmethod
    def _check_titles(cls, values: list[str]) -> list[str]:
        return [validate_ae_title(v) for v in values]


class ModelSettings(_Section):
    """Triage models (models/): whether they run, and where their series rules are."""

    enabled: bool = True                       # run the models on every completed study
    file: str = "models.yaml"                  # series rules and registered models, in config_dir
    heatmap_size: int = Field(128, ge=16, le=1024)   # largest side of a saved heatmap


class LabSettings(_Section):
    """The Lab tab (model evaluation): which server folders it may read (workstation/lab.py)."""

    # Folders (relative to home, or absolute) whose sub-folders the Lab may evaluate; anything
    # else must be uploaded (to <home>/lab/uploads/). "phantoms" holds the Lab's sample sets.
    data_roots: list[str] = Field(default_factory=lambda: ["phantoms"])
    max_upload_mb: int = Field(2048, ge=1)          # the largest zip of studies, unpacked


class Settings(_Section):
    home: Path = Path("var")
    # Installed speech models (Whisper base, joined at install): outside ``home`` so that
    # resetting the data folder keeps them. "": inside the virtual environment (dictation/models.py).
    models_dir: str = ""
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    sites_file: str = "sites.yaml"
    findings_file: str = "findings.yaml"
    config_dir: Path = PROJECT_ROOT / "configs"
    sites: list[Site] = Field(default_factory=list)
    database: DatabaseSettings = DatabaseSettings()
    dicom: DicomSettings = DicomSettings()
    intake: IntakeSettings = IntakeSettings()
    jobs: JobSettings = JobSettings()
    web: WebSettings = WebSettings()
    demo: DemoSettings = DemoSettings()
    worklist: WorklistSettings = WorklistSettings()
    notifications: NotificationSettings = NotificationSettings()
    hl7: HL7Settings = HL7Settings()
    reports: ReportSettings = ReportSettings()
    models: ModelSettings = ModelSettings()
    lab: LabSettings = LabSettings()
    dictation: DictationSettings = Field(default_factory=DictationSettings)

    @field_validator("dictation", mode="before")
    @classmethod
    def _check_dictation(cls, value: Any) -> DictationSettings:
        try:
            return DictationSettings.from_mapping(value)
        except (ConfigError, TypeError) as exc:
            raise ValueError(str(exc)) from None

    # Derived paths -----------------------------------------------------------------------
    @property
    def dicom_dir(self) -> Path:
        return self.home / "dicom"

    @property
    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{(self.home / 'readingroom.db').resolve()}"

    def site_for_ae(self, calling_ae: str) -> Site | None:
        """The site whose ae_titles list this calling AE title, or None."""
        calling_ae = calling_ae.strip()
        for site in self.sites:
            if calling_ae in site.ae_titles:
                return site
        return None

    @property
    def allowed_calling_ae_titles(self) -> list[str]:
        """Every AE title a site lists; empty means any caller is accepted."""
        return [title for site in self.sites for title in site.ae_titles]

    @property
    def findings_path(self) -> Path:
        """The priority policy file (configs/findings.yaml by default)."""
        return self.config_dir / self.findings_file

    def quiet_period_for(self, site_name: str | None) -> float:
        for site in self.sites:
            if site.name == site_name and site.quiet_period_s is not None:
                return site.quiet_period_s
        return self.intake.quiet_period_s


def validate_ae_title(value: str) -> str:
    value = value.strip()
    if not 1 <= len(value) <= 16 or "\\" in value or not value.isprintable():
        raise ValueError("an AE title is 1 to 16 printable characters without a backslash")
    return value


def _env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """READINGROOM_DICOM__PORT=11113 -> {"dicom": {"port": 11113}} (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for key, raw in environ.items():
        if not key.startswith(ENV_PREFIX) or key in NOT_SETTINGS:
            continue
        path = key[len(ENV_PREFIX):].lower().split("__")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        if isinstance(value, bool) and raw.strip().lower() not in ("true", "false"):
            value = raw  # YAML 1.1 reads OFF/yes/no as booleans; a setting wants the word
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = raw if path[-1] == "home" else value
    return tree


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml_mapping(path: Path, missing: str = "set READINGROOM_CONFIG to a YAML file") -> dict[str, Any]:
    """A YAML file that holds a mapping; ConfigError naming the file (and ``missing``, what to do
    when it does not exist) otherwise."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist; {missing}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping, not {type(data).__name__}")
    return data


def _describe(error: Any, sources: str) -> str:
    name = ".".join(str(part) for part in error["loc"])
    value = error.get("input")
    message = error["msg"]
    if error["type"] == "extra_forbidden":
        return f"unknown setting '{name}' (in {sources}); see configs/default.yaml for the valid settings"
    return f"setting '{name}' = {value!r} is invalid: {message} (in {sources})"


def load_settings(
    config_path: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build settings from the YAML file, then the environment, then explicit overrides."""
    environ = os.environ if environ is None else environ
    path = Path(config_path or environ.get(ENV_PREFIX + "CONFIG") or DEFAULT_CONFIG)
    data = read_yaml_mapping(path)
    data = _merge(data, _env_overrides(environ))
    if overrides:
        data = _merge(data, overrides)
    data.setdefault("config_dir", str(path.parent))
    if "sites" not in data and data.get("sites_file"):
        sites_path = path.parent / str(data["sites_file"])
        data["sites"] = read_yaml_mapping(sites_path).get("sites", [])
    sources = f"{path}, READINGROOM_* variables"
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        lines = [_describe(err, sources) for err in exc.errors()]
        raise ConfigError("Invalid settings:\n  " + "\n  ".join(lines)) from None
    if not settings.home.is_absolute():
        settings.home = (Path.cwd() / settings.home).resolve()
    return settings


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, loaded once (CLI and app only)."""
    return load_settings()
