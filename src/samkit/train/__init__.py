"""Training: prompt simulation, losses and one readable training loop."""
