"""Image I/O and the two image conventions used across csrgan.

* Arrays on disk and in data pipelines: ``numpy.uint8``, shape ``(H, W, 3)``, RGB.
  Grayscale files are expanded to 3 channels; alpha is dropped; 16-bit files are scaled to 8 bits
  (never clipped); float and other modes are refused (:data:`READABLE_MODES`).
* Tensors in models: ``torch.float32`` in ``[0, 1]``, shape ``(N, 3, H, W)``, RGB.

Every read error names the file: a corrupt image in a 800-image folder must be findable.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(OSError):
    """An image file that is missing, unreadable or corrupt. The message names the file."""


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files directly inside ``folder`` (by name). Raises if the folder is missing or empty."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return files


#: PIL modes read as 8-bit RGB by ``Image.convert("RGB")`` (alpha and padding dropped, palette expanded,
#: CMYK/YCbCr by PIL's conversions). 16-bit RGB PNGs are among them: PIL itself loads them as "RGB" by
#: keeping each sample's high byte (floor(v / 256), within one level of round(v / 257)).
CONVERTIBLE_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
#: Single-channel integer modes with 16 significant bits (16-bit PNG/TIFF greyscale): scaled to 8 bits
#: as round(v * 255 / 65535). ``convert("RGB")`` would clip every value above 255 to white instead.
SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
READABLE_MODES = CONVERTIBLE_MODES + SIXTEEN_BIT_MODES


def _unsupported_mode(mode: str) -> str:
    return (
        f"PIL mode {mode!r} is not read by csrgan (it reads {', '.join(READABLE_MODES)}); "
        "save it as an 8- or 16-bit RGB or greyscale PNG"
    )


def _sixteen_bit_to_rgb(im: Image.Image) -> np.ndarray:
    """A 16-bit greyscale image as uint8 RGB, scaled (not clipped): ``round(v / 257)``."""
    a = np.asarray(im).astype(np.int64)
    if a.size and (a.min() < 0 or a.max() > 65535):
        raise ValueError(f"32-bit integer values in [{a.min()}, {a.max()}] are outside 16 bits")
    g = ((a * 255 + 32767) // 65535).astype(np.uint8)  # round half up of v * 255 / 65535
    return np.repeat(g[..., None], 3, axis=2)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as uint8 RGB ``(H, W, 3)``; see :data:`READABLE_MODES` for what is converted how.

    Corrupt, truncated, unreadable files and unsupported modes (float, LAB, HSV, ...) raise
    ``ImageReadError`` naming the file.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in SIXTEEN_BIT_MODES:
                return _sixteen_bit_to_rgb(im)
            if im.mode not in CONVERTIBLE_MODES:
                raise ImageReadError(f"cannot read image {path}: {_unsupported_mode(im.mode)}")
            if im.mode != "RGB":
                im = im.convert("RGB")
            return np.asarray(im, dtype=np.uint8).copy()
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(f"image not found: {path}") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


def image_header(path: str | Path) -> tuple[int, int, str]:
    """``(width, height, mode)`` from the file's header only (nothing decoded); refuses what
    :func:`read_image` would refuse for its mode. Raises ``ImageReadError`` naming the file."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h, mode = im.width, im.height, im.mode
    except FileNotFoundError:
        raise ImageReadError(f"image not found: {path}") from None
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc
    if mode not in READABLE_MODES:
        raise ImageReadError(f"cannot read image {path}: {_unsupported_mode(mode)}")
    return w, h, mode


GRAY_MODES = ("1", "L", "LA", *SIXTEEN_BIT_MODES)


def is_grayscale_file(path: str | Path) -> bool:
    """True for single-channel image files (modes 1/L/LA and 16-bit): the metric protocol scores those as
    grey, the way the MATLAB benchmark scripts do (e.g. Set14 ``bridge``)."""
    try:
        with Image.open(path) as im:
            return im.mode in GRAY_MODES
    except (OSError, UnidentifiedImageError) as exc:
        raise ImageReadError(f"cannot read image {path}: {exc}") from exc


def write_image(path: str | Path, img: np.ndarray) -> None:
    """Write a uint8 RGB ``(H, W, 3)`` array (PNG is lossless; the suffix picks the format)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if img.dtype != np.uint8:
        raise TypeError(f"write_image expects uint8, got {img.dtype}")
    Image.fromarray(img).save(path)


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 ``(H, W, 3)`` or ``(N, H, W, 3)`` -> float32 ``(N, 3, H, W)`` in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(img))
    if t.ndim == 3:
        t = t.unsqueeze(0)
    return t.permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """float ``(N, 3, H, W)`` / ``(3, H, W)`` in [0, 1] -> uint8 ``(N, H, W, 3)`` / ``(H, W, 3)``.

    Rounds half away from zero after clamping, as MATLAB's ``im2uint8`` does: SR outputs are
    quantised exactly like this before any metric is computed (protocol: "uint8 rounding").
    """
    x = t.detach().float().clamp(0, 1).mul(255.0).add_(0.5).floor_().to(torch.uint8)
    if x.ndim == 4:
        return x.permute(0, 2, 3, 1).cpu().numpy()
    return x.permute(1, 2, 0).cpu().numpy()
