"""cim room of vpp-gateway."""
