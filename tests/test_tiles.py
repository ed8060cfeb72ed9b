"""imagetile and the PNG codec: metadata, tiles in every plane and scale, decoding — against the real server."""

from __future__ import annotations

import struct
import sys
import zlib

import numpy as np
import pytest

from dvid_store import BadRequestError, DvidInputError, LockedNodeError, Node, NotFoundError, UnsupportedError
from dvid_store.codecs.png import PngError, decode_png, encode_png
from dvid_store.datatypes.tiles import TileLevel, TileMetadata, Tiles, decode_tile

PLANES = ("xy", "xz", "yz")


def png_filter_types(png: bytes) -> set[int]:
    """The row filter types used in a (non-interlaced) PNG."""
    pos, idat, height = 8, b"", 0
    while pos < len(png):
        length, kind = struct.unpack(">I4s", png[pos : pos + 8])
        body = png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            height = struct.unpack(">I", body[4:8])[0]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    return set(raw[:: len(raw) // height])


def handmade_png(width: int, height: int, depth: int, color: int, rows: np.ndarray, *, plte=None, trns=None,
                 interlace: int = 0) -> bytes:
    """A PNG assembled directly from the spec (filter type 0 scanlines), independent of the codec under test."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    scanlines = b"".join(b"\x00" + row.tobytes() for row in rows)
    header = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, interlace)
    parts = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", header)]
    if plte is not None:
        parts.append(chunk(b"PLTE", plte.astype(np.uint8).tobytes()))
    if trns is not None:
        parts.append(chunk(b"tRNS", bytes(trns)))
    parts += [chunk(b"IDAT", zlib.compress(scanlines)), chunk(b"IEND", b"")]
    return b"".join(parts)


@pytest.fixture
def tiles(dvid_node: Node) -> Tiles:
    t = Tiles.create(dvid_node, "tiles")
    # Tile sizes differ per axis and between scales 0 and 1, so a mixed-up axis shows.
    t.set_metadata(
        TileMetadata(
            {
                0: TileLevel((40, 8, 8), (4, 8, 16)),
                1: TileLevel((80, 16, 16), (6, 10, 12)),
                2: TileLevel((160, 32, 32), (6, 10, 12)),
            },
            min_tile_coord=(0, 0, 0),
            max_tile_coord=(9, 9, 9),
        )
    )
    return t


# ------------------------------------------------------------------- codec
@pytest.mark.parametrize(
    ("shape", "dtype"),
    [((37, 53), np.uint8), ((37, 53), np.uint16), ((20, 31, 2), np.uint8), ((20, 31, 3), np.uint8),
     ((20, 31, 4), np.uint8), ((9, 7, 3), np.uint16), ((9, 7, 4), np.uint16), ((1, 1), np.uint8)],
)
def test_png_round_trip_with_every_filter(shape, dtype) -> None:
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True, dtype=dtype)
    image[::3] //= 5
    per_row = rng.integers(0, 5, size=shape[0])
    for filters in (0, 1, 2, 3, 4, per_row):
        png = encode_png(image, filters=filters)
        assert png_filter_types(png) == set(np.broadcast_to(filters, (shape[0],)).tolist())
        decoded = decode_png(png)
        assert decoded.dtype == dtype and np.array_equal(decoded, image)
    assert np.array_equal(decode_png(encode_png(image > image.mean())), (image > image.mean()) * np.uint8(255))


def test_png_decodes_what_dvid_encodes(dvid_node: Node) -> None:
    """DVID's Go encoder picks filters per row (Sub, Up, Average, Paeth): the real oracle."""
    z, y, x = np.mgrid[0:32, 0:32, 0:64]
    rng = np.random.default_rng(0)
    base = (x * 3 + y * 5 + z) % 200 + rng.integers(0, 20, size=(32, 32, 64))
    # Rows that ramp along x from random levels: there Sub beats every other filter.
    base[:, ::2, :] = x[:, ::2, :] + rng.integers(0, 150, size=(32, 16, 1))
    used: set[int] = set()
    for typename, dtype in (("uint8blk", np.uint8), ("uint16blk", np.uint16), ("rgba8blk", np.uint32)):
        dvid_node.create_instance(typename, typename)
        volume = base.astype(dtype) * (257 if dtype == np.uint16 else 1)
        if dtype == np.uint32:
            volume = volume | (volume << 8) | (np.uint32(255) << 24)  # opaque colours
        dvid_node.custom_request(f"/{typename}/raw/0_1_2/64_32_32/0_0_0", volume.tobytes(), "POST")
        for plane, size, offset, expected in (
            ("0_1", "64_32", "0_0_5", volume[5]),
            ("0_2", "64_32", "0_7_0", volume[:, 7, :]),
            ("1_2", "32_32", "9_0_0", volume[:, :, 9]),
        ):
            png = dvid_node.custom_request(f"/{typename}/raw/{plane}/{size}/{offset}/png")
            used |= png_filter_types(png)
            decoded = decode_png(png)
            if dtype == np.uint32:  # Go drops the opaque alpha: RGB
                expected = expected[..., None].view(np.uint8)[..., :3]
            assert decoded.dtype == (np.uint8 if dtype == np.uint32 else dtype)
            assert np.array_equal(decoded, expected)
    assert used >= {1, 2, 3, 4}


def test_png_palette_sub_byte_and_transparency() -> None:
    rng = np.random.default_rng(2)
    # 2-bit grayscale, 19 px wide: rows are packed MSB first and padded.
    gray2 = rng.integers(0, 4, size=(5, 19), dtype=np.uint8)
    padded = np.zeros((5, 20), dtype=np.uint8)
    padded[:, :19] = gray2
    packed = (padded.reshape(5, 5, 4) << np.array([6, 4, 2, 0], dtype=np.uint8)).sum(axis=2).astype(np.uint8)
    assert np.array_equal(decode_png(handmade_png(19, 5, 2, 0, packed)), gray2)
    # 1-bit grayscale.
    bits = rng.integers(0, 2, size=(3, 13), dtype=np.uint8)
    assert np.array_equal(decode_png(handmade_png(13, 3, 1, 0, np.packbits(bits, axis=1))), bits)
    # 4-bit palette, with and without tRNS.
    palette = rng.integers(0, 256, size=(6, 3))
    index = rng.integers(0, 6, size=(4, 10), dtype=np.uint8)
    packed4 = (index[:, 0::2] << 4) | index[:, 1::2]
    assert np.array_equal(decode_png(handmade_png(10, 4, 4, 3, packed4, plte=palette)), palette[index])
    rgba = decode_png(handmade_png(10, 4, 4, 3, packed4, plte=palette, trns=[0, 128]))
    alpha = np.array([0, 128, 255, 255, 255, 255])[index]
    assert np.array_equal(rgba[..., :3], palette[index]) and np.array_equal(rgba[..., 3], alpha)


def test_png_errors() -> None:
    good = encode_png(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(PngError, match="signature"):
        decode_png(b"GIF89a" + good)
    corrupt = bytearray(good)
    corrupt[20] ^= 1  # inside IHDR
    with pytest.raises(PngError, match="CRC"):
        decode_png(bytes(corrupt))
    with pytest.raises(PngError, match="truncated"):
        decode_png(good[:30])
    interlaced = handmade_png(2, 2, 8, 0, np.zeros((2, 2), dtype=np.uint8), interlace=1)
    with pytest.raises(UnsupportedError, match="interlaced"):
        decode_png(interlaced)
    for bad in (np.zeros((4, 4), dtype=np.float32), np.zeros((4, 4, 5), dtype=np.uint8), np.zeros((0, 4), np.uint8)):
        with pytest.raises(DvidInputError):
            encode_png(bad)
    with pytest.raises(DvidInputError, match="filter"):
        encode_png(np.zeros((2, 2), dtype=np.uint8), filters=5)


# ---------------------------------------------------------------- metadata
def test_metadata_round_trip(dvid_node: Node, tiles: Tiles) -> None:
    fresh = dvid_node.tiles("tiles")
    assert fresh.metadata == tiles.metadata
    assert fresh.metadata.levels[1] == TileLevel((80, 16, 16), (6, 10, 12))
    assert fresh.metadata.max_tile_coord == (9, 9, 9)
    raw = dvid_node.transport.get_json(fresh.path("metadata"))
    assert raw["Levels"]["0"]["TileSize"] == [16, 8, 4]  # DVID keeps x, y, z
    pyramid = TileMetadata.pyramid(512, (40, 8, 8), num_levels=3)
    assert TileMetadata.from_json(pyramid.to_json()) == pyramid
    assert pyramid.levels[2].resolution == (160, 32, 32)
    assert (fresh.format, fresh.source) == ("png", "")


def test_metadata_must_be_set_first(dvid_node: Node) -> None:
    bare = Tiles.create(dvid_node, "bare")
    with pytest.raises(BadRequestError, match="not set"):
        _ = bare.metadata
    with pytest.raises(BadRequestError, match="metadata"):
        bare.tile("xy", 0, (0, 0, 0))
    with pytest.raises(DvidInputError, match="set_metadata"):
        bare.post_tile("xy", 0, (0, 0, 0), np.zeros((8, 8), np.uint8))


@pytest.mark.parametrize(
    ("levels", "message"),
    [
        ({1: TileLevel((8, 8, 8), (8, 8, 8))}, "consecutive"),
        ({}, "consecutive"),
        ({0: TileLevel((8, 8, 8), (8, 8, 8)), 1: TileLevel((12, 16, 16), (8, 8, 8))}, "whole multiple"),
        ({0: TileLevel((8, 8, 8), (8, 8, 8)), 1: TileLevel((4, 8, 8), (8, 8, 8))}, "whole multiple"),
    ],
)
def test_bad_metadata_is_refused(levels, message: str) -> None:
    with pytest.raises(DvidInputError, match=message):
        TileMetadata(levels)


def test_bad_levels_are_refused() -> None:
    with pytest.raises(DvidInputError, match="resolution"):
        TileLevel((0, 8, 8), (8, 8, 8))
    with pytest.raises(DvidInputError, match="tile_size"):
        TileLevel((8, 8, 8), (8, 0, 8))


# ------------------------------------------------------------------- tiles
def test_every_plane_and_scale_round_trips(tiles: Tiles) -> None:
    rng = np.random.default_rng(4)
    for plane in PLANES:
        for scale in (0, 1, 2):
            shape = tiles.metadata.tile_shape(plane, scale)
            image = rng.integers(0, 256, size=shape, dtype=np.uint8)
            tiles.post_tile(plane, scale, (3, 2, 1), image)
            got = tiles.tile(plane, scale, (3, 2, 1))
            assert got.shape == shape and np.array_equal(got, image)
            # libdvid's names take the same numbers in (x, y, z) order.
            assert np.array_equal(tiles.get_tile_slice(plane.upper(), scale, (1, 2, 3)), image)
            assert decode_png(tiles.get_tile_slice_binary(plane, scale, [1, 2, 3])).shape == shape


def test_tile_shapes_follow_the_plane_axes(tiles: Tiles) -> None:
    size = tiles.metadata.levels[1].tile_size  # (6, 10, 12) in (z, y, x)
    assert tiles.metadata.tile_shape("xy", 1) == (size[1], size[2])
    assert tiles.metadata.tile_shape("xz", 1) == (size[0], size[2])
    assert tiles.metadata.tile_shape("yz", 1) == (size[0], size[1])
    for plane in PLANES:  # blank tiles come in the same shapes
        assert tiles.tile(plane, 1, (0, 0, 0)).shape == tiles.metadata.tile_shape(plane, 1)


def test_coordinates_map_to_dvids_x_y_z(dvid_node: Node, tiles: Tiles) -> None:
    shape = tiles.metadata.tile_shape("xy", 0)
    coords = [(1, 2, 3), (3, 2, 1), (2, 1, 3), (1, 3, 2)]
    images = {c: np.full(shape, 10 * (i + 1), dtype=np.uint8) for i, c in enumerate(coords)}
    for coord, image in images.items():
        tiles.post_tile("xy", 0, coord, image)
    for (z, y, x), image in images.items():
        assert np.array_equal(tiles.tile("xy", 0, (z, y, x)), image)
        raw = dvid_node.custom_request(f"/tiles/tile/xy/0/{x}_{y}_{z}")  # DVID's own order
        assert np.array_equal(decode_png(raw), image)


def test_stored_bytes_come_back_verbatim(tiles: Tiles) -> None:
    shape = tiles.metadata.tile_shape("xz", 0)
    png = encode_png(np.arange(np.prod(shape), dtype=np.uint8).reshape(shape), filters=4, level=9)
    tiles.post_tile("xz", 0, (0, 5, 0), png)
    assert tiles.tile_binary("xz", 0, (0, 5, 0)) == png
    # 16-bit and colour PNG tiles are stored and decoded too.
    deep = np.arange(np.prod(shape), dtype=np.uint16).reshape(shape) * 300
    tiles.post_tile("xz", 0, (0, 6, 0), deep)
    assert np.array_equal(tiles.tile("xz", 0, (0, 6, 0)), deep)
    colour = np.dstack([deep.astype(np.uint8)] * 3)
    tiles.post_tile("xz", 0, (0, 7, 0), colour)
    assert np.array_equal(tiles.tile("xz", 0, (0, 7, 0)), colour)


def test_missing_tiles(tiles: Tiles) -> None:
    blank = tiles.tile("yz", 2, (4, 4, 100))
    assert blank.shape == tiles.metadata.tile_shape("yz", 2) and not blank.any()
    with pytest.raises(NotFoundError, match="no yz tile"):
        tiles.tile("yz", 2, (4, 4, 100), blank_missing=False)
    with pytest.raises(BadRequestError, match="scale"):
        tiles.tile("xy", 7, (0, 0, 0))  # not one of the metadata's scales


def test_bad_tiles_are_refused_before_sending(dvid_node: Node, tiles: Tiles) -> None:
    _ = tiles.metadata  # cached: the checks below need no request
    shape = tiles.metadata.tile_shape("xy", 0)
    good = np.zeros(shape, dtype=np.uint8)
    sent = dvid_node.transport.requests_sent
    cases = [
        (lambda: tiles.post_tile("xy", 0, (0, 0, 0), np.zeros((shape[1], shape[0]), np.uint8)), "shape"),
        (lambda: tiles.post_tile("xy", 0, (0, 0, 0), encode_png(np.zeros((2, 2), np.uint8))), "need"),
        (lambda: tiles.post_tile("xy", 0, (0, 0, 0), b"\xff\xd8\xff\xe0 jpeg"), "not a PNG"),
        (lambda: tiles.post_tile("xy", 0, (0, 0, 0), "text"), "numpy array"),
        (lambda: tiles.post_tile("xy", 3, (0, 0, 0), good), "scale 3"),
        (lambda: tiles.post_tile("xy", 0, (0, -1, 0), good), "negative"),
        (lambda: tiles.post_tile("ab", 0, (0, 0, 0), good), "plane"),
        (lambda: tiles.tile("xy", -1, (0, 0, 0)), "scale"),
        (lambda: tiles.tile("xy", 0, (0, 0)), "3 values"),
        (lambda: tiles.get_tile_slice("xy", 0, (0, 0)), "tile_loc"),
    ]
    for call, message in cases:
        with pytest.raises(DvidInputError, match=message):
            call()
    assert dvid_node.transport.requests_sent == sent


def test_locked_node_refuses_tile_writes(dvid_node: Node, tiles: Tiles) -> None:
    image = np.zeros(tiles.metadata.tile_shape("xy", 0), dtype=np.uint8)
    tiles.post_tile("xy", 0, (0, 0, 0), image + 7)
    dvid_node.commit("done")
    with pytest.raises(LockedNodeError):
        tiles.post_tile("xy", 0, (0, 0, 0), image)
    with pytest.raises(LockedNodeError):
        tiles.set_metadata(tiles.metadata)
    assert np.array_equal(tiles.tile("xy", 0, (0, 0, 0)), image + 7)


def test_lz4_instances_cannot_take_client_tiles(dvid_node: Node) -> None:
    lz4 = Tiles.create(dvid_node, "packed", format="lz4")
    lz4.set_metadata(TileMetadata.pyramid(8, 8))
    assert lz4.format == "lz4"
    with pytest.raises(UnsupportedError, match="lz4"):
        lz4.post_tile("xy", 0, (0, 0, 0), np.zeros((8, 8), np.uint8))


def test_jpeg_tiles(dvid_node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    # A real JPEG, made by DVID itself from grayscale voxels.
    dvid_node.create_instance("uint8blk", "gray")
    gray = np.add.outer(np.arange(32), np.arange(32)).astype(np.uint8)
    volume = np.broadcast_to(gray, (32, 32, 32)).copy()
    dvid_node.custom_request("/gray/raw/0_1_2/32_32_32/0_0_0", volume.tobytes(), "POST")
    jpeg = dvid_node.custom_request("/gray/raw/0_1/32_32/0_0_0/jpg")
    jpg_tiles = Tiles.create(dvid_node, "jtiles", format="jpg")
    jpg_tiles.set_metadata(TileMetadata.pyramid(32, 8))
    assert jpg_tiles.format == "jpg"
    jpg_tiles.post_tile("xy", 0, (0, 0, 0), jpeg)
    assert jpg_tiles.tile_binary("xy", 0, (0, 0, 0)) == jpeg
    with pytest.raises(DvidInputError, match="not a JPEG"):
        jpg_tiles.post_tile("xy", 0, (0, 0, 0), encode_png(gray))
    # A missing tile of a jpg instance is still a blank PNG: decodable without Pillow.
    assert not jpg_tiles.tile("xy", 0, (0, 0, 9)).any()
    try:
        import PIL  # noqa: F401
    except ImportError:
        with pytest.raises(UnsupportedError, match="Pillow"):
            jpg_tiles.tile("xy", 0, (0, 0, 0))
    else:
        decoded = jpg_tiles.tile("xy", 0, (0, 0, 0))
        assert decoded.shape == (32, 32) and np.abs(decoded.astype(int) - gray).max() <= 8
        jpg_tiles.post_tile("xy", 0, (1, 0, 0), gray)  # arrays are JPEG-encoded with Pillow
        assert np.abs(jpg_tiles.tile("xy", 0, (1, 0, 0)).astype(int) - gray).max() <= 8
        # Without Pillow, JPEG is refused with advice; PNG keeps working.
        monkeypatch.setitem(sys.modules, "PIL", None)
        with pytest.raises(UnsupportedError, match="Pillow"):
            jpg_tiles.tile("xy", 0, (0, 0, 0))
        with pytest.raises(UnsupportedError, match="Pillow"):
            jpg_tiles.post_tile("xy", 0, (2, 0, 0), gray)
        assert not jpg_tiles.tile("xy", 0, (0, 0, 9)).any()
    with pytest.raises(DvidInputError, match="neither PNG nor JPEG"):
        decode_tile(b"GIF89a")


def test_tiles_pickle_as_configuration(tiles: Tiles) -> None:
    import pickle

    copy = pickle.loads(pickle.dumps(tiles))
    assert copy == tiles and copy._metadata is None  # the tiling is fetched again, not carried
    assert copy.metadata == tiles.metadata


def test_stitched_images_come_from_the_tiles(dvid_node: Node) -> None:
    dvid_node.create_instance("uint8blk", "gray")  # DVID needs a source to stitch
    stitched = Tiles.create(dvid_node, "stitched", source="gray")
    assert stitched.source == "gray"
    stitched.set_metadata(TileMetadata.pyramid(16, 8))
    rng = np.random.default_rng(8)
    cases = {"xy": ((5, 3, 7), (6, 29, 30)), "xz": ((3, 4, 7), (29, 5, 30)), "yz": ((3, 7, 9), (29, 30, 10))}
    for plane, box in cases.items():
        mosaic = rng.integers(0, 256, size=(32, 32), dtype=np.uint8)  # 2 × 2 tiles
        rows, cols = {"xy": (1, 2), "xz": (0, 2), "yz": (0, 1)}[plane]
        across = 3 - rows - cols
        for r in range(2):
            for c in range(2):
                coord = [0, 0, 0]
                coord[rows], coord[cols], coord[across] = r, c, box[0][across]
                stitched.post_tile(plane, 0, coord, mosaic[16 * r : 16 * (r + 1), 16 * c : 16 * (c + 1)])
        (start, stop) = box
        expected = mosaic[start[rows] : stop[rows], start[cols] : stop[cols]]
        assert np.array_equal(stitched.stitch(plane, box), expected)
    with pytest.raises(DvidInputError, match="one voxel thick"):
        stitched.stitch("xy", ((0, 0, 0), (2, 4, 4)))
    with pytest.raises(DvidInputError, match="negative"):
        stitched.stitch("xy", ((0, -1, 0), (1, 4, 4)))
    plain = Tiles.create(dvid_node, "plain")
    with pytest.raises(DvidInputError, match="source"):
        plain.stitch("xy", ((0, 0, 0), (1, 4, 4)))
