"""One module per DVID datatype family; each class wraps one data instance on one node."""
