"""TURN: short-lived credentials (coturn's REST API scheme) and the coturn configuration and
process for a deployment or a local run."""
