"""Adversarial image inputs: every image kind decodes to uint8 RGB (3, H, W), EXIF orientation, bombs
refused from the header under a memory cap, symlink loops in image folders, extreme aspect ratios."""

import io
import os
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import run_under_memory_cap
from nostride.data.detection.letterbox import letterbox
from nostride.data.io import (
    ImageDecodeError,
    ImageTooLargeError,
    list_images,
    max_image_pixels,
    read_image_rgb,
    read_image_size,
    walk_image_files,
)

Image = pytest.importorskip("PIL.Image")

RNG = np.random.default_rng(0)
RGB = RNG.integers(0, 256, (6, 10, 3), dtype=np.uint8)  # H=6, W=10


def _save(im, path: Path, fmt: str, **kw) -> Path:
    im.save(path, fmt, **kw)
    return path


# ----------------------------------------------------------------------------- image kinds
def _kinds(tmp_path: Path) -> dict[str, tuple[Path, np.ndarray | None]]:
    """name -> (file, expected RGB array or None when only the shape is checked)."""
    rgb = Image.fromarray(RGB)
    grey16 = RNG.integers(0, 65536, (6, 10), dtype=np.uint16)
    pal = rgb.convert("P")
    one = rgb.convert("1")
    la = rgb.convert("LA")
    frames = [pal, Image.fromarray(RGB[::-1].copy()).convert("P")]
    k = {
        "png16": (_save(Image.fromarray(grey16), tmp_path / "g16.png", "PNG"),
                  np.repeat((grey16 >> 8).astype(np.uint8)[..., None], 3, 2)),
        "tiff16": (_save(Image.fromarray(grey16), tmp_path / "g16.tif", "TIFF"),
                   np.repeat((grey16 >> 8).astype(np.uint8)[..., None], 3, 2)),
        "palette": (_save(pal, tmp_path / "p.png", "PNG"), np.asarray(pal.convert("RGB"))),
        "la": (_save(la, tmp_path / "la.png", "PNG"), np.repeat(np.asarray(la)[..., :1], 3, 2)),
        "1bit": (_save(one, tmp_path / "one.png", "PNG"), np.asarray(one.convert("RGB"))),
        "1bit_bmp": (_save(one, tmp_path / "one.bmp", "BMP"), np.asarray(one.convert("RGB"))),
        "cmyk_jpeg": (_save(rgb.convert("CMYK"), tmp_path / "cmyk.jpg", "JPEG", quality=100), None),
        "cmyk_tiff": (_save(rgb.convert("CMYK"), tmp_path / "cmyk.tif", "TIFF"), np.asarray(rgb.convert("CMYK").convert("RGB"))),
        "gif_animated": (_save(frames[0], tmp_path / "anim.gif", "GIF", save_all=True, append_images=frames[1:]),
                         np.asarray(pal.convert("RGB"))),
        "rgba": (_save(rgb.convert("RGBA"), tmp_path / "rgba.png", "PNG"), RGB),
        "bmp": (_save(rgb, tmp_path / "rgb.bmp", "BMP"), RGB),
        "tiff": (_save(rgb, tmp_path / "rgb.tiff", "TIFF"), RGB),
        "webp_lossless": (_save(rgb, tmp_path / "rgb.webp", "WEBP", lossless=True), RGB),
        "jpeg": (_save(rgb, tmp_path / "rgb.jpg", "JPEG"), None),
    }
    return k


def test_every_image_kind_decodes_to_uint8_rgb(tmp_path):
    for name, (path, expected) in _kinds(tmp_path).items():
        img = read_image_rgb(path)
        assert img.dtype == torch.uint8 and tuple(img.shape) == (3, 6, 10), (name, img.dtype, img.shape)
        if expected is not None:
            assert torch.equal(img, torch.from_numpy(expected.copy()).permute(2, 0, 1)), name
    # CMYK JPEG: the same colours as Pillow's conversion, up to JPEG loss
    cmyk = read_image_rgb(tmp_path / "cmyk.jpg").permute(1, 2, 0).numpy().astype(int)
    assert np.abs(cmyk - RGB.astype(int)).mean() < 12


def test_first_frame_of_animation_and_apng(tmp_path):
    a, b = RGB, RGB[::-1].copy()
    Image.fromarray(a).save(tmp_path / "anim.png", "PNG", save_all=True, append_images=[Image.fromarray(b)])
    assert torch.equal(read_image_rgb(tmp_path / "anim.png"), torch.from_numpy(a).permute(2, 0, 1))


@pytest.mark.parametrize("fmt,suffix", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("TIFF", "tif")])
@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_orientation_is_applied(tmp_path, fmt, suffix, orientation):
    from PIL import ImageOps

    im = Image.fromarray(RGB)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.{suffix}"
    kw = {"quality": 100} if fmt == "JPEG" else {"lossless": True} if fmt == "WEBP" else {}
    im.save(path, fmt, exif=exif, **kw)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB"))
    img = read_image_rgb(path)
    assert tuple(img.shape[1:]) == expected.shape[:2] == ((10, 6) if orientation in (6, 8) else (6, 10))
    diff = np.abs(img.permute(1, 2, 0).numpy().astype(int) - expected.astype(int))
    assert diff.mean() < 3  # the same orientation (JPEG decoders may differ by a level)
    assert read_image_size(path) == tuple(img.shape[1:])  # from the header alone


def test_errors_name_the_file(tmp_path):
    bad = {"empty.jpg": b"", "text.png": b"hello, not an image\n", "trunc.png": b"\x89PNG\r\n\x1a\n\x00\x00"}
    png = io.BytesIO()
    Image.fromarray(RGB).save(png, "PNG")
    bad["cut.png"] = png.getvalue()[:60]
    for name, data in bad.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ImageDecodeError, match=str(tmp_path / name).replace("\\", "\\\\")) as e:
            read_image_rgb(tmp_path / name)
        assert "\n" not in str(e.value)


# ----------------------------------------------------------------------------- bombs
def _png_header_only(path: Path, w: int, h: int) -> Path:
    """A PNG whose header declares w x h (greyscale) followed by a few bytes of image data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
    return path


def _bomb_png(path: Path, side: int) -> Path:
    """A real, fully decodable 1-bit PNG of side x side pixels (a few KB on disk)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    row = b"\0" + b"\0" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = side.to_bytes(4, "big") + side.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_pixel_limit_checked_from_the_header(tmp_path, monkeypatch):
    huge = _png_header_only(tmp_path / "huge.png", 30000, 30000)
    with pytest.raises(ImageTooLargeError, match=r"huge\.png: image declares 30000x30000 = 900,000,000 pixels"):
        read_image_rgb(huge)
    small = _png_header_only(tmp_path / "small.png", 40, 30)
    with pytest.raises(ImageTooLargeError, match="more than the limit of 1,000"):
        read_image_rgb(small, max_pixels=1000)
    with pytest.raises(ImageTooLargeError):
        read_image_size(huge)
    assert read_image_size(small) == (30, 40)
    monkeypatch.setenv("NOSTRIDE_MAX_IMAGE_PIXELS", "1000")
    assert max_image_pixels() == 1000
    with pytest.raises(ImageTooLargeError):
        read_image_rgb(small)
    monkeypatch.setenv("NOSTRIDE_MAX_IMAGE_PIXELS", "none")
    assert max_image_pixels() is None
    monkeypatch.delenv("NOSTRIDE_MAX_IMAGE_PIXELS")
    assert max_image_pixels() == Image.MAX_IMAGE_PIXELS  # Pillow's limit is the default
    # a limit above Pillow's own is honoured: the header is read, the truncated data then fails
    with pytest.raises(ImageDecodeError) as e:
        read_image_rgb(huge, max_pixels=10**9)
    assert not isinstance(e.value, ImageTooLargeError)


@pytest.mark.slow
def test_bomb_refused_under_a_memory_cap(tmp_path):
    """A 2 KB PNG of 12000x12000 pixels (430 MB decoded) is refused quickly by a process capped at
    300 MB above its start-up size; without the header check it runs out of memory."""
    bomb = _bomb_png(tmp_path / "bomb.png", 12000)
    assert bomb.stat().st_size < 100_000
    imports = "from nostride.data.io import read_image_rgb, ImageTooLargeError\n"
    r = run_under_memory_cap(imports, f"""
        try:
            read_image_rgb({str(bomb)!r})
        except ImageTooLargeError as e:
            print("REFUSED", e)
        except MemoryError:
            print("MEMORY")
        else:
            print("DECODED")
    """, extra_mb=300, timeout=120)
    assert "REFUSED" in r.stdout and "bomb.png" in r.stdout, (r.stdout, r.stderr[-2000:])


# ----------------------------------------------------------------------------- folder walks
def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RGB).save(path, "PNG")


def _symlinks_supported(tmp_path: Path) -> bool:
    try:
        os.symlink(tmp_path, tmp_path / ".probe")
        os.unlink(tmp_path / ".probe")
        return True
    except (OSError, NotImplementedError):
        return False


def test_symlink_loops_in_an_image_folder(tmp_path):
    from nostride.data.classification.image_folder import load_image_folder

    if not _symlinks_supported(tmp_path):
        pytest.skip("no symlinks on this file system")
    root = tmp_path / "data"
    for c in ("cat", "dog"):
        for i in range(5):
            _image(root / "train" / c / f"{i}.png")
    outside = tmp_path / "extra"
    _image(outside / "x.png")
    os.symlink("..", root / "train" / "cat" / "parentloop")  # cat -> train: would label dogs "cat"
    os.symlink(".", root / "train" / "dog" / "selfloop")
    os.symlink("../..", root / "train" / "dog" / "rootloop")
    os.symlink(outside, root / "train" / "cat" / "outside")  # a folder outside the dataset: followed
    os.symlink(outside, root / "train" / "cat" / "outside_again")  # ... but only once
    os.symlink(root / "train" / "cat" / "0.png", root / "train" / "cat" / "link.png")  # a file link: followed
    os.symlink("../train", root / "train" / "trainlink")  # a "class" that is the split itself
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        train, test, classes = load_image_folder(root)
    assert classes == ["cat", "dog"]
    labels = {Path(p).relative_to(root).as_posix(): y for p, y in train}
    assert sorted(labels) == sorted([f"train/cat/{i}.png" for i in range(5)] + [f"train/dog/{i}.png" for i in range(5)]
                                    + ["train/cat/outside/x.png", "train/cat/link.png"])
    assert all(y == (0 if k.startswith("train/cat") else 1) for k, y in labels.items())
    msgs = sorted(str(x.message) for x in w)
    assert len(msgs) == 3, msgs
    def one(text: str) -> str:
        found = [m for m in msgs if text in m]
        assert len(found) == 1, (text, msgs)
        return found[0]

    assert "trainlink" in one("train: skipped 1 linked class folder ")
    assert "parentloop" in one("cat: skipped 1 linked folder ")  # outside_again: silently entered once
    one("dog: skipped 2 linked folders")


def test_list_images_walk_terminates_on_two_loops(tmp_path):
    if not _symlinks_supported(tmp_path):
        pytest.skip("no symlinks on this file system")
    _image(tmp_path / "imgs" / "a" / "1.png")
    _image(tmp_path / "imgs" / "2.png")
    os.symlink("..", tmp_path / "imgs" / "a" / "loop")
    os.symlink(tmp_path / "imgs", tmp_path / "imgs" / "a" / "loop2")
    os.symlink("missing.png", tmp_path / "imgs" / "broken.png")
    with pytest.warns(RuntimeWarning, match="skipped 2 linked folders.*skipped 1 broken link,"):
        files = list_images(tmp_path / "imgs")
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["imgs/2.png", "imgs/a/1.png"]
    assert walk_image_files(tmp_path / "imgs", warn=False) == [tmp_path / "imgs" / "2.png", tmp_path / "imgs" / "a" / "1.png"]


def test_empty_class_folder_warns_and_strict_refuses(tmp_path):
    from nostride.data.classification.image_folder import load_image_folder

    for c in ("cat", "dog"):
        _image(tmp_path / "train" / c / "0.png")
    (tmp_path / "train" / "empty").mkdir()
    with pytest.warns(RuntimeWarning, match=r"1 class folder without images \(empty\)"):
        _, _, classes = load_image_folder(tmp_path)
    assert classes == ["cat", "dog", "empty"]  # indices do not shift
    with pytest.raises(ValueError, match="empty.*strict"):
        load_image_folder(tmp_path, strict=True)


def test_train_strict_refuses_an_empty_class_folder(tmp_path, capsys):
    from nostride.cli import main

    for c in ("cat", "dog"):
        for i in range(2):
            _image(tmp_path / "pets" / "train" / c / f"{i}.png")
    (tmp_path / "pets" / "train" / "empty").mkdir()
    rc = main(["train", "--model", "resnet18_cifar", "--width", "4", "--data", str(tmp_path / "pets"), "--epochs", "1",
               "--workers", "0", "--device", "cpu", "--strict", "--project", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert rc == 2 and "1 class folder without images (empty)" in err and err.count("\n") == 1
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- letterbox
@pytest.mark.parametrize("h,w", [(1, 5000), (5000, 1), (2, 20000), (20000, 2), (1, 1)])
def test_letterbox_extreme_aspect_ratios(h, w):
    img = torch.zeros(3, h, w, dtype=torch.uint8)
    for auto in (False, True):
        out, ratio, pad = letterbox(img, 64, auto=auto, stride=32)
        assert out.shape[0] == 3 and min(out.shape[1:]) >= 1
        if not auto:
            assert tuple(out.shape[1:]) == (64, 64)


@pytest.mark.slow
def test_png_with_too_little_image_data_is_an_error_not_a_crash(tmp_path):
    # torchvision's PNG decoder segfaults on this file; decoding runs in a subprocess so a crash
    # fails the test instead of killing the test session
    bad = _png_header_only(tmp_path / "short.png", 40, 40)
    script = (f"from nostride.data.io import read_image_rgb, ImageDecodeError\n"
              f"try:\n    read_image_rgb({str(bad)!r})\nexcept ImageDecodeError as e:\n    print('ERROR', e)\n")
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "ERROR" in r.stdout and "short.png" in r.stdout, (r.returncode, r.stdout, r.stderr[-1000:])


def test_detection_predict_inputs_of_every_kind_and_shape(tmp_path):
    """The files that stopped a detection predict run over a folder: each is now an image."""
    from nostride.tasks.detect.sources import LetterboxedImages, image_items

    (tmp_path / "kinds").mkdir()
    kinds = _kinds(tmp_path / "kinds")
    for h, w in ((1, 500), (500, 1), (2, 2000)):
        Image.fromarray(np.zeros((h, w, 3), np.uint8)).save(tmp_path / "kinds" / f"thin_{h}x{w}.png")
    items = image_items(tmp_path / "kinds")
    assert len(items) == len(kinds) + 3
    data = LetterboxedImages(items, 64, 32)
    for i in range(len(data)):
        name, img0, img, ratio, pad, error = data[i]
        assert error is None and img.dtype == torch.uint8 and tuple(img.shape) == (3, 64, 64), (name, error)
