"""The Gradio page: layout, event wiring and view formatting over the services."""
