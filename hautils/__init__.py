"""HA Lab Book utilities: labs of real Linux VMs, faults, probes and analysis."""
