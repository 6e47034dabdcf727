"""mmmos.models."""
