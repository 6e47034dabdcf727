"""mmmos.runtime."""
