"""Orders: from the attending physician's request to an approved, protocoled worklist item.

Steps 1-4 of the teleradiology workflow. An order arrives over HL7 v2 (``listener``: ORM^O01 /
OMI^O23 over MLLP, parsed in ``hl7``) or as a FHIR ServiceRequest (``fhir``); ``store`` keeps every
message and applies new, changed and cancelled orders. The teleradiologist reviews it (``review``:
approve with a protocol, reject with a reason sent back to the RIS, or ask a question), helped by
rules kept as data (``protocols``: configs/protocols.yaml and configs/appropriateness.yaml).
Approved orders appear in the DICOM Modality Worklist (``mwl``); arriving images are linked to
their order (``linking``), which carries priority, indication and side into triage.

The API for a user interface: list_orders, get_order, suggest, approve, reject, ask,
set_protocol (review.py) and recent_messages (store.py); each takes a Database. The review
functions take ``as_user`` (the logged-in user): only orders of that user's sites exist for them.
A site's messages act on its own orders only (``SenderNotAllowed``; ``check_source_address``
checks the site's hl7.allowed_addresses).
"""

from orders.common import MessageError, OrderError, ParsedOrder, SenderNotAllowed
from orders.review import (
    approve, ask, get_order, list_orders, order_dict, reject, set_protocol, suggest,
)
from orders.store import check_source_address, receive_hl7, recent_messages

__all__ = ["MessageError", "OrderError", "ParsedOrder", "SenderNotAllowed", "approve", "ask",
           "check_source_address", "get_order", "list_orders", "order_dict", "receive_hl7", "recent_messages",
           "reject", "set_protocol", "suggest"]
