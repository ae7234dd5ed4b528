"""`conveyor keys create|list|revoke` and `conveyor whoami`: API keys, over KeyService
(managing keys needs the admin role; on the machine of `conveyor up` the CLI uses its
admin key by itself)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Awaitable, Callable

from google.protobuf import json_format

from conveyor.v1 import key_service_pb2 as kpb
from conveyor_client import AsyncConveyorClient

Handler = Callable[[argparse.Namespace], Awaitable[int]]
ROLES = {"viewer": kpb.ROLE_VIEWER, "submitter": kpb.ROLE_SUBMITTER, "operator": kpb.ROLE_OPERATOR,
         "admin": kpb.ROLE_ADMIN}


def _client(args: argparse.Namespace) -> AsyncConveyorClient:
    from clients.cli.main import command_client  # its --target, API key and TLS flags

    return command_client(args)


def role_name(role: int) -> str:
    return kpb.Role.Name(role).removeprefix("ROLE_").lower()  # type: ignore[arg-type]


async def cmd_create(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        made = await client.create_key(args.tenant, ROLES[args.role], args.name)
    if args.quiet:
        print(made.secret)
    else:
        print(f"key {made.key.id} ({args.tenant}, {args.role}{', ' + args.name if args.name else ''})")
        print(f"secret (shown this once): {made.secret}")
    return 0


async def cmd_list(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        keys = await client.list_keys(args.tenant or "")
    if args.json:
        for k in keys:
            print(json.dumps(json_format.MessageToDict(k), sort_keys=True))
        return 0
    print(f"{'ID':<18} {'TENANT':<16} {'ROLE':<10} {'STATE':<8} NAME")
    for k in keys:
        state = "revoked" if k.HasField("revoke_time") else "active"
        print(f"{k.id:<18} {k.tenant:<16} {role_name(k.role):<10} {state:<8} {k.name}")
    return 0


async def cmd_revoke(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        key = await client.revoke_key(args.id)
    print(f"key {key.id} ({key.tenant}, {role_name(key.role)}) revoked")
    return 0


async def cmd_whoami(args: argparse.Namespace) -> int:
    async with _client(args) as client:
        me = await client.whoami()
    print(f"tenant {me.tenant}, role {role_name(me.role)}" + (f", key {me.key_id}" if me.key_id else " (no auth)"))
    return 0


def add_key_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], remote: argparse.ArgumentParser
) -> None:
    text = "Create, list or revoke API keys (the admin role)."
    group = sub.add_parser("keys", help=text, description=text)
    actions = group.add_subparsers(dest="action", required=True, metavar="ACTION")

    def action(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        a = actions.add_parser(name, help=help_text, description=help_text, parents=[remote])
        a.set_defaults(handler=handler)
        return a

    a = action("create", cmd_create, "Create a key of a tenant and a role; prints its secret, once.")
    a.add_argument("--tenant", required=True)
    a.add_argument("--role", required=True, choices=sorted(ROLES))
    a.add_argument("--name", default="", help="a name for people, e.g. ci")
    a.add_argument("--quiet", "-q", action="store_true", help="print only the secret")
    a = action("list", cmd_list, "List keys (revoked ones too).")
    a.add_argument("--tenant", help="only this tenant's")
    a.add_argument("--json", action="store_true", help="one JSON object per line")
    action("revoke", cmd_revoke, "Revoke a key: every gateway refuses it within seconds.").add_argument("id")

    text = "Show the tenant and role of the key in use."
    p = sub.add_parser("whoami", help=text, description=text, parents=[remote])
    p.set_defaults(handler=cmd_whoami)
