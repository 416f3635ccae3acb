"""Real servers on loopback for tests and `make demo-s3`: moto's S3 server, an `mlflow server` whose
artifact store is that S3, and Debian's PostgreSQL (a search's shared Optuna study). Started as
processes, ready when their health URL (PostgreSQL: a connection) answers, stopped by pid. Not for
production: a cluster runs MinIO/S3, the MLflow deployment of the Helm chart and a managed database.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# moto accepts any credentials; these only have to exist. The MLflow server gets them, clients do not.
LOCAL_S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class Server:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        self.process.send_signal(signal.SIGCONT)  # a fault test may have left it paused
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def create_buckets(endpoint: str, *names: str) -> None:
    """Create buckets on a local S3 server with the local credentials (not whatever the caller's
    environment holds)."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=LOCAL_S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=LOCAL_S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=LOCAL_S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    )
    for name in names:
        client.create_bucket(Bucket=name)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start(command: list[str], url: str, health_url: str, env: dict[str, str], log: Path, timeout: float) -> Server:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(health_url, timeout=1)
            return Server(url, process, log)
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(
                    f"{command[0]} did not become healthy; log {log}:\n{log.read_text()[-2000:]}"
                ) from None
            time.sleep(0.2)


def start_moto(log: Path, port: int | None = None) -> Server:
    """moto's S3 HTTP server (in memory) on 127.0.0.1; ready in about a second."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    return _start(command, url, url, {**os.environ, **LOCAL_S3_CREDENTIALS}, log, timeout=30)


def start_mlflow(backend_db: Path, artifacts_uri: str, s3_endpoint: str, log: Path, port: int | None = None) -> Server:
    """`mlflow server`: sqlite backend, artifacts proxied to `artifacts_uri` on `s3_endpoint`, job
    execution off (0.5 GiB instead of 2.3 GiB, ready in ~6 s). Only the server holds S3 credentials."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        **LOCAL_S3_CREDENTIALS,
        "MLFLOW_S3_ENDPOINT_URL": s3_endpoint,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }
    command = [
        str(Path(sys.executable).parent / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{backend_db}",
        "--artifacts-destination", artifacts_uri,
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    return _start(command, url, f"{url}/health", env, log, timeout=90)


# Where Debian installs the server binaries (postgresql-NN; `initdb` is not on PATH there).
POSTGRES_LIB = Path("/usr/lib/postgresql")
POSTGRES_USER = "postgres"  # the superuser of a cluster made here, and the account it runs as under root
POSTGRES_DATABASE = "rooivalk"


def postgres_bin_dir() -> Path:
    """The folder of PostgreSQL's `initdb` and `postgres`: that of `initdb` on PATH, else the newest
    /usr/lib/postgresql/<version>/bin (Debian's layout)."""
    on_path = shutil.which("initdb")
    versions = sorted(
        POSTGRES_LIB.glob("*/bin"), key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0, reverse=True
    )
    for folder in ([Path(on_path).resolve().parent] if on_path else []) + versions:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    raise RuntimeError(
        f"PostgreSQL's initdb and postgres were found neither on PATH nor in {POSTGRES_LIB}/<version>/bin: "
        "`make postgres` installs Debian's postgresql"
    )


@dataclass
class PostgresServer(Server):
    cluster: Path  # the cluster's files
    link: Path | None  # data_dir, when it links to a cluster made elsewhere (see start_postgres)

    def stop(self) -> None:
        """A fast shutdown (SIGINT, what `pg_ctl stop -m fast` sends): sessions are cut, the cluster is
        checkpointed; then SIGQUIT (immediate), then SIGKILL if it hangs."""
        self.process.send_signal(signal.SIGCONT)
        for stop_signal, wait in ((signal.SIGINT, 30), (signal.SIGQUIT, 10)):
            if self.process.poll() is None:
                self.process.send_signal(stop_signal)
            try:
                self.process.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            self.process.kill()
            self.process.wait()
        if self.link is not None:
            shutil.rmtree(self.cluster, ignore_errors=True)
            self.link.unlink(missing_ok=True)


def _postgres_account() -> dict[str, Any]:
    """subprocess keywords that run a command as the `postgres` account (no other groups) under root."""
    return {"user": POSTGRES_USER, "group": POSTGRES_USER, "extra_groups": []} if os.geteuid() == 0 else {}


def start_postgres(data_dir: Path, log: Path, port: int | None = None) -> Server:
    """A fresh PostgreSQL cluster in `data_dir` (new or empty) on 127.0.0.1:`port` (default: a free one),
    trust authentication, no unix socket, fsync off (a throwaway test database), with an empty database
    `rooivalk`; its url is the SQLAlchemy URL `postgresql+psycopg://postgres@127.0.0.1:<port>/rooivalk`.
    Ready in ~2 s. The server log goes to `log`.

    PostgreSQL refuses to run as root: under root, initdb and the server run as the `postgres` account
    (Debian's package makes it), in a folder chowned to it. When that account cannot reach `data_dir`
    (pytest's and mkdtemp's folders are 0700 root), the cluster lives in a postgres-owned folder in the
    system temp folder instead, `data_dir` links to it, and stop() removes both.
    """
    bin_dir = postgres_bin_dir()
    port = port or free_port()
    data_dir = Path(data_dir).absolute()
    if data_dir.exists() and (data_dir.is_symlink() or any(data_dir.iterdir())):
        raise ValueError(f"{data_dir}: start_postgres makes a new cluster in a new or empty folder")
    data_dir.mkdir(parents=True, exist_ok=True)
    cluster, link = data_dir, None
    if os.geteuid() == 0:
        import pwd

        try:
            account = pwd.getpwnam(POSTGRES_USER)
        except KeyError:
            raise RuntimeError(
                f"running as root, PostgreSQL needs the {POSTGRES_USER!r} account, which Debian's postgresql "
                "package makes: `make postgres`"
            ) from None
        reachable = (
            subprocess.run(["test", "-x", str(data_dir.parent)], check=False, **_postgres_account()).returncode == 0
        )
        if not reachable:
            data_dir.rmdir()
            cluster, link = Path(tempfile.mkdtemp(prefix="rooivalk-postgres-")), data_dir
            data_dir.symlink_to(cluster, target_is_directory=True)
        os.chown(cluster, account.pw_uid, account.pw_gid)
    try:
        initdb = [str(bin_dir / "initdb"), "-D", str(cluster), "-U", POSTGRES_USER, "--auth=trust"]
        initdb += ["--encoding=UTF8", "--locale=C", "--no-sync"]
        done = subprocess.run(initdb, cwd="/", capture_output=True, check=False, **_postgres_account())
        if done.returncode != 0:
            output = (done.stdout + done.stderr).decode(errors="replace")
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{output[-2000:]}")
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": "",  # TCP only: no socket path to share or to outgrow 107 bytes
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
        }
        command = [str(bin_dir / "postgres"), "-D", str(cluster)]
        command += [arg for key, value in settings.items() for arg in ("-c", f"{key}={value}")]
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("wb") as handle:
            process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd="/", **_postgres_account())
    except BaseException:
        if link is not None:
            shutil.rmtree(cluster, ignore_errors=True)
            link.unlink(missing_ok=True)
        raise
    server = PostgresServer(
        f"postgresql+psycopg://{POSTGRES_USER}@127.0.0.1:{port}/{POSTGRES_DATABASE}", process, log, cluster, link
    )
    try:
        _create_database(server, port, timeout=60)
    except BaseException:
        server.stop()
        raise
    return server


def _create_database(server: PostgresServer, port: int, timeout: float) -> None:
    """Wait until the server takes connections, then create the `rooivalk` database."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(
                host="127.0.0.1", port=port, user=POSTGRES_USER, dbname="postgres", connect_timeout=2, autocommit=True
            ) as connection:
                connection.execute(f"CREATE DATABASE {POSTGRES_DATABASE}")
            return
        except psycopg.OperationalError:
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"postgres did not take connections on 127.0.0.1:{port}; log {server.log}:\n"
                    f"{server.log.read_text(errors='replace')[-2000:]}"
                ) from None
            time.sleep(0.2)
