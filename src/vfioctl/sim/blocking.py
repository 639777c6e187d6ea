"""Simulator: :class:`SimWouldBlock`, a write the real kernel would never return from.

Unbinding vfio-pci from a device whose VFIO device file is open does not fail on Linux:
``vfio_unregister_group_dev`` (drivers/vfio/vfio_main.c) asks the user to let go and
waits, in the writing process, until the last device file is closed ("No device request
channel registered, blocked until released by user" when the user cannot be asked).
The same wait happens for every VF when SR-IOV is disabled under an open VF: an unbind
of the PF's driver (``vfio_pci_core_unregister_device`` first disables SR-IOV;
PF drivers with ``sriov_configure`` do the same in their remove) and a write of 0 to
``sriov_numvfs`` (``sriov_numvfs_store`` -> ``sriov_configure(pdev, 0)`` ->
``pci_disable_sriov``, drivers/pci/iov.c) remove the VFs, and removing a VF unbinds it.

A program that makes such a write hangs; if nothing ever closes the file, it hangs
forever, holding the device lock. The simulator raises :class:`SimWouldBlock` instead,
before it changes anything: a ``BaseException``, so that no ``except Exception`` in
vfioctl turns it into an error message and a test that reaches it fails loudly.
"""

from __future__ import annotations


class SimWouldBlock(BaseException):
    """The write to ``what`` would block in the kernel until ``holders`` close
    ``device``'s VFIO device file(s)."""

    def __init__(self, what: str, device: str, holders: list[str]) -> None:
        who = ", ".join(holders) if holders else "a VFIO user"
        super().__init__(
            f"{what} would block in the kernel: {device} is open through VFIO by {who}, "
            "and the kernel waits until it is closed (vfio_unregister_group_dev)")
        self.what = what
        self.device = device
        self.holders = holders


__all__ = ["SimWouldBlock"]
