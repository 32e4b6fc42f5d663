"""The kernel's HL7 v2 helpers (readingroom/hl7.py), which the order intake and the report
delivery share: what one side escapes, the other reads back."""

from __future__ import annotations

from hypothesis import given, strategies as st

from readingroom.hl7 import (Segment, ack_code, build_ack, escape, fit, read_ack, read_person, unescape, wrap,
                             write_person)


def test_escape_uses_the_standard_sequences_and_br_for_line_breaks():
    assert escape("a|b^c~d\\e&f") == "a\\F\\b\\S\\c\\R\\d\\E\\e\\T\\f"
    assert escape("one\ntwo\r\nthree\rfour") == "one\\.br\\two\\.br\\three\\.br\\four"
    assert unescape("Pain \\T\\ swelling\\.br\\\\X41\\") == "Pain & swelling\nA"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_escaped_text_has_no_delimiter_and_reads_back(text):
    escaped = escape(text)
    assert not set(escaped) & set("|^~&\r\n")
    assert unescape(escaped) == text.replace("\r\n", "\n").replace("\r", "\n")


def test_fit_and_wrap_never_split_an_escape_sequence():
    assert fit("ab|cd", 4) == "ab"                     # "ab\F\" would be 5 characters
    pieces = wrap("x & y " * 80, 50)
    assert all(len(escape(p)) <= 50 for p in pieces) and " ".join(pieces).split() == ("x & y " * 80).split()


def test_person_names_written_by_one_side_are_read_by_the_other():
    written = write_person("O'BRIEN & SONS^MARY^ANN")
    assert written == "O'BRIEN \\T\\ SONS^MARY^ANN"
    assert read_person(Segment(f"PID|1||P1||{written}"), 5) == "O'BRIEN & SONS^MARY^ANN"
    orc = "|".join(["ORC", "NW"] + [""] * 10 + ["1234^WELBY^MARCUS^^^DR"])
    assert read_person(Segment(orc), 12) == "WELBY^MARCUS^^^DR"                  # an XCN: the ID is skipped
    obr = "|".join(["OBR", "1"] + [""] * 14 + ["1234"])
    assert read_person(Segment(obr), 16) == "1234"                               # an XCN with an ID only


def test_ack_built_here_is_read_back_here():
    received = "MSH|^~\\&|RIS|STMARY|READINGROOM|RR|20260101||ORM^O01|C42|P|2.5.1\rPID|1"
    ack = read_ack(build_ack(received, "AE", "PID-3 | empty", "101", "PID-3"))
    assert (ack.code, ack.control_id, ack.text, ack.accepted) == ("AE", "C42", "PID-3 | empty", False)
    assert read_ack("MSH|^~\\&|A\nMSA|CA|C1").accepted
    assert ack_code("MSH|^~\\&|A\rMSA|aa|C1") == "AA" and read_ack("MSH|^~\\&|A\rMSA|aa|C1").code == "aa"
    assert read_ack("garbage") == read_ack("") and ack_code("garbage") == ""
