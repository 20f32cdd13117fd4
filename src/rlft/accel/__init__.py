"""Opt-in CPU speed-ups behind one switch (`model.onednn`): fp32 linears on oneDNN, packed and
stacked weights at decode. Invisible to the algorithms: the numbers they compute do not change."""
