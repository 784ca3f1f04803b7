"""Running Francine on one machine: emulators, processes, the local stack."""
