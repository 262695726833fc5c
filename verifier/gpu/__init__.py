"""GPU evidence: the GPUs a session recorded, their SPDM measurements and NVIDIA's RIMs."""
