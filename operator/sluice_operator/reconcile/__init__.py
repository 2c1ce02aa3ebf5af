"""One evaluation cycle per object: read the signal, run the engine, publish. No Kopf in here.

The same cycle serves the cluster (Kopf daemons, ConfigMaps, status) and local mode (files), so both
behave the same and the handlers stay thin.
"""
