"""The gateway's decoder: every common format and mode to RGB; bad and oversized input refused cleanly."""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from server.imaging import ImageRejected, open_image, to_model_input

LIMITS = dict(max_bytes=5_000_000, max_pixels=40_000_000)


def decode_image(data: bytes, size: int, max_bytes: int, max_pixels: int):
    """The gateway's two decode steps: the header check, then the pixels."""
    return to_model_input(open_image(data, max_bytes, max_pixels), size)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("im, fmt", [
    (Image.new("RGB", (640, 480), (200, 30, 30)), "JPEG"),
    (Image.new("CMYK", (64, 64), (0, 255, 255, 0)), "JPEG"),
    (Image.new("L", (28, 28), 128), "PNG"),
    (Image.new("I;16", (40, 30), 40000), "PNG"),
    (Image.new("P", (50, 50), 3), "GIF"),
    (Image.new("RGBA", (33, 17), (0, 0, 255, 0)), "PNG"),
    (Image.new("RGB", (100, 50)), "WEBP"),
    (Image.new("RGB", (1, 1)), "BMP"),
    (Image.new("RGB", (9, 9)), "TIFF"),
])
def test_formats_and_modes_become_uint8_rgb_of_the_model_size(im, fmt):
    out = decode_image(encode(im, fmt), 28, **LIMITS)
    assert out.shape == (3, 28, 28) and out.dtype == np.uint8


def test_transparent_pixels_are_white_and_16_bit_is_not_clipped():
    assert decode_image(encode(Image.new("RGBA", (8, 8), (0, 0, 255, 0)), "PNG"), 8, **LIMITS).min() == 255
    grey = np.tile(np.linspace(0, 65535, 32, dtype=np.uint16), (32, 1))
    out = decode_image(encode(Image.fromarray(grey), "PNG"), 32, **LIMITS)
    assert out.min() < 20 and out.max() > 235


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (60, 20), (255, 0, 0))
    im.paste((0, 0, 255), (0, 0, 30, 20))  # left half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    out = decode_image(encode(im, "JPEG", exif=exif.tobytes(), quality=95), 20, **LIMITS)
    assert out[2, 2, 10] > 150 and out[0, 18, 10] > 150  # blue on top, red at the bottom after rotation


def test_animated_gif_uses_its_first_frame():
    frames = [Image.new("P", (16, 16), i) for i in range(3)]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(data, 16, **LIMITS).shape == (3, 16, 16)


@pytest.mark.parametrize("data", [b"", b"not an image", encode(Image.new("RGB", (64, 64)), "JPEG")[:100],
                                  encode(Image.new("RGB", (64, 64)), "PNG")[:60]])
def test_bad_bytes_are_rejected_as_invalid(data):
    with pytest.raises(ImageRejected) as e:
        decode_image(data, 28, **LIMITS)
    assert not e.value.too_large


def test_decompression_bomb_and_oversized_bytes_are_too_large():
    bomb = encode(Image.new("1", (30000, 30000)), "PNG")
    assert len(bomb) < 200_000
    with pytest.raises(ImageRejected) as e:
        decode_image(bomb, 28, **LIMITS)
    assert e.value.too_large
    with pytest.raises(ImageRejected) as e:
        decode_image(b"\0" * 6_000_000, 28, **LIMITS)
    assert e.value.too_large


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_random_bytes_never_crash_the_decoder(data):
    try:
        out = decode_image(data, 28, **LIMITS)
        assert out.shape == (3, 28, 28)
    except ImageRejected:
        pass


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 2000), st.binary(min_size=1, max_size=64))
def test_corrupted_jpeg_never_crashes_the_decoder(cut, noise):
    data = bytearray(encode(Image.new("RGB", (48, 48), (10, 200, 90)), "JPEG"))
    data[cut % len(data): cut % len(data) + len(noise)] = noise
    with contextlib.suppress(ImageRejected):
        decode_image(bytes(data), 28, **LIMITS)
