"""Registry of integration methods: one module per method, one entry here."""
from __future__ import annotations

from .base import Method
from .davae import DAVAE
from .minnet import MinNet
from .scbiot_vae import ScBIOTVAE
from .scmodal import ScModal
from .uniport import UniPort

METHODS: dict[str, type[Method]] = {m.name: m for m in (UniPort, DAVAE, ScBIOTVAE, MinNet, ScModal)}


def get_method(name: str) -> type[Method]:
    if not isinstance(name, str) or name.lower() not in METHODS:
        raise ValueError(f"unknown method {name!r}; available methods: {sorted(METHODS)}.")
    return METHODS[name.lower()]


def available_methods() -> list[str]:
    return sorted([*METHODS, "gw"])  # "gw": no network, run by scferry.methods.gw
