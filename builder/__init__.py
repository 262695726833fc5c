"""``aicert-build``: build the measured OS image, predict its PCRs, run jobs, deploy."""
