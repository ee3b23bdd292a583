"""Image folders: one subfolder per class, PNG or JPEG files, decoded with Pillow.

    my_images/cat/001.png
    my_images/dog/002.jpg

Class ids are the sorted subfolder names (as torchvision's ImageFolder numbers them), so a
--val or --test folder with the same subfolders gets the same ids. Each image is resized so
its shorter side is `size` and centre-cropped to size x size; colour images become RGB, a
folder whose images are all greyscale stays one channel. Pixels are scaled to [0, 1] and
normalised per channel with the training images' mean and std. Training augmentations
(random crop, flip) are applied by the workers, per batch (bpt.train.training.augment_batch)."""

from __future__ import annotations

import os

import numpy as np

from bpt.data.base import MIN_SAMPLES, Dataset, with_test, _split
from bpt.errors import DataError

EXTENSIONS = (".png", ".jpg", ".jpeg")
DEFAULT_SIZE = 32
MAX_CLASSES = 1000


def classes_of(folder: str) -> list[str]:
    names = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    if len(names) < 2:
        raise DataError(f"{folder}: an image folder needs one subfolder per class, at least 2; found {len(names)}")
    if len(names) > MAX_CLASSES:
        raise DataError(f"{folder}: {len(names)} class folders is over the limit of {MAX_CLASSES}")
    return names


def read_folder(folder: str, size: int, classes: list[str] | None = None, training: bool = False
                ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(uint8 images (N, H, W, C), int64 labels, class names); every unreadable file is one
    DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    found = classes_of(folder)
    if classes is not None and found != classes:
        raise DataError(f"{folder}: its class folders {found} differ from the training folder's {classes}")
    images, labels, modes = [], [], set()
    for label, name in enumerate(found):
        files = sorted(f for f in os.listdir(os.path.join(folder, name)) if f.lower().endswith(EXTENSIONS))
        if not files and training:  # counted as a class, it would never be seen in training
            raise DataError(f"{os.path.join(folder, name)}: a class folder with no images ({', '.join(EXTENSIONS)})")
        for file in files:
            path = os.path.join(folder, name, file)
            try:
                with Image.open(path) as im:
                    im.load()
                    modes.add("L" if im.mode in ("L", "1", "I;16", "I") else "RGB")
                    images.append(_fit(im, size))
            except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
                raise DataError(f"{path}: not a readable image ({e.__class__.__name__}: {e})") from e
            labels.append(label)
    if len(images) < MIN_SAMPLES:
        raise DataError(f"{folder}: needs at least {MIN_SAMPLES} images ({', '.join(EXTENSIONS)}), found {len(images)}")
    grey = modes == {"L"}
    x = np.stack([np.asarray(im.convert("L" if grey else "RGB")) for im in images])
    if grey:
        x = x[..., None]
    return x, np.asarray(labels, np.int64), found


def _fit(im, size: int):
    """Shorter side to `size`, then the centre size x size."""
    w, h = im.size
    scale = size / min(w, h)
    im = im.convert("RGB" if im.mode not in ("L", "RGB") else im.mode)
    im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))))
    w, h = im.size
    left, top = (w - size) // 2, (h - size) // 2
    return im.crop((left, top, left + size, top + size))


def load(folder: str, size: int | None = None, seed: int = 0, val: str | None = None,
         test: str | None = None) -> Dataset:
    size = size or DEFAULT_SIZE
    x, y, classes = read_folder(folder, size, training=True)
    mean, std = _stats(x)
    prepare = lambda raw: normalise(raw, mean, std)  # noqa: E731
    name = os.path.basename(os.path.abspath(folder))
    data = _assemble(x, y, classes, prepare, name, size, seed, val, test)
    data.normalisation = (tuple(float(m) for m in mean), tuple(float(s) for s in std))
    data.class_names = tuple(classes)
    return data


def _assemble(x, y, classes, prepare, name, size, seed, val, test) -> Dataset:
    if val is None and test is None:
        data = _split(prepare(x), y, seed, name=name, num_classes=len(classes))
        return data
    x_test = y_test = x_val = y_val = None
    if test is not None:
        x_test, y_test, _ = read_folder(test, size, classes)
    if val is not None:
        x_val, y_val, _ = read_folder(val, size, classes)
    if x_test is None:  # a validation folder but no test folder: hold out a test split
        data = _split(prepare(x), y, seed, val_fraction=0.0, name=name, num_classes=len(classes))
        return Dataset(name, data.x_train, data.y_train, prepare(x_val), y_val, data.x_test, data.y_test, len(classes))
    data = with_test(prepare(x), y, prepare(x_test), y_test, seed, name,
                     None if x_val is None else prepare(x_val), y_val)
    data.num_classes = len(classes)
    return data


def read_files(paths: list[str], size: int, channels: int) -> np.ndarray:
    """Unlabelled images (a flat folder, one file, a glob) as uint8 (N, size, size, channels),
    fitted as training images are; an unreadable file is one DataError naming it."""
    from PIL import Image, UnidentifiedImageError

    out = []
    for path in paths:
        try:
            with Image.open(path) as im:
                im.load()
                out.append(np.asarray(_fit(im, size).convert("L" if channels == 1 else "RGB")))
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
            raise DataError(f"{path}: not a readable image ({e.__class__.__name__}: {e})") from e
    x = np.stack(out)
    return x[..., None] if x.ndim == 3 else x


def _stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scaled = x.astype(np.float32) / 255.0
    std = scaled.std(axis=(0, 1, 2))
    return scaled.mean(axis=(0, 1, 2)), np.where(std > 0, std, 1.0)


def normalise(x: np.ndarray, mean, std) -> np.ndarray:
    scaled = (x.astype(np.float32) / 255.0 - mean) / std
    return np.ascontiguousarray(scaled.transpose(0, 3, 1, 2)).astype(np.float32)


def write_folder(folder: str, x: np.ndarray, y: np.ndarray, classes: list[str] | None = None) -> None:
    """Write uint8 images (N, H, W, C) as PNGs, one subfolder per class: the layout `load`
    reads (for examples, tests and converting arrays to a folder)."""
    from PIL import Image

    names = classes or [f"class{c:03d}" for c in range(int(y.max()) + 1)]
    for name in names:
        os.makedirs(os.path.join(folder, name), exist_ok=True)
    for i, (image, label) in enumerate(zip(x, y)):
        pixels = image[..., 0] if image.shape[-1] == 1 else image
        Image.fromarray(pixels).save(os.path.join(folder, names[int(label)], f"{i:06d}.png"))


GLYPHS = np.array([
    [[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]],  # ring
    [[1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]],  # cross
    [[0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0]],  # bar
    [[1, 1, 1, 1], [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1]],  # rails
    [[1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]],  # wedge
], np.float32)
GLYPH_COLOURS = np.array([[0.9, 0.3, 0.2], [0.2, 0.4, 0.9]], np.float32)


def glyphs(samples: int, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A learnable rule that needs a CNN: one of 5 glyphs (4x4) in one of 2 colours at a
    random position on uniform noise; class = glyph x 2 + colour (10 classes). The position
    varies, so a linear model on pixels cannot learn it (logistic regression reaches about
    23% on 3,000 images, a small CNN over 80%: docs/data.md). uint8 (N, size, size, 3)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, samples)
    x = rng.uniform(0, 0.45, (samples, size, size, 3)).astype(np.float32)
    at = rng.integers(0, size - 3, (samples, 2))
    for i in range(samples):
        glyph, colour = divmod(int(y[i]), 2)
        r, c = at[i]
        mask = GLYPHS[glyph][..., None]
        x[i, r:r + 4, c:c + 4] = x[i, r:r + 4, c:c + 4] * (1 - mask) + mask * GLYPH_COLOURS[colour]
    return (x * 255).round().astype(np.uint8), y.astype(np.int64)
