#!/usr/bin/env bash
# Stop the one-node SLURM cluster started by slurm-up.sh (jobs are cancelled).
scancel --user="$(id -un)" 2>/dev/null || true
for d in slurmd slurmctld slurmdbd; do pkill -x "$d" 2>/dev/null || true; done
mariadb-admin shutdown 2>/dev/null || true
pkill -x munged 2>/dev/null || true
echo "slurm-down: stopped"
