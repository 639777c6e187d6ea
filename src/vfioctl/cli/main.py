"""CLI entry point: the command table, backend choice, and error → exit code.

Subcommands live in ``vfioctl.cli.cmd_*`` modules and are imported only when invoked
(or when ``--help`` lists them by name), so ``vfioctl --help`` stays fast: no lxml, rich,
sqlite or simulator import happens here.

To add a command: write ``@click.command("name")`` in a ``cmd_*`` module and add one
row to :data:`COMMANDS`.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import click

# name -> ("module:attribute", one-line summary shown by --help without importing)
COMMANDS: dict[str, tuple[str, str]] = {
    "list": (
        "vfioctl.cli.cmd_read:list_cmd",
        "List PCI functions: ids, class, driver, IOMMU group, SR-IOV links.",
    ),
    "groups": (
        "vfioctl.cli.cmd_read:groups_cmd",
        "Show IOMMU groups: what each hands to a guest, and the kernel's viability.",
    ),
    "show": (
        "vfioctl.cli.cmd_read:show_cmd",
        "Everything known about one PCI function: ids, driver, group, path, capabilities.",
    ),
    "explain": (
        "vfioctl.cli.cmd_read:explain_cmd",
        "Explain why a device's IOMMU group is what it is (ACS along its PCI path).",
    ),
    "tree": (
        "vfioctl.cli.cmd_tree:tree_cmd",
        "The PCI topology as a tree, with each function's IOMMU group and ACS breaks.",
    ),
    "doctor": (
        "vfioctl.cli.cmd_doctor:doctor_cmd",
        "Check whether this host is ready for VFIO: IOMMU, interrupt remapping, modules, "
        "/dev/vfio, IOMMU groups, iommufd, KVM, memlock limit, hugepages, device resets.",
    ),
    "snapshot": (
        "vfioctl.cli.cmd_snapshot:snapshot_cmd",
        "Capture this host's PCI and IOMMU sysfs into DIRECTORY (read-only on the host).",
    ),
    "sim": ("vfioctl.cli.cmd_sim:sim_cmd", "Simulated hosts: try vfioctl without VFIO hardware."),
    "persist": (
        "vfioctl.cli.cmd_persist:persist_cmd",
        "Bindings that survive a reboot: list, remove, apply, install the boot hooks.",
    ),
    "libvirt": (
        "vfioctl.cli.cmd_libvirt:libvirt_cmd",
        "libvirt integration: the qemu hook (group rule, VF token), install, check a domain.",
    ),
    "dra": (
        "vfioctl.cli.cmd_dra:dra_cmd",
        "Kubernetes DRA driver: VFIO devices and VFs for pods and KubeVirt VMs.",
    ),
    "detach": (
        "vfioctl.cli.cmd_manage:detach_cmd",
        "Detach PCI devices from their host drivers onto vfio-pci (or pci-stub).",
    ),
    "reattach": (
        "vfioctl.cli.cmd_manage:reattach_cmd",
        "Give PCI devices back to the host, each to the driver it had before detach.",
    ),
    "status": (
        "vfioctl.cli.cmd_manage:status_cmd",
        "Show what vfioctl holds on this host, for whom, and each device's original driver.",
    ),
    "validate": (
        "vfioctl.cli.cmd_xml:validate_cmd",
        "Check a libvirt domain XML's PCI hostdevs: schema, duplicates, and (with --host) whether "
        "each <vf-token> can work on that host.",
    ),
    "xml2xml": (
        "vfioctl.cli.cmd_xml:xml2xml_cmd",
        "Print the domain XML with its PCI hostdevs in libvirt's canonical form; everything else "
        "is copied verbatim.",
    ),
    "xml2argv": (
        "vfioctl.cli.cmd_xml:xml2argv_cmd",
        "Print the QEMU arguments for the domain's PCI hostdevs, one per line, as libvirt 9.0 "
        "writes them (JSON -device).",
    ),
    "qemu-caps": (
        "vfioctl.cli.cmd_xml:qemu_caps_cmd",
        "Probe a QEMU binary: its version and the properties of its vfio-pci device.",
    ),
    "sriov": (
        "vfioctl.cli.cmd_sriov:sriov_cmd",
        "Show a PF's VFs (addresses, IOMMU groups, drivers), or change how many it has.",
    ),
    "token": (
        "vfioctl.cli.cmd_token:token_cmd",
        "The VF token of an SR-IOV PF driven from userspace (bound to vfio-pci).",
    ),
    "start": (
        "vfioctl.cli.cmd_start:start_cmd",
        "Start a domain's QEMU with its PCI hostdevs: take the devices for the domain's <name>, "
        "run QEMU paused with a QMP socket, add VF-token devices over QMP (never on the command "
        "line), then continue.",
    ),
    "release": (
        "vfioctl.cli.cmd_start:release_cmd",
        "Give back the devices 'vfioctl start' took for a domain: managed ones return to their "
        "original drivers, unmanaged ones stay on vfio-pci.",
    ),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module_name, _, attr = entry[0].partition(":")
        cmd = getattr(importlib.import_module(module_name), attr)
        if not isinstance(cmd, click.Command):
            from vfioctl.errors import InternalError

            raise InternalError(f"{entry[0]} is not a click command")
        if ctx.resilient_parsing and os.environ.get("_VFIOCTL_COMPLETE"):
            # a shell asks for completions: device and host arguments learn theirs
            from vfioctl.cli.completion import attach

            attach(cmd, f"{ctx.command_path} {cmd_name}")
        return cmd

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        # List from the table, so --help imports no command module.
        rows = [(name, summary) for name, (_, summary) in sorted(COMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def _complete_host(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """``--host`` completion, imported only when a shell asks (``_VFIOCTL_COMPLETE``)."""
    from vfioctl.cli.completion import complete_host

    return list(complete_host(ctx, param, incomplete))


class Context:
    """What every command gets: the host spec (opened lazily) and the debug flag."""

    def __init__(self, host_spec: str | None, debug: bool) -> None:
        self.host_spec = host_spec
        self.debug = debug
        self._host: Any = None

    @property
    def host(self) -> Any:
        if self._host is None:
            from vfioctl.hosts import open_host

            self._host = open_host(self.host_spec)
            _recover_first(self._host)
        return self._host


#: Warnings printed after a command that succeeded (a failing one has its own one line).
_WARNINGS: list[str] = []


def warn_on_success(text: str) -> None:
    """Say ``vfioctl: warning: TEXT`` on stderr once the command has succeeded: an error
    stays the one line a failing command prints."""
    _WARNINGS.append(text)


def _recover_first(host: Any) -> None:
    """Any command first finishes or rolls back what a dead vfioctl left half-done.

    Only when this host has vfioctl state at all: a host vfioctl never changed pays
    nothing (no sqlite import, no lock). Readers never wait for a live writer: the
    manager asks whether a journal is unfinished *and* its writer dead without blocking,
    and only then takes the lock.
    """
    state_dir = host.state_dir
    if host.readonly or state_dir is None:
        return
    try:
        os.stat(state_dir / "vfioctl.db")
    except FileNotFoundError:
        return
    except OSError:
        pass  # not ours to read: the manager says so below
    from vfioctl.errors import PermissionDenied
    from vfioctl.manager import HostdevManager

    mgr = HostdevManager(host)
    try:
        if not mgr.needs_recovery():
            return
        recovered = mgr.recover()
    except PermissionDenied as err:
        # Said once the command has succeeded (a failing one has its own one line).
        _WARNINGS.append(f"cannot check for an interrupted operation: {err}"
                         + (f"; {err.hint}" if err.hint else ""))
        return
    for rec in recovered:
        click.echo(f"vfioctl: {rec.describe()}", err=True)


def _error_line(message: str, hint: str | None) -> str:
    from vfioctl.cli.echo import one_line

    line = f"vfioctl: error: {one_line(message)}"
    if hint:
        line += f"; {one_line(hint)}"
    return line


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--host",
    "host_spec",
    metavar="SPEC",
    envvar="VFIOCTL_HOST",
    shell_complete=_complete_host,
    help="linux (default: this kernel), linux:DIR (a snapshot, read-only), "
    "sim:NAME|FILE (a simulated host). Also VFIOCTL_HOST.",
)
@click.option("--debug", is_flag=True, help="Log every step and show tracebacks.")
@click.version_option(package_name="vfioctl", prog_name="vfioctl")
@click.pass_context
def cli(ctx: click.Context, host_spec: str | None, debug: bool) -> None:
    """vfioctl: safe, explainable VFIO PCI device assignment.

    Global options come before the command, e.g.
    `vfioctl --host sim:workstation groups --json`.
    """
    if debug:
        import logging

        logging.basicConfig(level=logging.DEBUG, format="vfioctl: %(name)s: %(message)s")
    ctx.obj = Context(host_spec, debug)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: run the CLI, turn errors into one line and an exit code."""
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    _WARNINGS.clear()
    try:
        rv = cli.main(args=argv, prog_name="vfioctl", standalone_mode=False)
        from vfioctl.cli.echo import one_line

        for warning in _WARNINGS:
            click.echo(f"vfioctl: warning: {one_line(warning)}", err=True)
        # standalone_mode=False hands a command's click Exit code back as the value
        if isinstance(rv, int):
            return rv
    except click.exceptions.Abort:
        click.echo("vfioctl: aborted", err=True)
        return 1
    except click.UsageError as err:
        # click's own three-line form ("Usage: …", "Try …", "Error: …") as our one line
        where = err.ctx.command_path if err.ctx is not None else "vfioctl"
        click.echo(_error_line(err.format_message().rstrip("."),
                               f"see '{where} --help'"), err=True)
        return err.exit_code
    except click.ClickException as err:
        click.echo(_error_line(err.format_message(), None), err=True)
        return err.exit_code
    except click.exceptions.Exit as err:
        return int(err.exit_code)
    except BrokenPipeError:
        # `vfioctl list | head`: not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        click.echo("vfioctl: interrupted", err=True)
        return 130
    except Exception as err:
        # (vfioctl.errors is imported only now: `vfioctl --help` never needs it)
        from vfioctl.errors import InternalError, VfioctlError

        if isinstance(err, VfioctlError):
            if debug:
                import traceback

                traceback.print_exc()
            # One line: what is wrong, then what to do.
            click.echo(_error_line(str(err), err.hint), err=True)
            return err.exit_code
        # the last line of defence: no traceback without --debug
        if debug:
            raise
        from vfioctl.cli.echo import one_line

        click.echo(
            f"vfioctl: internal error: {type(err).__name__}: {one_line(str(err))} "
            "(rerun with --debug)", err=True,
        )
        return InternalError.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
