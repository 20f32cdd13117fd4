"""Several processes: torchrun process groups and rank helpers (`ranks`), ddp / fsdp2 model
preparation (`sharding`), and checkpoints of sharded models (`checkpoint`)."""
