"""pydvid, on dvid_store: ``from dvid_store.compat.pydvid import voxels, general, keyvalue``.

The modules and names of pydvid (janelia-flyem/pydvid), for scripts that used it:

* :mod:`.general` — ``get_server_info``, ``get_server_types``, ``get_repos_info``;
* :mod:`.voxels` — ``VoxelsMetadata`` (with ``create_default_metadata``),
  ``create_new``, ``get_metadata``, ``get_ndarray``, ``post_ndarray``,
  ``VoxelsAccessor`` (numpy slicing, channel first, x, y, z) and ``RoiMaskAccessor``;
* :mod:`.keyvalue` — ``create_new``, ``get_value``, ``put_value``, ``del_value``,
  ``get_keys``, ``get_value_response``;
* :mod:`.labelgraph` — refused: DVID removed the datatype;
* :mod:`.errors` — ``DvidHttpError``, ``UnexpectedResponseError``;
* :mod:`.dvid_connection` — ``DvidConnection``.

Every function takes pydvid's connection argument: an ``http.client.HTTPConnection``
(Python 2's ``httplib``), pydvid's ``DvidConnection``, or a ``"host:port"`` string.
Requests go through dvid_store's node API and HTTP core, not through the connection
object. Differences from pydvid: coordinates may be negative; writes may start and
stop anywhere (DVID v1.0.0 stores whole blocks only, so partly covered blocks are
read, merged and written back); the types are DVID's current ones (``rgba8blk``,
``uint8blk``, ``labelblk``); ``query_args`` take ``throttle`` and ``roi``. The
migration page of the documentation lists every mapping.
"""

from . import dvid_connection, errors, general, keyvalue, labelgraph, voxels

__all__ = ["dvid_connection", "errors", "general", "keyvalue", "labelgraph", "voxels"]
