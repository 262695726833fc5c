"""The AWS platform: an EBS-snapshot AMI (UEFI, NitroTPM) and one EC2 instance per run."""
