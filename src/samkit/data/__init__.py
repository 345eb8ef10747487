"""Datasets: the synthetic scene generator and COCO-format reading/writing."""
