"""The model rollout: the embedding router, live flags, interleaving and the experiment report."""
