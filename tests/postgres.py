"""A throwaway PostgreSQL cluster for the tests: Debian's `postgresql` binaries, `initdb` in a
temporary directory, listening on 127.0.0.1 only, on a free port. PostgreSQL refuses to run as
root (CI runs as root): there it runs as the `postgres` user that Debian's package creates."""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

import psycopg
from psycopg import sql

from lea_local.tools.server_process import free_port


def postgres_bin_dir() -> Path:
    """Where `pg_ctl` and `initdb` are: on the PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    versions = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parent.parent.name.split(".")[0])
    )
    if not versions:
        raise FileNotFoundError(
            "PostgreSQL's server binaries were not found (pg_ctl): install Debian's `postgresql` package "
            "(scripts/install --test does)"
        )
    return versions[-1].parent


class PostgresCluster:
    """`start()` makes and starts the cluster, `stop()`/`start()` take it down and up again (an
    outage), `destroy()` removes it. Its superuser `lea` has a random password."""

    user = "lea"

    def __init__(self) -> None:
        self.bin = postgres_bin_dir()
        self.password = secrets.token_hex(16)
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="lea-postgres-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self._run_as = None
        if os.geteuid() == 0:
            try:
                self._run_as = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root, and there is no `postgres` user to run PostgreSQL as "
                    "(Debian's `postgresql` package creates it)"
                ) from None
            os.chown(self.root, self._run_as.pw_uid, self._run_as.pw_gid)
        self._initialised = False
        self._databases = 0

    def _pg(self, *args: str) -> None:
        kwargs: dict = {}
        if self._run_as is not None:
            kwargs = {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid, "extra_groups": []}
        result = subprocess.run(
            [str(self.bin / args[0]), *args[1:]], cwd=self.root, capture_output=True, text=True, **kwargs
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n{log}")

    def start(self) -> PostgresCluster:
        if not self._initialised:
            password_file = self.root / "password"
            password_file.write_text(self.password)
            if self._run_as is not None:
                os.chown(password_file, self._run_as.pw_uid, self._run_as.pw_gid)
            self._pg(
                "initdb",
                "--pgdata",
                str(self.data),
                "--username",
                self.user,
                "--pwfile",
                str(password_file),
                "--auth",
                "scram-sha-256",
                "--encoding",
                "UTF8",
                "--no-locale",
                "--no-sync",
            )
            password_file.unlink()
            self._initialised = True
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='{self.root}' "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._pg("pg_ctl", "--pgdata", str(self.data), "--log", str(self.log), "--options", options, "--wait", "start")
        return self

    def stop(self) -> None:
        """A fast shutdown: running statements are cancelled, connections closed."""
        self._pg("pg_ctl", "--pgdata", str(self.data), "--mode", "fast", "--wait", "stop")

    def destroy(self) -> None:
        try:
            self.stop()
        except RuntimeError:
            pass  # already stopped
        shutil.rmtree(self.root, ignore_errors=True)

    def conninfo(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL lea-local is given (LEA_DATABASE_URL)."""
        return f"postgresql+psycopg://{self.user}:{self.password}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        self._databases += 1
        name = f"lea_test_{self._databases}"
        with psycopg.connect(self.conninfo(), autocommit=True) as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)
