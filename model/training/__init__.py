"""Training: the training configuration (torch-free: the API reads its defaults), the trainer,
backpropagation through time with clipping, and the gradient diagnostics."""
