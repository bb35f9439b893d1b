"""Joining a Ray cluster: the user-facing message for a failed ``ray.init(address=...)``.

The fast, precise checks before ``ray.init`` (ambiguous ``auto``, a missing token) are in
:mod:`csrgan.cluster.where`; this is the message for whatever still goes wrong inside ``ray.init``.
"""

from __future__ import annotations

#: What to do about Ray token authentication (client side), naming every variable involved.
TOKEN_HOWTO = (
    "set RAY_AUTH_MODE=token in this shell and give the cluster's token in RAY_AUTH_TOKEN, or in a file "
    "named by RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token); see cluster/README.md, Security"
)


def connect_error_hint(address: str, exc: BaseException) -> str:
    """A user-facing message for a failed ``ray.init(address=...)`` (wrong address, missing token).

    Ray reports a missing token as a plain "Failed to connect" after 20 s of retries, so the generic
    message names the token variables too."""
    text = f"{type(exc).__name__}: {exc}"
    if "auth" in text.lower() or "token" in text.lower():
        return f"cannot join the Ray cluster at {address!r}: it requires token authentication; {TOKEN_HOWTO}."
    return (
        f"cannot join the Ray cluster at {address!r} ({text.splitlines()[0]}). Check the address "
        "(auto | HOST:6379 | ray://HOST:10001) and that this machine may reach the cluster's private "
        "network. If the cluster uses token authentication (the default for `ray start` since Ray 2.59): "
        f"{TOKEN_HOWTO}."
    )
