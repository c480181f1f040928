"""The Ray side of the driver: start or join Ray without hanging, refuse trial resources no node has,
and handle SIGTERM like Ctrl-C (Tune saves its state and stops)."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Iterator

from ..errors import UserError

CONNECT_TIMEOUT_ENV = "TUNE_CIFAR_CONNECT_TIMEOUT_S"


@contextlib.contextmanager
def graceful_signals() -> Iterator[None]:
    """Handle SIGTERM like Ctrl-C while the search runs: Tune saves the experiment state and stops."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def connect(address: str, timeout_s: float | None = None) -> None:
    """``ray.init(address=...)`` that fails with a clear message instead of waiting forever."""
    import ray

    if address != "auto" and "RAY_AUTH_MODE" not in os.environ and (
            os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").is_file()):
        os.environ["RAY_AUTH_MODE"] = "token"  # as Ray does itself for address=auto
    try:  # a token cached by an earlier ray.init in this process would hide RAY_AUTH_TOKEN's
        from ray._raylet import AuthenticationTokenLoader

        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):
        pass
    timeout_s = float(os.environ.get(CONNECT_TIMEOUT_ENV, timeout_s or 90))
    done = threading.Event()

    def watchdog():
        if not done.wait(timeout_s):
            import sys

            print(f"tune_cifar.search: error: could not connect to the Ray cluster at {address} within "
                  f"{timeout_s:.0f} s; is it running (ray status --address {address}), and does this "
                  f"machine have the cluster's token (RAY_AUTH_MODE=token with RAY_AUTH_TOKEN or "
                  f"~/.ray/auth_token, as on the head node)?", file=sys.stderr, flush=True)
            os._exit(2)

    threading.Thread(target=watchdog, daemon=True, name="ray-connect-watchdog").start()
    try:
        ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as err:
        why = str(err.__cause__ or "").strip()
        cause = f" ({why.splitlines()[0][:200]})" if why else ""
        raise UserError(f"--address {address}: cannot join the Ray cluster: "
                        f"{str(err).strip().splitlines()[0][:300]}{cause}; is it running (ray status --address "
                        f"{address}), and does this machine have its token (RAY_AUTH_TOKEN or "
                        f"~/.ray/auth_token)?") from None
    finally:
        done.set()


def check_resources(s, where: str) -> None:
    """Every trial must fit on one node: Tune would wait forever for resources nobody has."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    need = {"CPU": float(s.resources.cpu), "GPU": float(s.resources.gpu)}
    if any(all(r.get(k, 0) >= v for k, v in need.items()) for r in nodes):
        return
    for key, value in need.items():
        best = max((r.get(key, 0) for r in nodes), default=0)
        if best < value:
            raise UserError(f"search.resources.{key.lower()}={value:g} per trial but no node of {where} has "
                            f"{value:g} {key}s (the most on one node: {best:g}); allowed: at most {best:g}")
    raise UserError(f"search.resources={{cpu: {need['CPU']:g}, gpu: {need['GPU']:g}}}: no single node of {where} "
                    f"has both; lower one of them")

def start_ray(address: str | None):
    """Join ``address``, or start a quiet local Ray (no dashboard); returns True if we started it."""
    import ray

    # Checkpointing every epoch with num_to_keep makes Tune warn about frequent state snapshots.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return False
    if address:
        connect(address)
    else:
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    return True
