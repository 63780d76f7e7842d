"""What a bare ``nostride compare`` runs (no PyTorch import here: ``--help`` shows these)."""

# a strided ResNet-18 against ResNet18-SPD at a CPU-sized width (8) on the built-in low-resolution set,
# sized to finish in a few minutes on a 2-core CPU
DEFAULT_MODELS = "resnet18@width=8,resnet18_spd@width=8"
DEFAULT_DATA = "builtin:lowres"
DEFAULT_SEEDS = 3
