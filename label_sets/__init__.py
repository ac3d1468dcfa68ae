"""Data package: `<dataset>/classes.txt` and label sets `<dataset>/<name>.json` (+ `.meta.json`).

It is a package only so that a regular (non-editable) install carries the files along.
"""
