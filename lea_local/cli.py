"""`lea-local`: serve the API, manage models."""

from __future__ import annotations

import argparse
import signal
import sys


class _Stopped(BaseException):
    """SIGTERM or SIGINT reached `serve` (uvicorn raises it again once its shutdown is done)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped(signum)


def _die_of(signum: int) -> None:
    """Exit as killed by `signum`, the status systemd and shells expect after SIGTERM or Ctrl+C."""
    sys.stdout.flush()
    sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    signal.raise_signal(signum)


def _serve(args: argparse.Namespace) -> int:
    import uvicorn
    from pydantic import ValidationError

    from lea_local.api.app import create_asgi_app
    from lea_local.api.shutdown import DrainingServer
    from lea_local.catalog import ModelsNotInstalled
    from lea_local.runtime.logs import configure_logging
    from lea_local.services import resolve_model_paths
    from lea_local.settings import Settings, SettingsError

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if args.engines_only:
        overrides["engines_only"] = True
    try:
        settings = Settings(**overrides)
        keys = [k.decode() for k in settings.require_api_keys() + settings.require_admin_keys()]
    except (SettingsError, ValidationError) as exc:
        print(f"lea-local: cannot start: {exc}", file=sys.stderr)
        return 2
    # The keys lea-local sends to remote engine servers are masked in the log too.
    remote_keys = [
        key.get_secret_value() for key in (settings.llm_api_key, settings.asr_api_key, settings.tts_api_key) if key
    ]
    configure_logging(settings.log_level, secrets=keys + remote_keys)
    # uvicorn hands the signals back once its shutdown is done: they end up here, as _Stopped.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _raise_stopped)
    app = None
    try:
        resolve_model_paths(settings)  # fail here, clearly, rather than inside uvicorn's startup
        app = create_asgi_app(settings)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, access_log=False)
        server = DrainingServer(config, app.app.state.drain, settings.shutdown_grace_seconds)
        server.run()
        stopped_by = None
    except ModelsNotInstalled as exc:
        print(f"lea-local: cannot start: {exc}", file=sys.stderr)
        return 2
    except _Stopped as stop:
        stopped_by = stop.signum
    if app is not None and app.app.state.runtime.load_error:  # the server stopped itself
        print(f"lea-local: stopped: start-up failed: {app.app.state.runtime.load_error}", file=sys.stderr)
        return 3
    if stopped_by is None:
        if not server.started:  # uvicorn logged why
            print("lea-local: stopped: the HTTP server could not start", file=sys.stderr)
            return 3
        print("lea-local: stopped", file=sys.stderr)
        return 0
    message = f"lea-local: stopped: {signal.Signals(stopped_by).name}"
    if cut_off := (app.app.state.drain.cut_off if app is not None else 0):
        message += f"; {cut_off} request(s) still running after {settings.shutdown_grace_seconds:g} s answered 503"
    print(message, file=sys.stderr)
    _die_of(stopped_by)
    return 128 + stopped_by  # not reached: the signal ends the process


def _db(args: argparse.Namespace) -> int:
    from pydantic import ValidationError
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from lea_local.settings import Settings
    from lea_local.store.database import create_database_engine
    from lea_local.store.schema import upgrade_schema

    try:
        url = args.database_url or Settings().effective_database_url
    except ValidationError as exc:
        print(f"lea-local: cannot read the settings: {exc}", file=sys.stderr)
        return 2
    shown = make_url(url).render_as_string(hide_password=True)
    engine = create_database_engine(url)
    try:
        revision = upgrade_schema(engine)
    except SQLAlchemyError as exc:
        cause = getattr(exc, "orig", None) or exc
        print(f"lea-local: cannot upgrade {shown}: {str(cause).strip()}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"{shown}: at revision {revision}")
    return 0


def _models(args: argparse.Namespace) -> int:
    from lea_local.catalog.cli import run

    return run(args)


def _knowledge(args: argparse.Namespace) -> int:
    from lea_local.knowledge.cli import run

    return run(args)


def main(argv: list[str] | None = None) -> int:
    from lea_local.catalog.cli import add_arguments

    parser = argparse.ArgumentParser(prog="lea-local", description="Self-hosted speech + LLM server for Léa")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="start the HTTP server")
    serve.add_argument("--host", help="interface to listen on (default: $LEA_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default: $LEA_PORT or 8000)")
    serve.add_argument(
        "--engines-only",
        action="store_true",
        help="serve only the OpenAI-compatible API (/v1) and health: an engine server for other replicas "
        "(also $LEA_ENGINES_ONLY=true)",
    )
    serve.set_defaults(func=_serve)

    db = commands.add_parser("db", help="manage the conversation database")
    db_commands = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_commands.add_parser(
        "upgrade",
        help="create the schema or bring it to the newest revision (also done when the server starts)",
    )
    upgrade.add_argument("--database-url", help="SQLAlchemy URL (default: $LEA_DATABASE_URL or the SQLite file)")
    upgrade.set_defaults(func=_db)

    models = commands.add_parser("models", help="list, download and verify models")
    add_arguments(models)
    models.set_defaults(func=_models)

    from lea_local.knowledge.cli import add_arguments as add_knowledge_arguments

    knowledge = commands.add_parser("knowledge", help="manage the documents Léa answers from")
    add_knowledge_arguments(knowledge)
    knowledge.set_defaults(func=_knowledge)

    bench = commands.add_parser(
        "bench", help="measure per-stage latencies (see lea-local bench --help)", add_help=False
    )
    bench.set_defaults(func=None)

    args, rest = parser.parse_known_args(argv)
    if args.command == "bench":
        from lea_local.tools.bench import main as bench_main

        return bench_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
