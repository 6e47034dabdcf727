"""mmmos.calibration."""
