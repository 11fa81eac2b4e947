"""security room of vpp-gateway."""
