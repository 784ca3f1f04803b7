"""``francine users ...``: API keys of the local stack's users or of a deployed project's
(``--project``: Application Default Credentials, straight to Firestore; the api reads
the user document on every request, so a revocation holds from the next request on)."""

from __future__ import annotations

import argparse
import json
import sys

from francine.ports.protocols import UserStore
from francine.services import users
from francine.tools.local.processes import environment


def add_parsers(sub, func, parents=()) -> None:
    """``francine users ...``; ``parents``: the options every command takes."""
    parents = list(parents)
    p = sub.add_parser("users", help="users and their API keys", parents=parents)
    p.add_argument("--project", help="a deployed project (default: the local stack)")
    p.add_argument("--database", default="(default)",
                   help="its Firestore database (default: (default))")
    actions = p.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", parents=parents,
                                help="create a user and print its API key")
    create.add_argument("name")
    create.add_argument("--bucket", action="append", default=[],
                        help="a bucket the user may attach gs:// objects from (repeatable)")
    actions.add_parser("list", parents=parents,
                       help="users as JSON lines (id, name, buckets, created)")
    for name, text in (("revoke", "delete the user's keys (at once)"),
                       ("rotate", "print a new key for the user; the old one stops working")):
        a = actions.add_parser(name, parents=parents, help=text)
        a.add_argument("user", help="user id or name")
    for name in ("allow-bucket", "deny-bucket"):
        a = actions.add_parser(name, parents=parents,
                               help=f"{name.split('-')[0]} gs:// attaches from a bucket")
        a.add_argument("user", help="user id or name")
        a.add_argument("bucket")
    q = actions.add_parser("set-quota", parents=parents, help="the user's own figure for a quota "
                           "('default': the deployment's again)")
    q.add_argument("user", help="user id or name")
    q.add_argument("quota", help="executions_in_flight, tasks_in_flight, stored_bytes or "
                   "cpu_seconds_per_day")
    q.add_argument("value")
    p.set_defaults(func=func)


def _store(args: argparse.Namespace, info: dict | None) -> UserStore:
    from francine.adapters.cloud import firestore_store

    if info is None:
        return firestore_store(args.project, args.database)
    with environment(info["env"]):
        return firestore_store(info["project"])


def run_users(args: argparse.Namespace, info: dict | None) -> int:
    env = info["env"] if info else {}
    with environment(env):
        store = _store(args, info)
        try:
            if args.action == "create":
                print(users.create_user(store, args.name, args.bucket)[1])
            elif args.action == "list":
                for u in users.list_users(store):
                    print(json.dumps(u, default=str))
            elif args.action == "revoke":
                n = users.revoke(store, args.user)
                if not n:
                    sys.exit(f"no user {args.user!r}")
                print(f"revoked {n} key(s) of {args.user}")
            elif args.action == "rotate":
                print(users.rotate(store, args.user))
            elif args.action == "set-quota":
                value = None if args.value == "default" else float(args.value)
                if value is not None and value.is_integer():
                    value = int(value)
                print(json.dumps(users.set_quota(store, args.user, args.quota, value)))
            else:
                add = [args.bucket] if args.action == "allow-bucket" else []
                remove = [args.bucket] if args.action == "deny-bucket" else []
                print(json.dumps(users.set_buckets(store, args.user, add, remove)))
        except KeyError:
            sys.exit(f"no user {args.user!r}")
        except ValueError as e:
            sys.exit(str(e))
    return 0
