"""Planning and simulating work across workers: subsets and waves (partition), IDPA's
increments (idpa), weight shards (sharding), and the pure simulator (simulator); the
emulator (emulator) and the DDP and local-SGD baselines (baselines) run the workers' own
training code on a virtual clock (torch, no Redis, no Celery).
"""
