"""The commands of the ``dvid-store`` tool, one small module per concern.

* :mod:`.common` — the run context, URL targets, argument parsers for points and boxes;
* :mod:`.inspect` — ``info`` and ``ls``;
* :mod:`.journal` — the resumable-transfer journal;
* :mod:`.transfer` — the chunked, parallel transfer engine and ``export``/``import``/``copy``;
* :mod:`.volumes` — local files (zarr, ``.npy``, TIFF) and DVID levels as sources and targets;
* :mod:`.demo` — the README's main job.

:mod:`dvid_store.cli` builds the argument parser and maps errors to exit codes.
"""

__all__: list[str] = []
