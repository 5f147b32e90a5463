"""Shared helpers for Ops/loadgen and Ops/chaos (Python 3 standard library only).

A minimal Redis client (RESP2 over a Unix socket or loopback TCP), a private redis-server in a temporary
directory, and worker processes started from a command template. Everything stays on this machine: Redis URLs
must name a Unix socket or a loopback address.
"""

import ipaddress
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.parse

# MARK: - Redis client


class RedisError(Exception):
    """An error reply (-ERR …) from Redis."""


def parse_redis_url(url):
    """unix:///path/redis.sock or redis://host:port[/db] → ("unix", path, db) or ("tcp", (host, port), db).
    Refuses any host outside the loopback range: these tools only ever talk to this machine."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme == "unix":
        query = urllib.parse.parse_qs(parsed.query)
        return ("unix", parsed.path, int(query.get("db", ["0"])[0]))
    if parsed.scheme != "redis":
        raise ValueError(f"Redis URL {url!r}: use unix:///path/redis.sock or redis://127.0.0.1:PORT")
    host = parsed.hostname or "127.0.0.1"
    if host != "localhost":
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            raise ValueError(f"Redis URL {url!r}: only loopback addresses (127.0.0.0/8, ::1, localhost)")
    db = int(parsed.path.strip("/") or 0)
    return ("tcp", (host, parsed.port or 6379), db)


class Redis:
    """One connection, opened lazily and again after a failure; each call is one round trip."""

    def __init__(self, url, timeout=5.0):
        self.kind, self.address, self.db = parse_redis_url(url)
        self.timeout = timeout
        self.sock = None
        self.buffer = b""

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self.buffer = b""

    def _connect(self):
        family = socket.AF_UNIX if self.kind == "unix" else socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.address)
        self.sock = sock
        self.buffer = b""
        if self.db:
            self.call("SELECT", self.db)

    def call(self, *args, timeout=None):
        """Sends one command, returns its reply (bytes, int, list, None). Raises RedisError for an error reply and
        OSError/ConnectionError when the connection failed (the next call reconnects)."""
        return self.pipeline([args], timeout=timeout)[0]

    def pipeline(self, commands, timeout=None):
        """Sends several commands in one write and returns their replies in order (one round trip)."""
        if self.sock is None:
            self._connect()
        parts = []
        for args in commands:
            parts.append(b"*%d\r\n" % len(args))
            for arg in args:
                data = arg if isinstance(arg, bytes) else str(arg).encode()
                parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        try:
            self.sock.settimeout(timeout if timeout is not None else self.timeout)
            self.sock.sendall(b"".join(parts))
            replies = [self._read() for _ in commands]
        except (OSError, ConnectionError):
            self.close()
            raise
        for reply in replies:
            if isinstance(reply, RedisError):
                raise reply
        return replies

    def submit(self, prefix, queue, jobs):
        """Queues (id, job JSON) pairs as `kandinsky-worker submit` does: HSETNX kd:job:<id> enqueued_ms (so the
        worker's queued_ms counts the time in the queue), then LPUSH, in one pipeline."""
        now_ms = int(time.time() * 1000)
        commands = [("HSETNX", f"{prefix}job:{job_id}", "enqueued_ms", now_ms) for job_id, _ in jobs]
        commands.append(("LPUSH", f"{prefix}queue:{queue}", *[payload for _, payload in jobs]))
        self.pipeline(commands)

    def _line(self):
        while b"\r\n" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buffer) < n + 2:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("Redis closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n + 2 :]
        return data

    def _read(self):
        line = self._line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest
        if kind == b"-":
            return RedisError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ConnectionError(f"unexpected reply {line[:40]!r}")

    def ping(self):
        try:
            return self.call("PING", timeout=1.0) == b"PONG"
        except (OSError, ConnectionError, RedisError):
            return False

    def scan_keys(self, pattern):
        cursor, keys = b"0", []
        while True:
            cursor, batch = self.call("SCAN", cursor, "MATCH", pattern, "COUNT", 1000)
            keys += [k.decode() for k in batch]
            if cursor == b"0":
                return sorted(set(keys))


def stream_entries(entries):
    """XRANGE/XREAD entries → [(id, {field: value})] with str keys and values."""
    out = []
    for entry_id, fields in entries or []:
        values = {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields), 2)}
        out.append((entry_id.decode(), values))
    return out


# MARK: - A private redis-server


class LocalRedis:
    """redis-server in its own temporary directory: a Unix socket, no TCP port, append-only file fsynced on every
    write (so a SIGKILL of the server loses nothing it acknowledged)."""

    def __init__(self, directory):
        self.binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        if not os.path.exists(self.binary):
            raise SystemExit("redis-server not found: apt-get install redis-server")
        self.directory = directory
        self.socket_path = os.path.join(directory, "redis.sock")
        self.config = os.path.join(directory, "redis.conf")
        with open(self.config, "w") as f:
            f.write(
                "\n".join(
                    [
                        f"dir {directory}",
                        f"unixsocket {self.socket_path}",
                        "unixsocketperm 700",
                        "port 0",
                        "appendonly yes",
                        "appendfsync always",
                        'save ""',
                        "daemonize no",
                        f"logfile {os.path.join(directory, 'redis.log')}",
                    ]
                )
                + "\n"
            )
        self.process = None
        self.start()

    @property
    def url(self):
        return "unix://" + self.socket_path

    def start(self, timeout=15.0):
        if os.path.exists(self.socket_path):
            os.unlink(self.socket_path)
        self.process = subprocess.Popen(
            [self.binary, self.config], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = Redis(self.url, timeout=1.0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"redis-server exited; see {os.path.join(self.directory, 'redis.log')}")
            if client.ping():  # PONG, not LOADING: the append-only file is loaded
                client.close()
                return
            time.sleep(0.02)
        raise SystemExit("redis-server did not answer within %.0f s" % timeout)

    def kill(self):
        """SIGKILL, as a crash or an OOM kill would."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def restart(self):
        self.kill()
        self.start()

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


# MARK: - Workers


def default_worker_command(repo_root):
    """$KD_WORKER_CMD, else the first kd-test-worker found (the scripted test worker: $KD_TEST_WORKER_BINARY, the
    repository's .build/debug or .build/release). Placeholders: {redis} {name} {store} {dir}."""
    if os.environ.get("KD_WORKER_CMD"):
        return os.environ["KD_WORKER_CMD"]
    candidates = [
        os.environ.get("KD_TEST_WORKER_BINARY"),
        os.path.join(repo_root, ".build", "debug", "kd-test-worker"),
        os.path.join(repo_root, ".build", "release", "kd-test-worker"),
    ]
    binary = next((c for c in candidates if c and os.access(c, os.X_OK)), None)
    if binary is None:
        raise SystemExit(
            "no kd-test-worker found: build it (swift build), or set KD_TEST_WORKER_BINARY or KD_WORKER_CMD")
    return shlex.quote(binary) + " --redis {redis} --name {name} --store {store} --heartbeat-ms 500"


class Worker:
    """One worker process started from the command template; its output goes to <dir>/<name>.log."""

    def __init__(self, template, name, redis_url, store, directory):
        self.name = name
        self.log_path = os.path.join(directory, f"worker-{name}.log")
        argv = [
            part.format(redis=redis_url, name=name, store=store, dir=directory) for part in shlex.split(template)
        ]
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def running(self):
        return self.process.poll() is None

    def kill9(self):
        if self.running:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def terminate(self, timeout=90.0):
        """SIGTERM, wait up to timeout (then SIGKILL). Returns the exit status (negative: killed by a signal)."""
        if self.running:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.log.close()
        return self.process.returncode


def temporary_directory(prefix):
    return tempfile.mkdtemp(prefix=prefix)


def percentile(values, p):
    """Nearest-rank percentile (p in 0…100) of a non-empty list."""
    ordered = sorted(values)
    rank = max(1, int(-(-p * len(ordered) // 100)))  # ceil(p/100 · n)
    return ordered[min(rank, len(ordered)) - 1]
