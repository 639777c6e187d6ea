"""Shell completion: device addresses from the selected host, and host specs.

click does the shell side (``_VFIOCTL_COMPLETE=bash_source vfioctl`` prints the bash
script; ``zsh_source`` and ``fish_source`` too); this module only answers "what could
come here". It is imported only while a shell asks for completions, never for a normal
run, so ``vfioctl --help`` pays nothing for it.

A completion must never fail loudly: the shell would print a traceback into the user's
command line. Any error of ours (no such host, unreadable sysfs) gives no candidates.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import click
from click.shell_completion import CompletionItem

#: Arguments that name PCI functions, by their click parameter name.
DEVICE_PARAMS = frozenset({"address", "addresses", "selector", "selectors", "pf", "vf"})

#: Arguments that name a bundled simulated host, by (command path, parameter name).
BUNDLED_PARAMS = frozenset({("vfioctl sim copy", "name")})


def _host_spec(ctx: click.Context) -> str | None:
    """The ``--host`` of the command line being completed (or ``VFIOCTL_HOST``)."""
    spec = ctx.find_root().params.get("host_spec")
    return spec if isinstance(spec, str) else os.environ.get("VFIOCTL_HOST")


def complete_device(ctx: click.Context, param: click.Parameter,
                    incomplete: str) -> list[CompletionItem]:
    """The PCI functions of the selected host whose address starts with INCOMPLETE.

    The short form (``01:00.0``, domain 0000) is offered when that is what the user
    started typing, so that the shell's own prefix filter keeps the candidates.
    """
    from vfioctl.errors import VfioctlError
    from vfioctl.hosts import open_host
    from vfioctl.model import list_devices

    try:
        devices = list_devices(open_host(_host_spec(ctx)))
    except (VfioctlError, OSError):
        return []
    items: list[CompletionItem] = []
    for dev in devices:
        full = str(dev.address)
        short = full[5:] if full.startswith("0000:") else None
        driver = dev.driver or "no driver"
        group = "no group" if dev.iommu_group is None else f"group {dev.iommu_group}"
        if full.startswith(incomplete):
            items.append(CompletionItem(full, help=f"{driver}, {group}"))
        elif short is not None and short.startswith(incomplete):
            items.append(CompletionItem(short, help=f"{driver}, {group}"))
    return items


def _bundled_names() -> list[str]:
    from vfioctl.sim.loader import bundled_names

    return bundled_names()


def complete_bundled(ctx: click.Context, param: click.Parameter,
                     incomplete: str) -> list[CompletionItem]:
    """The bundled simulated hosts (``vfioctl sim copy NAME``)."""
    return [CompletionItem(n) for n in _bundled_names() if n.startswith(incomplete)]


def complete_host(ctx: click.Context, param: click.Parameter,
                  incomplete: str) -> list[CompletionItem]:
    """``--host`` values: ``linux``, ``linux:DIR``, ``sim:NAME`` and ``sim:FILE``.

    After ``sim:`` come the bundled names and the ``.toml`` files under the typed
    directory; after ``linux:``, directories (a snapshot).
    """
    kind, colon, rest = incomplete.partition(":")
    if not colon:
        words = ["linux", "linux:", "sim:"] + [f"sim:{n}" for n in _bundled_names()]
        return [CompletionItem(w) for w in words if w.startswith(incomplete)]
    if kind == "sim":
        items = [CompletionItem(f"sim:{n}") for n in _bundled_names() if n.startswith(rest)]
        items += [CompletionItem(f"sim:{p}") for p in _paths(rest, suffix=".toml")]
        return items
    if kind == "linux":
        return [CompletionItem(f"linux:{p}") for p in _paths(rest, suffix=None)]
    return []


def _paths(prefix: str, suffix: str | None) -> list[str]:
    """Directories (with a trailing /) and, with SUFFIX, files ending in it, under the
    directory PREFIX names and starting with its last part."""
    head, sep, tail = prefix.rpartition("/")
    base = Path(head + sep) if sep else Path(".")
    try:
        entries = sorted(base.iterdir())
    except OSError:
        return []
    out: list[str] = []
    for entry in entries:
        if not entry.name.startswith(tail) or (entry.name.startswith(".") and not tail):
            continue
        shown = f"{head}{sep}{entry.name}"
        if entry.is_dir():
            if not entry.name.endswith(".state"):  # vfioctl's own state beside a sim file
                out.append(shown + "/")
        elif suffix is not None and entry.name.endswith(suffix):
            out.append(shown)
    return out


class _Completing(click.types.StringParamType):
    """A plain string argument that knows its candidates: click asks a parameter's type
    (``ParamType.shell_complete``) when the parameter has no completion of its own."""

    def __init__(self, complete: Callable[[click.Context, click.Parameter, str],
                                          list[CompletionItem]]) -> None:
        self._complete = complete

    def shell_complete(self, ctx: click.Context, param: click.Parameter,
                       incomplete: str) -> list[CompletionItem]:
        return self._complete(ctx, param, incomplete)


def attach(cmd: click.Command, path: str) -> None:
    """Give the device and bundled-host arguments of CMD (and its subcommands) their
    completion. Called only while completing (the command modules stay as they are):
    a plain string argument gets a string type that completes; any other type (a path,
    a choice) keeps its own completion.
    """
    for param in cmd.params:
        if not isinstance(param, click.Argument) or type(param.type) is not \
                click.types.StringParamType:
            continue
        if param.name in DEVICE_PARAMS:
            param.type = _Completing(complete_device)
        elif (path, param.name) in BUNDLED_PARAMS:
            param.type = _Completing(complete_bundled)
    if isinstance(cmd, click.Group):
        for name, sub in cmd.commands.items():
            attach(sub, f"{path} {name}")
