"""Building blocks that the config names: activations, initialisers, norms, regularisers, losses, metrics."""
