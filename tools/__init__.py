"""tools room of vpp-gateway."""
