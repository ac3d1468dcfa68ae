"""Data package: the versioned stage-one prompt templates (`*.md`)."""
