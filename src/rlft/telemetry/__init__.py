"""What a run reports: metrics files and loggers (`metrics`, `backends`), per-step diagnostics,
training-health alarms, and performance accounting (`perf`)."""
