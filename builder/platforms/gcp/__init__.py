"""The GCP platform: a Compute Engine image and Shielded VMs with GCE's vTPM.

Nothing here is imported until a GCP command runs: the Google Cloud SDKs are an
optional extra (``aicert[gcp]``). :mod:`.archive` packs the raw disk as GCE imports it,
:mod:`.deploy` uploads it and creates the image, :mod:`.run` boots one Shielded VM
behind a firewall rule for the caller only, :mod:`.destroy` finds and deletes what
aicert left, :mod:`.cli` holds ``deploy gcp``, ``destroy gcp`` and the GCP half of ``run``.
"""
