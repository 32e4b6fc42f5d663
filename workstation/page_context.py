"""What the tabs of the workstation page share: the PageContext (settings, database, report
service, the page-wide components and states) and ``guarded``, which keeps a callback from raising
into Gradio.

workstation/pages.py makes one PageContext per page and hands it to each tab's ``build_<tab>(ctx)``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import gradio as gr

from readingroom.db import Database
from readingroom.errors import ReadingRoomError
from readingroom.settings import Settings
from reporting.lifecycle import ReportService
from workstation.signoff import page_message

log = logging.getLogger(__name__)


class Refused(Exception):
    """A page action that cannot be done now; the message says what to do on the page."""


def guarded(action: str, quiet: bool = False) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a page callback so that it never raises into Gradio (which marks every output with a
    bare "Error" badge): a refusal or a ReadingRoom error becomes a warning that says what to do
    (without command lines), an unexpected error is logged and said so, and the outputs stay.
    ``quiet`` (the timers, every few seconds): logged only, never a toast each tick."""

    def warn(message: str, title: str) -> None:
        if quiet:
            log.warning("page refresh %r: %s", action, message)
        else:
            gr.Warning(message, title=title)

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)   # Gradio reads the wrapped signature (gr.Request, gr.SelectData...)
        def inner(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Refused as exc:
                warn(str(exc), action)
            except ReadingRoomError as exc:
                warn(page_message(str(exc)), f"{action}: not done")
            except Exception:  # the page keeps working; the traceback is in the log
                log.exception("page action %r failed", action)
                warn(f"{action} did not work because of a problem in ReadingRoom; it is written in the log. "
                     "Try again, and if it fails again, tell your administrator.", f"{action}: not done")
            return gr.skip()
        return inner
    return wrap


def username(request: gr.Request | None) -> str | None:
    """The logged-in user of a page request (None without a login)."""
    return getattr(request, "username", None) if request is not None else None


def client_address(request: gr.Request | None) -> str:
    """The address a page request came from, for the audit log."""
    client = getattr(request, "client", None)
    return str(getattr(client, "host", "") or "")


@dataclass
class PageContext:
    """What every tab needs: the services, and the page-wide components that more than one tab
    reads or writes (the tab bar, the open study, its live dictation session)."""

    settings: Settings
    db: Database
    queue: Any                         # a readingroom.jobs queue
    wake: Callable[[], None] | None    # the worker pool's wake-up, or None (the workers poll)
    reports: ReportService
    blocks: gr.Blocks
    tabs: gr.Tabs                      # the tab bar; open_study selects "reading"
    open_uid: gr.State                 # the study UID open in the Reading tab ("" none)
    live: gr.State                     # its LiveDictation session (None none)
    critical_count: gr.Number          # hidden; each change plays the critical-study sound

    @contextlib.contextmanager
    def tab(self, label: str, tab_id: str, **kwargs: Any) -> Iterator[gr.Tab]:
        """Lay out one tab: what is built inside goes into that tab of the page's tab bar; what a
        tab builds after the ``with`` (its timers) stays at page level, so it ticks whichever tab
        is shown."""
        with self.tabs, gr.Tab(label, id=tab_id, **kwargs) as tab:
            yield tab
