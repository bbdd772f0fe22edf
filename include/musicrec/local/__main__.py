"""``python -m musicrec.local {env|services|stop|status|run|summary}`` (used by the Makefile)."""

from __future__ import annotations

import argparse
import logging
import sys

from musicrec.local import envfile, services


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m musicrec.local")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env", help="write data/musicrec.env")
    sub.add_parser("services", help="start the embedded engines (idempotent)")
    sub.add_parser("stop", help="stop everything started by pid file")
    sub.add_parser("status", help="show which engines run")
    run = sub.add_parser("run", help="services + sample + the DAGs in pipeline order + summary")
    run.add_argument("--preset", default="small")
    run.add_argument("--seed", type=int, default=42)
    run.add_argument("--dag", action="append", help="only these DAG ids (repeatable)")
    sub.add_parser("summary", help="print the summary of what the stores hold")
    sub.add_parser("airflow", help="start `airflow standalone` (UI on 127.0.0.1:8080) in the background")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.cmd == "env":
            print(envfile.write())
        elif args.cmd == "services":
            envfile.write()
            services.start_all()
        elif args.cmd == "stop":
            stopped = services.stop_all()
            print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
        elif args.cmd == "status":
            for svc in services.services():
                print(f"{svc.name:8} 127.0.0.1:{svc.port}  {'up' if svc.ready(svc.port) else 'down'}")
        elif args.cmd == "run":
            from musicrec.local.pipeline import run as run_pipeline

            run_pipeline(preset=args.preset, seed=args.seed, dags=args.dag)
        elif args.cmd == "airflow":
            from musicrec.local.pipeline import start_standalone

            start_standalone()
        elif args.cmd == "summary":
            from musicrec.local.summary import print_summary

            print_summary()
    except services.ServiceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
