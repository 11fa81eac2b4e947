"""north room of vpp-gateway."""
