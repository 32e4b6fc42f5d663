"""``readingroom sites list|check``: the sites file checked against the live configuration.

A site is only as good as its entry in sites.yaml: a calling AE title that is too long is refused
at association time, a mistyped RIS port fails at the first signed report. ``check_sites()``
finds these before a study arrives: AE titles (DICOM rules, unique across sites, not our own),
destinations reachable (a TCP connect to each MLLP, DICOM and FHIR host:port; folders that
exist and are writable, or can be made), and TLS files present wherever a setting names one.

It reads the sites as raw YAML, not through ``Settings``, so that one bad entry does not hide the
others: every problem is reported, one line each, with what to do.
"""

from __future__ import annotations

import logging
import os
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

from pydantic import ValidationError

from readingroom.settings import Settings, Site, _env_overrides, read_yaml_mapping

log = logging.getLogger(__name__)

AE_MAX_CHARS = 16
TLS_KEY_SUFFIXES = ("certfile", "keyfile", "ca_file", "cafile", "cert_file", "key_file")


@dataclass(frozen=True)
class Problem:
    site: str
    field: str      # where in the site's entry: ae_titles, destinations.hl7, ...
    message: str    # what is wrong, then what to do

    def format(self) -> str:
        return f"{self.site}: {self.field}: {self.message}"


@dataclass
class SiteReport:
    name: str
    ae_titles: list[str] = field(default_factory=list)
    destinations: dict[str, str] = field(default_factory=dict)   # kind -> target
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def raw_sites(settings: Settings, file: Path | None = None,
              environ: Mapping[str, str] | None = None) -> tuple[list[Any], str]:
    """The site entries as written, and where they came from: ``file``, else READINGROOM_SITES,
    else the settings' sites file (configs/sites.yaml)."""
    if file is None:
        env_sites = _env_overrides(os.environ if environ is None else environ).get("sites")
        if env_sites is not None:
            return (env_sites if isinstance(env_sites, list) else [env_sites]), "READINGROOM_SITES"
        file = settings.config_dir / settings.sites_file
    entries = read_yaml_mapping(Path(file), missing="give the sites file with --file").get("sites") or []
    return (entries if isinstance(entries, list) else [entries]), str(file)


def check_ae_title(title: Any) -> str:
    """Why ``title`` is not a valid DICOM AE title ("" when it is): 1 to 16 characters of the
    default repertoire (ASCII), no backslash, no control characters; spaces at the ends do not
    count."""
    if not isinstance(title, str):
        return f"{title!r} is not text; write the AE title in quotes"
    value = title.strip(" ")
    if not value:
        return f"{title!r} is empty; an AE title has 1 to {AE_MAX_CHARS} characters"
    if len(value) > AE_MAX_CHARS:
        return (f"{value!r} has {len(value)} characters, more than {AE_MAX_CHARS}; shorten it here and on "
                "the sending modality")
    if "\\" in value:
        return f"{value!r} contains a backslash, which DICOM forbids in an AE title; remove it"
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        return f"{value!r} contains a control character (tab, newline...); remove it"
    if not value.isascii():
        return f"{value!r} has characters outside ASCII (the DICOM default repertoire); use A-Z, 0-9, _"
    return ""


def tcp_problem(host: str, port: int, timeout_s: float) -> str:
    """Why ``host:port`` does not accept a TCP connection within ``timeout_s`` ("" when it does)."""
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return ""
    except socket.timeout:
        return f"no answer within {timeout_s:g} s"
    except OSError as exc:
        return exc.strerror or str(exc)


def folder_problem(folder: Path) -> str:
    """Why reports cannot be written into ``folder`` ("" when they can). A folder that does not
    exist yet is fine if it can be made: delivery creates it."""
    if folder.exists():
        if not folder.is_dir():
            return f"{folder} is a file, not a folder; point the setting at a folder"
        if not os.access(folder, os.W_OK | os.X_OK):
            return f"{folder} is not writable by this user; fix its permissions (chmod/chown)"
        return ""
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        return f"{folder} does not exist and cannot be created ({parent} is not writable); create it"
    return ""


def tls_files(tree: Any, prefix: str = "") -> Iterable[tuple[str, str]]:
    """(setting, path) of every non-empty TLS file setting in ``tree`` (keys ending in certfile,
    keyfile, ca_file...), at any depth."""
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            name = f"{prefix}{key}"
            if isinstance(value, str) and value and str(key).lower().endswith(TLS_KEY_SUFFIXES):
                yield name, value
            else:
                yield from tls_files(value, name + ".")
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            yield from tls_files(value, f"{prefix}{index}.")


def tls_problems(tree: Any, base: Path) -> list[tuple[str, str]]:
    """(setting, problem) for each TLS file that is missing or unreadable. A relative path is
    taken from ``base`` (the folder ReadingRoom is started in, as for ``home``)."""
    out = []
    for name, value in tls_files(tree):
        path = Path(value).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            out.append((name, f"TLS file {path} does not exist; put the file there or fix the path"))
        elif not os.access(path, os.R_OK):
            out.append((name, f"TLS file {path} is not readable by this user; fix its permissions"))
    return out


def _schema_problems(name: str, entry: dict) -> list[Problem]:
    try:
        Site.model_validate(entry)
    except ValidationError as exc:
        return [Problem(name, ".".join(str(p) for p in err["loc"]) or "site", _describe(err))
                for err in exc.errors() if not _reported_elsewhere(err)]
    return []


def _describe(error: Mapping[str, Any]) -> str:
    hint = "see the comments at the top of configs/sites.yaml"
    if error["type"] == "missing":
        return f"is required but missing; add it ({hint})"
    if error["type"] == "extra_forbidden":
        return f"is not a site setting; remove it or fix its name ({hint})"
    return f"{error['msg']} (value {error.get('input')!r}); {hint}"


def _reported_elsewhere(error: Mapping[str, Any]) -> bool:
    """AE-title errors: check_ae_title() reports them with more detail than pydantic."""
    loc = tuple(error["loc"])
    return loc[:1] == ("ae_titles",) or (loc == ("destinations", "dicom", "ae_title")
                                         and error["type"] == "value_error")


def _ae_problems(report: SiteReport, entry: dict, settings: Settings, owners: dict[str, str]) -> None:
    titles = entry.get("ae_titles") or []
    if not isinstance(titles, list):
        report.problems.append(Problem(report.name, "ae_titles", "must be a list, e.g. [CT1, PACS1]"))
        return
    ours = settings.dicom.ae_title
    for title in titles:
        problem = check_ae_title(title)
        value = title.strip(" ") if isinstance(title, str) else str(title)
        report.ae_titles.append(value)            # as written: `sites list` shows the bad ones too
        if problem:
            report.problems.append(Problem(report.name, "ae_titles", f"AE title {problem}"))
            continue
        if value == ours:
            report.problems.append(Problem(report.name, "ae_titles", f"AE title {value!r} is our own AE title "
                                           "(dicom.ae_title); give the site's modality another one"))
        elif value in owners:
            where = "listed twice for this site" if owners[value] == report.name else \
                f"also listed for site {owners[value]!r}"
            report.problems.append(Problem(report.name, "ae_titles", f"AE title {value!r} is {where}; a caller "
                                           "must belong to one site: keep it in one entry"))
        else:
            owners[value] = report.name


def _destinations(report: SiteReport, entry: dict, settings: Settings) -> list[tuple[str, str, int]]:
    """Note the destinations; folder problems at once. Returns (field, host, port) to connect to."""
    dest = entry.get("destinations") or {}
    if not isinstance(dest, dict):
        return []
    targets = []
    for kind in ("hl7", "dicom"):
        peer = dest.get(kind)
        if not isinstance(peer, dict) or not peer.get("host") or not isinstance(peer.get("port"), int):
            continue   # the schema check reports what is missing
        report.destinations[kind] = f"{peer['host']}:{peer['port']}"
        if kind == "dicom" and isinstance(peer.get("ae_title"), str):
            report.destinations[kind] = f"{peer['ae_title']}@{report.destinations[kind]}"
            if problem := check_ae_title(peer["ae_title"]):
                report.problems.append(Problem(report.name, "destinations.dicom.ae_title", f"AE title {problem}"))
        targets.append((f"destinations.{kind}", str(peer["host"]), int(peer["port"])))
    url = dest.get("fhir_url")
    if isinstance(url, str) and url:
        report.destinations["fhir"] = url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            report.problems.append(Problem(report.name, "destinations.fhir_url",
                                           f"{url!r} is not an http(s) URL; write e.g. https://ris.example/fhir"))
        else:
            try:
                port = parts.port or (443 if parts.scheme == "https" else 80)
            except ValueError:
                report.problems.append(Problem(report.name, "destinations.fhir_url", f"{url!r} has a bad port"))
            else:
                targets.append(("destinations.fhir_url", parts.hostname, port))
    for key in ("fhir_folder", "pdf_folder"):
        value = dest.get(key)
        if isinstance(value, str) and value:
            folder = (settings.home / value).resolve()
            report.destinations[key.replace("_folder", "") + " folder"] = str(folder)
            if problem := folder_problem(folder):
                report.problems.append(Problem(report.name, f"destinations.{key}", problem))
    if not report.destinations:
        report.notes.append("no destinations: signed reports are not sent anywhere")
    return targets


def check_sites(entries: list[Any], settings: Settings, *, timeout_s: float = 2.0,
                connect: bool = True) -> list[SiteReport]:
    """One report per site entry, with every problem found. Network checks (skipped without
    ``connect``) run in parallel: several unreachable hosts take about ``timeout_s``, not their sum."""
    reports: list[SiteReport] = []
    owners: dict[str, str] = {}
    targets: list = []
    names: set[str] = set()
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            reports.append(SiteReport(f"site #{index + 1}", problems=[Problem(
                f"site #{index + 1}", "site", "must be a mapping with name, ae_titles...; see sites.yaml")]))
            continue
        name = str(entry.get("name") or f"site #{index + 1}")
        report = SiteReport(name, problems=_schema_problems(name, entry))
        if name in names:
            report.problems.append(Problem(name, "name", "another site has the same name; names must be unique"))
        names.add(name)
        _ae_problems(report, entry, settings, owners)
        targets += [(report, *target) for target in _destinations(report, entry, settings)]
        for setting, problem in tls_problems(entry, Path.cwd()):
            report.problems.append(Problem(name, setting, problem))
        reports.append(report)
    if not connect:
        return reports
    with ThreadPoolExecutor(max_workers=max(1, min(16, len(targets)))) as pool:
        results = list(pool.map(lambda t: tcp_problem(t[2], t[3], timeout_s), targets))
    for (report, where, host, port), problem in zip(targets, results):
        if problem:
            report.problems.append(Problem(report.name, where, f"{host}:{port} is not reachable ({problem}); "
                                           "check host and port in sites.yaml, that the peer is running, "
                                           "and the firewall"))
    return reports


def settings_problems(settings: Settings) -> list[Problem]:
    """Problems of the live configuration itself: TLS files that its settings name."""
    tree = settings.model_dump(mode="json", exclude={"sites"})
    return [Problem("(settings)", name, problem) for name, problem in tls_problems(tree, Path.cwd())]


def format_list(reports: list[SiteReport], source: str) -> str:
    lines = [f"{len(reports)} site(s) in {source}"]
    for report in reports:
        lines.append(f"- {report.name}")
        lines.append(f"    AE titles:    {', '.join(report.ae_titles) or '(none)'}")
        for kind, target in report.destinations.items():
            lines.append(f"    {kind + ':':<13} {target}")
        if not report.destinations:
            lines.append("    destinations: (none)")
    return "\n".join(lines)


def format_check(reports: list[SiteReport], extra: list[Problem], source: str) -> str:
    lines = [problem.format() for problem in extra]
    for report in reports:
        lines += [problem.format() for problem in report.problems]
    bad = sum(not r.ok for r in reports) + bool(extra)
    for report in reports:
        lines += [f"{report.name}: note: {note}" for note in report.notes]
    if bad:
        lines.append(f"{sum(len(r.problems) for r in reports) + len(extra)} problem(s) in {source}; "
                     "fix them, then run `readingroom sites check` again")
    else:
        lines.append(f"all {len(reports)} site(s) in {source} are fine")
    return "\n".join(lines)


def as_json(reports: list[SiteReport], extra: list[Problem], source: str) -> dict[str, Any]:
    return {"source": source, "ok": not extra and all(r.ok for r in reports),
            "problems": [asdict(p) for p in extra] + [asdict(p) for r in reports for p in r.problems],
            "sites": [asdict(r) | {"ok": r.ok} for r in reports]}
