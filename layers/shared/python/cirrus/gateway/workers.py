"""Several gateway processes on one port, so that the gateway uses more than one core.

pynetdicom serves each association on a thread, and the interpreter lock runs one thread of a
process at a time, so one gateway process uses about one core. A ``WorkerPool`` starts worker
processes that each run ``run_gateway`` with adapters of their own (boto3 clients and
pynamodb connections stay in the process that made them). Each worker binds its own
listening socket with SO_REUSEPORT, and Linux spreads new connections over those sockets by a
hash of the client's address and port. An association therefore stays in one worker, and two
associations can still land in the same worker.

The parent first binds each port itself, with SO_REUSEPORT but without listening. A port in
use therefore fails before any worker starts, and port 0 becomes one fixed port for every
worker. Workers start with the ``spawn`` method, because the local stack has threads running
when it starts them. ``run_workers`` is the container's entry: it forwards SIGTERM and SIGINT
to the workers, and stops every worker when one of them exits on its own, so that the
orchestrator replaces the task. Each worker gets SIGTERM from Linux when the parent ends.

NOTE: only the first worker serves the HTTP health check, and it reports its own
associations only.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Final, TypeVar

from cirrus.config import Settings
from cirrus.gateway.aeconfig import AEConfig

if TYPE_CHECKING:
    from cirrus.gateway.server import Gateway
    from cirrus.gateway.tls import TLSConfig

logger = logging.getLogger(__name__)

WORKERS_ENV: Final = "CIRRUS_GATEWAY_WORKERS"
MAX_WORKERS: Final = 64

# Time a worker gets to import the gateway, build its AE and listen.
_START_TIMEOUT_SECONDS: Final = 60.0
# Time a worker gets after its own drain period before it is killed.
_STOP_MARGIN_SECONDS: Final = 10.0
# How often ``run_workers`` checks whether a stop signal arrived or a worker exited.
_POLL_SECONDS: Final = 0.1

EXIT_WORKER_FAILED: Final = 1

# From <linux/prctl.h>.
_PR_SET_PDEATHSIG: Final = 1

_ServerT = TypeVar("_ServerT")


class WorkerStartError(Exception):
    """A gateway worker exited or stayed silent before it listened."""


def available_cores() -> int:
    """Return the number of CPUs this process may run on."""
    # NOTE: a container's CPU quota (cgroup cpu.max) is not read, so a container limited to
    # less than its host's CPUs should set CIRRUS_GATEWAY_WORKERS.
    return len(os.sched_getaffinity(0))


def read_worker_count(environ: Mapping[str, str]) -> int:
    """Return ``CIRRUS_GATEWAY_WORKERS``, by default the CPUs available, or raise ``ValueError``."""
    value = environ.get(WORKERS_ENV)
    if value is None or value == "":
        return available_cores()
    if not (value.isascii() and value.isdigit()) or not 1 <= int(value) <= MAX_WORKERS:
        raise ValueError(
            f"{WORKERS_ENV} {value!r} is invalid; use a number of processes from 1 to {MAX_WORKERS}"
        )
    return int(value)


_shared_port_classes: dict[type[Any], type[Any]] = {}


def with_reuse_port(server_class: type[_ServerT]) -> type[_ServerT]:
    """Return a subclass of a socketserver class whose socket sets SO_REUSEPORT before bind."""
    shared = _shared_port_classes.get(server_class)
    if shared is None:

        class SharedPortServer(server_class):  # type: ignore[valid-type,misc]
            def server_bind(self) -> None:
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                super().server_bind()

        SharedPortServer.__name__ = f"SharedPort{server_class.__name__}"
        SharedPortServer.__qualname__ = SharedPortServer.__name__
        shared = _shared_port_classes.setdefault(server_class, SharedPortServer)
    return shared


@dataclass(frozen=True)
class WorkerSpec:
    """The arguments of one worker's gateway. Every field must pickle."""

    settings: Settings
    config: AEConfig
    host: str
    port: int
    tls: TLSConfig | None = None
    # The local stack's objects folder: workers then write through its FolderObjectStore.
    data_dir: Path | None = None
    # The local stack's audit journal, to which workers append each record before the table.
    audit_journal: Path | None = None
    # Called first in each worker, to set up logging as the parent did. It returns more
    # keyword arguments of ``run_gateway``, for objects that do not pickle (metrics). Must be
    # a module-level function, because the spawn method pickles it by name.
    prepare: Callable[[], Mapping[str, Any]] | None = None
    # Keyword arguments of ``run_gateway`` (grace_seconds, limits and so on).
    options: dict[str, Any] = field(default_factory=dict)


def _reserve(host: str, port: int) -> socket.socket:
    """Bind ``host``:``port`` with SO_REUSEPORT, without listening; raise ``OSError`` if in use.

    SO_REUSEADDR lets the bind succeed over connections in TIME-WAIT from an earlier run, as
    pynetdicom's own listening sockets do.
    """
    reserved = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reserved.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        reserved.bind((host, port))
    except OSError:
        reserved.close()
        raise
    return reserved


def _stop_with_parent(parent: int) -> None:
    """Ask Linux to send SIGTERM to this process when its parent ends, SIGKILL included.

    Without it, a worker whose parent was killed would keep serving on the port.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logger.warning(
            "gateway worker does not stop with its parent: prctl failed",
            extra={"errno": ctypes.get_errno()},
        )
    if os.getppid() != parent:
        # The parent ended before prctl, so no signal will come.
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(spec: WorkerSpec, number: int, ready: Connection, parent: int) -> None:
    """Run one worker: the gateway on the shared port until SIGTERM or SIGINT."""
    _stop_with_parent(parent)
    options = dict(spec.options)
    if spec.prepare is not None:
        options.update(spec.prepare())
    from cirrus.gateway.server import run_gateway
    from cirrus.services import Services

    services = Services(spec.settings)
    if spec.data_dir is not None:
        from cirrus.local.datadir import FolderObjectStore
        from cirrus.local.stack import local_notifier

        services.store = FolderObjectStore(
            spec.data_dir, spec.settings.bucket, local_notifier(services)
        )
    if spec.audit_journal is not None:
        from cirrus.audit import AuditLog
        from cirrus.local.audit_journal import FileAuditJournal

        journal = FileAuditJournal(spec.audit_journal)
        services.audit = AuditLog(services.audit.model, spec.settings.deployment, journal)

    def report_ready(gateway: Gateway) -> None:
        ready.send((gateway.port, gateway.tls_port))
        ready.close()

    logger.info("gateway worker %d starting", number, extra={"worker": number, "pid": os.getpid()})
    run_gateway(
        spec.settings,
        spec.config,
        spec.host,
        spec.port,
        spec.tls,
        services=services,
        reuse_port=True,
        on_ready=report_ready,
        **options,
    )


class WorkerPool:
    """Worker processes that serve the gateway on one port, started by ``WorkerPool.start``."""

    def __init__(self, spec: WorkerSpec, reserved: list[socket.socket]) -> None:
        self.spec = spec
        self._reserved = reserved
        self._processes: list[BaseProcess] = []

    @classmethod
    def start(cls, spec: WorkerSpec, count: int) -> WorkerPool:
        """Start ``count`` workers and return once each one listens.

        Raises ``OSError`` when a port cannot be bound and ``WorkerStartError`` when a worker
        fails to start; the workers already started are stopped then.
        """
        reserved = [_reserve(spec.host, spec.port)]
        try:
            resolved = replace(spec, port=reserved[0].getsockname()[1])
            if spec.tls is not None:
                reserved.append(_reserve(spec.host, spec.tls.port))
                resolved = replace(
                    resolved, tls=replace(spec.tls, port=reserved[1].getsockname()[1])
                )
        except OSError:
            for sock in reserved:
                sock.close()
            raise
        pool = cls(resolved, reserved)
        try:
            pool._start_workers(count)
        except BaseException:
            pool.shutdown(grace_seconds=0.0)
            raise
        logger.info(
            "%d gateway workers listening on %s:%d",
            count,
            resolved.host,
            resolved.port,
            extra={"workers": count, "host": resolved.host, "port": resolved.port},
        )
        return pool

    def _start_workers(self, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        pipes = []
        for number in range(1, count + 1):
            spec = self.spec
            if number > 1 and "health_address" in spec.options:
                # Only the first worker serves the health check, which has a port of its own.
                spec = replace(spec, options={**spec.options, "health_address": None})
            receiver, sender = context.Pipe(duplex=False)
            process = context.Process(
                target=_worker_main,
                args=(spec, number, sender, os.getpid()),
                name=f"gateway-worker-{number}",
                daemon=False,
            )
            process.start()
            sender.close()
            self._processes.append(process)
            pipes.append(receiver)
        deadline = time.monotonic() + _START_TIMEOUT_SECONDS
        for number, (started, receiver) in enumerate(zip(self._processes, pipes, strict=True), 1):
            try:
                self._wait_ready(number, started, receiver, deadline)
            finally:
                receiver.close()

    def _wait_ready(
        self, number: int, process: BaseProcess, receiver: Connection, deadline: float
    ) -> None:
        while not receiver.poll(0.1):
            if not process.is_alive():
                raise WorkerStartError(
                    f"gateway worker {number} exited with {process.exitcode} before it listened"
                )
            if time.monotonic() > deadline:
                raise WorkerStartError(f"gateway worker {number} did not listen within 60 s")
        try:
            receiver.recv()
        except EOFError as exc:
            raise WorkerStartError(
                f"gateway worker {number} exited with {process.exitcode} before it listened"
            ) from exc

    @property
    def port(self) -> int:
        return self.spec.port

    @property
    def tls_port(self) -> int | None:
        return self.spec.tls.port if self.spec.tls is not None else None

    def pids(self) -> list[int]:
        return [process.pid for process in self._processes if process.pid is not None]

    def exited(self) -> list[int]:
        """Return the numbers of the workers that have exited."""
        return [
            number for number, process in enumerate(self._processes, 1) if not process.is_alive()
        ]

    def shutdown(self, grace_seconds: float | None = None) -> None:
        """Send SIGTERM to every worker and wait for it to drain; kill those that do not end.

        ``grace_seconds`` defaults to the drain time the workers were given.
        """
        from cirrus.gateway.server import SHUTDOWN_GRACE_SECONDS

        if grace_seconds is None:
            grace_seconds = float(self.spec.options.get("grace_seconds", SHUTDOWN_GRACE_SECONDS))
        for process in self._processes:
            if process.is_alive():
                process.terminate()
        deadline = time.monotonic() + grace_seconds + _STOP_MARGIN_SECONDS
        for number, process in enumerate(self._processes, 1):
            process.join(timeout=max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                logger.warning(
                    "gateway worker %d did not stop, killing it",
                    number,
                    extra={"worker": number, "pid": process.pid},
                )
                process.kill()
                process.join()
        for sock in self._reserved:
            sock.close()
        self._reserved = []


def run_workers(spec: WorkerSpec, count: int) -> int:
    """Serve the gateway in ``count`` worker processes until SIGTERM or SIGINT.

    Returns 0 after a signal, or ``EXIT_WORKER_FAILED`` when the workers failed to start or
    one exited on its own, in which case the others are stopped too. Must run in the main
    thread.
    """
    received: list[str] = []

    def request_stop(signum: int, frame: FrameType | None) -> None:
        # Only append, which takes no lock, as in run_gateway. The handler runs in the main
        # thread between two bytecodes, so taking a lock that the interrupted code holds would
        # deadlock: logging's, or that of a threading.Event that the main thread is waiting on.
        received.append(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            pool = WorkerPool.start(spec, count)
        except (OSError, WorkerStartError) as exc:
            logger.error("gateway workers failed to start: %s", exc, extra={"error": str(exc)})
            return EXIT_WORKER_FAILED
        status = 0
        try:
            while not received:
                exited = pool.exited()
                if exited:
                    logger.error(
                        "gateway worker %d exited, stopping the others",
                        exited[0],
                        extra={"workers": exited},
                    )
                    status = EXIT_WORKER_FAILED
                    break
                time.sleep(_POLL_SECONDS)
            if received:
                name = received[0]
                logger.info(
                    "%s received, stopping the gateway workers", name, extra={"signal": name}
                )
        finally:
            pool.shutdown()
        return status
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
