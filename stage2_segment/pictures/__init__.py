"""Pictures: `visualize` (prediction and overlay PNGs), `palettes` (the benchmarks' colour tables) and
`compare_pictures` (side-by-side pictures of a comparison).
"""
