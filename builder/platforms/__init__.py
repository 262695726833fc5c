"""Where the measured image boots: one interface (:mod:`.base`), one subpackage per platform.

``local`` boots it in QEMU with OVMF and a swtpm provisioned like Azure's vTPM;
``azure`` publishes it to a Compute Gallery and boots Trusted Launch VMs from it;
``gcp`` publishes a Compute Engine image and boots Shielded VMs; ``aws`` registers an
AMI from an EBS snapshot and boots NitroTPM instances. :mod:`.commands` holds what
their command lines share: the ``deploy`` and ``destroy`` groups and ``run``'s options.
"""
