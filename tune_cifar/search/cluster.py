"""The Ray side of the driver: start a local Ray of its own or join a cluster (token auth as Ray does it,
a message while waiting, a time limit, Ctrl-C ends it at once), and refuse trial resources no node has.
Ctrl-C and SIGTERM during the search: interrupt.py."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..errors import UserError

CONNECT_TIMEOUT_ENV = "TUNE_CIFAR_CONNECT_TIMEOUT_S"


def connect(address: str, timeout_s: float | None = None) -> None:
    """``ray.init(address=...)`` that says what it waits for, gives up after a time limit with a clear
    message instead of waiting forever, and ends at once on Ctrl-C or SIGTERM."""
    import ray

    from .interrupt import exit_on_signal

    if address != "auto":
        use_token_if_available()
    timeout_s = float(os.environ.get(CONNECT_TIMEOUT_ENV, timeout_s or 90))
    print(f"connecting to the Ray cluster at {address} (up to {timeout_s:.0f} s, {CONNECT_TIMEOUT_ENV})",
          flush=True)
    late = (f"could not connect to the Ray cluster at {address} within {timeout_s:.0f} s; is it running "
            f"(ray status --address {address}), and does this machine have the cluster's token "
            f"(~/.ray/auth_token or RAY_AUTH_TOKEN, as on the head node)?")
    try:
        with exit_on_signal(f"connecting to the Ray cluster at {address}", timeout_s, late):
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, RuntimeError, ValueError) as err:
        why = str(err.__cause__ or "").strip()
        cause = f" ({why.splitlines()[0][:200]})" if why else ""
        raise UserError(f"--address {address}: cannot join the Ray cluster: "
                        f"{str(err).strip().splitlines()[0][:300]}{cause}; is it running (ray status --address "
                        f"{address}), and does this machine have its token (RAY_AUTH_TOKEN or "
                        f"~/.ray/auth_token)?") from None


def use_token_if_available() -> None:
    """Token authentication when a token is at hand, as Ray does itself only for ``--address auto``.

    Ray reads ``RAY_AUTH_MODE`` into its C++ configuration when ``ray`` is imported, so setting the
    variable afterwards (what this did before) is too late: Ray's own helper sets it *and* reloads that
    configuration. ``RAY_AUTH_MODE`` set by the user is respected.
    """
    try:
        from ray._private.authentication.authentication_token_setup import (
            maybe_enable_token_auth_if_token_available)
        from ray._raylet import AuthenticationTokenLoader
    except ImportError:  # another Ray version: the environment variable is the documented way
        if "RAY_AUTH_MODE" not in os.environ and (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get(
                "RAY_AUTH_TOKEN_PATH") or (Path.home() / ".ray" / "auth_token").is_file()):
            os.environ["RAY_AUTH_MODE"] = "token"
        return
    AuthenticationTokenLoader.instance().reset_cache()  # a token cached by an earlier ray.init in this process
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    maybe_enable_token_auth_if_token_available(warn_if_disabled=False)


def check_resources(s, where: str) -> None:
    """Every trial must fit on one node (all its workers: they do not span nodes): Tune would wait forever
    for resources nobody has."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    r = s.resources
    need = r.total()
    if any(all(res.get(k, 0) >= v for k, v in need.items()) for res in nodes):
        return
    for key, value in need.items():
        best = max((res.get(key, 0) for res in nodes), default=0)
        if best >= value:
            continue
        if r.workers == 1:
            raise UserError(f"search.resources.{key.lower()}={value:g} per trial but no node of {where} has "
                            f"{value:g} {key}s (the most on one node: {best:g}); allowed: at most {best:g}")
        each = value / r.workers
        raise UserError(f"search.resources: {r.workers} workers x {key.lower()} {each:g} = {value:g} {key}s per "
                        f"trial (its workers share one node) but no node of {where} has {value:g} (the most on "
                        f"one node: {best:g}); allowed: search.resources.workers x resources.{key.lower()} at "
                        f"most {best:g}")
    workers = f", workers: {r.workers}" if r.workers > 1 else ""
    raise UserError(f"search.resources={{cpu: {r.cpu:g}, gpu: {r.gpu:g}{workers}}}: no single node of {where} "
                    f"has both{' (all the workers of a trial share one node)' if workers else ''}; lower one of them")


def start_ray(address: str | None):
    """Join ``address``, or start a quiet local Ray (no dashboard); returns True if we started it."""
    import ray

    # Checkpointing every epoch with num_to_keep makes Tune warn about frequent state snapshots.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if ray.is_initialized():
        return False
    if address:
        connect(address)
    else:  # "local": always a new Ray of our own, never a cluster named in Ray's leftover address file
        from .interrupt import exit_on_signal

        with exit_on_signal("starting Ray"):
            ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING)
    return True
