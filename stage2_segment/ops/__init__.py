"""The pieces a method is made of: `preprocess` (resize and normalise rules), `text` (text embeddings),
`dense_protocol` (what a dense backbone provides), `assembly` (subclass scores -> class scores) and
`refinement` (CRF, PAMR, closing).
"""
