"""``python -m musicrec.serve [--host H] [--port P] [--workers N]`` runs the API with uvicorn;
``python -m musicrec.serve keys create|list|revoke`` manages API keys (design §8).

Store settings come from the environment (:class:`musicrec.serve.deps.Settings`): ``make serve``
sources ``data/musicrec.env`` first.
"""

from __future__ import annotations

import argparse
import json
import sys

from musicrec.serve import keys
from musicrec.serve.deps import Services, Settings


def _keys(args: argparse.Namespace) -> int:
    services = Services(Settings.from_env())
    db = services.db
    try:
        if args.keys_cmd == "create":
            key, doc = keys.create(db, args.name, args.scopes)
            print(f"created key {doc['_id']} ({doc['name']}, scopes {','.join(doc['scopes'])}); "
                  "it is shown once, store it now:", file=sys.stderr)
            print(key)  # alone on stdout, so `KEY=$(python -m musicrec.serve keys create ...)` works
        elif args.keys_cmd == "list":
            docs = keys.list_keys(db, include_revoked=not args.active)
            if args.json:
                print(json.dumps(docs, default=str, indent=2))
            else:
                print(f"{'id':<12}{'name':<24}{'scopes':<14}{'created':<22}revoked")
                for d in docs:
                    revoked = f"{d['revoked_at']:%Y-%m-%d %H:%M:%S}" if d.get("revoked_at") else "-"
                    print(f"{d['_id']:<12}{d['name'][:23]:<24}{','.join(d['scopes']):<14}"
                          f"{d['created_at']:%Y-%m-%d %H:%M:%S}      {revoked}")
        elif args.keys_cmd == "revoke":
            n = keys.revoke(db, args.key_id)
            print(f"revoked {n} key(s); running servers stop accepting it within their key cache "
                  f"({services.settings.key_cache_s:g} s)")
    except keys.KeyRequestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        services.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m musicrec.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    parser.add_argument("--log-level", default="info")
    sub = parser.add_subparsers(dest="cmd")
    k = sub.add_parser("keys", help="create, list or revoke API keys")
    ksub = k.add_subparsers(dest="keys_cmd", required=True)
    create = ksub.add_parser("create", help="create a key and print it once")
    create.add_argument("--name", required=True, help="who or what uses the key")
    create.add_argument("--scopes", default="read", help=f"comma list of {', '.join(keys.SCOPES)} (default read)")
    lst = ksub.add_parser("list", help="list keys (never the key itself)")
    lst.add_argument("--active", action="store_true", help="only keys not revoked")
    lst.add_argument("--json", action="store_true")
    revoke = ksub.add_parser("revoke", help="revoke a key by id or name")
    revoke.add_argument("key_id", metavar="ID_OR_NAME")
    args = parser.parse_args(argv)
    if args.cmd == "keys":
        return _keys(args)

    import uvicorn

    # the factory string (not an app object) lets uvicorn start --workers processes that each build one
    uvicorn.run("musicrec.serve.app:create_app", factory=True, host=args.host, port=args.port,
                workers=args.workers, log_level=args.log_level, proxy_headers=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
