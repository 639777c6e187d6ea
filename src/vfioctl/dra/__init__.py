"""vfioctl as a Kubernetes DRA driver: VFIO devices and VFs handed to pods and KubeVirt VMs.

A front end on the facade (:func:`vfioctl.open`): the kubelet plugin
(:mod:`vfioctl.dra.server`, gRPC over unix sockets, stubs generated from our own
``proto/*.proto`` by ``tools/gen-proto.sh``) turns a claim into the manager's
``prepare(owner=claim UID)`` and back into ``release`` (:mod:`vfioctl.dra.driver`);
:mod:`vfioctl.dra.slices` publishes the node's devices as ResourceSlices;
:mod:`vfioctl.dra.cdi` writes what the container runtime applies. docs/kubernetes.md is
the cluster admin's page.

Nothing here imports grpc or the Kubernetes client at import time: ``vfioctl --help``
and hosts without the ``dra`` extra stay unaffected.
"""

from vfioctl.dra.config import DEFAULT_DRIVER, DriverConfig, SocketPathTooLong

__all__ = ["DEFAULT_DRIVER", "DriverConfig", "SocketPathTooLong"]
