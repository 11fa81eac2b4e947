"""gateway room of vpp-gateway."""
