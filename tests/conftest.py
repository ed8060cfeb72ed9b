"""The DVID fixtures come from dvid_store's own pytest plugin (entry point ``pytest11``)."""

pytest_plugins = ["pytester"]
