"""``readingroom users add|list|passwd|disable|sites``: the accounts, from the server's command line.

    readingroom users add dr_lee --role radiologist --sites "Northside Clinic" --password-stdin
    readingroom users sites dr_lee "*"          # every site; "" for none
    readingroom users disable dr_lee [--enable]

Site names are checked against the configured sites (configs/sites.yaml); ``*`` means every site.
Passwords are read from standard input (``--password-stdin``: the first line), or asked twice at
a terminal; never from the command line, where other users would see them.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import sys
from typing import Any

from readingroom import auth
from readingroom.cli import Context
from readingroom.errors import ReadingRoomError

log = logging.getLogger(__name__)


def read_password(args: argparse.Namespace) -> str:
    """The password from stdin (``--password-stdin``) or typed twice at a terminal."""
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    if not sys.stdin.isatty():
        raise ReadingRoomError("no password given; pipe it in with --password-stdin, or run at a terminal")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise ReadingRoomError("the two passwords differ; run the command again")
    return first


def _known_sites(ctx: Context) -> list[str]:
    return [site.name for site in ctx.settings.sites]


def _format_users(rows: list[auth.UserRow]) -> str:
    if not rows:
        return "(no users; add one with `readingroom users add NAME --role admin --password-stdin`)"
    lines = [f"{'User':<24} {'Role':<12} {'State':<9} {'Created (UTC)':<20} Sites"]
    for row in rows:
        lines.append(f"{row.username:<24} {row.role:<12} {'disabled' if row.disabled else 'active':<9} "
                     f"{row.created_at.isoformat(sep=' ', timespec='seconds'):<20} {', '.join(row.sites) or '(none)'}")
    return "\n".join(lines)


def cmd_users(args: argparse.Namespace) -> int:
    ctx = Context()
    action = args.users_command
    if action == "list":
        rows = auth.list_users(ctx.db)
        if args.json:
            print(json.dumps([{"username": r.username, "role": r.role, "sites": r.sites, "disabled": r.disabled,
                               "created_at": r.created_at.isoformat(timespec="seconds") + "Z"} for r in rows],
                             indent=2))
        else:
            print(_format_users(rows))
    elif action == "add":
        auth.add_user(ctx.db, args.user, read_password(args), args.role, auth.parse_sites(args.sites),
                      known_sites=_known_sites(ctx))
        print(f"user {args.user} ({args.role}) added")
    elif action == "passwd":
        auth.set_password(ctx.db, args.user, read_password(args))
        print(f"new password for {args.user}; their sessions have ended")
    elif action == "disable":
        auth.set_disabled(ctx.db, args.user, disabled=not args.enable)
        print(f"user {args.user} " + ("enabled" if args.enable else "disabled; their sessions have ended"))
    elif action == "sites":
        auth.set_sites(ctx.db, args.user, auth.parse_sites(args.sites), known_sites=_known_sites(ctx))
        print(f"user {args.user}: sites {args.sites.strip() or '(none)'}")
    return 0


def add_commands(sub: Any) -> None:
    """Register ``readingroom users``."""
    p = sub.add_parser("users", help="the user accounts: add, list, new password, disable/enable, sites")
    users = p.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    q = users.add_parser("list", help="every user: role, sites, active or disabled")
    q.add_argument("--json", action="store_true")
    q = users.add_parser("add", help="add a user (a new user sees no site unless --sites is given)")
    q.add_argument("user")
    q.add_argument("--role", choices=auth.ROLES, default="radiologist",
                   help="radiologist (default), admin, or site (a machine account of exactly one site)")
    q.add_argument("--sites", default="", help='sites, comma-separated: "A,B"; "*" for every site (default: none)')
    q.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    q = users.add_parser("passwd", help="set a new password (ends the user's sessions)")
    q.add_argument("user")
    q.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    q = users.add_parser("disable", help="disable a user (ends their sessions); --enable undoes it")
    q.add_argument("user")
    q.add_argument("--enable", action="store_true", help="enable the user again")
    q = users.add_parser("sites", help='credential a user for exactly these sites ("A,B"; "*" every site; "" none)')
    q.add_argument("user")
    q.add_argument("sites")
    p.set_defaults(func=cmd_users)
