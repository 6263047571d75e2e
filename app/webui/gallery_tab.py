"""The Gallery tab: GIFs exported from the UI and dream GIFs written by training runs."""
from __future__ import annotations

from pathlib import Path

import gradio as gr

from app.webui.common import PRIVATE, UISettings


def gallery_files(settings: UISettings) -> list[Path]:
    """GIFs exported from this UI and those written by training runs (run/media), newest first."""
    files = list(settings.gallery_dir.glob("*.gif")) + list(settings.runs_dir.glob("*/media/*.gif"))
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)


def gallery_tab(settings: UISettings) -> None:
    """Lay out the Gallery tab and wire its events (listed again each time the tab is opened)."""
    with gr.Tab("Gallery", id="gallery", elem_id="tab-gallery") as tab:
        gr.Markdown(f"GIFs exported here (saved in `{settings.gallery_dir}`) and dream GIFs written by training runs.")
        refresh = gr.Button("Refresh", elem_id="btn-gallery-refresh")
        gallery = gr.Gallery(label="GIFs", columns=3, height=420, elem_id="gallery", format="gif",
                             preview=False, object_fit="contain", elem_classes=["pixelated"])
        files = gr.File(label="Download", file_count="multiple", interactive=False, elem_id="gallery-files")

    def load():
        paths = [str(p) for p in gallery_files(settings)[:60]]
        return [(p, Path(p).name) for p in paths], paths or None

    refresh.click(load, None, [gallery, files], api_name="gallery")
    tab.select(load, None, [gallery, files], **PRIVATE)
