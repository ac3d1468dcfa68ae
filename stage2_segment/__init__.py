"""Stage two: dense CLIP features, subclass assembly, refinement and benchmark-exact mIoU."""
