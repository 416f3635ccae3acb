"""Data simulators for sensors whose real data cannot exist offline (RF, radar, drone acoustics)."""
