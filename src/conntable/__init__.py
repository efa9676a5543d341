"""conntable: the connection table of a high-connection-count server.

``ConnectionTable`` maps keys (connection ids as ints, strs or UUIDs, or the
connection objects themselves: any hashable, with a dict's semantics) to
values and keeps, per entry, the last activity, an idle timeout and an
optional deadline. Recording activity
(:meth:`~ConnectionTable.touch`) is one cheap C call; finding the entries
that are due (:meth:`~ConnectionTable.expire`) costs O(expired), thanks to a
hierarchical timer wheel.

``ConnectionTable`` is the compiled class when the extension is built and
``CONNTABLE_NO_EXTENSIONS`` is off, else the pure-Python twin, which is
always available as ``PyConnectionTable``. ``IMPLEMENTATION`` says which.
``CONNTABLE_NO_EXTENSIONS`` is off when unset, empty or ``0`` and on for any
other value, the same rule as at build time (``setup.py``).
"""

import os as _os

from ._common import Expired, TableFull
from ._pytable import ConnectionTable as PyConnectionTable

__version__ = "0.1.0"

IMPLEMENTATION = "python"
ConnectionTable = PyConnectionTable

if _os.environ.get("CONNTABLE_NO_EXTENSIONS", "") in ("", "0"):
    try:
        from ._ctable import ConnectionTable  # type: ignore[no-redef]
    except ImportError:  # not built: the twin serves
        pass
    else:
        IMPLEMENTATION = "cython"

__all__ = (
    "ConnectionTable",
    "PyConnectionTable",
    "Expired",
    "TableFull",
    "IMPLEMENTATION",
)
