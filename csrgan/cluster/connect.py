"""Joining a Ray cluster: the user-facing message for a failed ``ray.init(address=...)``."""

from __future__ import annotations


def connect_error_hint(address: str, exc: BaseException) -> str:
    """A user-facing message for a failed ``ray.init(address=...)`` (wrong address, missing token)."""
    text = f"{type(exc).__name__}: {exc}"
    if "auth" in text.lower() or "token" in text.lower():
        return (
            f"cannot join the Ray cluster at {address!r}: it requires token authentication. Set "
            "RAY_AUTH_MODE=token in this shell and make the cluster's token available (RAY_AUTH_TOKEN, "
            "RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token; see cluster/README.md, Security)."
        )
    return (
        f"cannot join the Ray cluster at {address!r} ({text.splitlines()[0]}). Check the address "
        "(auto | HOST:6379 | ray://HOST:10001) and that this machine may reach the cluster's private "
        "network."
    )
