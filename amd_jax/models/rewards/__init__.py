"""Frozen reward models, by name in registry.py: CLIP scorers of (image, prompt) pairs and class-conditional
classifiers of (image, label) pairs."""
