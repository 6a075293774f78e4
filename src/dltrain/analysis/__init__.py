"""Analysis tools that read trained runs: the curvature of the training loss and its landscape."""
