"""State: what vfioctl remembers about a host between commands — the device records and
the journal (:mod:`vfioctl.state.db`) and the VF-token copies (:mod:`vfioctl.state.tokens`),
kept in a state directory no other user can steer (:mod:`vfioctl.state.secure`).

Only the manager (and recovery) write here; nothing below the manager imports it.
"""

from vfioctl.state.db import (
    DB_NAME,
    DEFAULT_LOCK_TIMEOUT,
    LOCK_NAME,
    DeviceRecord,
    Journal,
    JournalState,
    Phase,
    StateStore,
    StateWriter,
    Step,
    StepKind,
    lock_timeout_from_env,
    now,
)
from vfioctl.state.secure import StateUnreadable, StateUnsafe
from vfioctl.state.tokens import StoredToken, TokenStore

__all__ = ["DB_NAME", "DEFAULT_LOCK_TIMEOUT", "LOCK_NAME", "DeviceRecord", "Journal",
           "JournalState", "Phase", "StateStore", "StateUnreadable", "StateUnsafe",
           "StateWriter", "Step", "StepKind", "StoredToken", "TokenStore",
           "lock_timeout_from_env", "now"]
