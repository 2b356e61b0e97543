"""Vendor name -> adapter class, imported on demand (one line per vendor)."""

from __future__ import annotations

import importlib
from typing import Any

from twin.adapter import Adapter

__all__ = ["ADAPTERS", "load_adapter_class"]

ADAPTERS: dict[str, str] = {
    # "name": "bridges.<name>.adapter:<Class>",
    "segway": "bridges.segway.adapter:SegwayAdapter",
    "smartcar": "bridges.smartcar.adapter:SmartcarAdapter",
    "okai": "bridges.okai.adapter:OkaiAdapter",
    "tuya": "bridges.tuya.adapter:TuyaAdapter",
}


def load_adapter_class(vendor: str) -> type[Adapter[Any]]:
    try:
        target = ADAPTERS[vendor]
    except KeyError:
        known = ", ".join(sorted(ADAPTERS)) or "none"
        raise LookupError(f"unknown vendor {vendor!r} (known: {known})") from None
    module_name, _, class_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    if not (isinstance(cls, type) and issubclass(cls, Adapter)):
        raise TypeError(f"{target} is not an Adapter")
    return cls
