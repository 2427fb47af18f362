"""The messages linetrace sends ERP on `erp.outbound` (DOMAIN.md §7, docs/erp.md).

Five types, each a versioned JSON object naming the unit (`serial`) and its `work_order` (the
Kafka key), with a stable `message_id` (= the `linetrace-message-id` header), the id and type
of the ledger event that caused it, and that event's time:

- `erp.yield`: a unit completed a reporting step (SAP production order confirmation / SAP ME
  yield per SFC): yield 1, scrap 0, unit EA, the final-confirmation flag at the last production
  step, and the components installed since the unit's previous confirmation (backflush);
- `erp.goods_receipt`: the finished server at pack (movement type 101) with its as-built parts,
  read from the HBOM its `unit.sealed` froze;
- `erp.scrap`: a unit scrapped, with the reason and the step it was scrapped at;
- `erp.hold` / `erp.release`: a hold placed on / lifted from one unit (one notice per unit).

The models here are the source of the published JSON Schemas (`schema_files.py`), which are
FULL_TRANSITIVE compatible (`compat.py`): a later version only adds optional fields. So the
structs accept unknown fields, and `schema` carries the version without being a constant an
older reader would refuse.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from ..bodies import Id, Label, ShortId, StationId, Sha256Hex, Step, Text, UserId, Uuid
from ..envelope import RFC3339_UTC

ERP_TYPES = ("erp.yield", "erp.goods_receipt", "erp.scrap", "erp.hold", "erp.release")

#: The current version of each message type (`schema` says it in every message).
ERP_SCHEMA_VERSIONS: dict[str, int] = dict.fromkeys(ERP_TYPES, 1)

SchemaUrn = Annotated[str, Meta(
    pattern=r"^urn:linetrace:schema:erp\.[a-z_]+:v[1-9][0-9]*\Z",
    description="Names the message's type and schema version, e.g. "
    "`urn:linetrace:schema:erp.yield:v1`. Any version matches: a reader of an older version "
    "reads a newer message (later versions only add optional fields).")]
Time = Annotated[str, Meta(pattern=RFC3339_UTC, description=(
    "Event time of the cause, RFC 3339 UTC (the time the line did it, not when it was sent)."))]
PostingDate = Annotated[str, Meta(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}\Z", description=(
    "Posting date: the UTC date of `time` (SAP PostingDate, Odoo date_done)."))]
Quantity = Annotated[int, Meta(ge=0, le=2**31 - 1)]
UnitOfMeasure = Literal["EA"]


def schema_urn(message_type: str, version: int | None = None) -> str:
    """`urn:linetrace:schema:<type>:v<version>` (the current version by default)."""
    return f"urn:linetrace:schema:{message_type}:v{version or ERP_SCHEMA_VERSIONS[message_type]}"


class Component(msgspec.Struct, kw_only=True):
    """A part in the unit: serialized (`serial`, qty 1) or by quantity (`serial` null), always
    with its lot (SAP batch) and manufacturer part number; `parent` is the serial it is
    mounted on (a GPU on its baseboard), the unit itself when mounted in the unit."""

    serial: Id | None
    lot: Id
    mpn: Id
    pn: Id | None = None
    category: ShortId | None = None
    qty: Quantity
    location: Label | None = None
    parent: Id


class RemovedComponent(Component, kw_only=True):
    """A part taken out of the unit (at a repair), with the reason the station gave."""

    reason: Id


class ErpMessage(msgspec.Struct, kw_only=True, tag_field="type"):
    """Fields every ERP message has, in this order, after `type`."""

    schema: SchemaUrn
    message_id: Annotated[Uuid, Meta(description=(
        "Stable id of this message, equal to the Kafka header `linetrace-message-id`: a "
        "re-send carries the same id and the same bytes; de-duplicate on it."))]
    cause: Annotated[Uuid, Meta(description="Id of the ledger event that caused the message.")]
    cause_type: Annotated[ShortId, Meta(description="Type of that event (`work.completed`, ...).")]
    time: Time
    posting_date: PostingDate
    serial: Annotated[Id, Meta(description="The unit's serial number (SAP ME SFC).")]
    work_order: Annotated[Id, Meta(description=(
        "The unit's work order (SAP production order, Odoo mrp.production name); the Kafka key."))]
    product: Id | None = None


class Yield(ErpMessage, kw_only=True, tag="erp.yield"):
    """A unit completed a reporting step of its route (once per unit and step: a step done
    again after a repair is not confirmed twice)."""

    step: Annotated[Step, Meta(description="Route step (the routing operation number).")]
    operation: Label
    work_center: Annotated[ShortId, Meta(description="Station type of the step.")]
    station: StationId
    transaction_id: Uuid
    result: Literal["Completed", "Skipped"]
    yield_qty: Quantity
    scrap_qty: Quantity
    unit_of_measure: UnitOfMeasure
    final_confirmation: bool
    operator: Id | None = None
    route_revision: Annotated[str, Meta(max_length=32)] | None = None
    components: list[Component]
    removed: list[RemovedComponent]


class GoodsReceipt(ErpMessage, kw_only=True, tag="erp.goods_receipt"):
    """The finished server received from its order at pack (movement type 101), with every
    part as built (serials and lots, nested parts included), as its seal froze them."""

    movement_type: Literal["101"]
    material: Annotated[Id, Meta(description="The product (SAP material, Odoo product).")]
    qty: Quantity
    unit_of_measure: UnitOfMeasure
    packed: Annotated[Uuid, Meta(description="Id of the `unit.packed` event.")]
    sealed: Annotated[Uuid, Meta(description="Id of the `unit.sealed` event (the cause).")]
    hbom_sha256: Sha256Hex
    sales_order: Id | None = None
    carton: Id | None = None
    tamper_seal: Id | None = None
    components: list[Component]


class Scrap(ErpMessage, kw_only=True, tag="erp.scrap"):
    """A unit scrapped: scrap quantity 1 at the last route step it started (`step`), and the
    step it was at when scrapped (`scrapped_at_step`, a repair step for instance)."""

    reason: Text
    scrap_qty: Quantity
    unit_of_measure: UnitOfMeasure
    station: StationId
    step: Step | None = None
    operation: Label | None = None
    work_center: ShortId | None = None
    scrapped_at_step: Step | None = None


class HoldNotice(ErpMessage, kw_only=True, tag="erp.hold"):
    """A hold stops this unit (SAP: block the order/serial; Odoo: a quality alert)."""

    hold_id: Id
    scope: Literal["unit", "lot", "mpn", "work_order", "station"]
    target: Id
    reason: Text
    category: Literal["quality", "operational"]
    code: ShortId
    placed_by: Id
    step: Step | None = None
    station: StationId | None = None


class ReleaseNotice(ErpMessage, kw_only=True, tag="erp.release"):
    """A hold on this unit ended: `released` (signed release), or a disposition's decision
    (`scrap`, `use-as-is`, `repair`)."""

    hold_id: Id
    decision: Literal["released", "scrap", "use-as-is", "repair"]
    reason: Text | None = None
    released_by: list[UserId]


Message = Yield | GoodsReceipt | Scrap | HoldNotice | ReleaseNotice

#: Message type -> model of its current version.
MESSAGE_OF_TYPE: dict[str, type[ErpMessage]] = {
    "erp.yield": Yield,
    "erp.goods_receipt": GoodsReceipt,
    "erp.scrap": Scrap,
    "erp.hold": HoldNotice,
    "erp.release": ReleaseNotice,
}

_encoder = msgspec.json.Encoder()
_decoder: msgspec.json.Decoder[Message] = msgspec.json.Decoder(Message)


def encode_message(message: ErpMessage) -> bytes:
    """The message's exact bytes: compact JSON, fields in model order (deterministic)."""
    return _encoder.encode(message)


def decode_message(data: bytes) -> Message:
    """Decode and validate an ERP message (msgspec.ValidationError names what is wrong)."""
    return _decoder.decode(data)
