"""The Gradio demo page. Gradio is imported only here, lazily; nothing imports this package."""
