"""Tests of DVID's compressed label block codec (no DVID server needed).

The decoder is checked against DVID's own test vector (a fib19 block encoded by DVID),
against hand-made vectors built field by field from the layout in the DVID API notes
(section 4.4), and against a deliberately naive reference decoder written here, bit by
bit, straight from the layout description.
"""

from __future__ import annotations

import gzip
import struct
import zlib

import numcodecs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dvid_store.codecs import (
    DvidLabelBlockCodec,
    LabelBlockError,
    _labelblock_jit,
    decode_gzipped_label_block,
    decode_label_block,
    encode_gzipped_label_block,
    encode_label_block,
    label_block_labels,
    label_block_shape,
)
from dvid_store.testing.samples import SAMPLE_VOLUMES, sample_path, sample_volume


@pytest.fixture(scope="module", autouse=True, params=["compiled", "numpy"])
def decoder(request: pytest.FixtureRequest):
    """Run every test with each decoder: the numba kernel (if installed) and the numpy one."""
    if request.param == "compiled" and not _labelblock_jit.AVAILABLE:
        pytest.fail("numba is not installed: install dvid_store[fast] (the test extra has it)")
    saved = _labelblock_jit.AVAILABLE
    _labelblock_jit.AVAILABLE = request.param == "compiled"
    yield request.param
    _labelblock_jit.AVAILABLE = saved


SAMPLES = SAMPLE_VOLUMES


# --------------------------------------------------------------------------------------
# Helpers


load_volume = sample_volume


def reference_decode(data: bytes) -> np.ndarray:
    """Slow, obviously-correct decoder following the layout text bit by bit."""
    gx, gy, gz, n = struct.unpack_from("<4I", data, 0)
    pos = 16
    labels = struct.unpack_from(f"<{n}Q", data, pos)
    pos += 8 * n
    out = np.zeros((gz * 8, gy * 8, gx * 8), dtype=np.uint64)
    if n == 1:
        out[...] = labels[0]
        return out
    nsb = gx * gy * gz
    ns = struct.unpack_from(f"<{nsb}H", data, pos)
    pos += 2 * nsb
    idx = struct.unpack_from(f"<{sum(ns)}I", data, pos)
    pos += 4 * sum(ns)
    bitpos = pos * 8
    ip = 0
    sb = 0
    for sz in range(gz):
        for sy in range(gy):
            for sx in range(gx):
                k = ns[sb]
                sub = idx[ip : ip + k]
                ip += k
                sb += 1
                view = out[sz * 8 : sz * 8 + 8, sy * 8 : sy * 8 + 8, sx * 8 : sx * 8 + 8]
                if k == 0:
                    view[...] = 0
                    continue
                if k == 1:
                    view[...] = labels[sub[0]]
                    continue
                bits = (k - 1).bit_length()
                for z in range(8):
                    for y in range(8):
                        for x in range(8):
                            code = 0
                            for _ in range(bits):
                                byte = data[bitpos >> 3]
                                code = (code << 1) | ((byte >> (7 - (bitpos & 7))) & 1)
                                bitpos += 1
                            view[z, y, x] = labels[sub[code]]
                bitpos = (bitpos + 7) & ~7
    assert bitpos == len(data) * 8, "reference decoder did not consume every byte"
    return out


def u32(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}I", *values)


def u16(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}H", *values)


def u64(*values: int) -> bytes:
    return struct.pack(f"<{len(values)}Q", *values)


def split_encoding(data: bytes) -> dict[str, object]:
    """The fields of a full-form encoding, as Python values."""
    gx, gy, gz, n = struct.unpack_from("<4I", data, 0)
    pos = 16
    labels = list(struct.unpack_from(f"<{n}Q", data, pos))
    pos += 8 * n
    nsb = gx * gy * gz
    ns = list(struct.unpack_from(f"<{nsb}H", data, pos))
    pos += 2 * nsb
    idx = list(struct.unpack_from(f"<{sum(ns)}I", data, pos))
    pos += 4 * sum(ns)
    return {"grid": (gx, gy, gz), "labels": labels, "ns": ns, "idx": idx, "values": data[pos:]}


def join_encoding(fields: dict[str, object]) -> bytes:
    gx, gy, gz = fields["grid"]  # type: ignore[misc]
    labels: list[int] = fields["labels"]  # type: ignore[assignment]
    ns: list[int] = fields["ns"]  # type: ignore[assignment]
    idx: list[int] = fields["idx"]  # type: ignore[assignment]
    values: bytes = fields["values"]  # type: ignore[assignment]
    return u32(gx, gy, gz, len(labels)) + u64(*labels) + u16(*ns) + u32(*idx) + values


def roundtrip(block: np.ndarray) -> np.ndarray:
    encoded = encode_label_block(block)
    decoded = decode_label_block(encoded)
    np.testing.assert_array_equal(decoded, block)
    assert decoded.dtype == np.uint64
    assert decoded.shape == block.shape
    return decoded


# --------------------------------------------------------------------------------------
# DVID's own vector and the sample volumes


def test_decode_dvid_fib19_block_reproduces_volume() -> None:
    wire = sample_path("fib19-64x64x64-sample1-block.dat.gz").read_bytes()
    expected = load_volume("fib19-64x64x64-sample1")
    decoded = decode_gzipped_label_block(wire)
    assert decoded.shape == (64, 64, 64)
    assert decoded.dtype == np.uint64
    np.testing.assert_array_equal(decoded, expected)
    raw = zlib.decompress(wire, 31)
    assert len(raw) == 22512
    np.testing.assert_array_equal(decode_label_block(raw), expected)
    np.testing.assert_array_equal(reference_decode(raw), expected)
    np.testing.assert_array_equal(label_block_labels(raw), np.unique(expected))
    assert label_block_shape(raw) == (64, 64, 64)


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_roundtrip(name: str) -> None:
    volume = load_volume(name)
    encoded = encode_label_block(volume)
    np.testing.assert_array_equal(decode_label_block(encoded), volume)
    np.testing.assert_array_equal(reference_decode(encoded), volume)
    wire = encode_gzipped_label_block(volume)
    np.testing.assert_array_equal(decode_gzipped_label_block(wire), volume)


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_labels_from_header(name: str) -> None:
    volume = load_volume(name)
    labels = label_block_labels(encode_label_block(volume))
    np.testing.assert_array_equal(labels, np.unique(volume))
    assert labels.dtype == np.uint64


def test_encoding_size_matches_dvid_for_fib19() -> None:
    # Encodings are not canonical, but the size is: same labels per sub-block.
    volume = load_volume("fib19-64x64x64-sample1")
    assert len(encode_label_block(volume)) == 22512


@pytest.mark.parametrize("name", SAMPLES)
def test_decode_into_views_of_a_larger_volume(name: str) -> None:
    volume = load_volume(name)
    encoded = encode_label_block(volume)
    big = np.full((128, 96, 192), 7, dtype=np.uint64)
    view = big[64:, 16:80, 64:128]
    result = decode_label_block(encoded, out=view)
    assert result is view
    np.testing.assert_array_equal(big[64:, 16:80, 64:128], volume)
    untouched = big.copy()
    untouched[64:, 16:80, 64:128] = 7
    assert (untouched == 7).all()
    contiguous = np.empty((64, 64, 64), dtype=np.uint64)
    wire = encode_gzipped_label_block(volume)
    assert decode_gzipped_label_block(wire, out=contiguous) is contiguous
    np.testing.assert_array_equal(contiguous, volume)


def test_out_with_non_unit_x_stride() -> None:
    block = np.arange(16 * 16 * 16, dtype=np.uint64).reshape(16, 16, 16) // 5
    big = np.zeros((16, 16, 32), dtype=np.uint64)
    decode_label_block(encode_label_block(block), out=big[:, :, ::2])
    np.testing.assert_array_equal(big[:, :, ::2], block)
    assert (big[:, :, 1::2] == 0).all()


def test_out_is_validated() -> None:
    encoded = encode_label_block(np.zeros((16, 16, 16), dtype=np.uint64))
    with pytest.raises(ValueError, match="shape"):
        decode_label_block(encoded, out=np.empty((16, 16, 8), dtype=np.uint64))
    with pytest.raises(TypeError, match="uint64"):
        decode_label_block(encoded, out=np.empty((16, 16, 16), dtype=np.int64))
    readonly = np.empty((16, 16, 16), dtype=np.uint64)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        decode_label_block(encoded, out=readonly)


# --------------------------------------------------------------------------------------
# Hand-made vectors from the layout description (dvid-api.md section 4.4)


def vector_a() -> bytes:
    return (
        u32(2, 2, 2, 2)
        + u64(1, 2)
        + u16(*[1] * 8)
        + u32(0, 1, 0, 1, 0, 1, 0, 1)
    )


def test_vector_a_two_halves() -> None:
    data = vector_a()
    assert len(data) == 80
    expected = np.where(np.arange(16) < 8, 1, 2).astype(np.uint64)
    expected = np.broadcast_to(expected, (16, 16, 16))
    decoded = decode_label_block(data)
    np.testing.assert_array_equal(decoded, expected)
    np.testing.assert_array_equal(reference_decode(data), expected)
    np.testing.assert_array_equal(label_block_labels(data), [1, 2])


def test_vector_b_solid() -> None:
    data = bytes.fromhex("02000000 02000000 02000000 01000000 0700000000000000".replace(" ", ""))
    assert len(data) == 24
    decoded = decode_label_block(data)
    assert decoded.shape == (16, 16, 16)
    assert (decoded == 7).all()
    np.testing.assert_array_equal(label_block_labels(data), [7])
    # The encoder emits exactly this solid form.
    assert encode_label_block(np.full((16, 16, 16), 7, dtype=np.uint64)) == data


def test_vector_c_one_bit_codes() -> None:
    data = u32(2, 2, 2, 2) + u64(5, 9) + u16(2, 1, 1, 1, 1, 1, 1, 1) + u32(0, 1, *[0] * 7)
    data += b"\x55" * 64
    assert len(data) == 148
    expected = np.full((16, 16, 16), 5, dtype=np.uint64)
    expected[:8, :8, 1:8:2] = 9
    np.testing.assert_array_equal(decode_label_block(data), expected)
    np.testing.assert_array_equal(reference_decode(data), expected)
    np.testing.assert_array_equal(label_block_labels(data), [5, 9])


def test_vector_e_three_bit_codes_straddle_bytes() -> None:
    values = bytes.fromhex("05380a") * 64
    assert len(values) == 192
    data = (
        u32(2, 2, 2, 5)
        + u64(1, 2, 3, 4, 5)
        + u16(5, 1, 1, 1, 1, 1, 1, 1)
        + u32(0, 1, 2, 3, 4, *[0] * 7)
        + values
    )
    expected = np.ones((16, 16, 16), dtype=np.uint64)
    expected[:8, :8, :8] = np.array([1, 2, 3, 4, 5, 1, 2, 3], dtype=np.uint64)
    np.testing.assert_array_equal(decode_label_block(data), expected)
    np.testing.assert_array_equal(reference_decode(data), expected)
    # Our encoder numbers labels by value, so it writes the same bytes here.
    assert encode_label_block(expected) == data


def test_empty_subblocks_decode_to_zero() -> None:
    # ns == 0 is legal in the format (not produced by DVID's encoder): label 0.
    data = u32(2, 1, 1, 2) + u64(4, 6) + u16(0, 1) + u32(1)
    expected = np.zeros((8, 8, 16), dtype=np.uint64)
    expected[:, :, 8:] = 6
    np.testing.assert_array_equal(decode_label_block(data), expected)
    np.testing.assert_array_equal(reference_decode(data), expected)
    np.testing.assert_array_equal(label_block_labels(data), [0, 6])


# --------------------------------------------------------------------------------------
# Shapes and round trips


@pytest.mark.parametrize(
    "shape",
    [(8, 8, 8), (16, 16, 16), (32, 32, 32), (64, 32, 16), (16, 32, 64), (8, 16, 24), (128, 64, 64)],
)
def test_roundtrip_shapes(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    # Blobs: a coarse random field upsampled, so sub-blocks hold 1 to several labels.
    coarse = rng.integers(0, 6, size=tuple(-(-d // 5) for d in shape), dtype=np.uint64)
    block = coarse.repeat(5, 0).repeat(5, 1).repeat(5, 2)[: shape[0], : shape[1], : shape[2]]
    block = np.ascontiguousarray(block) * np.uint64(1_000_003)
    roundtrip(block)
    encoded = encode_label_block(block)
    if block.size <= 32768:  # the reference decoder is slow
        np.testing.assert_array_equal(reference_decode(encoded), block)
    assert label_block_shape(encoded) == shape


def test_roundtrip_128x64x64_from_samples() -> None:
    a = load_volume("fib19-64x64x64-sample1")
    b = load_volume("cx-64x64x64-sample1")
    block = np.concatenate((a, b), axis=0)
    roundtrip(block)
    wide = np.concatenate((a, b), axis=2)
    roundtrip(wide)


def test_roundtrip_noise_with_very_many_labels() -> None:
    # Every voxel its own label: the encoder's sort-based path for huge label tables,
    # 9-bit codes everywhere.
    rng = np.random.default_rng(7)
    block = rng.permutation(64**3).astype(np.uint64).reshape(64, 64, 64) * np.uint64(2**40 + 1)
    encoded = roundtrip(block)
    fields = split_encoding(encode_label_block(block))
    assert set(fields["ns"]) == {512}  # type: ignore[arg-type]
    np.testing.assert_array_equal(label_block_labels(encode_label_block(block)), np.unique(block))
    # Few distinct labels but noisy: many mixed sub-blocks of every small width.
    noisy = rng.integers(0, 40, size=(64, 64, 64)).astype(np.uint64)
    roundtrip(noisy)
    assert encoded.shape == (64, 64, 64)


def test_accepts_other_integer_dtypes() -> None:
    block = (np.arange(4096).reshape(16, 16, 16) // 300).astype(np.uint16)
    decoded = decode_label_block(encode_label_block(block))
    np.testing.assert_array_equal(decoded, block.astype(np.uint64))
    signed = block.astype(np.int32)
    np.testing.assert_array_equal(decode_label_block(encode_label_block(signed)), decoded)
    big_endian = block.astype(">u8")
    np.testing.assert_array_equal(decode_label_block(encode_label_block(big_endian)), decoded)
    # Non-contiguous input
    wide = np.zeros((16, 16, 32), dtype=np.uint64)
    wide[:, :, ::2] = block
    np.testing.assert_array_equal(decode_label_block(encode_label_block(wide[:, :, ::2])), decoded)


def test_decoder_accepts_buffer_kinds() -> None:
    block = (np.arange(4096, dtype=np.uint64).reshape(16, 16, 16) // 700) + 3
    encoded = encode_label_block(block)
    for data in (
        encoded,
        bytearray(encoded),
        memoryview(encoded),
        np.frombuffer(encoded, dtype=np.uint8),
        # Unaligned start: the tables are read through unaligned views.
        memoryview(b"x" + encoded)[1:],
    ):
        np.testing.assert_array_equal(decode_label_block(data), block)
        np.testing.assert_array_equal(label_block_labels(data), np.unique(block))


def test_decoded_block_owns_its_memory() -> None:
    block = (np.arange(4096, dtype=np.uint64).reshape(16, 16, 16) // 1000) + 1
    encoded = bytearray(encode_label_block(block))
    decoded = decode_label_block(encoded)
    encoded[16:24] = b"\xff" * 8  # scribble over the label table
    np.testing.assert_array_equal(decoded, block)
    decoded[0, 0, 0] = 99  # and the result is writeable


# --------------------------------------------------------------------------------------
# Duplicate and stale label entries


def test_duplicate_and_unused_label_entries() -> None:
    volume = load_volume("fib19-64x64x64-sample1")
    fields = split_encoding(encode_label_block(volume))
    labels: list[int] = fields["labels"]  # type: ignore[assignment]
    idx: list[int] = fields["idx"]  # type: ignore[assignment]
    n = len(labels)
    # Append a duplicate of every label and a stale 0 entry, and point every other
    # index reference at the duplicate: the voxels must not change.
    fields["labels"] = labels + labels + [0, 123456789]
    fields["idx"] = [i + n if j % 2 else i for j, i in enumerate(idx)]
    data = join_encoding(fields)
    np.testing.assert_array_equal(decode_label_block(data), volume)
    np.testing.assert_array_equal(reference_decode(data), volume)
    # The unused entries (0, 123456789) are not reported; duplicates collapse.
    np.testing.assert_array_equal(label_block_labels(data), np.unique(volume))


def test_merge_style_rewrite_in_place() -> None:
    # DVID merges rewrite labels[] in place: the target label can appear twice and a
    # merged label becomes a stale 0 that no index refers to any more.
    block = np.zeros((16, 16, 16), dtype=np.uint64)
    block[:, :, :5] = 10
    block[:, :, 5:11] = 20
    block[:, :, 11:] = 30
    fields = split_encoding(encode_label_block(block))
    assert fields["labels"] == [10, 20, 30]
    fields["labels"] = [10, 10, 30]  # merge 20 into 10 by rewriting its entry
    merged = block.copy()
    merged[merged == 20] = 10
    data = join_encoding(fields)
    np.testing.assert_array_equal(decode_label_block(data), merged)
    np.testing.assert_array_equal(label_block_labels(data), [10, 30])


# --------------------------------------------------------------------------------------
# Property tests

label_values = st.integers(min_value=0, max_value=2**64 - 1)
SHAPES = [(8, 8, 8), (16, 16, 16), (8, 16, 24), (16, 8, 8), (24, 8, 16)]
settings_common = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@st.composite
def few_label_blocks(draw: st.DrawFn) -> np.ndarray:
    shape = draw(st.sampled_from(SHAPES))
    palette = draw(st.lists(label_values, min_size=1, max_size=6, unique=True))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1, 2, 3, 5, 8]))
    coarse = rng.integers(0, len(palette), size=tuple(-(-d // scale) for d in shape))
    field = coarse.repeat(scale, 0).repeat(scale, 1).repeat(scale, 2)
    field = field[: shape[0], : shape[1], : shape[2]]
    return np.array(palette, dtype=np.uint64)[field]


@given(few_label_blocks())
@settings_common
def test_property_few_labels(block: np.ndarray) -> None:
    encoded = encode_label_block(block)
    np.testing.assert_array_equal(decode_label_block(encoded), block)
    np.testing.assert_array_equal(reference_decode(encoded), block)
    np.testing.assert_array_equal(label_block_labels(encoded), np.unique(block))


@given(
    st.sampled_from(SHAPES),
    st.integers(2, 4000),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)
@settings_common
def test_property_many_labels(shape: tuple[int, int, int], n: int, seed: int, high: bool) -> None:
    rng = np.random.default_rng(seed)
    palette = rng.integers(0, 2**63, size=n, dtype=np.uint64)
    if high:
        palette = np.uint64(2**64 - 1) - palette % np.uint64(1000)
    block = palette[rng.integers(0, n, size=shape)]
    roundtrip(block)
    encoded = encode_label_block(block)
    np.testing.assert_array_equal(reference_decode(encoded), block)


@given(st.sampled_from(SHAPES), label_values)
@settings_common
def test_property_single_label_is_solid(shape: tuple[int, int, int], label: int) -> None:
    block = np.full(shape, label, dtype=np.uint64)
    encoded = encode_label_block(block)
    assert len(encoded) == 24
    gz, gy, gx = (d // 8 for d in shape)
    assert encoded == u32(gx, gy, gz, 1) + u64(label)
    np.testing.assert_array_equal(decode_label_block(encoded), block)


@given(st.integers(0, 2**32 - 1), st.integers(0, 7), st.booleans())
@settings_common
def test_property_512_labels_in_one_subblock(seed: int, where: int, near_max: bool) -> None:
    rng = np.random.default_rng(seed)
    base = 2**64 - 600 if near_max else int(rng.integers(0, 2**60))
    block = np.full((16, 16, 16), base + 555, dtype=np.uint64)
    labels = np.uint64(base) + rng.permutation(512).astype(np.uint64)
    z, y, x = (where >> 2) & 1, (where >> 1) & 1, where & 1
    block[z * 8 : z * 8 + 8, y * 8 : y * 8 + 8, x * 8 : x * 8 + 8] = labels.reshape(8, 8, 8)
    encoded = encode_label_block(block)
    fields = split_encoding(encoded)
    assert max(fields["ns"]) == 512  # type: ignore[type-var]
    # 512 codes of 9 bits for the one full sub-block, none for the others.
    assert len(fields["values"]) == 512 * 9 // 8  # type: ignore[arg-type]
    np.testing.assert_array_equal(decode_label_block(encoded), block)
    np.testing.assert_array_equal(reference_decode(encoded), block)


@given(st.sampled_from(SHAPES), st.integers(1, 4), label_values, label_values)
@settings_common
def test_property_checkerboards(shape: tuple[int, int, int], period: int, a: int, b: int) -> None:
    z, y, x = np.indices(shape)
    board = ((z // period + y // period + x // period) % 2).astype(bool)
    block = np.where(board, np.uint64(a), np.uint64(b))
    encoded = encode_label_block(block)
    if a == b:
        assert len(encoded) == 24
    np.testing.assert_array_equal(decode_label_block(encoded), block)
    np.testing.assert_array_equal(reference_decode(encoded), block)


@given(
    st.lists(st.integers(1, 512), min_size=8, max_size=8),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)
@settings_common
def test_property_every_code_width(counts: list[int], seed: int, near_max: bool) -> None:
    # Each of the 8 sub-blocks of a 16^3 block gets its own number of labels, so all
    # code widths 0..9 (1 label .. 257-512 labels) are exercised, mixed in one block.
    rng = np.random.default_rng(seed)
    base = np.uint64(2**64 - 2**20) if near_max else np.uint64(rng.integers(0, 2**40))
    block = np.empty((16, 16, 16), dtype=np.uint64)
    for i, count in enumerate(counts):
        z, y, x = (i >> 2) & 1, (i >> 1) & 1, i & 1
        own = rng.permutation(count)
        codes = np.concatenate((own, rng.integers(0, count, size=512 - count)))
        rng.shuffle(codes)
        labels = base + np.uint64(1000 * i) + codes.astype(np.uint64)
        block[z * 8 : z * 8 + 8, y * 8 : y * 8 + 8, x * 8 : x * 8 + 8] = labels.reshape(8, 8, 8)
    encoded = encode_label_block(block)
    assert sorted(split_encoding(encoded)["ns"]) == sorted(counts)  # type: ignore[type-var]
    np.testing.assert_array_equal(decode_label_block(encoded), block)
    np.testing.assert_array_equal(reference_decode(encoded), block)


@pytest.mark.parametrize(
    "count", [1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 64, 65, 128, 129, 256, 257, 512]
)
def test_code_width_boundaries(count: int) -> None:
    rng = np.random.default_rng(count)
    block = np.full((16, 16, 16), 3, dtype=np.uint64)
    codes = np.concatenate((np.arange(count), rng.integers(0, count, size=512 - count)))
    rng.shuffle(codes)
    block[8:, :8, 8:] = (np.uint64(2**64 - 1) - codes.astype(np.uint64)).reshape(8, 8, 8)
    encoded = encode_label_block(block)
    width = (count - 1).bit_length() if count > 1 else 0
    assert len(split_encoding(encoded)["values"]) == 64 * width  # type: ignore[arg-type]
    np.testing.assert_array_equal(decode_label_block(encoded), block)
    np.testing.assert_array_equal(reference_decode(encoded), block)


@pytest.mark.parametrize("width", [10, 12, 16])
def test_wide_codes_beyond_dvid(width: int) -> None:
    # A sub-block listing more than 512 labels (duplicates) needs > 9-bit codes; DVID
    # never writes that, but the layout defines it and the decoder follows it.
    count = (1 << (width - 1)) + 1
    rng = np.random.default_rng(width)
    codes = rng.integers(0, count, size=512)
    planes = ((codes[:, None] >> np.arange(width - 1, -1, -1)) & 1).astype(np.uint8)
    values = np.packbits(planes.reshape(-1)).tobytes()
    labels = list(range(100, 100 + count))
    data = u32(1, 1, 1, count) + u64(*labels) + u16(count) + u32(*range(count)) + values
    expected = (np.uint64(100) + codes.astype(np.uint64)).reshape(8, 8, 8)
    np.testing.assert_array_equal(decode_label_block(data), expected)
    np.testing.assert_array_equal(reference_decode(data), expected)


# --------------------------------------------------------------------------------------
# Malformed input


# Header and tables of a 16^3 block whose sub-block 0 has 2 labels (64 value bytes).
ONE_BIT_TABLES = u32(2, 2, 2, 2) + u64(1, 2) + u16(2, *[1] * 7) + u32(0, 1, *[0] * 7)


def good_encoding() -> bytes:
    block = np.zeros((16, 16, 16), dtype=np.uint64)
    block[:, :, 3:] = 1
    block[:8, :8, :5] = 2
    block[8:, 8:, 11:] = 3
    block[3, 3, 3] = 4
    return encode_label_block(block)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "only 0 bytes"),
        (u32(2, 2, 2), "only 12 bytes"),
        (u32(2, 2, 2, 0), "N=0"),
        (u32(2, 2, 2, 1), "1 labels"),
        (u32(2, 2, 2, 1) + u64(5) + b"\x00", "trailing"),
        (u32(2, 2, 2, 3) + u64(1, 2), "3 labels"),
        (u32(0, 2, 2, 1) + u64(1), "sub-blocks"),
        (u32(2, 200, 2, 1) + u64(1), "sub-blocks"),
        (u32(2, 2, 2, 2) + u64(1, 2) + u16(1, 1, 1), "8 sub-blocks"),
        (u32(2, 2, 2, 2) + u64(1, 2) + u16(*[1] * 8) + u32(0, 1, 0), "label indices"),
        (u32(2, 2, 2, 2) + u64(1, 2) + u16(*[1] * 8) + u32(0, 1, 0, 1, 0, 1, 0, 2), "entry 2"),
        (ONE_BIT_TABLES + b"\x55" * 63, "truncated"),
        (ONE_BIT_TABLES + b"\x55" * 65, "trailing"),
    ],
)
def test_malformed_input_raises(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        decode_label_block(data)
    with pytest.raises(LabelBlockError):
        decode_label_block(data)


def test_every_truncation_raises() -> None:
    data = good_encoding()
    for cut in range(len(data)):
        with pytest.raises(ValueError):
            decode_label_block(data[:cut])
        if cut >= 16:
            with pytest.raises(ValueError):
                label_block_labels(data[:cut])


@pytest.mark.parametrize("width", [2, 3, 4, 8, 9])
def test_code_beyond_subblock_list_raises(width: int) -> None:
    # A sub-block with count below 2**width whose codes point past its own list.
    count = (1 << (width - 1)) + 1
    codes = np.zeros(512, dtype=np.int64)
    codes[100] = (1 << width) - 1  # out of range: >= count
    planes = ((codes[:, None] >> np.arange(width - 1, -1, -1)) & 1).astype(np.uint8)
    values = np.packbits(planes.reshape(-1)).tobytes()
    labels = list(range(1, count + 1))
    data = u32(2, 1, 1, count) + u64(*labels) + u16(count, 1) + u32(*range(count), 0) + values
    with pytest.raises(ValueError, match="sub-block 0 lists"):
        decode_label_block(data)


def test_gzip_errors() -> None:
    wire = encode_gzipped_label_block(np.ones((16, 16, 16), dtype=np.uint64))
    with pytest.raises(ValueError, match="truncated"):
        decode_gzipped_label_block(wire[:-3])
    with pytest.raises(ValueError, match="not valid gzip"):
        decode_gzipped_label_block(b"not gzip at all")
    with pytest.raises(ValueError, match="not valid gzip"):
        decode_gzipped_label_block(wire + b"junk after the stream")


def test_gzip_multi_member_stream() -> None:
    block = (np.arange(4096, dtype=np.uint64).reshape(16, 16, 16) // 1024) + 1
    raw = encode_label_block(block)
    wire = gzip.compress(raw[:50]) + gzip.compress(raw[50:])
    np.testing.assert_array_equal(decode_gzipped_label_block(wire), block)


def test_gzip_wire_form_is_deterministic_gzip() -> None:
    block = load_volume("cx-64x64x64-sample2")
    wire = encode_gzipped_label_block(block)
    assert wire[:2] == b"\x1f\x8b"
    assert gzip.decompress(wire) == encode_label_block(block)
    assert encode_gzipped_label_block(block) == wire
    for level in (0, 6, 9):
        np.testing.assert_array_equal(
            decode_gzipped_label_block(encode_gzipped_label_block(block, level=level)), block
        )
    with pytest.raises(ValueError, match="level"):
        encode_gzipped_label_block(block, level=10)


@pytest.mark.parametrize(
    "shape", [(16, 16, 12), (7, 8, 8), (0, 8, 8), (8, 8), (8, 8, 8, 8), (1032, 8, 8)]
)
def test_encoder_rejects_bad_shapes(shape: tuple[int, ...]) -> None:
    block = np.zeros(shape, dtype=np.uint64)
    with pytest.raises(ValueError, match=r"\(z, y, x\)") as info:
        encode_label_block(block)
    assert str(shape) in str(info.value)


def test_encoder_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="negative"):
        encode_label_block(np.full((8, 8, 8), -1, dtype=np.int64))
    with pytest.raises(TypeError, match="float"):
        encode_label_block(np.zeros((8, 8, 8), dtype=np.float64))


# --------------------------------------------------------------------------------------
# numcodecs


def test_numcodecs_roundtrip_and_registry() -> None:
    volume = load_volume("fib19-64x64x64-sample2")
    codec = DvidLabelBlockCodec(block_shape=(64, 64, 64))
    encoded = codec.encode(volume)
    assert encoded[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(codec.decode(encoded), volume)

    config = codec.get_config()
    assert config == {
        "id": "dvid_labelblock",
        "block_shape": [64, 64, 64],
        "gzip": True,
        "level": 1,
    }
    clone = numcodecs.get_codec(dict(config))
    assert isinstance(clone, DvidLabelBlockCodec)
    assert clone == codec
    np.testing.assert_array_equal(clone.decode(encoded), volume)

    out = np.empty((64, 64, 64), dtype=np.uint64)
    assert clone.decode(encoded, out=out) is out
    np.testing.assert_array_equal(out, volume)
    flat = np.empty(64**3, dtype=np.uint64)
    clone.decode(encoded, out=flat)
    np.testing.assert_array_equal(flat.reshape(64, 64, 64), volume)
    raw_out = bytearray(8 * 64**3)
    clone.decode(encoded, out=raw_out)
    np.testing.assert_array_equal(np.frombuffer(raw_out, dtype="<u8").reshape(64, 64, 64), volume)


def test_numcodecs_without_gzip_and_other_shapes() -> None:
    block = (np.arange(32 * 16 * 8, dtype=np.uint64).reshape(32, 16, 8) // 100) + 5
    config = {"id": "dvid_labelblock", "block_shape": [32, 16, 8], "gzip": False}
    codec = numcodecs.get_codec(config)
    encoded = codec.encode(block)
    assert encoded == encode_label_block(block)
    np.testing.assert_array_equal(codec.decode(encoded), block)
    # Raw little-endian bytes and flat arrays are accepted as chunks.
    np.testing.assert_array_equal(codec.decode(codec.encode(block.tobytes())), block)
    np.testing.assert_array_equal(codec.decode(codec.encode(block.reshape(-1))), block)
    with pytest.raises(ValueError, match="block_shape"):
        codec.decode(encode_label_block(np.zeros((8, 8, 8), dtype=np.uint64)))
    with pytest.raises(ValueError, match="cannot encode"):
        codec.encode(np.zeros(100, dtype=np.uint64))
    with pytest.raises(ValueError, match="block_shape"):
        DvidLabelBlockCodec(block_shape=(64, 64, 60))


def test_codec_is_found_by_id_without_importing_dvid_store() -> None:
    import subprocess
    import sys

    code = (
        "import sys, numcodecs\n"
        "codec = numcodecs.get_codec({'id': 'dvid_labelblock', 'block_shape': [16, 16, 16]})\n"
        "print(type(codec).__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "dvid_store.codecs.numcodecs_codec"


def test_load_label_block_decoder_names_the_decoder_in_use(decoder: str) -> None:
    from dvid_store.codecs import load_label_block_decoder

    assert load_label_block_decoder() == ("numba" if decoder == "compiled" else "numpy")
    block = np.arange(8**3, dtype=np.uint64).reshape(8, 8, 8) % 3
    np.testing.assert_array_equal(decode_label_block(encode_label_block(block)), block)
