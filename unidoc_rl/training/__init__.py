"""Around verl's trainer, outside verl's processes: completing a checkpoint's processor files, and the per-step
metrics the verl plugin logs (what runs inside verl is unidoc_rl/verl_plugin/)."""
