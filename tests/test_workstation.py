"""The workstation's pure cores: the viewer on real sample files, web sessions, live dictation
helpers and the template suggestion. The page itself is tested in a real browser (tests/e2e)."""

from __future__ import annotations

import io

import numpy as np
import pytest

from workstation.viewer import PRESETS, VolumeCache, ViewerError, load_volume, render_slice, window


def _png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    return Image.open(io.BytesIO(data)).size


def test_ct_slice_is_in_hounsfield_units_and_windowed(samples):
    vol = load_volume("ct", [samples / "693_J2KR.dcm"])        # JPEG 2000 head CT
    assert vol.slices == 1 and not vol.invert
    air, brain = vol.pixels[0][0, 0], np.median(vol.pixels[0][200:300, 200:300])
    assert air < -900 and 0 < brain < 80                         # HU: air outside, brain inside
    png = render_slice(vol, 0, *PRESETS["brain"])
    assert _png_size(png) == (vol.pixels.shape[2], vol.pixels.shape[1])


def test_window_is_linear_and_clipped():
    image = np.array([[-1000.0, 0.0, 40.0, 80.0, 3000.0]])
    out = window(image, 40, 80)
    assert out[0, 0] == 0 and out[0, -1] == 255 and 120 <= out[0, 2] <= 135
    assert (window(image, 40, 80, invert=True) == 255 - out).all()


def test_monochrome1_radiograph_is_inverted(samples):
    vol = load_volume("cr", [samples / "RG1_UNCR.dcm"])
    assert vol.invert and vol.default_window[1] > 1


def test_multiframe_series_gives_one_slice_per_frame(samples):
    vol = load_volume("mr", [samples / "emri_small_RLE.dcm"])
    assert vol.slices == 10


def test_color_ultrasound_is_shown_as_stored(samples):
    vol = load_volume("us", [samples / "US1_J2KR.dcm"])
    assert vol.color and _png_size(render_slice(vol, 0))


def test_slices_are_sorted_along_the_normal(tmp_path):
    import pydicom

    from models.phantoms import ct_series, head_phantom

    files = []
    for i, ds in enumerate(ct_series(head_phantom(6, size=64), key="sort")):
        files.append(tmp_path / f"{i}.dcm")
        ds.save_as(files[-1], enforce_file_format=True)
    vol = load_volume("s", list(reversed(files)))

    z = sorted(float(pydicom.dcmread(f).ImagePositionPatient[2]) for f in files)
    assert vol.slices == 6 and len(z) == 6
    # the first slice of the volume is the lowest position, whatever the file order was
    first = pydicom.dcmread(min(files, key=lambda f: float(pydicom.dcmread(f).ImagePositionPatient[2])))
    from pydicom.pixels import apply_modality_lut

    assert np.allclose(vol.pixels[0], apply_modality_lut(first.pixel_array, first))


def test_unreadable_series_is_a_clear_error(tmp_path, samples):
    broken = tmp_path / "x.dcm"
    broken.write_bytes(b"not dicom")
    with pytest.raises(ViewerError, match="could be decoded"):
        load_volume("bad", [broken])
    with pytest.raises(ViewerError, match="no stored images"):
        load_volume("none", [])


def test_cache_decodes_once_and_stays_bounded(samples):
    cache = VolumeCache(max_bytes=1)
    a = cache.get("a", [samples / "693_UNCI.dcm"])
    assert cache.get("a", []) is a                              # cached: the (empty) paths are not read
    cache.get("b", [samples / "MR2_UNCI.dcm"])
    with pytest.raises(ViewerError):
        cache.get("a", [])                                      # evicted: decoded again, and there is nothing



def test_resampler_keeps_the_pitch_and_the_length():
    from dictation.audio import Resampler

    rate = 48000
    t = np.arange(rate * 2) / rate
    tone = (np.sin(2 * np.pi * 440 * t) * 20000).astype(np.int16)
    r = Resampler(rate)
    out = np.concatenate([r(tone[i:i + 4096]) for i in range(0, len(tone), 4096)])
    assert abs(len(out) - 32000) < 200
    assert abs(np.argmax(np.abs(np.fft.rfft(out[:16000]))) - 440) <= 1
    assert Resampler(16000)(np.array([16384], np.int16))[0] == pytest.approx(0.5)


def test_template_suggestion():
    from workstation.tab_reading import suggest_template

    names = ["free", "ct_head", "chest_radiograph", "ct_abdomen_pelvis"]
    assert suggest_template("CT", "CT HEAD WITHOUT CONTRAST", names) == "ct_head"
    assert suggest_template("CR", "XR CHEST 1 VIEW", names) == "chest_radiograph"
    assert suggest_template("CT", "CT ABDOMEN PELVIS WITH CONTRAST", names) == "ct_abdomen_pelvis"
    assert suggest_template("MR", "MR SHOULDER", names) == "free"
    assert suggest_template("CR", "XR HAND 2 VIEWS", names) == "free"      # not every radiograph is a chest


def test_heatmap_slices_follow_the_sop_uids_not_the_file_order():
    from workstation.viewer import Volume, heatmap_layer, heatmap_rgba

    vol = Volume("s", np.zeros((3, 4, 4), np.float32), sop_uids=["a", "b", "c"])
    maps = np.stack([np.full((2, 2), v, np.float32) for v in (0.1, 0.2, 0.3)])   # model order: c, a, b
    assert heatmap_layer(maps, vol, 0, ["c", "a", "b"])[0, 0] == pytest.approx(0.2)
    assert heatmap_layer(maps, vol, 2, ["c", "a", "b"])[0, 0] == pytest.approx(0.1)
    assert heatmap_layer(maps, vol, 1, ["x", "y", "z"]) is None                      # another series
    assert heatmap_layer(maps[0], vol, 2, []).shape == (2, 2)                       # a radiograph: one map
    rgba = heatmap_rgba(np.array([[0.0, 1.0]]), (4, 8))
    assert rgba.shape == (4, 8, 4) and rgba[0, 0, 3] == 0 and rgba[0, -1, 3] > 150


def test_provisional_text_shows_until_the_final_replaces_it():
    from dictation.stream import Final, Partial
    from dictation.transcribe import Transcript
    from dictation.live import LiveDictation

    live = LiveDictation("free", engine=object())
    live._events([Partial("no acute hemorage", 2.0, 0.1, final_pending=True)])
    assert live.display_sections()["findings"] == "no acute hemorage"      # on screen at once
    assert live.sections()["findings"] == ""                               # not in the report yet
    before = live.view_key()
    live._events([Final("No acute hemorrhage.", 0.0, 2.0, Transcript(text="No acute hemorrhage."))])
    assert live.display_sections()["findings"] == "No acute hemorrhage." == live.sections()["findings"]
    assert live.view_key() != before
    live._events([Partial("Go to impression.", 3.0, 0.1, final_pending=True)])   # a command: not text
    assert live.display_sections()["findings"] == "No acute hemorrhage."


def test_several_pending_utterances_all_stay_on_screen_until_their_finals():
    """On a busy machine finals lag: each utterance's live text stays until its own final comes."""
    from dictation.stream import Final, Partial
    from dictation.transcribe import Transcript
    from dictation.live import LiveDictation

    live = LiveDictation("free", engine=object())
    live._events([Partial("no midline shit", 2.0, 0.1, final_pending=True, utterance=0)])
    live._events([Partial("ventricles normal", 5.0, 0.1, final_pending=True, utterance=1)])
    assert live.display_sections()["findings"] == "no midline shit ventricles normal"
    live._events([Final("No midline shift.", 0.0, 2.0, Transcript(text="No midline shift."), utterance=0)])
    assert live.display_sections()["findings"] == "No midline shift. ventricles normal"
    assert live.sections()["findings"] == "No midline shift."
    live._events([Final("Ventricles are normal.", 3.0, 5.0, Transcript(text="Ventricles are normal."),
                        utterance=1)])
    assert live.display_sections()["findings"] == live.sections()["findings"]
    assert live.feedback.pending == {}


def test_partial_text_goes_into_the_active_section_while_speaking_but_a_command_does_not():
    from dictation.stream import Final, Partial
    from dictation.transcribe import Transcript
    from dictation.live import LiveDictation

    live = LiveDictation("free", engine=object())
    live._events([Partial("there is a small", 1.0, 0.1)])
    assert live.display_sections()["findings"] == "there is a small"
    assert live.sections()["findings"] == ""
    before = live.view_key()
    live._events([Partial("there is a small effusion", 1.8, 0.1)])
    assert live.view_key() != before                                     # the page updates
    live._events([Final("There is a small effusion.", 0.0, 2.0, Transcript(text="There is a small effusion."),
                        utterance=0)])
    assert live.display_sections()["findings"] == "There is a small effusion."
    live._events([Partial("Go to impression.", 3.0, 0.1)])               # a command is never typed
    assert live.display_sections()["findings"] == "There is a small effusion."


# --- after signing, the page knows it (issue 17, item 6) -----------------------------------------
def _view(status: str, versions: list[tuple[str, str]] = ()):  # (status, body) per version
    """A ReportView as ReportService returns it, with signed versions at a fixed time."""
    from datetime import datetime

    from reporting.versions import ReportView, VersionView

    signed = [VersionView(i + 10, i + 1, st, body, "ab" * 32, "demo", datetime(2026, 11, 30, 3, 12 + i, 5), "",
                          {"body": body}) for i, (st, body) in enumerate(versions)]
    return ReportView(7, "1.2.3", "ACC1", "P1", "DOE^JOHN", "ct_head", status, {}, {}, 3, "", datetime(2026, 11, 30),
                      signed)


def test_the_header_shows_the_signed_state_and_the_version():
    from workstation.signoff import reading_header, report_state

    assert report_state(_view("draft")) == "DRAFT, not signed yet"
    final = _view("final", [("final", "FINDINGS: x")])
    assert report_state(final) == "FINAL v1, signed by demo at 03:12Z on 2026-11-30"
    assert "report 7: **FINAL v1, signed by demo" in reading_header("**DOE^JOHN** · CT HEAD", final)
    addendum = _view("addendum", [("final", "B"), ("addendum", "B\n\nADDENDUM (x):\nMore.")])
    assert report_state(addendum).startswith("FINAL + ADDENDUM v2, signed by demo at 03:13Z")
    assert report_state(_view("preliminary", [("preliminary", "B")])).startswith("PRELIMINARY v1")


def test_a_signed_final_report_is_read_only_and_a_preliminary_one_is_not():
    from dictation.live import LiveDictation
    from workstation.signoff import is_read_only

    assert not is_read_only(_view("draft")) and not is_read_only(_view("preliminary", [("preliminary", "B")]))
    assert all(is_read_only(_view(s, [("final", "B")])) for s in ("final", "addendum", "corrected"))
    live = LiveDictation("free", engine=object(), sections={"findings": "Signed text."})
    live.read_only = True
    live.edit("findings", "changed")
    live.insert_normal()
    live.feed(16000, np.zeros(1600, np.int16))                 # no dictation into a signed report
    assert live.sections()["findings"] == "Signed text." and live._worker is None


def test_an_addendum_is_shown_with_its_version_and_its_text():
    from workstation.signoff import addendum_text, signed_markdown

    body = "FINDINGS:\nSubdural hematoma."
    view = _view("addendum", [("final", body),
                              ("addendum", f"{body}\n\nADDENDUM (2026-11-30 03:20 UTC, demo):\nCompared with the "
                                           "prior CT: new since then.")])
    assert addendum_text(view.versions, 0) == ""
    assert addendum_text(view.versions, 1) == "Compared with the prior CT: new since then."
    shown = signed_markdown(view)
    assert "- v1 final signed by demo" in shown and "- v2 addendum signed by demo" in shown
    assert "Addendum (v2): Compared with the prior CT: new since then." in shown


def test_a_blocking_template_field_is_named_in_full_and_shown_where_it_is_filled_in():
    from reporting.checks import check_template
    from reporting.signoff import CheckResult
    from dictation.live import LiveDictation
    from workstation.signoff import checks_markdown, issue_choices, issue_title

    issues = check_template({"findings": "x", "impression": ""}, {"findings": {"Extra-axial spaces": "",
                                                                               "Hemorrhage": "None."}})
    results = [CheckResult(i, False) for i in issues]
    by_key = {i.key: i for i in issues}
    field = by_key["template:field:findings:Extra-axial spaces"]
    assert issue_title(field) == "Findings > Extra-axial spaces is empty"
    assert issue_title(by_key["template:empty:impression"]) == "Impression is empty"
    assert ("Findings > Extra-axial spaces is empty", field.key) in issue_choices(results)
    assert 'Type it after "Extra-axial spaces:" in the Findings box' in checks_markdown(results)

    # The Findings box shows every field of the template, the empty ones too, and typing after a
    # label fills that field (the others keep their values).
    live = LiveDictation("ct_head", engine=object(), fields={"findings": {"hemorrhage": "No hemorrhage."}})
    shown = live.display_sections()["findings"].splitlines()
    assert shown[0] == "Hemorrhage: No hemorrhage." and "Extra-axial spaces: " in shown
    typed = "\n".join(line + ("No extra-axial collection." if line.startswith("Extra-axial") else "")
                      for line in shown) + "\nSmall old infarct."
    live.edit("findings", live.typed_text("findings", typed))
    fields = live.session.report.fields["findings"]
    assert fields["extra_axial"] == "No extra-axial collection." and fields["hemorrhage"] == "No hemorrhage."
    assert live.session.report.sections["findings"] == "Small old infarct."
    assert live.typed_text("findings", live.display_sections()["findings"]) is None   # nothing typed
    live.read_only = True                                        # signed: the signed text, no empty labels
    assert "Brain:" not in live.display_sections()["findings"]


def test_page_messages_say_what_to_do_without_command_lines():
    from reporting.errors import ReportError
    from workstation.page_context import Refused, guarded
    from workstation.signoff import page_message

    assert page_message("report 1 is final and cannot change; add an addendum (`readingroom report addendum 1 "
                        "--user NAME --text ...`) or a corrected version") == \
        "Report 1 is final and cannot change; add an addendum or a corrected version."
    assert page_message("report 1 has no open check 'x'; run `readingroom report check 1` for the current keys",
                        "Press Run checks.") == "Report 1 has no open check 'x'. Press Run checks."

    @guarded("Sign final")
    def fails(kind: str):
        raise {"refused": Refused("Open a study from the worklist first."),
               "report": ReportError("no study 'u'; see `readingroom worklist` for the study UIDs"),
               "bug": ZeroDivisionError("x")}[kind]

    for kind, expected in (("refused", "Open a study from the worklist first."), ("report", "No study 'u'."),
                           ("bug", "Sign final did not work because of a problem in ReadingRoom")):
        with pytest.warns(UserWarning) as caught:
            assert fails(kind) == {"__type__": "update"}         # gr.skip(): the outputs stay, no Error badge
        message = str(caught[-1].message)
        assert message.startswith(expected) and "readingroom " not in message and "`" not in message


def test_the_worklist_status_filter_finds_signed_studies():
    from triage.worklist import OPEN_STATUSES
    from workstation.tab_worklist import STATUS_CHOICES, worklist_query

    assert worklist_query("") == (OPEN_STATUSES, None)
    assert worklist_query("new") == (OPEN_STATUSES, "new")
    assert worklist_query("final") == (("final",), None)
    statuses, one = worklist_query("all")
    assert set(statuses) == {*OPEN_STATUSES, "final"} and one is None
    assert {value for _label, value in STATUS_CHOICES} >= {"", "final", "all"}


def test_the_sign_off_says_plainly_where_the_report_went():
    from reporting.delivery.outbox import delivery_summary, sign_message

    assert sign_message("final", 1, "St. Mary's Hospital", []) == (
        "Signed final (version 1). Site St. Mary's Hospital has no delivery destination configured in "
        "configs/sites.yaml: nothing was sent.")
    assert "has no site" in delivery_summary("", 1, [])
    rows = [{"id": 3, "version": 1, "destination": "pdf", "status": "delivered", "last_error": ""},
            {"id": 2, "version": 1, "destination": "hl7", "status": "pending", "last_error": "MLLPError: refused"},
            {"id": 1, "version": 0, "destination": "hl7", "status": "failed", "last_error": "old"}]
    assert delivery_summary("North", 1, rows) == ("Delivery to North: RIS (HL7 ORU over MLLP) queued (last try: "
                                                  "MLLPError: refused); PDF report delivered.")


def test_the_lab_suggests_only_data_folders_that_exist(tmp_path):
    """Issue 25, item 3: an empty home suggests nothing; a folder is suggested only once it holds
    a labels.csv, the sample set first; a typed folder survives a model change."""
    from pathlib import Path

    from workstation.lab import data_for_model, default_folder, sample_folder

    home = tmp_path / "home"
    assert default_folder(home, "ich") == default_folder(home, "cxr") == default_folder(home, None) == ""
    heldout = home / "phantoms" / "ich-heldout"
    heldout.mkdir(parents=True)
    assert default_folder(home, "ich") == ""                       # a folder without labels is no data set
    (heldout / "labels.csv").write_text("study_uid,path,ich\n")
    assert default_folder(home, "ich") == str(heldout) and default_folder(home, "cxr") == ""
    sample = sample_folder(home, "ich")
    sample.mkdir(parents=True)
    (sample / "labels.csv").write_text("study_uid,path,ich\n")
    assert default_folder(home, "ich") == str(sample)
    for task in ("ich", "cxr"):
        suggested = default_folder(home, task)
        assert suggested == "" or (Path(suggested) / "labels.csv").is_file()
    typed = str(tmp_path / "my-studies")
    assert data_for_model(home, "cxr", typed) == typed              # the user's folder stays
    assert data_for_model(home, "cxr", str(sample)) == ""           # another task's suggestion goes
    assert data_for_model(home, "ich", "") == str(sample)


def test_the_lab_sample_set_is_what_the_lab_evaluates(tmp_path):
    """The sample button's function writes phantoms and a labels.csv that the Lab's evaluation
    scores; a second press keeps the set; a missing folder is refused with what to do."""
    import csv

    from models.registry import WEIGHTS_DIR, find_model
    from workstation.lab import (
        LabError, LabPaths, default_folder, evaluate_folder, evaluation_inputs, make_sample, model_task,
    )

    cards = {name: find_model(name, WEIGHTS_DIR) for name in ("ich-ct", "cxr-chest")}
    assert {name: model_task(card) for name, card in cards.items()} == {"ich-ct": "ich", "cxr-chest": "cxr"}
    home = tmp_path / "home"
    folder, written = make_sample(home, "cxr", n=8, size=256, progress=False)
    assert written and folder == home / "phantoms" / "cxr-sample"
    with (folder / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 8 and all((folder / r["path"]).is_dir() for r in rows)
    assert default_folder(home, "cxr") == str(folder)
    assert make_sample(home, "cxr", n=8, size=256, progress=False) == (folder, False)
    paths = LabPaths.at(home)
    table, plots = evaluate_folder(cards["cxr-chest"], paths, str(folder), "", tmp_path / "eval", progress=False)
    assert "8 of 8 studies scored" in table and "UNVERIFIED" in table and plots
    with pytest.raises(LabError, match="No such folder.*Make a sample set"):
        evaluation_inputs(paths, str(home / "phantoms" / "missing"), "")
    with pytest.raises(LabError, match="choose a model"):
        make_sample(home, None)


# Emoji, pictographs, dingbats, arrows-and-symbols supplements and the emoji presentation
# selector: Debian's default fonts (DejaVu) have no emoji, so chromium draws these as empty boxes.
NO_FONT_RANGES = [(0x1F000, 0x1FAFF), (0x2600, 0x27BF), (0x2B00, 0x2BFF), (0xFE0F, 0xFE0F)]


def _glyphs_without_a_font(text: str) -> list[str]:
    """Characters in NO_FONT_RANGES, written as themselves or as a Python/JS escape or an HTML
    character reference."""
    import re

    escaped = r"\\U([0-9a-fA-F]{8})|\\u\{([0-9a-fA-F]+)\}|\\u([0-9a-fA-F]{4})|&#[xX]([0-9a-fA-F]+);"
    codes = [ord(ch) for ch in text]
    codes += [int("".join(groups), 16) for groups in re.findall(escaped, text)]
    codes += [int(d) for d in re.findall(r"&#([0-9]+);", text)]
    return [f"U+{c:04X}" for c in codes if any(lo <= c <= hi for lo, hi in NO_FONT_RANGES)]


def test_the_page_has_no_glyphs_that_debian_fonts_lack():
    """Issue 25, item 4: every user-visible string of the page, its sign-off panel, live
    dictation, the login page and the browser code, scanned for emoji and dingbats."""
    from readingroom.settings import PROJECT_ROOT

    sample = "ok \u26d4 \\u2705 &#x274C; &#127897; \\U0001F399 \\u{1F3A4} \u2764\ufe0f \u25cf \u2026 \u2192"
    assert sorted(_glyphs_without_a_font(sample)) == sorted(["U+26D4", "U+2764", "U+FE0F", "U+2705", "U+274C",
                                                             "U+1F399", "U+1F399", "U+1F3A4"])
    root = PROJECT_ROOT / "workstation"
    files = sorted([*root.glob("*.py"), *(p for p in (root / "static").iterdir() if p.is_file()),
                    PROJECT_ROOT / "dictation" / "live.py"])   # what live dictation shows on the page
    assert {p.name for p in files} >= {"pages.py", "signoff.py", "live.py", "web.py", "viewer.js", "workstation.css"}
    found = {str(p.relative_to(PROJECT_ROOT)): bad for p in files if (bad := _glyphs_without_a_font(p.read_text()))}
    assert not found, f"characters Debian's fonts cannot draw (use text or inline SVG): {found}"
