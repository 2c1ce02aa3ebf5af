"""One reconciler per kind, each running one evaluation cycle per object: read the signal, run the engine,
publish. No Kopf in here.

The cluster manager (fed by Kopf's watch events) and local mode (fed by a directory of YAML) drive the
same reconcilers from the same Scheduler; only the backend behind `ports.Sink` differs.
"""
