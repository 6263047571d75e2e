"""Δ-IRIS Playground front ends: CLI, session engine, pygame window, web UI.

Importing this package switches off every outbound call of the UI stack (no telemetry, no
version check) before gradio or huggingface_hub are imported anywhere.
"""
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
