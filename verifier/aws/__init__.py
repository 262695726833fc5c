"""AWS NitroTPM evidence: the Nitro attestation document and what it proves about the AK."""
