"""``aicert-agent``: the service inside the measured image that runs and measures one job."""
