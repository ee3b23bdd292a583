"""The built-in models' names, without importing torch: `bpt train --help` lists them, and
the train command starts its local workers before it imports torch (bpt.model.registry holds the
models themselves; a test keeps the two in step)."""

BUILTIN_MODELS = ("digits-cnn", "lenet5", "resnet-small")
