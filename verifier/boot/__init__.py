"""What booted: UKI and PE parsing, predicted boot PCRs, firmware replay, reference values."""
