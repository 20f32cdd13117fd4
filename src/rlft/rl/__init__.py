"""The RL loop: `loop.rl_step` (the eight stages of a step) and `loop.train_rl`; the stages' parts:
`setup` (building a run), `collect` (rollouts and scores), `update` (gradient epochs), `trpo`
(the trust-region update), `eval` (held-out evaluation), `records` (what a step logs), `state`
(what a checkpoint carries). The loop around the steps is the shared run shell (rlft.runtime.shell)."""
