"""The TPM's word: wire structures, the AK certificate chain, the quote and PCR arithmetic."""
