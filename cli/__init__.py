"""The `adalora-svc` command (cli/main.py): above the packages it starts (api, worker, service), so none of
them imports it."""
