"""What every loop runs on: atomic directories (`atomic_fs`), checkpoints (`checkpoint`),
graceful stop on signals (`signals`) and the optimizer with its schedule (`optim`)."""
