"""A real nginx in front of lea-local replicas, as `deploy/nginx/lea-local.conf` configures it:
the shipped template rendered with the test's ports and a certificate the test makes with the
`openssl` CLI (a CA of its own and a server certificate for 127.0.0.1 signed by it). nginx runs in
the foreground as this process's child (never a daemon left behind) and is stopped by `stop`."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from lea_local.tools.server_process import free_port
from tests.server import REPO

TEMPLATE = REPO / "deploy" / "nginx" / "lea-local.conf"
SETTINGS = (
    "LEA_NGINX_SERVER_NAME",
    "LEA_NGINX_LISTEN",
    "LEA_NGINX_HTTP_LISTEN",
    "LEA_NGINX_CERTIFICATE",
    "LEA_NGINX_CERTIFICATE_KEY",
    "LEA_NGINX_REPLICAS",
)

# What a packaged nginx.conf gives around conf.d/*.conf, with every path in the test's directory.
_MAIN_CONF = """\
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/lea-local.conf;
}}
"""


def render(template: str, values: dict[str, str]) -> str:
    """As `envsubst '$LEA_NGINX_…'` does: only the named settings, as ${NAME} or $NAME."""
    names = "|".join(SETTINGS)
    pattern = rf"\$(?:\{{({names})\}}|({names})\b)"
    return re.sub(pattern, lambda match: values[match.group(1) or match.group(2)], template)


def make_certificate(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate for 127.0.0.1 signed by it: (CA, certificate, key)."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=lea-local test CA")
    openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "server.ext").write_text(
        "subjectAltName = IP:127.0.0.1\nbasicConstraints = CA:FALSE\nextendedKeyUsage = serverAuth\n"
    )
    openssl(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
    )  # fmt: skip
    return directory / "ca.pem", directory / "server.pem", directory / "server.key"


class Nginx:
    """nginx terminating TLS on 127.0.0.1:`port` in front of `replicas` (ports on 127.0.0.1)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.http_port = free_port()  # plain http, redirected to https
        # Its own directory, traversable by nginx's unprivileged workers when the tests run as
        # root (pytest's temporary directories are not); removed by `stop`.
        self.dir = Path(tempfile.mkdtemp(prefix="lea-nginx-"))
        self.dir.chmod(0o755)
        self.ca, self.certificate, self.key = make_certificate(self.dir)
        self.process: subprocess.Popen | None = None

    def start(self, replicas: list[int], timeout: float = 30.0) -> Nginx:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            raise RuntimeError("nginx is not installed: run scripts/install --test")
        values = {
            "LEA_NGINX_SERVER_NAME": "127.0.0.1",
            "LEA_NGINX_LISTEN": f"127.0.0.1:{self.port}",
            "LEA_NGINX_HTTP_LISTEN": f"127.0.0.1:{self.http_port}",
            "LEA_NGINX_CERTIFICATE": str(self.certificate),
            "LEA_NGINX_CERTIFICATE_KEY": str(self.key),
            "LEA_NGINX_REPLICAS": " ".join(f"server 127.0.0.1:{port};" for port in replicas),
        }
        site = render(TEMPLATE.read_text(), values)
        assert "${LEA_NGINX" not in site, "a setting of the template was not rendered"
        (self.dir / "lea-local.conf").write_text(site)
        (self.dir / "nginx.conf").write_text(_MAIN_CONF.format(dir=self.dir))
        command = [binary, "-p", str(self.dir), "-c", str(self.dir / "nginx.conf"), "-e", str(self.dir / "error.log")]
        check = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
        if check.returncode != 0:
            raise RuntimeError(f"nginx refused the configuration:\n{check.stderr}")
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}:\n{self.error_log()[-4000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"nginx not listening after {timeout} s:\n{self.error_log()[-4000:]}")

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies nginx's certificate against the test's CA only (not the system's)."""
        return ssl.create_default_context(cafile=str(self.ca))

    def client(self, **kwargs) -> httpx.Client:
        kwargs.setdefault("timeout", 120)
        return httpx.Client(base_url=self.url, verify=self.ssl_context(), **kwargs)

    def error_log(self) -> str:
        path = self.dir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Fast shutdown (SIGTERM: the master stops its workers), then the directory goes."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
