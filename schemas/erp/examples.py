"""One realistic example of every ERP message, from the 8-GPU HGX server line (fixed ids and
times: the same bytes on every run). The published schemas embed them; docs/erp.md quotes them."""

from __future__ import annotations

from .messages import (
    Component, ErpMessage, GoodsReceipt, HoldNotice, ReleaseNotice, Scrap, Yield, schema_urn,
)

SERIAL, WORK_ORDER = "SRV-A-000123", "WO-2026-0042"

_GPU = Component(serial="GPU-1650224000123", lot="LOT-GPU-2026-07", mpn="699-2G520-0200-000",
                 pn="HGX-B200-GPU", category="gpu", qty=1, location="slot 3",
                 parent="BB-2026-000123")


def _examples() -> dict[str, ErpMessage]:
    return {
        "erp.yield": Yield(
            schema=schema_urn("erp.yield"), message_id="3b7a0c52-1d9e-5f3a-8c41-2e6f0b9d7a15",
            cause="6a1f5e2c-8b3d-4c7e-9f10-2a3b4c5d6e7f", cause_type="work.completed",
            time="2026-03-02T10:14:05.250Z", posting_date="2026-03-02", serial=SERIAL,
            work_order=WORK_ORDER, product="A",
            step=60, operation="baseboard-gpu-install", work_center="gpu-install",
            station="gpu-install-01", transaction_id="0b7e5d1c-4a2f-4e8b-9c3d-5f6a7b8c9d0e",
            result="Completed", yield_qty=1, scrap_qty=0, unit_of_measure="EA",
            final_confirmation=False, operator="op-17", route_revision="R1",
            components=[Component(serial="BB-2026-000123", lot="LOT-BB-2026-03",
                                  mpn="935-24287-0000-000", category="baseboard", qty=1,
                                  parent="SRV-A-000123"), _GPU],
            removed=[]),
        "erp.goods_receipt": GoodsReceipt(
            schema=schema_urn("erp.goods_receipt"),
            message_id="8d2c4e6a-0b1f-5a3c-9e7d-4f6a8b0c2d4e",
            cause="c1d2e3f4-a5b6-5c7d-8e9f-0a1b2c3d4e5f", cause_type="unit.sealed",
            time="2026-03-03T16:40:00.000Z", posting_date="2026-03-03", serial=SERIAL,
            work_order=WORK_ORDER, product="A",
            movement_type="101", material="A", qty=1, unit_of_measure="EA",
            packed="9e8d7c6b-5a4f-4e3d-8c2b-1a0f9e8d7c6b",
            sealed="c1d2e3f4-a5b6-5c7d-8e9f-0a1b2c3d4e5f",
            hbom_sha256="5f0c6e3b1a2d4c8e9f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e",
            sales_order="SO-88412", carton="CTN-000123", tamper_seal="TS-7741203",
            components=[Component(serial="BB-2026-000123", lot="LOT-BB-2026-03",
                                  mpn="935-24287-0000-000", category="baseboard", qty=1,
                                  parent="SRV-A-000123"), _GPU,
                        Component(serial="PCBA-A-000123", lot="LOT-PCBA-2026-09",
                                  mpn="A-PCBA", category="mainboard", qty=1,
                                  parent="SRV-A-000123"),
                        Component(serial=None, lot="LOT-CAP-0402-118", mpn="GRM155R71C104KA88D",
                                  category="capacitor", qty=480, location="C1-C480",
                                  parent="PCBA-A-000123")]),
        "erp.scrap": Scrap(
            schema=schema_urn("erp.scrap"), message_id="1f2e3d4c-5b6a-5978-8695-a4b3c2d1e0f9",
            cause="2b3c4d5e-6f70-4182-9a3b-4c5d6e7f8091", cause_type="unit.scrapped",
            time="2026-03-04T09:02:11.000Z", posting_date="2026-03-04", serial=SERIAL,
            work_order=WORK_ORDER, product="A",
            reason="burn-in failed after 2 repairs (defect D-0193)", scrap_qty=1,
            unit_of_measure="EA", station="repair-01", step=90, operation="burn-in",
            work_center="burnin", scrapped_at_step=900),
        "erp.hold": HoldNotice(
            schema=schema_urn("erp.hold"), message_id="4a5b6c7d-8e9f-5a0b-9c1d-2e3f4a5b6c7d",
            cause="7c8d9e0f-1a2b-5c3d-8e4f-5a6b7c8d9e0f", cause_type="hold.placed",
            time="2026-03-02T11:30:00.000Z", posting_date="2026-03-02", serial=SERIAL,
            work_order=WORK_ORDER, product="A",
            hold_id="HOLD-3F1A9C0B7E2D4F61", scope="lot", target="LOT-GPU-2026-07",
            reason="supplier notice: GPU lot under investigation", category="quality",
            code="hold.manual", placed_by="qa.lee"),
        "erp.release": ReleaseNotice(
            schema=schema_urn("erp.release"), message_id="6e7f8091-a2b3-54c5-96d7-e8f90a1b2c3d",
            cause="0f1e2d3c-4b5a-5968-8776-a5b4c3d2e1f0", cause_type="hold.released",
            time="2026-03-02T15:05:00.000Z", posting_date="2026-03-02", serial=SERIAL,
            work_order=WORK_ORDER, product="A",
            hold_id="HOLD-3F1A9C0B7E2D4F61", decision="released",
            reason="supplier cleared the lot", released_by=["qa.lee", "qa.ng"]),
    }


def example_message(message_type: str) -> ErpMessage:
    """A valid example of `message_type` (fixed content)."""
    return _examples()[message_type]

