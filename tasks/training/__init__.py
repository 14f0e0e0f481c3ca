"""Training sets and their split, and the trainers (LightGBM, PyTorch on Horovod/DDP)."""
