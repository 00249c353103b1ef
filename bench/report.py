"""The results as Markdown, the targets met or missed, and the throughput chart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.config import CONNECTIONS, TARGETS
from bench.load import paired_ratio
from toolkit.features import ROOT
from toolkit.processes import run


def versions(python: Path) -> dict[str, str]:
    names = [
        "fastapi",
        "starlette",
        "uvicorn",
        "pydantic",
        "sqlalchemy",
        "asyncpg",
        "redis",
        "python-socketio",
        "slowapi",
        "limits",
        "sentry-sdk",
    ]
    code = (
        "import json, sys, platform; from importlib.metadata import version; "
        "print(json.dumps({'python': platform.python_version(), **{n: version(n) for n in sys.argv[1:]}}))"
    )
    return json.loads(run([python, "-c", code, *names], ROOT).stdout)


def throughput_and_latency(measured: dict[str, Any]) -> str:
    """Two table cells: requests a second, then p50 / p99 in ms."""
    return f"{measured['rps']:,.0f} | {measured['p50_ms']:.1f} / {measured['p99_ms']:.1f}"


def committed(*measured: dict[str, Any]) -> bool:
    """Whether the rows these targets stored were counted (the writes)."""
    return all(item.get("committed_per_s") is not None for item in measured)


def verdict(ok: bool) -> str:
    return "met" if ok else "**missed**"


def render(results: dict[str, Any]) -> str:
    """The Markdown report: HTTP table, Socket.IO table, startup table, targets."""
    machine, options = results["machine"], results["settings"]
    versions = machine["versions"]
    pinned = "server pinned to one CPU, load generator to another" if machine["pinned"] else "no CPU pinning"
    lines = [
        f"{results['mode']} run on {machine['cpus']} CPUs (load average {machine['load_before']:.1f} before, "
        f"{machine['load_after']:.1f} after); {pinned}. Python {versions['python']}, "
        f"FastAPI {versions['fastapi']}, Starlette {versions['starlette']}, uvicorn {versions['uvicorn']}, "
        f"python-socketio {versions['python-socketio']}, slowapi {versions['slowapi']}.",
    ]
    http, rows = results.get("http"), results.get("rows")
    if http and rows:
        lines += [
            "",
            f"HTTP: one uvicorn worker, `wrk` with {options['connections']} connections, {options['rounds']} "
            f"rounds of {options['seconds']} s per target, "
            + (
                "every target at once (a smoke run). "
                if options["side_by_side"]
                else "the targets of a row back to back in an order that rotates each round. "
            )
            + "Throughput, latency and CPU (the server's CPU time per request) "
            "are medians over rounds; a ratio is the median of the ratios within each round.",
            "",
            "| Endpoint | App req/s | App p50 / p99 ms | App CPU µs/req | Bare FastAPI req/s | App ÷ FastAPI "
            "| Bare Starlette req/s | App ÷ Starlette |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for row in rows:
            app, fast, star = (http[row[name]] for name in ("app", "fastapi", "starlette"))
            lines.append(
                f"| {row['label']} | {app['rps']:,.0f} | {app['p50_ms']:.1f} / {app['p99_ms']:.1f} "
                f"| {app['cpu_us']:,.0f} | {fast['rps']:,.0f} | {paired_ratio(app, fast):.2f} "
                f"| {star['rps']:,.0f} | {paired_ratio(app, star):.2f} |"
            )
        lines += [
            "",
            "\\* The reads with rate limiting off, so that they compare the source alone (the limiter's "
            "cost is the GET / pair); the signed-in read is the same route behind the project's bearer "
            "check (`bench/protected.py`), and POST /items sends an access token. † The default limit "
            "covers writes only; this instance sets `RATE_LIMIT_DEFAULT_METHODS` to every method, so "
            "GET / is counted in Redis (checked before the run). Every other row is the default project "
            "as generated; all run with CORS origins, trusted hosts and production settings, and no "
            "Sentry DSN.",
        ]
    tracing = results.get("tracing")
    if http and tracing:
        by_key = {row["key"]: row for row in rows}
        traced = paired_ratio(http[by_key["item_db_traced"]["app"]], http[by_key["item_db"]["app"]])
        lines += [
            "",
            f"Tracing: the database read traced ÷ untraced {traced:.2f} (every request traced, "
            f"spans exported in batches: {tracing['exports']:,} exports, "
            f"{tracing['megabytes']:,.1f} MB). Untraced instances import no exporter.",
        ]
    if http and rows:
        by_key = {row["key"]: row for row in rows}
        kept = paired_ratio(http[by_key["item_db"]["app"]], http[by_key["item_db_library_pool"]["app"]])
        lines += [
            "",
            "Pool: the database read with every connection kept (the project's pool, no overflow) "
            "÷ on SQLAlchemy's default sizes (5 kept, 10 more opened and closed again under load) "
            f"{kept:.2f}.",
        ]
    drivers = results.get("drivers")
    if http and drivers:
        lines += [
            "",
            "For reference, the database paths on asyncpg alone: bare FastAPI with asyncpg's own pool "
            "at its defaults (ten connections) and the same queries, without SQLAlchemy and without a "
            "transaction around them; same rounds as above.",
            "",
            "| Data path | asyncpg alone req/s | p50 / p99 ms | CPU µs/req | SQLAlchemy ceiling ÷ asyncpg "
            "| App ÷ asyncpg |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for driver in drivers:
            app, sqlalchemy, alone = (http[driver[name]] for name in ("app", "sqlalchemy", "asyncpg"))
            lines.append(
                f"| {driver['label']} | {throughput_and_latency(alone)} | {alone['cpu_us']:,.0f} "
                f"| {paired_ratio(sqlalchemy, alone):.2f} | {paired_ratio(app, alone):.2f} |"
            )
    auth = results.get("auth")
    if auth:
        lines += [
            "",
            f"Logging in (`POST /auth/token`, one at a time, {auth['logins']} logins): median "
            f"{auth['login_p50_ms']:.0f} ms, of which one argon2 hash takes {auth['hash_ms']:.0f} ms "
            "(in a worker thread: other requests go on meanwhile).",
        ]
    alternatives = results.get("alternatives")
    if http and alternatives:
        lines += [
            "",
            f"Rate limiting, the same Redis-backed limit applied {len(alternatives)} ways to GET / on bare "
            "FastAPI, each against the route unlimited (same rounds as above):",
            "",
            "| Limiter | req/s | p50 / p99 ms | CPU µs/req | ÷ unlimited |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for alternative in alternatives:
            limited, unlimited = http[alternative["limited"]], http[alternative["unlimited"]]
            lines.append(
                f"| {alternative['label']} | {throughput_and_latency(limited)} | {limited['cpu_us']:,.0f} "
                f"| {paired_ratio(limited, unlimited):.2f} |"
            )
    versus = results.get("peer")
    if http and versus:
        lines += [
            "",
            "Against the nearest peer template's project (s3rius/FastAPI-template, `fastapi_template` "
            "from PyPI: REST, PostgreSQL with SQLAlchemy and Alembic, Redis, its example model), baked "
            "with its own CLI and dependencies, same server options, same PostgreSQL and Redis, same "
            "rounds. The app commits before it responds and its list returns the total; the peer's list "
            "counts nothing. The peer commits its writes after responding, so its responses a second "
            "run ahead of what it stores: the writes are also rated by the rows each project commits "
            "a second, counted in its database from the start of the load to its last commit.",
            "",
            "| Data path | App req/s | App p50 / p99 ms | Peer req/s | Peer p50 / p99 ms | App ÷ peer |",
            "| --- | ---: | ---: | ---: | ---: | ---: |",
        ]
        for pair in versus:
            ours, theirs = http[pair["app"]], http[pair["peer"]]
            lines.append(
                f"| {pair['label']} | {throughput_and_latency(ours)} | {throughput_and_latency(theirs)} "
                f"| {paired_ratio(ours, theirs):.2f} |"
            )
            if committed(ours, theirs):
                lines.append(
                    f"| The same, rows committed a second | {ours['committed_per_s']:,.0f} | - "
                    f"| {theirs['committed_per_s']:,.0f} | - "
                    f"| {paired_ratio(ours, theirs, 'committed_per_s'):.2f} |"
                )
    sio = results.get("socketio")
    if sio:
        app, bare, plain = sio["app"], sio["ceiling"], sio["plain"]
        lines += [
            "",
            f"Socket.IO: {app['clients']:,.0f} WebSocket clients spread over two instances sharing Redis; "
            f"{options['sio_emits']} broadcasts {options['sio_interval'] * 1000:.0f} ms apart through "
            f"`POST /realtime/rooms/{{room}}/emit` for latency (after {options['sio_warmup']} unmeasured), "
            f"then {options['sio_burst']} back to back for throughput; "
            f"medians of {options['sio_rounds']} rounds in rotating order; no process pinned. "
            "Plain WebSocket path: the same number of clients on the app's `/realtime/ws/{room}`, "
            "the same broadcasts sent through `POST /realtime/rooms/{room}/broadcast` (one send per "
            "client, fanned out through Redis pub/sub).",
            "",
            "| Socket.IO | App | Bare python-socketio | App ÷ bare | App, plain WebSocket path |",
            "| --- | ---: | ---: | ---: | ---: |",
        ]
        for key, label, digits in (
            ("connects_per_s", "Connects per second", 0),
            ("deliveries_per_s", "Broadcast deliveries per second", 0),
            ("latency_p50_ms", "Emit-to-receive p50, ms", 1),
            ("latency_p99_ms", "Emit-to-receive p99, ms", 1),
            ("cpu_us_per_delivery", "Servers' CPU per delivered event, µs", 0),
            ("client_cpu_us_per_delivery", "Clients' CPU per received event, µs", 0),
            ("lost", "Events lost", 0),
        ):
            ratio = f"{app[key] / bare[key]:.2f}" if bare[key] else "-"
            lines.append(
                f"| {label} | {app[key]:,.{digits}f} | {bare[key]:,.{digits}f} | {ratio} "
                f"| {plain[key]:,.{digits}f} |"
            )
    jobs = results.get("jobs")
    if jobs:
        app, bare = jobs["app"], jobs["bare"]
        lines += [
            "",
            f"Background jobs (a project with `use_worker`): {jobs['spaced']} jobs enqueued 10 ms apart "
            f"(enqueue to start), then {jobs['burst']} at once (jobs started per second); one worker "
            "process, SAQ's default concurrency, the same Redis; medians over rounds.",
            "",
            "| Jobs | Generated worker | SAQ alone | Worker ÷ SAQ |",
            "| --- | ---: | ---: | ---: |",
        ]
        for label, key, digits in (
            ("Enqueue to start p50, ms", "p50_ms", 2),
            ("Enqueue to start p99, ms", "p99_ms", 2),
            ("Jobs started per second", "jobs_per_s", 0),
        ):
            ratio = f"{app[key] / bare[key]:.2f}" if bare[key] else "-"
            lines.append(f"| {label} | {app[key]:,.{digits}f} | {bare[key]:,.{digits}f} | {ratio} |")
    start = results.get("startup")
    if start:
        lines += ["", "| Startup and generation | Wall | CPU |", "| --- | ---: | ---: |"]
        if "cold_start_s" in start:
            lines.append(
                "| Cold start to the first 200 on /health (runtime dependencies only, bytecode "
                "compiled; median) "
                f"| {start['cold_start_s']:.2f} s | {start['cold_start_cpu_s']:.2f} s |"
            )
            after_load = results.get("rss_after_load_mb")
            rss = f"{start['idle_rss_mb']:.0f} MB" + (f" / {after_load:.0f} MB" if after_load else "")
            label = "Idle RSS per worker: after start" + (" / after the HTTP load" if after_load else "")
            lines.append(f"| {label} | {rss} | |")
        lines.append(
            f"| Bake the default project with the cookiecutter CLI (median) | {start['bake_cli_s']:.2f} s "
            f"| {start['bake_cli_cpu_s']:.2f} s |"
        )
        lines.append(
            f"| Bake it in process (templates and hooks only) | {start['bake_in_process_s']:.2f} s | |"
        )
    lines += ["", "| Target | Measured | Verdict |", "| --- | ---: | --- |"]
    for label, value, ok in results["targets"]:
        lines.append(f"| {label} | {value} | {verdict(ok)} |")
    return "\n".join(lines) + "\n"


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """Each target of the issue that this run measured: label, value, met."""
    found = []
    http = results.get("http")
    if http:
        by_key = {row["key"]: row for row in results["rows"]}

        def app(row: str) -> dict[str, Any]:
            return http[by_key[row]["app"]]

        def of_ceiling(row: str) -> float:
            return paired_ratio(app(row), http[by_key[row]["fastapi"]])

        health = paired_ratio(app("health"), http[by_key["health"]["fastapi"]])
        cache = paired_ratio(app("item_cache"), app("item_db"))
        protected = paired_ratio(app("item_protected"), app("item_cache"))
        limited = paired_ratio(app("limited"), app("unlimited"))
        metrics_health = paired_ratio(app("health"), app("health_no_metrics"))
        metrics_db = paired_ratio(app("item_db"), app("item_db_no_metrics"))
        p99 = app("limited")["p99_ms"]
        found += [
            (
                "/health, every feature on ÷ bare FastAPI ≥ 0.85",
                f"{health:.2f}",
                health >= TARGETS["health_vs_fastapi"],
            ),
            ("Cached read ÷ database read ≥ 1.5", f"{cache:.2f}", cache >= TARGETS["cache_vs_database"]),
            *(
                (
                    f"{label}, metrics on ÷ off ≥ 0.9",
                    f"{ratio:.2f}",
                    ratio >= TARGETS["metrics_on_vs_off"],
                )
                for label, ratio in (("/health", metrics_health), ("Database read", metrics_db))
            ),
            (
                "Cached read with a bearer token ÷ without ≥ 0.8",
                f"{protected:.2f}",
                protected >= TARGETS["protected_vs_public"],
            ),
            *(
                (
                    f"{label} ÷ bare FastAPI on library defaults ≥ 0.85",
                    f"{of_ceiling(row):.2f}",
                    of_ceiling(row) >= TARGETS["data_vs_ceiling"],
                )
                for label, row in (
                    ("Cached read", "item_cache"),
                    ("Database read", "item_db"),
                    ("List", "list"),
                    ("Write", "write"),
                )
            ),
            (
                "Rate-limited (Redis) ÷ unlimited ≥ 0.65",
                f"{limited:.2f}",
                limited >= TARGETS["limited_vs_unlimited"],
            ),
            (
                f"Rate-limited p99 at {CONNECTIONS} connections < 50 ms",
                f"{p99:.1f} ms",
                p99 < TARGETS["limited_p99_ms"],
            ),
        ]
        for pair in results.get("peer", []):
            ours, theirs = http[pair["app"]], http[pair["peer"]]
            if committed(ours, theirs):
                label = f"{pair['label']}, rows committed a second"
                ratio = paired_ratio(ours, theirs, "committed_per_s")
            else:
                label, ratio = pair["label"], paired_ratio(ours, theirs)
            found.append((f"{label}: app ÷ peer template ≥ 1.0", f"{ratio:.2f}", ratio >= TARGETS["vs_peer"]))
    sio = results.get("socketio")
    if sio:
        for kind, label in (("app", "Socket.IO"), ("plain", "Plain WebSocket path")):
            clients = f"{sio[kind]['clients']:,.0f} clients"
            found.append(
                (
                    f"{label} emit-to-receive p99, {clients} on two instances < 50 ms",
                    f"{sio[kind]['latency_p99_ms']:.1f} ms",
                    sio[kind]["latency_p99_ms"] < TARGETS["socketio_p99_ms"],
                )
            )
    start = results.get("startup")
    if start:
        if "cold_start_s" in start:
            rss = max(start["idle_rss_mb"], results.get("rss_after_load_mb", 0.0))
            found += [
                (
                    "Cold start to the first 200 < 1.5 s",
                    f"{start['cold_start_s']:.2f} s",
                    start["cold_start_s"] < TARGETS["cold_start_s"],
                ),
                ("Idle RSS per worker < 120 MB", f"{rss:.0f} MB", rss < TARGETS["idle_rss_mb"]),
            ]
        found.append(
            (
                "Baking the default project (CLI) < 1 s",
                f"{start['bake_cli_s']:.2f} s",
                start["bake_cli_s"] < TARGETS["bake_s"],
            )
        )
    return found


def chart(results: dict[str, Any], path: Path) -> None:
    """Each endpoint's throughput next to its two ceilings, labelled with the app's ratio to bare FastAPI."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    http, rows = results["http"], results["rows"]
    series = [
        ("Generated app", "app", "#1f77b4"),
        ("Bare FastAPI", "fastapi", "#ff7f0e"),
        ("Bare Starlette", "starlette", "#2ca02c"),
    ]
    figure, axes = plt.subplots(figsize=(11, 5.5))
    width = 0.27
    for offset, (name, key, colour) in enumerate(series):
        values = [http[row[key]]["rps"] for row in rows]
        positions = [index + (offset - 1) * width for index in range(len(rows))]
        axes.bar(positions, values, width, label=name, color=colour)
        if key == "app":
            for position, row, value in zip(positions, rows, values, strict=True):
                ratio = paired_ratio(http[row["app"]], http[row["fastapi"]])
                axes.annotate(f"{ratio:.2f}", (position, value), ha="center", va="bottom", fontsize=8)
    axes.set_xticks(range(len(rows)), [row["label"] for row in rows], rotation=15, ha="right", fontsize=8)
    axes.set_ylabel("requests per second (median)")
    axes.set_title(
        f"Default project against its ceilings: one uvicorn worker, {CONNECTIONS} connections "
        "(labels: app ÷ bare FastAPI)",
        fontsize=10,
    )
    axes.legend()
    axes.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
