"""The certificate itself: DSSE envelope, in-toto statement, provenance, canonical JSON."""
