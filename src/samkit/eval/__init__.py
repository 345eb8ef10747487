"""Evaluation: prompt placement as in the SAM paper, mIoU by prompt type."""
