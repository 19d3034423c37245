"""API keys from the command line.

``python -m api.keys new <name>`` makes a random key (256 bits, URL-safe), prints it once and the lines to paste
under ``auth.keys`` in ``config/medgpt.yaml``: the key's name and SHA-256 digest. Only the digest is configured;
the key itself is shown this once and kept nowhere, so a lost key is replaced, not recovered.

``python -m api.keys hash`` reads a key on stdin and prints its digest (to configure a key made elsewhere, or to
check which configured entry a key is).
"""

from __future__ import annotations

import argparse
import json
import secrets
import sys

from pydantic import ValidationError

from api.security import digest
from medgpt.settings import ApiKey


def new_key(name: str) -> tuple[str, ApiKey]:
    """A fresh random key and its config entry; ValidationError for a name the config would refuse."""
    key = secrets.token_urlsafe(32)
    return key, ApiKey(name=name, sha256=digest(key))


def config_lines(entry: ApiKey) -> str:
    """The YAML list item for ``entry``, indented to sit under ``auth:`` → ``keys:``."""
    return f"    - name: {entry.name}\n      sha256: {entry.sha256}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m api.keys", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="make a key for a client and print its config lines")
    new.add_argument("name", help="who holds the key (letters, digits, '.', '_', '-'): logs and rate limits use it")
    commands.add_parser("hash", help="read a key on stdin, print its SHA-256 digest")
    args = parser.parse_args(argv)

    if args.command == "hash":
        key = sys.stdin.read().strip()
        if not key:
            parser.error("no key on stdin")
        print(digest(key))
        return 0

    try:
        key, entry = new_key(args.name)
    except ValidationError:
        parser.error(f"name {args.name!r}: use letters, digits, '.', '_' or '-' only")
    print(f"API key for {entry.name} (shown only now: give it to the client; the server keeps only its digest):")
    print()
    print(f"    {key}")
    print()
    print("Paste under auth.keys in config/medgpt.yaml (and set auth.required: true there):")
    print()
    print(config_lines(entry), end="")
    print()
    print("or, in the environment (replaces the whole list; give every key):")
    print(f"    MEDGPT_AUTH__REQUIRED=true MEDGPT_AUTH__KEYS='{json.dumps([entry.model_dump()])}'")
    print()
    print("Call with: curl -H 'Authorization: Bearer <key>' http://127.0.0.1:8000/models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
