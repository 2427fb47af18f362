"""ERP messages (`erp.outbound`): the models, their published JSON Schemas and the
FULL_TRANSITIVE compatibility rule every new schema version must pass (docs/erp.md)."""

from __future__ import annotations

from .messages import (
    ERP_SCHEMA_VERSIONS, ERP_TYPES, MESSAGE_OF_TYPE, Component, ErpMessage, GoodsReceipt,
    HoldNotice, Message, ReleaseNotice, RemovedComponent, Scrap, Yield, decode_message,
    encode_message, schema_urn,
)

__all__ = [
    "ERP_SCHEMA_VERSIONS", "ERP_TYPES", "MESSAGE_OF_TYPE", "Component", "ErpMessage",
    "GoodsReceipt", "HoldNotice", "Message", "ReleaseNotice", "RemovedComponent", "Scrap",
    "Yield", "decode_message", "encode_message", "schema_urn",
]
