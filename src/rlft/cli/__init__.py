"""The `rlft` command: parsing and dispatch (`main`), the training subcommands (`training`)."""
