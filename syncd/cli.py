"""`syncd` command line: run, sync, reconcile, renormalise, check, metrics, export, simulate.

Exit codes: 0 everything ok · 1 a source failed (the others still synced) or a check failed ·
2 configuration or usage error.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from syncd import __version__
from syncd.config import Config, load_config
from syncd.errors import ConfigError, SyncdError
from syncd.logs import LEVELS, configure

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def _parse_as_of(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an ISO 8601 time, got {value!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="syncd",
        description=(
            "Flow warehouse: syncs tracker histories and computes Flow Framework metrics."
        ),
    )
    parser.add_argument("--version", action="version", version=f"syncd {__version__}")
    parser.add_argument(
        "--log-level",
        choices=LEVELS,
        default="warning",
        help="log events at this level and above to stderr (default: warning)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> None:
        p.add_argument("-c", "--config", required=True, help="the TOML configuration file")

    p = sub.add_parser("sync", help="one pass over the sources, then metric update")
    with_config(p)
    p.add_argument("--source", action="append", help="only this source (repeatable)")
    p.add_argument("--full", action="store_true", help="ignore cursors: refetch everything")

    p = sub.add_parser(
        "run", help="the daemon: every source on its schedule, with /healthz /readyz /metrics"
    )
    with_config(p)
    p.add_argument(
        "--once", action="store_true", help="one pass over the sources, then exit (for cron)"
    )
    p.add_argument("--source", action="append", help="with --once: only this source")
    p.add_argument("--full", action="store_true", help="with --once: ignore cursors")

    p = sub.add_parser(
        "reconcile", help="list every id in scope; tombstone items deleted in the tracker"
    )
    with_config(p)
    p.add_argument("--source", action="append", help="only this source (repeatable)")

    p = sub.add_parser(
        "renormalise",
        help="rebuild items from the stored raw pages with the current mapping (no API calls)",
    )
    with_config(p)
    p.add_argument("--source", action="append", help="only this source (repeatable)")

    p = sub.add_parser("check", help="validate the config and each source's connectivity")
    with_config(p)

    p = sub.add_parser(
        "serve", help="the read-only HTTP API (JSON, CSV, OpenAPI) and the dashboard"
    )
    with_config(p)
    p.add_argument("--listen", help="HOST:PORT to listen on (default: [api] listen)")

    p = sub.add_parser("metrics", help="print flow metrics")
    with_config(p)
    p.add_argument("--period", choices=("day", "week", "month", "quarter"), default="week")
    p.add_argument("--value-stream")
    p.add_argument(
        "--as-of", type=_parse_as_of, help="compute as of this time (ISO 8601; default now)"
    )
    p.add_argument("--format", choices=("table", "json", "csv"), default="table")
    p.add_argument(
        "--last",
        type=int,
        default=0,
        help="table format: only the last N periods per value stream (0 = all)",
    )

    p = sub.add_parser(
        "export", help="export items, transitions or metric rows as jsonl, csv or parquet"
    )
    p.add_argument("what", choices=("items", "transitions", "metrics"))
    with_config(p)
    p.add_argument(
        "--format",
        choices=("jsonl", "csv", "parquet"),
        default="jsonl",
        help="jsonl and csv stream to stdout or --output; parquet needs --output",
    )
    p.add_argument("-o", "--output", help="write to this file instead of stdout")
    p.add_argument("--value-stream", help="only this value stream")
    p.add_argument(
        "--flow-type",
        choices=("feature", "defect", "risk", "debt", "unclassified", "all"),
        help="only this flow type (`all`: the metric rows of all types together)",
    )
    p.add_argument(
        "--period",
        choices=("day", "week", "month", "quarter"),
        help="metrics: only this period kind (default: every kind)",
    )
    p.add_argument(
        "--since",
        type=_parse_as_of,
        help="from this time on (ISO 8601): items updated or tombstoned, transitions, "
        "metric periods starting at or after it",
    )
    p.add_argument("--until", type=_parse_as_of, help="before this time (ISO 8601), as --since")

    p = sub.add_parser(
        "dependencies",
        help="items blocked by other value streams per period, or the dependency graph",
    )
    with_config(p)
    p.add_argument("--period", choices=("week", "month", "quarter"), default="week")
    p.add_argument("--value-stream", help="only the items of this value stream (blocked ones)")
    p.add_argument(
        "--as-of", type=_parse_as_of, help="compute as of this time (ISO 8601; default now)"
    )
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.add_argument(
        "--last",
        type=int,
        default=0,
        help="table format: only the last N periods per value stream (0 = all)",
    )
    p.add_argument(
        "--graph",
        action="store_true",
        help="write the dependency graph as JSON (nodes and edges) instead",
    )
    p.add_argument("-o", "--output", help="with --graph: write to this file instead of stdout")

    p = sub.add_parser("simulate", help="run the built-in tracker simulator", add_help=False)
    p.add_argument("tracker", choices=("jira", "github", "gitlab"))
    p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def entry() -> int:
    """The `syncd` command: `main` in a process of its own (see `main`'s `process`)."""
    return main(sys.argv[1:], process=True)


def main(argv: Sequence[str] | None = None, *, process: bool = False) -> int:
    """Run one command. With `process` (the `syncd` command, not an in-process caller), what
    start-up loaded is frozen out of the cyclic garbage collector's way (`gc.freeze`): it
    lives as long as the process, and each page's collection then walks only the page's own
    objects, not the ~100k of the modules, which was ~40 % of a Jira page's CPU time."""
    parser = build_parser()
    args = parser.parse_args(argv)
    configure(args.log_level)
    if args.command == "simulate":
        if args.tracker == "github":
            from syncd.simulator.github import main as simulate
        elif args.tracker == "gitlab":
            from syncd.simulator.gitlab import main as simulate
        else:
            from syncd.simulator.jira import main as simulate
        return simulate(list(args.rest))
    try:
        config = load_config(args.config)
        handler = {
            "run": cmd_run,
            "sync": cmd_sync,
            "reconcile": cmd_reconcile,
            "renormalise": cmd_renormalise,
            "check": cmd_check,
            "serve": cmd_serve,
            "metrics": cmd_metrics,
            "export": cmd_export,
            "dependencies": cmd_dependencies,
        }[args.command]
        if process:
            gc.freeze()
        return handler(config, args, sys.stdout)
    except ConfigError as exc:
        print(f"syncd: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except SyncdError as exc:
        print(f"syncd: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("syncd: interrupted", file=sys.stderr)
        return 130


def _warehouse(config: Config) -> Any:
    from syncd.warehouse.store import Warehouse

    return Warehouse(config.warehouse.resolved_url())


class TtyProgress:
    """On a terminal, one line per source that updates after every committed page."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._started: dict[str, float] = {}

    def __call__(self, result: Any) -> None:
        import time

        started = self._started.setdefault(result.run_id, time.monotonic())
        elapsed = max(time.monotonic() - started, 1e-6)
        self.stream.write(
            f"\r{result.source}: {result.items:,} items, {result.pages:,} pages, "
            f"{result.items / elapsed:,.0f} items/s "
        )
        self.stream.flush()

    def end(self) -> None:
        if self._started:
            self.stream.write("\n")
            self.stream.flush()
            self._started.clear()


def _once(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    """One locked pass over the selected sources, then one metric update: `syncd sync` and
    `syncd run --once`. SIGTERM/SIGINT abandon the page in flight and exit 0."""
    from syncd.daemon import Daemon

    if args.source:
        for name in args.source:
            config.source(name)
    warehouse = _warehouse(config)
    progress = TtyProgress(sys.stderr) if sys.stderr.isatty() else None
    daemon = Daemon(config, warehouse, progress=progress)
    previous = daemon.install_signals()
    try:
        results = []
        full = bool(getattr(args, "full", False))
        for name in args.source or [s.name for s in config.enabled_sources]:
            result = daemon.run_source(config.source(name), full=full, metrics=False)
            results.append((name, result))
            if progress is not None:
                progress.end()
        stopped = daemon.stopping.is_set()
        stats = None if stopped else daemon.update_metrics()
    finally:
        daemon.restore_signals(previous)
        daemon.stop()
        warehouse.close()
    for name, r in results:
        if r is None:
            reason = "stopping" if stopped else "another syncd is syncing it"
            print(f"{name}: skipped — {reason}", file=out)
            continue
        status = {"ok": "ok", "failed": "FAILED"}.get(r.status, r.status)
        line = (
            f"{r.source}: {status} — {r.items} items in {r.pages} pages, {r.requests} "
            f"requests, {r.retries} retries, {r.skipped} skipped, {r.seconds:.1f} s"
        )
        if r.error:
            line += f"\n  error: {r.error}"
        print(line, file=out)
    if stats is not None:
        print(
            f"metrics: {'full recompute' if stats.full else 'incremental update'}, "
            f"{stats.rows} rows written",
            file=out,
        )
    failed = any(r is not None and r.status == "failed" for _, r in results)
    return EXIT_FAILED if failed else EXIT_OK


def cmd_sync(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    return _once(config, args, out)


def cmd_run(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    from syncd.daemon import Daemon

    if args.once:
        return _once(config, args, out)
    if args.source or args.full:
        raise ConfigError("--source and --full go with --once; the daemon runs every source")
    if not config.enabled_sources:
        raise ConfigError("no enabled sources to run", file=str(config.path))
    warehouse = _warehouse(config)
    daemon = Daemon(config, warehouse)
    ended = daemon.serve()
    if not ended:  # a request still in flight past the grace: its page is simply not committed
        sys.stderr.flush()
        os._exit(EXIT_OK)
    warehouse.close()
    return EXIT_OK


def cmd_reconcile(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    from syncd.daemon import Daemon

    names = args.source or [s.name for s in config.enabled_sources]
    sources = [config.source(name) for name in names]
    warehouse = _warehouse(config)
    daemon = Daemon(config, warehouse)
    previous = daemon.install_signals()
    failed = False
    try:
        for source in sources:
            result = daemon.reconcile(source)
            if result is None:
                print(f"{source.name}: skipped — another syncd is syncing it", file=out)
            elif result.ok:
                print(
                    f"{source.name}: ok — {result.listed} ids listed in {result.requests} "
                    f"requests, {result.tombstoned} tombstoned, {result.revived} revived",
                    file=out,
                )
            else:
                failed = True
                print(f"{source.name}: FAILED — nothing changed\n  error: {result.error}", file=out)
    finally:
        daemon.restore_signals(previous)
        daemon.stop()
        warehouse.close()
    return EXIT_FAILED if failed else EXIT_OK


def cmd_renormalise(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    """Rebuild each selected source's items from its raw pages, under its lock; where the
    configuration changed in a way raw pages cannot serve (or they are gone), the source is
    marked for a resync that the next `sync` or `run` does. Then one metric update."""
    from syncd.daemon import Daemon

    names = args.source or [s.name for s in config.enabled_sources]
    sources = [config.source(name) for name in names]
    warehouse = _warehouse(config)
    daemon = Daemon(config, warehouse)
    previous = daemon.install_signals()
    failed = changed = False
    try:
        for source in sources:
            result = daemon.renormalise(source)
            if result is None:
                reason = "stopping" if daemon.stopping.is_set() else "another syncd is syncing it"
                print(f"{source.name}: skipped — {reason}", file=out)
            elif result.status == "ok":
                changed = changed or bool(result.items or result.tombstoned)
                print(
                    f"{source.name}: ok — {result.items} items rewritten, {result.unchanged} "
                    f"unchanged, {result.tombstoned} tombstoned (out of scope), "
                    f"{result.skipped} skipped, from {result.raws} raw pages in "
                    f"{result.seconds:.1f} s, no tracker requests",
                    file=out,
                )
            else:
                failed = True
                print(
                    f"{source.name}: RESYNC NEEDED — the next sync fetches it again\n"
                    f"  reason: {result.reason}",
                    file=out,
                )
        if changed and not daemon.stopping.is_set():
            stats = daemon.update_metrics()
            print(
                f"metrics: {'full recompute' if stats.full else 'incremental update'}, "
                f"{stats.rows} rows written",
                file=out,
            )
    finally:
        daemon.restore_signals(previous)
        daemon.stop()
        warehouse.close()
    return EXIT_FAILED if failed else EXIT_OK


def cmd_check(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    from syncd.http import HttpClient
    from syncd.sync import make_connector

    ok = True
    try:
        warehouse = _warehouse(config)
        warehouse.close()
        print(f"warehouse: ok ({warehouse.dialect})", file=out)
    except Exception as exc:
        ok = False
        print(f"warehouse: cannot open: {type(exc).__name__}: {str(exc).splitlines()[0]}", file=out)
    with HttpClient(config.http) as http:
        for source in config.enabled_sources:
            try:
                results = make_connector(source, http).check()
            except SyncdError as exc:
                ok = False
                print(f"{source.name}: {exc}", file=out)
                continue
            for result in results:
                ok = ok and result.ok
                print(("ok   " if result.ok else "FAIL ") + result.what, file=out)
    return EXIT_OK if ok else EXIT_FAILED


def cmd_serve(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    from syncd.api import build_server

    if args.listen:
        from syncd.config import ApiConfig

        try:
            ApiConfig(listen=args.listen)
        except ValueError as exc:
            raise ConfigError(f"--listen: {exc}") from None
    warehouse = _warehouse(config)
    try:
        server = build_server(config, warehouse, listen=args.listen)
        print(f"syncd: serving the API and dashboard on {server.url}/", file=sys.stderr)
        server.serve_until_signalled()
    finally:
        warehouse.close()
    return EXIT_OK


def cmd_metrics(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    from syncd.metrics.incremental import compute_in_memory, stored_rows, update_metrics
    from syncd.streams import ValueStreams, with_targets, write_tables

    warehouse = _warehouse(config)
    streams = ValueStreams.from_config(config)
    write_tables(warehouse, streams)
    targets = {vs.name: vs.target_distribution for vs in streams.streams if vs.target_distribution}
    if args.as_of is not None:
        rows = compute_in_memory(
            warehouse, kind=args.period, as_of=args.as_of, value_stream=args.value_stream
        )
    else:
        update_metrics(warehouse, as_of=datetime.now(UTC))
        rows = stored_rows(warehouse, kind=args.period, value_stream=args.value_stream)
    warehouse.close()
    records = with_targets(rows, targets)
    if args.format == "json":
        json.dump(records, out, ensure_ascii=False, indent=1)
        out.write("\n")
    elif args.format == "csv":
        from syncd.csvsafe import write_rows
        from syncd.export import metric_record_flat

        flat = [metric_record_flat(r) for r in records]
        if flat:
            fields = list(dict.fromkeys(k for f in flat for k in f))
            write_rows(out, fields, ([f.get(k) for k in fields] for f in flat), lineterminator="\n")
    else:
        print_table(rows, out, last=args.last, targets=targets)
    return EXIT_OK


def _days(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 86400:.1f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


_TYPES = ("feature", "defect", "risk", "debt", "unclassified")


def print_table(
    rows: Sequence[Any],
    out: TextIO,
    *,
    last: int = 0,
    targets: Mapping[str, Mapping[str, float]] | None = None,
) -> None:
    """A readable table of the all-types rows: one line per value stream and period, with the
    distribution's deviation from the value stream's target in share points."""
    all_rows = [r for r in rows if r.flow_type == "all"]
    if last:
        per_vs: dict[str, list[Any]] = {}
        for r in all_rows:
            per_vs.setdefault(r.value_stream, []).append(r)
        all_rows = [r for vs_rows in per_vs.values() for r in vs_rows[-last:]]
    if not all_rows:
        print("no metrics yet: run `syncd sync` first", file=out)
        return
    header = (
        f"{'value stream':<16} {'period':<11} {'velocity':>8} {'ft p50 d':>8} "
        f"{'ft p85 d':>8} {'effic.':>6} {'load':>5} {'load avg':>8} {'age p85 d':>9}  "
        f"{'distribution f/d/r/db/u %':<26} vs target (points)"
    )
    print(header, file=out)
    print("-" * len(header), file=out)
    for r in all_rows:
        dist = r.distribution
        shares = "/".join(f"{dist.get(t, 0) * 100:.0f}" for t in _TYPES) if dist else "-"
        target = (targets or {}).get(r.value_stream) or {}
        deviation = (
            " ".join(
                f"{t} {((dist or {}).get(t, 0) - target[t]) * 100:+.0f}"
                for t in _TYPES
                if t in target
            )
            if target and dist
            else "-"
        )
        load_avg = "-" if r.load_avg is None else f"{r.load_avg:.1f}"
        print(
            f"{r.value_stream[:16]:<16} {r.period_start.date().isoformat():<11} "
            f"{r.velocity:>8} {_days(r.flow_time.p50_s):>8} {_days(r.flow_time.p85_s):>8} "
            f"{_pct(r.efficiency):>6} {r.load_end:>5} {load_avg:>8} "
            f"{_days(r.age.p85_s):>9}  {shares:<26} {deviation}",
            file=out,
        )


def cmd_export(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    from syncd.export import KINDS, Filters, check_output, export

    kind = KINDS[args.what]
    filters = Filters(
        value_stream=args.value_stream,
        flow_type=args.flow_type,
        since=args.since,
        until=args.until,
        period_kind=args.period,
    )
    try:  # usage errors before the warehouse is opened
        filters.check(kind)
        check_output(args.format, args.output)
    except ValueError as exc:
        print(f"syncd: export: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    warehouse = _warehouse(config)
    try:
        count = export(warehouse, kind, args.format, out=out, path=args.output, filters=filters)
    except OSError as exc:
        if not args.output:
            raise
        print(f"syncd: export: cannot write {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        warehouse.close()
    if args.output:
        what = "metric rows" if args.what == "metrics" else args.what
        print(f"{count} {what} written to {args.output}", file=sys.stderr)
    return EXIT_OK


def cmd_dependencies(config: Config, args: argparse.Namespace, out: TextIO) -> int:
    from syncd.dependencies import blocked_rows, graph, print_blocked

    if args.output and not args.graph:
        raise ConfigError("--output goes with --graph")
    warehouse = _warehouse(config)
    try:
        with warehouse.engine.connect() as conn:
            if args.graph:
                document = graph(conn, value_stream=args.value_stream)
            else:
                as_of = args.as_of or datetime.now(UTC)
                rows = blocked_rows(conn, args.period, as_of, value_stream=args.value_stream)
    finally:
        warehouse.close()
    if args.graph:
        if args.output:
            with open(args.output, "w", encoding="utf-8") as handle:
                json.dump(document, handle, ensure_ascii=False, indent=1)
                handle.write("\n")
            print(
                f"{len(document['nodes'])} nodes and {len(document['edges'])} edges written "
                f"to {args.output}",
                file=sys.stderr,
            )
        else:
            json.dump(document, out, ensure_ascii=False, indent=1)
            out.write("\n")
    elif args.format == "json":
        json.dump([row.to_json() for row in rows], out, ensure_ascii=False, indent=1)
        out.write("\n")
    else:
        print_blocked(rows, out, last=args.last)
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(entry())
