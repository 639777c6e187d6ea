"""CLI: ``vfioctl dra plugin|slices`` — vfioctl as a Kubernetes DRA driver.

``plugin`` is what the DaemonSet runs on every node (deploy/, docs/kubernetes.md): the
kubelet plugin (registration and DRA gRPC services) plus the ResourceSlice publisher.
``slices`` prints the ResourceSlice this node would publish, without an API server:
what an admin checks before deploying.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any

import click

from vfioctl.cli.main import Context
from vfioctl.cli.render import print_json
from vfioctl.dra.cdi import CDI_VERSION, CDI_VERSIONS

_PATH = click.Path(path_type=Path)


def _node_option(f: Any) -> Any:
    return click.option("--node-name", envvar="NODE_NAME", required=True, metavar="NAME",
                        help="This node's name (also NODE_NAME; the pool is named after "
                        "it).")(f)


def _driver_option(f: Any) -> Any:
    from vfioctl.dra.config import DEFAULT_DRIVER

    return click.option("--driver-name", default=DEFAULT_DRIVER, show_default=True,
                        metavar="NAME", help="The DRA driver name (a DNS subdomain).")(f)


@click.group("dra")
def dra_cmd() -> None:
    """Kubernetes DRA driver: VFIO devices and VFs for pods and KubeVirt VMs.

    A claim's devices are prepared with the group rule, the host-safety checks and the
    journal of 'vfioctl prepare', held for the claim's UID, and given back to their
    original drivers when the claim is unprepared. See docs/kubernetes.md.
    """


def _api_client(kubeconfig: Path | None) -> Any:
    """In-cluster credentials in a pod (the service account), else a kubeconfig.

    Raises:
        UnsupportedConfig: no Kubernetes client. ConfigError: no usable credentials.
    """
    from vfioctl import ConfigError, UnsupportedConfig

    try:
        from kubernetes import client, config
    except ImportError:
        raise UnsupportedConfig("the DRA driver needs the kubernetes client",
                                hint="install vfioctl with the 'dra' extra") from None
    try:
        if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            configuration = client.Configuration()
            incluster: Any = config.load_incluster_config
            incluster(client_configuration=configuration)
            return client.ApiClient(configuration)
        from_file: Any = config.new_client_from_config
        return from_file(config_file=None if kubeconfig is None else str(kubeconfig))
    except (config.ConfigException, OSError, ValueError) as err:
        raise ConfigError(f"cannot load Kubernetes credentials: {err}",
                          hint="run in a pod with a service account, or pass "
                          "--kubeconfig FILE") from None


@dra_cmd.command("plugin")
@_node_option
@_driver_option
@click.option("--registry-dir", type=_PATH, default=Path("/var/lib/kubelet/plugins_registry"),
              show_default=True, help="The kubelet's plugin registration directory.")
@click.option("--plugins-dir", type=_PATH, default=Path("/var/lib/kubelet/plugins"),
              show_default=True, help="Where the DRA socket goes (<dir>/<driver>/dra.sock).")
@click.option("--cdi-dir", type=_PATH, default=Path("/var/run/cdi"), show_default=True,
              help="Where CDI specs are written for the container runtime.")
@click.option("--state-dir", type=_PATH, default=Path("/var/run/vfioctl-dra"),
              show_default=True, help="Per-claim files mounted into containers "
              "(VF token, device metadata).")
@click.option("--cdi-version", type=click.Choice(CDI_VERSIONS), default=CDI_VERSION,
              show_default=True, help="The CDI spec version the specs claim (an older "
              "container runtime refuses a newer one).")
@click.option("--kubeconfig", type=_PATH, default=None,
              help="A kubeconfig (default: in-cluster credentials, else ~/.kube/config).")
@click.option("--publish/--no-publish", default=True, show_default=True,
              help="Publish this node's ResourceSlice.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds between checks for changed devices.")
@click.pass_obj
def plugin_cmd(ctx: Context, node_name: str, driver_name: str, registry_dir: Path,
               plugins_dir: Path, cdi_dir: Path, state_dir: Path, cdi_version: str,
               kubeconfig: Path | None, publish: bool, interval: float) -> None:
    """Run the kubelet plugin and the ResourceSlice publisher until SIGTERM."""
    import vfioctl
    from vfioctl.dra.claims import kubernetes_reader
    from vfioctl.dra.config import DriverConfig
    from vfioctl.dra.driver import Driver
    from vfioctl.dra.server import Plugin
    from vfioctl.dra.slices import Publisher

    if not ctx.debug:
        logging.basicConfig(level=logging.INFO, format="vfioctl: %(message)s")
    config = DriverConfig(node_name=node_name, driver_name=driver_name,
                          registry_dir=registry_dir, plugins_dir=plugins_dir,
                          cdi_dir=cdi_dir, state_dir=state_dir, host=ctx.host_spec,
                          cdi_version=cdi_version)
    # the socket paths are checked before anything is started or written
    _ = (config.registration_socket, config.dra_socket)

    def session() -> vfioctl.Session:
        return vfioctl.open(config.host)

    api = _api_client(kubeconfig)
    driver = Driver(config, session, kubernetes_reader(api))
    driver.recover()
    publisher = Publisher(api, node_name, driver_name, session,
                          driver.is_claim) if publish else None
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with Plugin(driver).running():
        thread = None
        if publisher is not None:
            thread = threading.Thread(target=publisher.run, args=(interval,), daemon=True)
            thread.start()
        stop.wait()
        if publisher is not None:
            publisher.stop()
            publisher.withdraw()


@dra_cmd.command("slices")
@_node_option
@_driver_option
@click.pass_obj
def slices_cmd(ctx: Context, node_name: str, driver_name: str) -> None:
    """Print the ResourceSlice this node publishes (JSON), without an API server."""
    import vfioctl
    from vfioctl.dra.config import check_driver_name
    from vfioctl.dra.inventory import list_devices
    from vfioctl.dra.slices import build_slice, to_json

    check_driver_name(driver_name)
    with vfioctl.open(ctx.host_spec) as session:
        devices = list_devices(session)
    print_json(to_json(build_slice(node_name, driver_name, devices, 1)))
