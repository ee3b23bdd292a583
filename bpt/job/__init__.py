"""The job: its spec (jobspec) and recipe parameters (recipe), its state machine
(lifecycle), the reconciler's decisions (reconcile), where a resumed job picks up
(resume), and its metrics (metrics).

Pure and torch-free: read-only commands (`bpt jobs`, `status`, `workers`) import it
without torch; broker/ applies its decisions in Redis.
"""
