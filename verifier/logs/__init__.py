"""The event logs and their replay: the firmware's TCG log and the agent's CEL log."""
