"""The Azure platform: a Compute Gallery image and Trusted Launch VMs with Azure's vTPM.

Nothing here is imported until an Azure command runs: the Azure SDK is an optional
extra (``aicert[azure]``) and slow to import. :mod:`.deploy` publishes the image
(:mod:`.vhd`, :mod:`.upload`) and removes what aicert made; :mod:`.vm` creates one VM;
:mod:`.run` runs a job on it; :mod:`.cli` holds ``deploy azure``, ``destroy azure`` and
the Azure half of ``run``.
"""
