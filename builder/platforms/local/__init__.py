"""The local platform: QEMU + OVMF + swtpm, a local vTPM CA and its PKI responder.

It imitates Azure Trusted Launch on this machine: the swtpm is provisioned like
Azure's vTPM (:mod:`.provision`, :mod:`.ca`), the image boots in QEMU (:mod:`.qemu`),
and the agent fetches its AK certificate's issuer from :mod:`.pki_responder`.
"""
