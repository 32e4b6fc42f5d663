"""The reading workstation: the web page (Gradio), its routes, the viewer and the browser code.

- ``pages``: assembles the page from one module per tab: ``tab_worklist``, ``tab_reading``
  (viewer, dictation, sign-off), ``tab_requests`` (order review), ``tab_lab`` (model evaluation
  and the simulator), ``tab_admin``; what the tabs share is ``page_context``;
- ``web``: login, sessions, the viewer's slice and heatmap routes, the microphone route;
- ``viewer``: DICOM series -> windowed slices and heatmap overlays (read by ``models.series``);
- ``signoff``, ``lab``: what the sign-off panel and the Lab tab show;
- ``static/``: the browser side.

The submodules are imported where they are used: importing ``workstation`` loads no Gradio.
"""

__all__ = ["lab", "page_context", "pages", "signoff", "tab_admin", "tab_lab", "tab_reading", "tab_requests",
           "tab_worklist", "viewer", "web"]
