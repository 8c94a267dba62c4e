"""Frozen reward models scoring (image, prompt) pairs; see registry.REWARD_LOADERS."""
