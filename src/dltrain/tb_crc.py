"""TensorBoard's record checksums in C.

Without TensorFlow, TensorBoard computes the masked CRC-32C of every record it writes or reads with a
byte-by-byte Python loop (tensorboard/compat/tensorflow_stub/pywrap_tensorflow.py): ~10 µs for a step's
scalars, ~175 µs for a 1 kB histogram, and most of the time it takes to read a run's event files back for
the sweep report. `install()` points TensorBoard's writer and reader at google-crc32c's C implementation of
the same function (tests/test_tb_crc.py checks the two agree); without google-crc32c it changes nothing.
"""
from __future__ import annotations

try:
    from google_crc32c import value as _crc32c
except ImportError:  # pragma: no cover - a dependency; TensorBoard's own loop still works
    _crc32c = None

_MASK = 0xFFFFFFFF


def masked_crc32c(data) -> int:
    """TFRecord's masked CRC-32C: the checksum rotated right by 15 bits plus a constant."""
    x = _crc32c(bytes(data))
    return ((((x >> 15) | (x << 17)) & _MASK) + 0xA282EAD8) & _MASK


def install() -> bool:
    if _crc32c is None:
        return False
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow  # the reader looks it up here
    from tensorboard.summary.writer import record_writer                # the writer imported the name

    pywrap_tensorflow.masked_crc32c = masked_crc32c
    record_writer.masked_crc32c = masked_crc32c
    return True
