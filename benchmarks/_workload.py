"""What every side writes and reads: one payload, one metadata object, one
aggregate state, and the fold that rebuilds the state from events.

The payload is a dict of about 200 bytes in CBOR; the metadata is a small dict
(JSONB for this library and the floor, inside the payload for the peer, which
has no metadata column).
"""

from __future__ import annotations

import json
from typing import Any

import cbor2

EVENT_TYPE = "OrderPlaced"
SNAPSHOT_TOPIC = "OrderSnapshot"

PAYLOAD: dict[str, Any] = {
    "order_id": "ord-000000012345",
    "customer_id": "cus-000042",
    "currency": "EUR",
    "amount": 129.95,
    "items": [
        {"sku": "SKU-00017", "qty": 2, "price": 19.99},
        {"sku": "SKU-00231", "qty": 1, "price": 89.97},
    ],
    "shipping": {"method": "standard", "country": "DE", "postcode": "10115"},
}

METADATA: dict[str, Any] = {
    "correlation_id": "5f0c2a7e-9a41-4c1b-8d0e-2b6f3f1c9a10",
    "user": "alice@example.com",
}

STATE: dict[str, Any] = {
    "order_id": "ord-000000012345",
    "customer_id": "cus-000042",
    "status": "open",
    "currency": "EUR",
    "events": 0,
    "total": 0.0,
    "lines": [
        {"sku": "SKU-00017", "qty": 2},
        {"sku": "SKU-00231", "qty": 1},
    ],
    "address": {"country": "DE", "postcode": "10115", "city": "Berlin"},
}


def encode_payload(payload: dict[str, Any] = PAYLOAD) -> bytes:
    """The payload as the floor stores it: plain CBOR."""
    return cbor2.dumps(payload)


def encode_metadata(metadata: dict[str, Any] = METADATA) -> str:
    """The metadata as JSON text, compact, as the library sends it to JSONB."""
    return json.dumps(metadata, separators=(",", ":"), ensure_ascii=False)


def encode_peer_state(payload: dict[str, Any] = PAYLOAD) -> bytes:
    """The peer's stored bytes: payload and metadata together, since the peer has
    no metadata column."""
    return cbor2.dumps({"data": payload, "metadata": METADATA})


def initial_state() -> dict[str, Any]:
    """The state of an order with no events (a fresh copy)."""
    return cbor2.loads(cbor2.dumps(STATE))  # type: ignore[no-any-return]


def fold(state: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """Fold one event's payload into ``state`` (in place) and return it."""
    state["events"] += 1
    state["total"] += payload["amount"]
    return state
