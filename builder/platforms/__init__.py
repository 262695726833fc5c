"""Where the measured image boots: one interface (:mod:`.base`), one subpackage per platform.

``local`` boots it in QEMU with OVMF and a swtpm provisioned like Azure's vTPM;
``azure`` publishes it to a Compute Gallery and boots Trusted Launch VMs from it.
"""
