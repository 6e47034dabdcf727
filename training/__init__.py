"""mmmos.training."""
