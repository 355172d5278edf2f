"""Training on Lightning: CPU, one GPU, or many (DDP)."""
