# SPDX-License-Identifier: Apache-2.0
"""pytest plugin: no cephx key may appear in a process list, an environment or a log.

While the tests run, the scanner watches every cephx key it knows:

* the keys in every keyring file of the test cluster, read once the
  ``ceph_cluster`` fixture is set up (a reused cluster or the session's own)
  and again every second, so keyrings written by tests are watched too;
* keys a test registers with ``secret_scanner.watch(key, label)``, and the
  passphrases of encrypted disks registered with ``watch_passphrase`` or
  ``watch_key_dir`` (every file of a ``file`` key manager's directory).

It looks for them

* in the argv and environment of every process this test process spawns,
  at spawn time (a Python audit hook on ``subprocess.Popen``, ``os.exec``,
  ``os.posix_spawn``, ``os.system``...);
* in ``/proc/<pid>/cmdline`` and ``/proc/<pid>/environ`` of every
  descendant process, polled every 50 ms and once more after each test,
  which also catches grandchildren that no Python code spawned;
* in this process's own environment (children inherit it);
* in every log record (the ``rbd_driver`` and ``oslo_concurrency`` loggers
  are set to DEBUG while the scanner is active) and in the captured
  stdout, stderr and log sections of every test report.

A finding fails the test during which it was made (at teardown) and the
session. Findings name where the key was and whose it is, never the key.

Before the scanner is trusted, it proves it can see: on activation it spawns
a child with a freshly generated key in its argv and environment and checks
that both the audit hook and the /proc poller report it; if not, the session
stops. ``tests/functional/test_provision.py`` repeats that as a test, and
adds a leak through the logs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from rbd_driver.storage import cephx

_SPAWN_EVENTS = frozenset({"subprocess.Popen", "os.system", "os.posix_spawn", "os.exec",
                           "os.spawn", "pty.spawn", "os.fork"})
_KEY_LINE = re.compile(r"^\s*key\s*=\s*(\S+)", re.MULTILINE)
_LOGGERS = ("rbd_driver", "oslo_concurrency")
POLL_INTERVAL = 0.05


@dataclasses.dataclass(frozen=True)
class Finding:
    """Where a watched key was seen (never the key itself)."""

    label: str
    where: str
    test: str | None
    kind: str  # "audit", "proc", "environ-self", "log", "report"


def _texts(value: Any) -> Iterator[str]:
    """Every string inside an audit event argument (argv lists, env mappings...)."""
    if value is None:
        return
    if isinstance(value, bytes):
        yield value.decode(errors="replace")
    elif isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from (f"{k}={v}" for k in _texts(key) for v in _texts(item))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, os.PathLike):
        yield str(os.fspath(value))


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(b")", 1)[-1].split()
        if len(fields) > 2:
            children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def _children_of(pid: int) -> list[int] | None:
    """Children of ``pid`` from /proc/PID/task/*/children (None: not supported)."""
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as f:
                found += [int(c) for c in f.read().split()]
        except FileNotFoundError:
            if not os.path.exists(f"/proc/{pid}/task/{tid}"):
                continue  # the thread ended
            return None
        except OSError:
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Return every live descendant of ``pid``."""
    found: list[int] = []
    todo = [pid]
    children_map: dict[int, list[int]] | None = None
    while todo:
        current = todo.pop()
        children = _children_of(current) if children_map is None else None
        if children is None:
            children_map = children_map or _children_map()
            children = children_map.get(current, [])
        found += children
        todo += children
    return found


class SecretScanner:
    """Watches keys, looks for them everywhere a key must not be, records findings."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._secrets: dict[str, tuple[str, bool]] = {}  # needle -> (label, expected)
        self.findings: list[Finding] = []
        self.expected_findings: list[Finding] = []
        self.current_test: str | None = None
        self._keyring_dirs: list[str] = []
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._levels: dict[str, int] = {}
        self._handler: logging.Handler | None = None
        self._reported: set[tuple[str, str]] = set()

    # -- what is watched -------------------------------------------------------------

    def watch(self, secret: str | cephx.CephxKey, label: str, expected: bool = False) -> None:
        """Look for ``secret`` from now on; ``expected`` findings do not fail anything."""
        text = secret.reveal() if isinstance(secret, cephx.CephxKey) else str(secret)
        needle = text.strip().rstrip("=")
        if len(needle) < 16:
            raise ValueError(f"refusing to watch a secret shorter than 16 characters ({label})")
        with self._lock:
            self._secrets[needle] = (label, expected)
        self.activate()

    def watch_passphrase(self, passphrase: bytes | str, label: str) -> None:
        """Look for an encrypted disk's passphrase from now on, as for a key (in process
        lists, environments, logs, test reports: an exception message lands there)."""
        text = passphrase.decode() if isinstance(passphrase, bytes) else passphrase
        self.watch(text, f"passphrase {label}")

    def watch_key_dir(self, directory: str) -> None:
        """Watch the passphrase in each file of a ``file`` key manager's ``key_dir``."""
        for path in sorted(glob.glob(os.path.join(directory, "*"))):
            with contextlib.suppress(OSError, UnicodeError):
                with open(path, encoding="utf-8") as f:
                    text = f.read().strip()
                if len(text) >= 16:
                    self.watch_passphrase(text, f"in {os.path.basename(path)}")

    def unwatch(self, secret: str | cephx.CephxKey) -> None:
        text = secret.reveal() if isinstance(secret, cephx.CephxKey) else str(secret)
        with self._lock:
            self._secrets.pop(text.strip().rstrip("="), None)

    def watch_keyrings(self, directory: str) -> None:
        """Watch every key in the keyring files under ``directory``, now and every second."""
        with self._lock:
            if directory not in self._keyring_dirs:
                self._keyring_dirs.append(directory)
        self._load_keyrings()

    def _load_keyrings(self) -> None:
        for directory in list(self._keyring_dirs):
            for path in glob.glob(os.path.join(directory, "**", "*keyring*"), recursive=True):
                with contextlib.suppress(OSError, UnicodeError):
                    with open(path, encoding="utf-8") as f:
                        for key in _KEY_LINE.findall(f.read()):
                            if len(key.rstrip("=")) >= 16 and key.rstrip("=") not in self._secrets:
                                self.watch(key, f"key in {os.path.relpath(path, directory)}")

    # -- looking ---------------------------------------------------------------------

    def check_text(self, text: str, where: str, kind: str) -> list[Finding]:
        """Record (and return) a finding for each watched key inside ``text``."""
        found = []
        with self._lock:
            for needle, (label, expected) in self._secrets.items():
                if needle in text:
                    finding = Finding(label, where, self.current_test, kind)
                    # One finding per place per test: a long-lived process
                    # or the environment is not reported at every poll.
                    marker = (needle, where, self.current_test or "")
                    if marker in self._reported:
                        continue
                    self._reported.add(marker)
                    (self.expected_findings if expected else self.findings).append(finding)
                    found.append(finding)
        return found

    def mask(self, text: str) -> str:
        """Return ``text`` with every watched key replaced by ``****``."""
        with self._lock:
            for needle in self._secrets:
                text = text.replace(needle, "****")
        return text

    def scan_processes(self) -> list[Finding]:
        """Read cmdline and environ of every descendant; return new findings."""
        found: list[Finding] = []
        for pid in descendants(os.getpid()):
            for part in ("cmdline", "environ"):
                try:
                    with open(f"/proc/{pid}/{part}", "rb") as f:
                        data = f.read().replace(b"\0", b"\n").decode(errors="replace")
                except OSError:
                    continue
                exe = data.split("\n", 1)[0][:60] if part == "cmdline" else ""
                found += self.check_text(data, f"/proc/{pid}/{part}" + (f" ({exe})" if exe else ""),
                                         "proc")
        env = "\n".join(f"{k}={v}" for k, v in os.environ.items())
        found += self.check_text(env, "the environment of the test process", "environ-self")
        return found

    def audit(self, event: str, args: tuple[Any, ...]) -> None:
        if event not in _SPAWN_EVENTS or not self._secrets:
            return
        # An exception here would break the spawn itself: never raise.
        with contextlib.suppress(Exception):
            text = "\n".join(_texts(args))
            self.check_text(text, f"{event} argv/env at spawn", "audit")

    # -- lifecycle -------------------------------------------------------------------

    def activate(self) -> None:
        """Start polling and log scanning (once); prove detection works first."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._poll, name="secret-scanner", daemon=True)
        self._handler = _ScanHandler(self)
        logging.getLogger().addHandler(self._handler)
        for name in _LOGGERS:
            logger = logging.getLogger(name)
            self._levels[name] = logger.level
            logger.setLevel(logging.DEBUG)
        self._thread.start()
        self.self_check()

    def deactivate(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)

    def _poll(self) -> None:
        last_keyrings = 0.0
        while not self._stop.wait(POLL_INTERVAL):
            with contextlib.suppress(Exception):
                self.scan_processes()
                if time.monotonic() - last_keyrings > 1.0:
                    last_keyrings = time.monotonic()
                    self._load_keyrings()

    @contextlib.contextmanager
    def planted(self) -> Iterator[str]:
        """Yield a fresh key that is watched as an expected leak, unwatched afterwards."""
        key = cephx.generate_key().reveal()
        self.watch(key, "planted key", expected=True)
        try:
            yield key
        finally:
            self.unwatch(key)

    def self_check(self) -> None:
        """Spawn a child with a planted key in argv and environ; fail unless both are seen.

        Stops the session (``pytest.exit``) if the scanner is blind to one.
        """
        kinds: set[tuple[str, str]] = set()
        with self.planted() as key:
            before = len(self.expected_findings)
            child = subprocess.Popen(["/bin/sh", "-c", "sleep 5", key],
                                     env={"PATH": "/usr/bin:/bin", "PLANTED": key})
            try:
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline:
                    self.scan_processes()
                    kinds = {(f.kind, f.where.split(" ", 1)[0].rsplit("/", 1)[-1])
                             for f in self.expected_findings[before:]}
                    if {("audit", "subprocess.Popen"), ("proc", "cmdline"),
                            ("proc", "environ")} <= kinds:
                        return
                    time.sleep(0.01)
            finally:
                child.kill()
                child.wait()
        pytest.exit("secret scanner self-check failed: a planted key in a child's "
                    f"argv/environ was not found (only {sorted(kinds)}); no test can be "
                    "trusted to be leak-free", returncode=3)

    def report(self, findings: list[Finding]) -> str:
        lines = ["a cephx key leaked (the key itself is not shown):"]
        lines += [f"  {f.label}: in {f.where} [{f.kind}]" + (f" during {f.test}" if f.test else "")
                  for f in findings]
        return "\n".join(lines)


class _ScanHandler(logging.Handler):
    def __init__(self, scanner: SecretScanner) -> None:
        super().__init__(logging.DEBUG)
        self.scanner = scanner
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self.scanner.check_text(self.format(record), f"log record of {record.name}", "log")


SCANNER = SecretScanner()
sys.addaudithook(SCANNER.audit)


@pytest.fixture(scope="session")
def secret_scanner() -> SecretScanner:
    """The session's :class:`SecretScanner` (register keys with ``watch``)."""
    return SCANNER


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef: Any, request: Any) -> Iterator[None]:
    outcome = yield
    if fixturedef.argname == "ceph_cluster":
        try:
            state = outcome.get_result()
        except BaseException:
            return  # the fixture failed; pytest reports that
        directory = getattr(state, "directory", None)
        if directory:
            SCANNER.watch_keyrings(directory)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    SCANNER.current_test = item.nodeid
    try:
        yield
    finally:
        SCANNER.current_test = None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    if not SCANNER._secrets:
        return
    report = outcome.get_result()
    # Captured output and logs: record a leak, then mask the key so that
    # pytest's own report does not print it.
    sections = []
    for name, content in report.sections:
        SCANNER.check_text(content, f"{name} of {item.nodeid}", "report")
        sections.append((name, SCANNER.mask(content)))
    report.sections[:] = sections
    if report.failed:
        text = report.longreprtext
        SCANNER.check_text(text, f"failure report of {item.nodeid}", "report")
        if SCANNER.mask(text) != text:
            report.longrepr = SCANNER.mask(text)
    if call.when != "teardown":
        return
    SCANNER.scan_processes()
    mine = [f for f in SCANNER.findings if f.test == item.nodeid]
    if mine:
        report.outcome = "failed"
        report.longrepr = SCANNER.report(mine)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    SCANNER.deactivate()
    if SCANNER.findings and session.exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if SCANNER.findings:
        terminalreporter.section("secret scanner", red=True)
        terminalreporter.line(SCANNER.report(SCANNER.findings))
    elif SCANNER._secrets:
        terminalreporter.line(f"secret scanner: {len(SCANNER._secrets)} keys watched, none leaked")
