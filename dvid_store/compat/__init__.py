"""Drop-in replacements for the two DVID clients dvid_store replaces.

* :mod:`dvid_store.compat.pydvid` — pydvid's modules and names (``general``,
  ``voxels`` with ``VoxelsAccessor`` and ``VoxelsMetadata``, ``keyvalue``,
  ``errors``, ...): a pydvid script, ported to Python 3, runs with only its import
  lines changed.
* :mod:`dvid_store.compat.libdvid` — libdvid's Python bindings (``DVIDNodeService``,
  ``DVIDServerService``, ``DVIDConnection``, ``DVIDException``, ``ConnectionMethod``,
  ``Slice2D``, ``Vertex``, ``Edge``), with libdvid's signatures, defaults and
  return values.

Both are thin layers over dvid_store's node API (:class:`~dvid_store.DvidClient`,
:class:`~dvid_store.Node` and the datatype classes): every request goes through the
same HTTP core, with its retries, deadlines and integrity checks. Where DVID v1.0.0
cannot do what the old client did (the ``labelgraph`` datatype is gone), the call
raises the old client's own error type with the explanation. The migration page of
the documentation lists every mapping.
"""
