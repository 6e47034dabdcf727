"""mmmos.export."""
