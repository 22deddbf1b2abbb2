"""Network: the recurrent cells from their equations, the layers and kernels that run them, the
melody network with its conditions, the short-term model, teacher-forced scoring and checkpoints.
Imports only ``model.representation`` below it."""
