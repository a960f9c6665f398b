"""The fields only the collector writes into stored documents: the one list (docs/bucket-layout.md §10).

A client's own value for any of them is dropped from every upload type (status, submission,
trial, batch item) when the upload is parsed, before anything is decided or stored: a forged
``"erased": true`` must not make a participant look erased, a forged ``keyVerified`` must not
make a keyless upload look verified, a forged ``participantKeyHash`` must not claim anyone.
tests/test_server_fields.py walks the documented list against this one, so a field added to
either and not to the other fails a test.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RECEIVED_AT = "serverReceivedAt"  # every stored upload: the server's receipt time
KEY_VERIFIED = "keyVerified"  # false on uploads stored without the participant's key
KEY_HASH = "participantKeyHash"  # status.json and the tombstone: the participant key's hash
ERASED = "erased"  # the tombstone only
ERASED_AT = "erasedAt"  # the tombstone only

SERVER_FIELDS = (RECEIVED_AT, KEY_VERIFIED, KEY_HASH, ERASED, ERASED_AT)


def without_server_fields(document: Mapping[str, Any]) -> dict[str, Any]:
    """The document without any server-owned field: what a client may have a say in."""
    return {k: v for k, v in document.items() if k not in SERVER_FIELDS}
