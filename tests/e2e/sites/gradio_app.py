"""A minimal real Gradio image app for the tests: `python gradio_app.py PORT [LATENCY_S]`, on 127.0.0.1 only.

It makes each prompt's image with tabfleetd's deterministic renderer and serves it as a file, so the
bytes a worker saves can be compared with render_png(prompt). "[[error]]" in a prompt raises a Gradio
error (a toast and an "Error" badge by the result); "[[policy]]" raises one about the content policy.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
from pathlib import Path

import uvicorn.config

# Gradio needs no websockets, and uvicorn's automatic choice imports an API that pyppeteer's pinned,
# older websockets package lacks: serve plain HTTP (Gradio streams over server-sent events).
uvicorn.config.WS_PROTOCOLS["auto"] = None

import gradio as gr  # noqa: E402  (after the patch above)

from tabfleetd.demo.demoimage import render_png  # noqa: E402

OUT = Path(tempfile.mkdtemp(prefix="tf-gradio-"))


def generate(prompt: str, latency: float) -> str:
    time.sleep(latency)
    if "[[error]]" in prompt:
        raise gr.Error("Something went wrong while generating the image")
    if "[[policy]]" in prompt:
        raise gr.Error("This request may violate our content policy")
    path = OUT / f"{hashlib.sha256(prompt.encode()).hexdigest()[:16]}.png"
    path.write_bytes(render_png(prompt))
    return str(path)


def main() -> None:
    port, latency = int(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 0.3
    with gr.Blocks(title="tabfleet test app") as app:
        box = gr.Textbox(label="Prompt", elem_id="prompt")
        button = gr.Button("Generate", elem_id="generate")
        result = gr.Image(label="Result", elem_id="result", type="filepath")
        button.click(lambda prompt: generate(prompt, latency), box, result)
    app.launch(server_name="127.0.0.1", server_port=port, share=False, show_error=True, allowed_paths=[str(OUT)])


if __name__ == "__main__":
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    main()
