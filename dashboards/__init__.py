"""The dashboards that ship with the gateway, installed as the package `gateway.shipped_dashboards`
(pyproject.toml maps it onto this directory) so that the default `panels.dashboards_dir` finds
them wherever the gateway is installed. The gateway reads only the *.yml and *.yaml files here."""
