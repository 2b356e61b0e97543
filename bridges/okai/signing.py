"""The OKAI request signature (shared by the client and the simulator).

[doc] ``sign = MD5(k1=v1&k2=v2... + signKey)``: the request parameters sorted by name (plain
character order), ``k=v`` pairs joined by ``&``, the signKey appended with no separator, UTF-8,
lowercase hex. The ``sign`` parameter itself is never signed. Which other parameters are signed is a
choice (see :data:`SignParams`), because the document's own example value reproduces with none.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Literal

__all__ = ["SignParams", "canonical_string", "sign", "signed_params"]

SignParams = Literal["all", "business"]

_IDENTITY = frozenset({"userKey", "timestamp"})


def _text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def signed_params(params: Mapping[str, object], mode: SignParams) -> dict[str, str]:
    """The parameters that enter the signature, as text."""
    return {
        key: _text(value)
        for key, value in params.items()
        if key != "sign" and value is not None and (mode == "all" or key not in _IDENTITY)
    }


def canonical_string(params: Mapping[str, object], mode: SignParams) -> str:
    """``a=1&b=2``: the signed parameters sorted by name."""
    chosen = signed_params(params, mode)
    return "&".join(f"{key}={chosen[key]}" for key in sorted(chosen))


def sign(params: Mapping[str, object], sign_key: str, mode: SignParams) -> str:
    """The ``sign`` value of a request."""
    return hashlib.md5((canonical_string(params, mode) + sign_key).encode("utf-8")).hexdigest()
