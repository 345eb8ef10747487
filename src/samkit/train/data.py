"""Your own data for fine-tuning: COCO files and folders of label maps, as model-ready batches.

Two layouts are read:

- a **COCO** instance file (what ``samkit studio`` exports): every annotated image, each
  annotation (RLE or polygons, crowd annotations skipped) one instance;
- a **folder of label maps**: ``images/`` and ``masks/`` (or ``labels/``) with files of the
  same stem; a mask file is an instance label map (0 background, each other value one
  instance) as PNG/TIFF (8 or 16 bit), or NIfTI beside a NIfTI image, where every slice that
  has labels becomes an example (windowed like ``samkit segment --window``).

:func:`split_examples` holds out a validation share by source file (slices of one scan never
straddle the split). :class:`ExampleBatches` resizes each example as the predictor does
(long side to the model's input size), picks up to ``targets_per_image`` instances, and
batches images with different numbers of instances.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from samkit.errors import InputError
from samkit.io.image import IMAGE_SUFFIXES, load_image
from samkit.io.medical import NIFTI_SUFFIXES, Window, file_stem, read_volume
from samkit.transforms import ResizeLongestSide

MASK_FOLDERS = ("masks", "labels")


@dataclass(frozen=True)
class Example:
    """One image with instances: ``load()`` returns ``(image (H, W, 3) uint8, masks (K, H, W)
    bool)``; ``group`` is its source file (the unit of the train/validation split)."""

    name: str
    group: str
    load: Callable[[], tuple[np.ndarray, np.ndarray]]


def load_examples(data: str | os.PathLike[str], images: str | os.PathLike[str] | None = None,
                  window: Window | None = None) -> list[Example]:
    """Examples from a COCO file (``images``: its image folder; default the ``images/``
    folder beside it, else the file's own folder) or from a folder of label maps.

    Raises:
        InputError: An unknown layout, no usable example, or images and masks that do not
            pair up (named in the message).
    """
    p = Path(data)
    if not p.exists():
        raise FileNotFoundError(f"no such dataset: {p}")
    if p.is_file():
        if p.suffix.lower() != ".json":
            raise InputError(f"{p}: expected a COCO .json file or a folder with images/ and "
                             "masks/")
        root = Path(images) if images else (p.parent / "images" if (p.parent / "images")
                                            .is_dir() else p.parent)
        examples = coco_examples(p, root)
    else:
        examples = labelmap_examples(p, window)
    if not examples:
        raise InputError(f"{p}: no image with at least one instance")
    return examples


def coco_examples(path: Path, image_dir: Path) -> list[Example]:
    """One example per image of a COCO file that has non-crowd annotations."""
    from samkit.data.coco import annotation_mask, load_coco

    images, by_image = load_coco(path)
    out = []
    for entry in images:
        anns = [a for a in by_image.get(entry["id"], []) if not a.get("iscrowd", 0)]
        if not anns:
            continue
        file = image_dir / entry["file_name"]
        if not file.is_file():
            raise InputError(f"{path}: image {entry['file_name']!r} not found in {image_dir} "
                             "(pass the image folder with --images)")

        def load(file: Path = file, entry: dict = entry, anns: list = anns
                 ) -> tuple[np.ndarray, np.ndarray]:
            image = load_image(file)
            h, w = int(entry["height"]), int(entry["width"])
            if image.shape[:2] != (h, w):
                raise InputError(f"{file}: the image is {image.shape[1]}x{image.shape[0]}, its "
                                 f"annotations say {w}x{h}")
            return image, np.stack([annotation_mask(a, h, w) for a in anns])

        out.append(Example(entry["file_name"], entry["file_name"], load))
    return out


def labelmap_examples(folder: Path, window: Window | None = None) -> list[Example]:
    """Pairs ``images/<stem>.*`` with ``masks/<stem>.*`` (or ``labels/``)."""
    image_dir = folder / "images"
    mask_dir = next((folder / m for m in MASK_FOLDERS if (folder / m).is_dir()), None)
    if not image_dir.is_dir() or mask_dir is None:
        raise InputError(f"{folder}: expected images/ and masks/ (or labels/) subfolders, or "
                         "a COCO .json file")
    suffixes = (*IMAGE_SUFFIXES, *NIFTI_SUFFIXES)

    def files(d: Path) -> dict[str, Path]:
        return {file_stem(f): f for f in sorted(d.iterdir())
                if f.name.lower().endswith(suffixes)}

    imgs, masks = files(image_dir), files(mask_dir)
    unpaired = sorted(set(imgs) ^ set(masks))
    if unpaired:
        raise InputError(f"{folder}: images and masks do not pair up by name: "
                         f"{', '.join(unpaired[:5])}{' ...' if len(unpaired) > 5 else ''}")
    out: list[Example] = []
    for stem in sorted(imgs):
        img, lab = imgs[stem], masks[stem]
        if lab.name.lower().endswith(NIFTI_SUFFIXES):
            out.extend(_volume_examples(img, lab, window))
        else:
            out.append(Example(img.name, img.name,
                               lambda img=img, lab=lab: (load_image(img), _instances(
                                   _read_labelmap(lab), lab))))
    return out


def _read_labelmap(path: Path) -> np.ndarray:
    from PIL import Image

    from samkit.io.image import _pil_to_array

    try:
        with Image.open(path) as im:
            arr = _pil_to_array(im) if im.mode != "P" else np.asarray(im)
    except Exception as exc:
        raise InputError(f"cannot read label map {path}: {exc}") from None
    if arr.ndim == 3:
        raise InputError(f"{path}: a label map must have one channel (0 background, one value "
                         "per instance); this one has several")
    return arr


def _instances(labels: np.ndarray, source: Path) -> np.ndarray:
    values = np.unique(labels)
    values = values[values != 0]
    if labels.dtype.kind == "f" and not np.array_equal(values, np.round(values)):
        raise InputError(f"{source}: label values must be whole numbers")
    return np.stack([labels == v for v in values]) if len(values) else \
        np.zeros((0, *labels.shape), dtype=bool)


def _volume_examples(image: Path, labels: Path, window: Window | None) -> list[Example]:
    vol, lab = read_volume(image), read_volume(labels)
    if vol.data.shape != lab.data.shape:
        raise InputError(f"{labels}: label volume {lab.data.shape} does not match its image "
                         f"{image} {vol.data.shape}")
    out = []
    for z in range(vol.n_slices):
        if not lab.data[z].any():
            continue
        out.append(Example(f"{image.name}[z={z}]", image.name,
                           lambda z=z: (vol.slice_image(z, window),
                                        _instances(lab.data[z], labels))))
    return out


def split_examples(examples: list[Example], val_fraction: float, seed: int = 0
                   ) -> tuple[list[Example], list[Example]]:
    """``(train, validation)``: whole source files go to validation until it holds about
    ``val_fraction`` of the examples (at least one file when there are two or more)."""
    if not 0 <= val_fraction < 1:
        raise InputError(f"validation fraction must be in [0, 1), got {val_fraction}")
    groups = sorted({e.group for e in examples})
    if val_fraction == 0 or len(groups) < 2:
        return examples, []
    order = np.random.default_rng([seed, 17]).permutation(len(groups))
    target = max(1, round(val_fraction * len(examples)))
    held: set[str] = set()
    count = 0
    for i in order:
        if count >= target or len(held) == len(groups) - 1:
            break
        g = groups[i]
        held.add(g)
        count += sum(e.group == g for e in examples)
    return ([e for e in examples if e.group not in held],
            [e for e in examples if e.group in held])


@dataclass
class Prepared:
    """An example at the model's input size: ``image`` ``(3, h, w)`` uint8 (long side ``S``,
    unpadded) and ``masks`` ``(K, S, S)`` bool (padded bottom/right)."""

    image: torch.Tensor
    masks: torch.Tensor


def prepare(example: Example, size: int) -> Prepared:
    """Resize as the predictor does (:class:`ResizeLongestSide`); masks by bilinear
    interpolation thresholded at one half, so thin parts survive downscaling. Instances that
    vanish at this size are dropped."""
    image, masks = example.load()
    if masks.shape[1:] != image.shape[:2]:
        raise InputError(f"{example.name}: masks of size {masks.shape[1:]} for an image of "
                         f"{image.shape[:2]}")
    resized = ResizeLongestSide(size).apply_image(image)
    h, w = resized.shape[:2]
    out = torch.zeros(len(masks), size, size, dtype=torch.bool, device="cpu")
    for k, m in enumerate(masks):
        small = cv2.resize(m.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
        out[k, :h, :w] = torch.from_numpy(small >= 0.5)
    keep = out.flatten(1).any(1)
    return Prepared(torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1),
                    out[keep])


@dataclass
class Batch:
    """Images ``(B, 3, S, S)`` uint8 (zero padded), their unpadded ``sizes`` ``(B, 2)``
    (h, w), ``masks`` ``(N, S, S)`` bool (image 0's targets first) and ``counts`` ``(B,)``."""

    images: torch.Tensor
    sizes: torch.Tensor
    masks: torch.Tensor
    counts: torch.Tensor


class ExampleBatches:
    """Deterministic, resumable batches: step ``s`` takes examples ``s * B .. s * B + B - 1``
    of a sequence of seeded permutations (one per epoch) and up to ``targets_per_image``
    random instances of each."""

    def __init__(self, examples: list[Example], size: int, images_per_step: int,
                 targets_per_image: int, seed: int = 0) -> None:
        if not examples:
            raise InputError("no training examples")
        self.examples, self.size, self.seed = examples, size, seed
        self.per_step, self.targets = images_per_step, targets_per_image

    def example_index(self, position: int) -> int:
        n = len(self.examples)
        epoch, offset = divmod(position, n)
        return int(np.random.default_rng([self.seed, epoch]).permutation(n)[offset])

    def __call__(self, step: int) -> Batch:
        rng = np.random.default_rng([self.seed, step, 1])
        images, sizes, masks, counts = [], [], [], []
        position = step * self.per_step
        tries = 0
        while len(images) < self.per_step:
            ex = prepare(self.examples[self.example_index(position)], self.size)
            position, tries = position + 1, tries + 1
            if not len(ex.masks):
                if tries > 10 * len(self.examples):
                    raise InputError("no example has an instance visible at the model's "
                                     f"input size {self.size}")
                continue
            pick = rng.permutation(len(ex.masks))[: self.targets]
            img = torch.zeros(3, self.size, self.size, dtype=torch.uint8, device="cpu")
            h, w = ex.image.shape[1:]
            img[:, :h, :w] = ex.image
            images.append(img)
            sizes.append((h, w))
            masks.append(ex.masks[torch.from_numpy(np.sort(pick))])
            counts.append(len(pick))
        cpu = torch.device("cpu")  # data is made on the CPU whatever the default device
        return Batch(torch.stack(images), torch.tensor(sizes, device=cpu), torch.cat(masks),
                     torch.tensor(counts, device=cpu))
