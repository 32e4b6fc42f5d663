"""The reading workstation: the web page (Gradio), the viewer and live dictation."""
