"""Connecting to Ray for the commands that run on it (``sst2 predict --engine ray``, encoding on Ray).

Ray is an optional dependency (``pip install 'sst2[ray]'``) imported only here and in the modules that
run on it. :func:`ray_session` connects to a running cluster (``address``), or starts a local Ray on this
machine with its CPUs, and stops only what it started: a Ray that the caller had already initialised in
this process (a notebook, a test) is used as it is and left running.
"""

from __future__ import annotations

import logging
import socket
import warnings
from contextlib import contextmanager
from urllib.parse import urlsplit

from sst2.errors import UserError, one_line

INSTALL_HINT = "pip install 'sst2[ray]'"
CONNECT_TIMEOUT_S = 5.0
ACTOR_RETRIES = 3  # restarts of a dead actor, and retries of its call, before Ray gives up


class RayUnavailableError(UserError, RuntimeError):
    pass


def require_ray():
    """The ``ray`` module, or a clear error naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401 (ray without its data extra has no Ray Data)
    except ImportError as exc:
        raise RayUnavailableError(f"this needs Ray Data, which is not installed: {INSTALL_HINT} "
                                  f"({one_line(exc)})") from None
    return ray


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port`` or ``ray://host:port``; None for ``auto`` / ``local``."""
    if address in ("auto", "local"):
        return None
    parts = urlsplit(address if "://" in address else f"gcs://{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise RayUnavailableError(f"--ray-address {address!r}: expected HOST:PORT (the head node's GCS port, "
                                  f"6379 by default), ray://HOST:PORT (Ray Client) or auto")
    return parts.hostname, port


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail within ``timeout`` seconds, naming the address, when nothing listens there (Ray itself would
    keep retrying for a minute or more before it says so)."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        with socket.create_connection(hp, timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise RayUnavailableError(f"cannot reach a Ray cluster at {address} ({reason}); start one there with "
                                  f"'ray start --head', or leave out --ray-address to run on a local Ray on "
                                  f"this machine") from None


@contextmanager
def ray_session(address: str | None = None, quiet: bool = False, num_cpus: int | None = None):
    """Ray, connected: to ``address`` if given, else to the Ray already initialised in this process, else
    to a new local Ray with this machine's CPUs (``num_cpus`` to use fewer), shut down on leaving."""
    ray = require_ray()
    started = False
    if not ray.is_initialized():
        if address:
            check_reachable(address)
        level = logging.WARNING if quiet else logging.INFO
        try:
            ray.init(address=address or None, num_cpus=None if address else num_cpus, include_dashboard=False,
                     logging_level=level, log_to_driver=True, configure_logging=True)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = f"at {address}" if address else "on this machine"
            raise RayUnavailableError(f"cannot start or join Ray {where} ({one_line(exc)})") from None
        started = True
    import ray.data

    context = ray.data.DataContext.get_current()
    if quiet:  # errors only (Ray Data warns, for one, that its progress bars are off)
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    context.print_on_execution_start = not quiet
    try:
        yield ray
    finally:
        if started:
            ray.shutdown()


def cluster_cpus(ray) -> int:
    """CPUs of the connected cluster (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def map_on_actors(ds, fn, *, retries: int = ACTOR_RETRIES, **kwargs):
    """``ds.map_batches(fn, **kwargs)`` on an actor pool whose actors are restarted, and their calls retried, at
    most ``retries`` times. Ray Data's own default is without limit, so a call that kills its actor on every
    attempt (a crash, the OOM killer) would never end; past ``retries`` the pipeline raises instead."""
    with warnings.catch_warnings():  # Ray 2.60 deprecates remote args given as keywords, but has no named
        warnings.filterwarnings("ignore", "`ray_remote_args` is deprecated")  # parameter for these two
        return ds.map_batches(fn, max_restarts=retries, max_task_retries=retries, **kwargs)


def gave_up(retries: int, exc: BaseException) -> str:
    """``Ray gave up after N retries: <the error on one line>``."""
    return f"Ray gave up after {retries} retr{'y' if retries == 1 else 'ies'}: {one_line(exc)}"
