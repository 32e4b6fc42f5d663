"""HL7 v2 order parsing and acknowledgements: real-world shapes, other versions, malformed input."""

from datetime import datetime

import pytest
from hl7apy.parser import parse_message

from tests.orders_helpers import build_orm, hl7_file
from orders.common import MessageError, normalize_priority, parse_hl7_time
from orders.hl7 import ack_code, build_ack, build_rejection, parse_order_message


def test_v23_order_with_z_segments_allergy_and_egfr():
    parsed = parse_order_message(hl7_file("orm_o01_v23_zsegments.hl7"))
    assert (parsed.message_type, parsed.version, parsed.control_id, parsed.sending_facility) == \
        ("ORM^O01", "2.3", "STM000123", "STMARY")
    (order,) = parsed.orders
    assert order.control == "NW" and order.accession == "SM24101"
    assert (order.patient_id, order.patient_name, order.patient_birth_date, order.patient_sex) == \
        ("SM100231", "DOE^JOHN^A^^MR", "19480312", "M")
    assert (order.visit_number, order.patient_class) == ("V998877", "E")
    assert order.ordering_physician == "HOUSE^GREGORY^^^DR"
    assert (order.procedure_code, order.procedure_description, order.modality) == \
        ("CTHEAD", "CT HEAD WITHOUT CONTRAST", "CT")
    assert order.priority == "STAT"
    assert "thunderclap" in order.indication
    assert order.contrast_allergy == "IODINATED CONTRAST MEDIA"
    assert order.egfr == 54.0
    assert order.scheduled_at == datetime(2026, 11, 29, 2, 30)
    assert order.study_uid == "1.2.840.113619.2.55.3.2609.24101"  # from the ZDS Z-segment


def test_omi_o23_v251_with_tq1_ipc_laterality_and_time_zone():
    (order,) = parse_order_message(hl7_file("omi_o23_v251.hl7")).orders
    assert order.accession == "NS8810"  # IPC-1
    assert order.study_uid == "1.2.826.0.1.3680043.8.498.8810"  # IPC-3
    assert order.laterality == "LEFT"  # OBR-46
    assert order.priority == "ROUTINE"  # TQ1-9
    assert order.scheduled_at == datetime(2026, 11, 29, 8, 0)  # 09:00+01:00 in UTC
    assert order.indication.startswith("Rotator cuff tear after fall; Night pain; Patient claustrophobic")
    assert order.visit_number == "NSV4410"


def test_minimal_v22_order_with_missing_optional_fields():
    parsed = parse_order_message(hl7_file("orm_o01_v22_minimal.hl7"))
    (order,) = parsed.orders
    assert order.accession == "P77"  # only a placer number: it is the accession
    assert (order.patient_id, order.patient_name, order.priority, order.indication) == ("NS77", "", "", "")
    assert order.modality == "CR"  # XR -> CR
    assert order.warnings == ["PID-5 (patient name) is empty"]


@pytest.mark.parametrize("version", ["2.3", "2.4", "2.5", "2.5.1", "2.6"])
def test_hl7apy_built_orders_in_several_versions(version):
    if version >= "2.5":  # OBR-46 exists from 2.5 on; older RIS put the side in the procedure text
        text = build_orm("SM24002", version=version, priority="S", laterality="R^Right")
    else:
        text = build_orm("SM24002", version=version, priority="S", procedure="XRCHEST^XR CHEST RT DECUBITUS")
    (order,) = parse_order_message(text).orders
    assert (order.accession, order.patient_id, order.priority, order.modality, order.laterality) == \
        ("SM24002", "SM100877", "STAT", "CR", "RIGHT")
    assert order.indication == "Cough and fever for 5 days"


def test_escaped_characters_are_read_back():
    text = build_orm("A1", indication="Pain | swelling")  # hl7apy escapes the field separator
    assert parse_order_message(text).orders[0].indication == "Pain | swelling"
    text = text.replace("Pain \\F\\ swelling", "Pain \\T\\ swelling \\S\\ redness\\.br\\\\X41\\")
    assert parse_order_message(text).orders[0].indication == "Pain & swelling ^ redness\nA"


def test_two_orders_in_one_message():
    text = hl7_file("orm_o01_v23_zsegments.hl7").rstrip("\r")
    text += "\rORC|NW|PLC7782|SM24102\rOBR|1|PLC7782|SM24102|CTCSPINE^CT CERVICAL SPINE"
    accessions = [o.accession for o in parse_order_message(text).orders]
    assert accessions == ["SM24101", "SM24102"]


def _problem(text):
    with pytest.raises(MessageError) as info:
        parse_order_message(text)
    return info.value


@pytest.mark.parametrize("text, ack, words", [
    ("hello, this is not HL7", "AR", "MSH"),
    ("", "AR", "MSH"),
    ("MSH|^~\\&|A|B|C|D|20261129||ADT^A01|1|P|2.5\rPID|1||X", "AR", "ADT^A01 is not supported"),
    ("MSH|^~\\&|A|B|C|D|20261129||ORM^O01|1|P|2.9\rPID|1||X", "AR", "version"),
    ("MSH|^~\\&|A|B|C|D|20261129||ORM^O01||P|2.3\rPID|1||X", "AR", "MSH-10"),
    ("MSH|^~\\&|A|B|C|D|20261129||ORM^O01|1|P|2.3\rPID|1||X\rFOO|1", "AR", "FOO"),
    ("MSH|^~\\&|A|B|C|D|20261129||ORM^O01|1|P|2.3\rPID|1||X\rfree text in the middle", "AR", "not an HL7 segment"),
    ("MSHA^~\\&A|B|C|D|20261129||ORM^O01|1|P|2.3\rPID|1||X", "AR", "encoding characters"),
    ("MSH|^~\\&|A|B|C|D|20261129||ORM^O01|1|P|2.3\rORC|NW|P1\rOBR|1|P1||CT^CT HEAD", "AE", "no PID"),
    ("MSH|^~\\&|A|B|C|D|20261129||ORM^O01|1|P|2.3\rPID|1||\rORC|NW|P1\rOBR|1|P1||CT^CT HEAD", "AE", "PID-3"),
    ("MSH|^~\\&|A|B|C|D|20261129||ORM^O01|1|P|2.3\rPID|1||X", "AE", "no ORC"),
    ("MSH|^~\\&|A|B|C|D|20261129||ORM^O01|1|P|2.3\rPID|1||X\rORC|ZZ|P1\rOBR|1|P1||CT", "AE", "ORC-1 'ZZ'"),
    ("MSH|^~\\&|A|B|C|D|20261129||ORM^O01|1|P|2.3\rPID|1||X\rORC|NW|P1", "AE", "no OBR"),
    ("MSH|^~\\&|A|B|C|D|20261129||ORM^O01|1|P|2.3\rPID|1||X\rORC|NW\rOBR|1|||CT^CT HEAD", "AE", "no accession"),
    ("MSH|^~\\&|A|B|C|D|20261129||ORM^O01|1|P|2.3\rPID|1||X\rORC|NW|P1\rOBR|1|P1||", "AE", "OBR-4"),
    ("MSH|^~\\&|A|B|C|D|20261129||ORM^O01|1|P|2.3\rPID|1||X\rORC|NW|P1234567890123456789\rOBR|1||||CT",
     "AE", "longer than 16"),
])
def test_malformed_messages_name_the_problem(text, ack, words):
    problem = _problem(text)
    assert problem.ack == ack
    assert words in problem.text


def test_ack_is_valid_hl7_and_echoes_the_control_id():
    text = hl7_file("omi_o23_v251.hl7")
    ack = parse_message(build_ack(text, "AA"), find_groups=False)
    assert ack.msa.msa_1.to_er7() == "AA"
    assert ack.msa.msa_2.to_er7() == "NS-88-0001"
    assert ack.msh.msh_12.to_er7() == "2.5.1"
    assert ack.msh.msh_5.to_er7() == "RADIS"


def test_error_ack_carries_text_and_err_segment():
    text = build_orm("A1", version="2.5.1")
    reply = build_ack(text, "AE", "PID-3 (patient identifier) is empty", "101", "PID-3")
    assert ack_code(reply) == "AE"
    ack = parse_message(reply, find_groups=False)
    assert "PID-3" in ack.msa.msa_3.to_er7()
    assert ack.err.err_3.to_er7().startswith("101^")
    assert ack.err.err_2.to_er7() == "PID^1^3"


def test_ack_of_garbage_is_still_an_ack():
    reply = build_ack("\x00\x01garbage", "AR", "the message does not start with an MSH segment", "100")
    assert ack_code(reply) == "AR"
    assert "MSH segment" in reply


def test_rejection_message_for_the_ris():
    order = {"patient_id": "P1", "patient_name": "DOE^J", "placer_order": "PL1", "filler_order": "A1",
             "accession": "A1", "procedure_code": "CTHEAD", "procedure_description": "CT HEAD"}
    text = build_rejection(order, "No indication | please resend", "RIS", "STMARY")
    message = parse_message(text, find_groups=False)
    assert message.msh.msh_9.to_er7() == "ORM^O01^ORM_O01"
    assert message.orc.orc_1.to_er7() == "OC"
    assert message.orc.orc_5.to_er7() == "CA"
    assert "No indication" in message.orc.orc_16.to_er7()
    assert message.obr.obr_18.to_er7() == "A1"


def test_priorities_and_times():
    assert [normalize_priority(p) for p in ("S", "a", "R", "urgent", "", "Xyz")] == \
        ["STAT", "ASAP", "ROUTINE", "URGENT", "", "XYZ"]
    assert parse_hl7_time("202611290315") == datetime(2026, 11, 29, 3, 15)
    assert parse_hl7_time("20261129031500-0500") == datetime(2026, 11, 29, 8, 15)
    assert parse_hl7_time("2026113") is None and parse_hl7_time("20261399") is None
