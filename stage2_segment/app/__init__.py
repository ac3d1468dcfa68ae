"""`llmseg app`: a local web page (Gradio, the optional `llmseg[app]` extra) over the Python API.

`core` holds everything that does not need Gradio (the model pool, input checks, the request
handler, stage one on the fly), so it is testable without a browser; `ui` builds the page and is
the only module that imports Gradio; `cli` registers the command without importing either.
"""
