"""Simulator: an in-memory file tree with kernel-style relative symlinks.

The tree holds directories, attribute files (a read callback and an optional write
callback, so contents are always computed from the live kernel model) and links whose
targets are the relative strings the kernel stores (``../../../bus/pci/drivers/e1000e``).
Path resolution follows links component by component like ``namei``: a link's target is
read relative to the directory holding the link, ``..`` steps up, and more than 40 links
give ELOOP. Errors are ``OSError`` with the errno a real lookup would give.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from dataclasses import dataclass, field

Reader = Callable[[], bytes]
Writer = Callable[[str], None]
MAX_LINKS = 40


@dataclass
class File:
    read: Reader | None
    write: Writer | None = None


@dataclass
class Link:
    target: str


@dataclass
class CharDev:
    """A character device node (``/dev/vfio/*``); opened through the VFIO layer."""

    key: str


@dataclass
class Dir:
    children: dict[str, Node] = field(default_factory=dict)

    def mkdir(self, *parts: str) -> Dir:
        """Return the directory at ``parts`` below this one, creating missing levels."""
        d = self
        for part in parts:
            for sub in part.split("/"):
                nxt = d.children.get(sub)
                if not isinstance(nxt, Dir):
                    nxt = Dir()
                    d.children[sub] = nxt
                d = nxt
        return d


Node = Dir | File | Link | CharDev


def _oserror(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


class Tree:
    """A rooted tree with namei-style lookup."""

    def __init__(self, root: Dir) -> None:
        self.root = root

    def lookup(self, path: str, *, follow: bool = True) -> Node:
        return self.resolve(path, follow=follow)[0]

    def resolve(self, path: str, *, follow: bool = True) -> tuple[Node, str]:
        """The node at ``path`` (relative to the root) and its canonical path, following
        links on the way and, if ``follow``, at the end.

        Raises:
            OSError: ENOENT, ENOTDIR or ELOOP.
        """
        pending = [p for p in path.split("/") if p and p != "."]
        stack: list[Dir] = [self.root]
        names: list[str] = []
        hops = 0
        while pending:
            part = pending.pop(0)
            cur = stack[-1]
            if part == "..":
                if len(stack) > 1:
                    stack.pop()
                    names.pop()
                continue
            node = cur.children.get(part)
            if node is None:
                raise _oserror(errno.ENOENT, path)
            if isinstance(node, Link) and (pending or follow):
                hops += 1
                if hops > MAX_LINKS:
                    raise _oserror(errno.ELOOP, path)
                target = [p for p in node.target.split("/") if p and p != "."]
                if node.target.startswith("/"):
                    stack, names = [self.root], []
                pending = target + pending
                continue
            if not pending:
                return node, "/".join([*names, part])
            if not isinstance(node, Dir):
                raise _oserror(errno.ENOTDIR, path)
            stack.append(node)
            names.append(part)
        return stack[-1], "/".join(names)
